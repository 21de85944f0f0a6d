"""Checkpoint folders on disk: atomic writes, the tensor index, and clear errors before transformers reads them.

Two layouts hold the same tensors:

* "xgenmm": names like the module tree (`vision_encoder.*`, `vision_tokenizer.*`, `lang_model.*`);
* "released": the `Salesforce/xgen-mm-phi3-mini-*-r-v1.5` repos, the same names with a `vlm.` prefix
  (the original's `modeling_xgenmm.py::XGenMMModelForConditionalGeneration.vlm`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from safetensors import safe_open

CONFIG_NAME = "config.json"
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
RELEASED_PREFIX = "vlm."


def detect_layout(directory: str | os.PathLike) -> str:
    """ "released" or "xgenmm", from `config.json`."""
    d = read_json(Path(directory) / CONFIG_NAME)
    return "released" if ("vision_encoder_config" in d or "vision_tokenizer_config" in d) else "xgenmm"


def read_json(file: Path) -> dict:
    """The parsed JSON of `file`; a missing file is a `FileNotFoundError` naming it."""
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing (every checkpoint directory needs a config.json)")
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file}: not valid JSON ({e})") from e


def weight_map(directory: str | os.PathLike) -> dict[str, str]:
    """Tensor name → shard file name, from `model.safetensors.index.json` or a single `model.safetensors`.

    Raises FileNotFoundError naming the missing index, shard or weights file."""
    directory = Path(directory)
    index = directory / INDEX_NAME
    if index.is_file():
        try:
            mapping = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{index}: not a safetensors index (needs a 'weight_map'): {e}") from e
        missing = sorted({name for name in mapping.values() if not (directory / name).is_file()})
        if missing:
            raise FileNotFoundError(
                f"{index} names shard file(s) that are missing from {directory}: {missing}"
            )
        return mapping
    single = directory / SINGLE_NAME
    if single.is_file():
        with safe_open(single, framework="pt") as f:
            return {key: SINGLE_NAME for key in f.keys()}
    raise FileNotFoundError(
        f"{directory}: no weights found (expected {INDEX_NAME} with its shards, or {SINGLE_NAME}); "
        f"files present: {sorted(p.name for p in directory.iterdir())}"
    )


def stored_shapes(directory: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape, read from the safetensors headers only (no tensor data)."""
    directory = Path(directory)
    by_file: dict[str, list[str]] = {}
    for key, name in weight_map(directory).items():
        by_file.setdefault(name, []).append(key)
    shapes = {}
    for name, keys in by_file.items():
        try:
            with safe_open(directory / name, framework="pt") as f:
                present = set(f.keys())
                for key in keys:
                    if key not in present:
                        raise ValueError(
                            f"{directory / name}: tensor {key!r} listed in the index is not in the file"
                        )
                    shapes[key] = tuple(f.get_slice(key).get_shape())
        except OSError as e:  # safetensors' own error for a truncated or corrupt file
            raise ValueError(f"{directory / name}: not a readable safetensors file ({e})") from e
    return shapes


def check_keys(expected: dict[str, tuple], found: dict[str, tuple], source) -> None:
    """Raise a ValueError naming the missing, unexpected and mis-shaped tensors of a checkpoint."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(found[k])} vs model {tuple(expected[k])}"
        for k in set(expected) & set(found)
        if tuple(found[k]) != tuple(expected[k])
    )
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            more = f" (+{len(items) - 10} more)" if len(items) > 10 else ""
            parts.append(f"{len(items)} {label}: {items[:10]}{more}")
    if parts:
        raise ValueError(f"{source}: checkpoint does not match the model config: " + "; ".join(parts))


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `target`; on success move its content to `target`.

    A new target is one `rename`. An existing one gets each file by `os.replace`, `config.json` and the index
    last; safetensors files of the previous save that the new one does not name are then removed. On any error
    the temporary directory is deleted and `target` is left as it was."""
    target = Path(target).expanduser().absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not target.exists():
        os.rename(tmp, target)
        return
    new_weights = {p.name for p in tmp.glob("*.safetensors")}
    last = (INDEX_NAME, CONFIG_NAME)
    for path in sorted(tmp.iterdir(), key=lambda p: p.name in last):
        os.replace(path, target / path.name)
    if new_weights:
        for stale in target.glob("model*.safetensors"):
            if stale.name not in new_weights:
                stale.unlink()
        if SINGLE_NAME in new_weights and (target / INDEX_NAME).is_file():
            (target / INDEX_NAME).unlink()
    shutil.rmtree(tmp, ignore_errors=True)


def local_checkpoint(path: str | os.PathLike) -> Path | None:
    """The local folder `path` names, None for a hub repo id; FileNotFoundError for a path that is not a folder."""
    local = Path(path).expanduser()
    if local.is_dir():
        return local
    text = str(path)
    if local.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise FileNotFoundError(f"{text}: no such checkpoint directory")
    return None


__all__ = [
    "local_checkpoint",
    "CONFIG_NAME",
    "INDEX_NAME",
    "RELEASED_PREFIX",
    "atomic_directory",
    "check_keys",
    "detect_layout",
    "stored_shapes",
    "weight_map",
]
