"""Checkpoint input/output: safetensors shards + index, both layouts, atomic writes.

Layouts (`detect_layout`):

* "xgenmm": this package's `config.json` (`"format": "xgenmm-lm"`) and tensors named like the module tree
  (`vision_encoder.*`, `vision_tokenizer.*`, `lang_model.*`).
* "released": the `Salesforce/xgen-mm-phi3-mini-*-r-v1.5` repos (spec §5): the released `config.json` and the
  same tensor names with a `vlm.` prefix, loadable by the released remote code.

Writes go to a temporary directory beside the target, which is then renamed into place (or, when the target
already exists, each file is moved in with `os.replace`, the index last; shards of the previous save that the
new index no longer names are removed).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .configuration import CONFIG_NAME, XGenMMConfig

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
RELEASED_PREFIX = "vlm."
GENERATION_CONFIG_NAME = "generation_config.json"
PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
# Files copied along with a checkpoint when converting between layouts.
SIDE_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    GENERATION_CONFIG_NAME,
    PREPROCESSOR_CONFIG_NAME,
)


# ----- small helpers -----------------------------------------------------------------------------------------------
def parse_size(size: int | str) -> int:
    """Bytes from an int or a string such as "5GB", "500MB", "2GiB"."""
    if isinstance(size, int):
        return size
    s = str(size).strip().upper()
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}
    for unit, factor in units.items():
        if s.endswith(unit):
            return int(float(s[: -len(unit)]) * factor)
    return int(s)


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """None / "auto" → None (keep the stored dtype); "bfloat16" / "bf16" / torch.bfloat16 → torch.bfloat16."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = {"auto": None, "bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32"}.get(
        str(dtype), str(dtype)
    )
    if name is None:
        return None
    value = getattr(torch, name.replace("torch.", ""), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return value


def resolve_checkpoint_dir(path_or_repo_id: str | os.PathLike) -> Path:
    """A local directory as is; otherwise a hub repo id from the local HF cache (or downloaded when online)."""
    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_repo_id)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise FileNotFoundError(f"{text}: no such checkpoint directory")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "*.model", "*.jinja"]))
    except Exception as e:  # offline and not cached, unknown repo, network error
        raise OSError(
            f"{text}: not a local directory and not available from the Hugging Face cache ({type(e).__name__}: {e}). "
            f"Download it where there is network (`hf download {text}`) and pass the local directory."
        ) from e


def detect_layout(directory: str | os.PathLike) -> str:
    """ "released" or "xgenmm", from config.json."""
    file = Path(directory) / CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing (every checkpoint directory needs a config.json)")
    with open(file) as f:
        d = json.load(f)
    return "released" if ("vision_encoder_config" in d or "vision_tokenizer_config" in d) else "xgenmm"


def weight_map(directory: str | os.PathLike) -> dict[str, str]:
    """Tensor name → shard file name, from `model.safetensors.index.json` or a single `model.safetensors`."""
    directory = Path(directory)
    index = directory / INDEX_NAME
    if index.is_file():
        with open(index) as f:
            try:
                mapping = json.load(f)["weight_map"]
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


def iter_tensors(
    directory: str | os.PathLike, device: str = "cpu"
) -> Iterator[tuple[str, str, torch.Tensor]]:
    """Yield (shard file name, tensor name, tensor) shard by shard, in index order."""
    directory = Path(directory)
    by_file: dict[str, list[str]] = {}
    for key, name in weight_map(directory).items():
        by_file.setdefault(name, []).append(key)
    for name, keys in by_file.items():
        with safe_open(directory / name, framework="pt", device=device) as f:
            present = set(f.keys())
            for key in keys:
                if key not in present:
                    raise ValueError(
                        f"{directory / name}: tensor {key!r} listed in the index is not in the file"
                    )
                yield name, key, f.get_tensor(key)


def shard_names(num_shards: int) -> list[str]:
    return [f"model-{i + 1:05d}-of-{num_shards:05d}.safetensors" for i in range(num_shards)]


