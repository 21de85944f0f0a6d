"""The weighted mixture of shard streams that `stream.ShardStream` reads: `StreamMixture` and its YAML."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from .shards import _expand
from .sources import DataError


@dataclass
class StreamSource:
    """One stream of the mixture: `urls` (expanded shard list), `weight`, `kind` ("caption", "interleaved" or
    "auto": decided per sample) and `shuffle` (buffer size; None = the mixture's)."""

    name: str
    urls: list[str]
    weight: float = 1.0
    kind: str = "auto"
    shuffle: int | None = None


def _resolve(entry, base: Path | None) -> list[str]:
    entry = str(entry)
    if base is not None and "://" not in entry and not entry.startswith(("pipe:", "file:")):
        if not os.path.isabs(entry):
            entry = str(base / entry)
    return _expand(entry)


@dataclass
class StreamMixture:
    """Weighted shard streams (see `from_config` for the YAML). `shuffle`: default buffer size per source and
    worker; `seed`: shard order and draws; `epochs`: passes per source (None = stream forever)."""

    sources: list[StreamSource]
    shuffle: int = 1000
    seed: int = 42
    epochs: int | None = None

    @classmethod
    def from_config(cls, cfg: dict, base_dir=None) -> StreamMixture:
        """`cfg`::

            seed: 42             # optional
            shuffle: 1000        # optional, samples per source buffer
            epochs: null         # optional, passes per source; null = forever
            streams:
              captions: {urls: caps/shard-{000000..000009}.tar, weight: 0.6, kind: caption}
              docs: {urls: [docs/a.tar, docs/b.tar], weight: 0.4, kind: interleaved, shuffle: 200}
              more: extra/               # a folder (its *.tar) or a pattern alone: weight 1

        Relative paths are relative to `base_dir` (the YAML's folder); URLs and `pipe:` commands are kept."""
        base = Path(base_dir) if base_dir is not None else None
        streams = cfg.get("streams")
        problems = [f"unknown key {k!r}" for k in cfg if k not in ("seed", "shuffle", "epochs", "streams")]
        if isinstance(streams, dict):
            streams = [
                dict(spec, name=n) if isinstance(spec, dict) else {"name": n, "urls": spec}
                for n, spec in streams.items()
            ]
        if not isinstance(streams, list) or not streams:
            raise DataError(problems + ["'streams' must be a non-empty mapping name -> {urls, weight, kind}"])
        sources = []
        for k, spec in enumerate(streams):
            name = str(spec.get("name", f"stream{k}"))
            bad = [key for key in spec if key not in ("name", "urls", "weight", "kind", "shuffle")]
            problems += [f"stream {name}: unknown key {key!r}" for key in bad]
            urls = spec.get("urls")
            entries = urls if isinstance(urls, list) else [urls] if urls else []
            expanded = [u for e in entries for u in _resolve(e, base)]
            if not expanded:
                problems.append(f"stream {name}: no shards in urls={urls!r}")
            weight = float(spec.get("weight", 1.0))
            if weight <= 0:
                problems.append(f"stream {name}: weight must be > 0 (got {weight})")
            kind = spec.get("kind", "auto")
            if kind not in ("auto", "caption", "interleaved"):
                problems.append(f"stream {name}: kind must be caption, interleaved or auto (got {kind!r})")
            sources.append(StreamSource(name, expanded, weight, kind, spec.get("shuffle")))
        if len({s.name for s in sources}) != len(sources):
            problems.append("stream names must be unique")
        if problems:
            raise DataError(problems)
        epochs = cfg.get("epochs")
        return cls(sources, int(cfg.get("shuffle", 1000)), int(cfg.get("seed", 42)), epochs and int(epochs))

    @classmethod
    def from_yaml(cls, path) -> StreamMixture:
        """`from_config` of a YAML file; relative shard paths are relative to its folder."""
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        return cls.from_config(cfg, base_dir=Path(path).parent)

    @classmethod
    def from_any(cls, spec) -> StreamMixture:
        """A StreamMixture, a config dict, a YAML path, or shard urls (folder / pattern / list) as one stream."""
        if isinstance(spec, StreamMixture):
            return spec
        if isinstance(spec, dict):
            return cls.from_config(spec)
        if isinstance(spec, (str, os.PathLike)) and str(spec).endswith((".yaml", ".yml")):
            return cls.from_yaml(spec)
        return cls.from_config(
            {"streams": {"shards": {"urls": spec if isinstance(spec, list) else str(spec)}}}
        )


__all__ = ["StreamMixture", "StreamSource"]
