"""LLaVA-format sources, the mixture YAML and image path mapping (spec §3.1–§3.3).

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
`sample` (without replacement), so the reference's YAMLs select the very same records (spec §3.2).
"""

from __future__ import annotations

import ast
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf


class DataError(Exception):
    """A fatal data problem (missing data file, unreadable JSON ...). `problems` lists every one found."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# ---------------------------------------------------------------------------------------------------------
# records


def _decode(data: bytes, path: Path, start: int = 0) -> str:
    """UTF-8 text of `data` (bytes from offset `start` of `path`); invalid UTF-8 is a `DataError` naming the
    byte offset in the file."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            [
                f"{path}: invalid UTF-8 at byte offset {start + e.start} ({e.reason}); re-encode the file as UTF-8"
            ]
        ) from None


def _read_json(path: Path) -> list:
    text = _decode(path.read_bytes(), path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError([f"{path}:{e.lineno}:{e.colno}: unreadable JSON: {e.msg}"]) from None
    if not isinstance(data, list):
        raise DataError([f"{path}: expected a JSON list of records, got {type(data).__name__}"])
    return data


def _read_jsonl(path: Path) -> list:
    records, offset = [], 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = _decode(raw, path, offset)
            offset += len(raw)
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError([f"{path}:{lineno}:{e.colno}: unreadable JSON: {e.msg}"]) from None
    return records


def data_files(path: str | os.PathLike) -> list[Path]:
    """The data files behind `path`: the file itself, or the sorted `*.json`/`*.jsonl` of a folder."""
    p = Path(path)
    if p.is_dir():
        return sorted(q for q in p.iterdir() if q.suffix in (".json", ".jsonl"))
    if not p.exists():
        raise DataError([f"{p}: data file not found"])
    return [p]


def load_records(path: str | os.PathLike) -> list[dict]:
    """Records of a `.json` list, a `.jsonl` file, or a folder of them (concatenated in name order)."""
    records = []
    for f in data_files(path):
        records.extend(_read_jsonl(f) if f.suffix == ".jsonl" else _read_json(f))
    return records


def mixture_indices(size: int, count: int, seed: int = 42) -> list[int]:
    """Indices of the records drawn from a source of `size` records (spec §3.2): a fresh `Random(seed)`;
    `choices` with replacement if count > size, else `sample` without. Same picks as the reference's
    `random.Random(seed).choices(records, k=count)` / `.sample(records, count)`."""
    rng = random.Random(seed)
    if count > size:
        if size == 0:
            raise ValueError("cannot draw records from an empty source")
        return rng.choices(range(size), k=count)
    return rng.sample(range(size), count)


# ---------------------------------------------------------------------------------------------------------
# image path mapping


class PathMap:
    """Ordered substring mapping of image paths (spec §3.3): the first key (in order) that is a substring of
    the path wins and every occurrence of it is replaced by its value."""

    def __init__(self, mapping: dict[str, str] | None = None):
        self.mapping = dict(mapping or {})

    def __call__(self, path: str) -> str | None:
        """The mapped path, or None when no key matches."""
        for key, value in self.mapping.items():
            if key in path:
                return path.replace(key, value)
        return None

    def __len__(self):
        return len(self.mapping)

    @classmethod
    def load(cls, source) -> PathMap:
        """From a dict, a YAML file (a mapping, or one under the key `image_folders`/`path_map`), or a Python
        file defining `IMAGE_FOLDER_DICT` (the reference's `data_configs/example_data_paths.py`; its
        `IMAGE_FOLDER_DICT_GCP` is accepted too). The Python file is parsed, never executed: see
        `_python_path_map`."""
        if source is None:
            return cls()
        if isinstance(source, PathMap):
            return source
        if isinstance(source, dict):
            return cls(source)
        path = Path(source)
        if not path.exists():
            raise DataError([f"{path}: path map file not found"])
        if path.suffix == ".py":
            return cls(_python_path_map(path))
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        for key in ("image_folders", "path_map"):
            if isinstance(data, dict) and isinstance(data.get(key), dict):
                data = data[key]
        if not isinstance(data, dict):
            raise DataError([f"{path}: expected a mapping of path substrings to replacements"])
        return cls({str(k): str(v) for k, v in data.items()})


PATH_MAP_NAMES = ("IMAGE_FOLDER_DICT", "IMAGE_FOLDER_DICT_GCP")


def _python_path_map(path: Path) -> dict[str, str]:
    """`IMAGE_FOLDER_DICT` (else `IMAGE_FOLDER_DICT_GCP`) of a Python file, read without running it: the file
    is parsed with `ast` and the name must be assigned a literal dict of string keys and values
    (`{"coco/": "/data/coco/", ...}`); anything else (a call, a variable, an f-string, `**other`) is a
    `DataError`. The last top-level assignment of the name wins, as it would when the file runs."""
    try:
        tree = ast.parse(_decode(path.read_bytes(), path), filename=str(path))
    except SyntaxError as e:
        raise DataError([f"{path}:{e.lineno}: path map is not valid Python: {e.msg}"]) from None
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        for t in targets:
            if isinstance(t, ast.Name) and t.id in PATH_MAP_NAMES:
                found[t.id] = node.value
    for name in PATH_MAP_NAMES:
        if name not in found:
            continue
        value = found[name]
        try:
            mapping = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, RecursionError):  # not a literal (a call, a name, ...)
            mapping = None
        if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
        ):
            raise DataError(
                [
                    f"{path}:{value.lineno}: {name} must be a literal dict of strings "
                    '({"path/part": "/replacement", ...}); the file is parsed, not executed'
                ]
            )
        return mapping
    raise DataError([f"{path}: defines no {PATH_MAP_NAMES[0]} (a literal dict of strings)"])


def resolve_image_path(path: str, path_map: PathMap, image_root: str | None) -> tuple[str | None, str | None]:
    """(resolved path, None) or (None, reason). Path map first; then a still-relative path is joined to
    `image_root`; a relative path that nothing maps is an error (the reference calls exit(0) here)."""
    mapped = path_map(path)
    out = mapped if mapped is not None else path
    if not os.path.isabs(out):
        if image_root is not None:
            out = os.path.join(image_root, out)
        elif mapped is None:
            return None, f"unmapped relative image path {path!r} (no path-map key matches and no image_root)"
    return out, None


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
    list (multi-image form, spec §2.4); `error`: why the record cannot be used (None if fine so far).
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
        return self.record.get("id") if isinstance(self.record, dict) else None

    def where(self) -> str:
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