def write_shards(
    tensors: dict[str, torch.Tensor], directory: str | os.PathLike, max_shard_size: int | str = "5GB"
) -> dict:
    """Write tensors as `model-0000i-of-0000n.safetensors` shards (insertion order) + the index; return the index."""
    limit = parse_size(max_shard_size)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    total = 0
    for key, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][key] = tensor.detach().to("cpu").contiguous()
        size += nbytes
        total += nbytes
    names = shard_names(len(shards))
    mapping = {}
    for name, shard in zip(names, shards):
        save_file(shard, os.path.join(directory, name), metadata={"format": "pt"})
        mapping.update({key: name for key in shard})
    index = {"metadata": {"total_size": total}, "weight_map": mapping}
    with open(os.path.join(directory, INDEX_NAME), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    return index


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `target`; on success move its content to `target` (see module doc)."""
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
    old_shards = set()
    if (target / INDEX_NAME).is_file():
        with contextlib.suppress(Exception), open(target / INDEX_NAME) as f:
            old_shards = set(json.load(f)["weight_map"].values())
    last = [INDEX_NAME, CONFIG_NAME]
    for path in sorted(tmp.iterdir(), key=lambda p: p.name in last):
        os.replace(path, target / path.name)
    new_shards = set(weight_map(target).values())
    for name in old_shards - new_shards:
        with contextlib.suppress(FileNotFoundError):
            (target / name).unlink()
    if (target / SINGLE_NAME).is_file() and (target / INDEX_NAME).is_file() and SINGLE_NAME not in new_shards:
        (target / SINGLE_NAME).unlink()
    shutil.rmtree(tmp, ignore_errors=True)


# ----- released-layout side files -----------------------------------------------------------------------------------
def released_generation_config(config: XGenMMConfig) -> dict:
    return {
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
    }


def released_preprocessor_config(config: XGenMMConfig) -> dict:
    size = config.vision_config.image_size
    return {
        "auto_map": {"AutoImageProcessor": "image_processing_blip_3.Blip3ImageProcessor"},
        "image_processor_type": "Blip3ImageProcessor",
        "image_mean": list(config.image_mean),
        "image_std": list(config.image_std),
        "size": [size, size],
        "resize_mode": "squash",
        "interpolation_mode": "bicubic",
        "grids": config.anyres_grids,
    }


def write_config(config: XGenMMConfig, directory: str | os.PathLike, layout: str) -> None:
    """config.json of the layout; the released layout also gets generation and preprocessor configs."""
    directory = Path(directory)
    if layout == "xgenmm":
        config.save_pretrained(directory)
        return
    if layout != "released":
        raise ValueError(f"layout must be 'xgenmm' or 'released', got {layout!r}")
    for name, d in (
        (CONFIG_NAME, config.to_released_dict()),
        (GENERATION_CONFIG_NAME, released_generation_config(config)),
        (PREPROCESSOR_CONFIG_NAME, released_preprocessor_config(config)),
    ):
        with open(directory / name, "w") as f:
            json.dump(d, f, indent=2)
            f.write("\n")


def to_layout_key(key: str, layout: str) -> str:
    return RELEASED_PREFIX + key if layout == "released" else key


def from_layout_key(key: str, layout: str, source: str | os.PathLike = "") -> str:
    if layout != "released":
        return key
    if not key.startswith(RELEASED_PREFIX):
        raise ValueError(f"{source}: tensor {key!r} lacks the released layout's {RELEASED_PREFIX!r} prefix")
    return key[len(RELEASED_PREFIX) :]


# ----- model save / load --------------------------------------------------------------------------------------------
def save_pretrained(
    model, save_directory, tokenizer=None, max_shard_size="5GB", layout: str = "xgenmm"
) -> None:
    """See `XGenMM.save_pretrained`."""
    state = {to_layout_key(k, layout): v for k, v in model.state_dict().items()}
    with atomic_directory(save_directory) as tmp:
        write_config(model.config, tmp, layout)
        write_shards(state, tmp, max_shard_size)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)


def check_keys(expected: dict[str, torch.Size], found: dict[str, torch.Size], source) -> None:
    """Raise a ValueError naming missing, unexpected and mis-shaped tensors."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(found[k])} vs model {tuple(expected[k])}"
        for k in set(expected) & set(found)
        if tuple(found[k]) != tuple(expected[k])
    )
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if items:
                more = f" (+{len(items) - 10} more)" if len(items) > 10 else ""
                parts.append(f"{len(items)} {label}: {items[:10]}{more}")
        raise ValueError(f"{source}: checkpoint does not match the model config: " + "; ".join(parts))


def _device(device_map) -> torch.device:
    if device_map is None:
        return torch.device("cpu")
    if device_map == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device_map, (str, torch.device, int)):
        return torch.device(device_map)
    raise ValueError(f"device_map must be a device (e.g. 'cpu', 'cuda:0') or 'auto', got {device_map!r}")


def load_pretrained(cls, path_or_repo_id, dtype=None, device_map=None, attn_implementation="sdpa"):
    """See `XGenMM.from_pretrained`."""
    from .modeling import empty_parameters

    directory = resolve_checkpoint_dir(path_or_repo_id)
    config = XGenMMConfig.from_pretrained(directory)
    layout = detect_layout(directory)
    dtype = parse_dtype(dtype)
    device = _device(device_map)
    with empty_parameters():
        model = cls(config, attn_implementation=attn_implementation)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    state = {}
    for _, key, tensor in iter_tensors(directory, device=str(device)):
        state[from_layout_key(key, layout, directory)] = tensor if dtype is None else tensor.to(dtype)
    check_keys(expected, {k: v.shape for k, v in state.items()}, directory)
    model.load_state_dict(state, strict=True, assign=True)
    model.set_trainable()  # reference default: vision encoder frozen
    return model.to(device).eval()


__all__ = [
    "INDEX_NAME",
    "RELEASED_PREFIX",
    "SIDE_FILES",
    "atomic_directory",
    "check_keys",
    "detect_layout",
    "iter_tensors",
    "parse_dtype",
    "parse_size",
    "resolve_checkpoint_dir",
    "save_pretrained",
    "weight_map",
    "write_config",
    "write_shards",
]
