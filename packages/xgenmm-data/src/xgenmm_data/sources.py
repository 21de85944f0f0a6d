"""The data mixture (LAVIS `open_flamingo/train/sft_data_utils.py`, its `--data_path` YAML): sources, record
selection and `SampleRef`s with resolved image paths.

Reading the data files is `datafiles.py`, the image path mapping `paths.py` (both re-exported here).

Mixture YAML, reference form (LAVIS `data_configs/example_data_config.yaml`)::

    data_path:
      /data/llava_v1_5_mix665k.json: 665298
      /data/sharegpt4v.json: 100000

Extended form (per source: `path` + one of `count` / `fraction` / `all`, optional `image_root`, `template`)::

    seed: 42
    path_map: paths.yaml          # or an inline mapping, or a Python file defining IMAGE_FOLDER_DICT
    image_root: /data/images      # default for sources without their own
    data_path:
      - {path: llava.json, count: 1000, image_root: /data/coco}
      - {path: text_only.jsonl, fraction: 0.5}
      - {path: extra/, all: true}

Relative data paths are resolved against the YAML file's folder. For every source a fresh
`random.Random(seed)` draws `count` record indices: `choices` (with replacement) when count > size, else
`sample` (without replacement), so the reference's YAMLs select the very same records.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from .datafiles import DataError, data_files, load_records
from .paths import PathMap, resolve_image_path


def mixture_indices(size: int, count: int, seed: int = 42) -> list[int]:
    """Indices of the records drawn from a source of `size` records, as the original: a fresh `Random(seed)`;
    `choices` with replacement if count > size, else `sample` without. Same picks as the reference's
    `random.Random(seed).choices(records, k=count)` / `.sample(records, count)`."""
    rng = random.Random(seed)
    if count > size:
        if size == 0:
            raise ValueError("cannot draw records from an empty source")
        return rng.choices(range(size), k=count)
    return rng.sample(range(size), count)


# ---------------------------------------------------------------------------------------------------------
# mixture


@dataclass
class SourceSpec:
    """One entry of `data_path`. Exactly one of count / fraction / all (all = every record, file order)."""

    path: str
    count: int | None = None
    fraction: float | None = None
    all: bool = False
    image_root: str | None = None
    template: str | None = None

    def num_draws(self, size: int) -> int | None:
        """Records to draw from a source of `size` records; None = take every record in file order."""
        if self.all:
            return None
        if self.count is not None:
            return int(self.count)
        if self.fraction is not None:
            return int(round(self.fraction * size))
        return None


@dataclass
class SampleRef:
    """One selected record with where it came from and its resolved image paths.

    `images`: resolved paths in record order ([] for text-only); `image_is_list`: the record's `image` was a
    list (multi-image form); `error`: why the record cannot be used (None if fine so far).
    """

    record: dict
    source: str
    index: int
    images: list[str] = field(default_factory=list)
    image_is_list: bool = False
    template: str | None = None
    error: str | None = None

    @property
    def id(self):
        """The record's `id` field (None when it has none or the record is not an object)."""
        return self.record.get("id") if isinstance(self.record, dict) else None

    def where(self) -> str:
        """`<source> record <index> (id=...)`, how error messages name the record."""
        return f"{self.source} record {self.index} (id={self.id!r})"


