"""`xgenmm-convert`: move xGen-MM weights between the released HF layout, this package's layout and LAVIS `.pt` files.

    xgenmm-convert hf-to-xgenmm   SNAPSHOT_DIR OUT_DIR      # released repo (keys vlm.*) -> this package
    xgenmm-convert xgenmm-to-hf   CKPT_DIR OUT_DIR [--remote-code SNAPSHOT_DIR]
    xgenmm-convert lavis-to-xgenmm CKPT.pt OUT_DIR [--config CONFIG] [--tokenizer DIR]

Tensors are renamed only (the released names are `"vlm." + ` this package's names): dtypes and bytes
are kept. Every conversion first checks all tensor names and shapes against the model built from the config on
the `meta` device, and writes atomically. hf-to-xgenmm and xgenmm-to-hf stream one shard at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import GenerationConfig

from .configuration import XGenMMConfig, write_released_configs
from .files import (
    INDEX_NAME,
    RELEASED_PREFIX,
    atomic_directory,
    check_keys,
    detect_layout,
    stored_shapes,
    weight_map,
)
from .modeling import XGenMM
from .processing import XGenMMImageProcessor

# Files copied along with a checkpoint (the configs are written anew for the target layout).
SIDE_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
              "added_tokens.json", "chat_template.jinja")  # fmt: skip


def expected_shapes(config: XGenMMConfig) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape of the model built from `config` (on the meta device, no memory)."""
    with torch.device("meta"):
        model = XGenMM.from_config(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def write_configs(config: XGenMMConfig, directory: Path, layout: str) -> None:
    """config.json, generation_config.json and preprocessor_config.json of the layout."""
    if layout == "released":
        write_released_configs(config, directory)
        return
    config.save_pretrained(directory)
    ids = {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id}
    GenerationConfig(**ids, pad_token_id=config.pad_token_id).save_pretrained(directory)
    XGenMMImageProcessor.from_config(config).save_pretrained(directory)


def _copy_side_files(src: Path, dst: Path) -> None:
    for name in SIDE_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def convert_layout(src: str | os.PathLike, dst: str | os.PathLike, target: str, remote_code=None) -> None:
    """Rename every tensor of the checkpoint in `src` into the `target` layout ("xgenmm" or "released"),
    shard by shard (same shard files, same bytes)."""
    src, dst = Path(src), Path(dst)
    source = detect_layout(src)
    if source == target:
        raise ValueError(f"{src}: already in the {target!r} layout")
    config = XGenMMConfig.from_pretrained(src)
    strip = RELEASED_PREFIX if source == "released" else ""
    add = RELEASED_PREFIX if target == "released" else ""
    check_keys(
        expected_shapes(config), {k.removeprefix(strip): v for k, v in stored_shapes(src).items()}, src
    )
    with atomic_directory(dst) as tmp:
        new_map, total = {}, 0
        for name in dict.fromkeys(weight_map(src).values()):
            with safe_open(src / name, framework="pt") as f:
                tensors = {add + k.removeprefix(strip): f.get_tensor(k) for k in f.keys()}
            save_file(tensors, tmp / name, metadata={"format": "pt"})
            new_map.update({k: name for k in tensors})
            total += sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": new_map}
        (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        _copy_side_files(src, tmp)
        write_configs(config, tmp, target)
        if remote_code is not None:
            code_files = sorted(Path(remote_code).glob("*.py"))
            if not code_files:
                raise FileNotFoundError(f"{remote_code}: no *.py remote-code files to copy")
            for py in code_files:
                shutil.copy2(py, tmp / py.name)


def load_lavis_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A LAVIS checkpoint: a bare state dict or `{"model_state_dict": ...}`, read with `weights_only=True`."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"{path}: cannot read as a weights-only torch checkpoint: {e}") from e
    if isinstance(obj, dict) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (bare or under 'model_state_dict')")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def convert_lavis(src, dst, config_path=None, tokenizer_dir=None, max_shard_size="5GB", dtype=None) -> None:
    """Write a LAVIS `.pt` checkpoint in this package's layout (default config: the released model)."""
    config = XGenMMConfig() if config_path is None else XGenMMConfig.from_pretrained(config_path)
    state = load_lavis_state_dict(src)
    check_keys(expected_shapes(config), {k: tuple(v.shape) for k, v in state.items()}, src)
    with torch.device("meta"):
        model = XGenMM.from_config(config)
    model.load_state_dict(state, assign=True)
    if dtype is not None:
        model.to(getattr(torch, {"bf16": "bfloat16", "fp16": "float16"}.get(dtype, dtype)))
    model.save_pretrained(dst, max_shard_size=max_shard_size)
    if tokenizer_dir is not None:
        _copy_side_files(Path(tokenizer_dir), Path(dst))


def build_parser() -> argparse.ArgumentParser:
    """The `xgenmm-convert` command line."""
    parser = argparse.ArgumentParser(prog="xgenmm-convert", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("hf-to-xgenmm", help="released HF snapshot (keys vlm.*) -> this package's layout")
    p.add_argument("src")
    p.add_argument("dst")
    p = sub.add_parser("xgenmm-to-hf", help="this package's layout -> released HF layout")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument(
        "--remote-code", help="copy the *.py remote-code files from this released snapshot directory"
    )
    p = sub.add_parser("lavis-to-xgenmm", help="LAVIS .pt checkpoint -> this package's layout")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument(
        "--config", help="config.json (either layout) or a checkpoint dir; default: released model"
    )
    p.add_argument("--tokenizer", help="directory whose tokenizer files are copied along")
    p.add_argument("--max-shard-size", default="5GB")
    p.add_argument("--dtype", default=None, help="cast tensors, e.g. bfloat16 (default: keep)")
    return parser


def main(argv=None) -> int:
    """`xgenmm-convert`: convert one checkpoint; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "hf-to-xgenmm":
            convert_layout(args.src, args.dst, "xgenmm")
        elif args.command == "xgenmm-to-hf":
            convert_layout(args.src, args.dst, "released", remote_code=args.remote_code)
        else:
            convert_lavis(args.src, args.dst, args.config, args.tokenizer, args.max_shard_size, args.dtype)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"xgenmm-convert: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