@dataclass
class Mixture:
    """A parsed mixture: sources, seed, path map and defaults. `load()` gives the selected `SampleRef`s."""

    sources: list[SourceSpec]
    seed: int = 42
    path_map: PathMap = field(default_factory=PathMap)
    image_root: str | None = None
    template: str | None = None

    @classmethod
    def from_config(cls, cfg: dict, base_dir: str | os.PathLike = ".") -> Mixture:
        """Mixture from a parsed YAML mapping (reference or extended form, module docstring); relative paths
        are resolved against `base_dir`. Every bad source entry is listed in one `DataError`."""
        base = Path(base_dir)

        def rel(p):
            if p is None:
                return None
            return str(p) if os.path.isabs(str(p)) else os.path.normpath(base / str(p))

        if "data_path" not in cfg:
            raise DataError(["mixture: missing key 'data_path'"])
        entries = cfg["data_path"]
        sources = []
        if isinstance(entries, dict):  # reference form {file: count} (value may also be a dict of options)
            items = [
                dict(v, path=k) if isinstance(v, dict) else {"path": k, "count": v}
                for k, v in entries.items()
            ]
        elif isinstance(entries, list):
            items = [e if isinstance(e, dict) else {"path": e, "all": True} for e in entries]
        else:
            items = [{"path": entries, "all": True}]
        problems = []
        for e in items:
            unknown = set(e) - {"path", "count", "fraction", "all", "image_root", "template"}
            if unknown:
                problems.append(f"mixture source {e.get('path')!r}: unknown keys {sorted(unknown)}")
                continue
            chosen = [k for k in ("count", "fraction", "all") if e.get(k) not in (None, False)]
            if len(chosen) > 1:
                problems.append(f"mixture source {e['path']!r}: give one of count / fraction / all")
                continue
            spec = SourceSpec(
                path=rel(e["path"]),
                count=e.get("count"),
                fraction=e.get("fraction"),
                all=bool(e.get("all")) or not chosen,
                image_root=rel(e.get("image_root")),
                template=e.get("template"),
            )
            sources.append(spec)
        if problems:
            raise DataError(problems)
        pm = cfg.get("path_map")
        if isinstance(pm, str):
            pm = rel(pm)
        return cls(
            sources=sources,
            seed=int(cfg.get("seed", 42)),
            path_map=PathMap.load(pm),
            image_root=rel(cfg.get("image_root")),
            template=cfg.get("template"),
        )

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> Mixture:
        """Mixture from a YAML file (OmegaConf; `${...}` interpolations resolved), paths relative to its folder."""
        path = Path(path)
        if not path.exists():
            raise DataError([f"{path}: mixture file not found"])
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        if not isinstance(cfg, dict):
            raise DataError([f"{path}: expected a mapping with 'data_path'"])
        return cls.from_config(cfg, base_dir=path.parent)

    @classmethod
    def from_path(cls, path, path_map=None, image_root=None) -> Mixture:
        """A `.yaml` mixture, or a single data file / folder used whole (the reference's `--data_path`)."""
        if str(path).endswith((".yaml", ".yml")):
            mix = cls.from_yaml(path)
        else:
            mix = cls(sources=[SourceSpec(path=str(path), all=True)])
        if path_map is not None:
            mix.path_map = PathMap.load(path_map)
        if image_root is not None:
            mix.image_root = str(image_root)
        return mix

    def load(self) -> list[SampleRef]:
        """Read every source and draw its records. Raises `DataError` listing every missing / unreadable file
        at once (before any record is used)."""
        problems, loaded = [], []
        for spec in self.sources:
            try:
                loaded.append((spec, load_records(spec.path)))
            except DataError as e:
                problems.extend(e.problems)
        if problems:
            raise DataError(problems)
        refs = []
        for spec, records in loaded:
            n = spec.num_draws(len(records))
            indices = list(range(len(records))) if n is None else mixture_indices(len(records), n, self.seed)
            for i in indices:
                refs.append(self._ref(records[i], spec, i))
        return refs

    def _ref(self, record, spec: SourceSpec, index: int) -> SampleRef:
        ref = SampleRef(record=record, source=spec.path, index=index, template=spec.template or self.template)
        if not isinstance(record, dict):
            ref.error = "record is not a JSON object"
            return ref
        image = record.get("image")
        if image is None:
            return ref
        ref.image_is_list = isinstance(image, list)
        paths = image if ref.image_is_list else [image]
        root = spec.image_root or self.image_root
        for p in paths:
            if not isinstance(p, str) or not p:
                ref.error = f"bad image entry {p!r}"
                return ref
            resolved, err = resolve_image_path(p, self.path_map, root)
            if err:
                ref.error = err
                return ref
            ref.images.append(resolved)
        return ref


def load_mixture(path, path_map=None, image_root=None) -> list[SampleRef]:
    """Shortcut: `Mixture.from_path(path, ...).load()`."""
    return Mixture.from_path(path, path_map=path_map, image_root=image_root).load()


__all__ = [
    "DataError",
    "data_files",
    "load_records",
    "mixture_indices",
    "PathMap",
    "resolve_image_path",
    "SourceSpec",
    "SampleRef",
    "Mixture",
    "load_mixture",
]
