"""Loading a checkpoint for inference: our `save_pretrained` folders or a released HF snapshot folder.

Device and dtype defaults: CUDA in bfloat16 when a GPU is visible, else CPU in float32 (bf16 matmuls on CPU are
slow and the tiny test models are float32).
"""

from __future__ import annotations

from pathlib import Path

import torch

from xgenmm_lm import XGenMM, build_tokenizer

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}  # fmt: skip


def pick_device(device: str | None = None) -> torch.device:
    """`device` as given, else `cuda` when available, else `cpu`."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """A dtype name (`bf16`, `float32`, ...) or None -> bf16 on CUDA, fp32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def load_model(path, device: str | None = None, dtype: str | torch.dtype | None = None):
    """Load `(model, tokenizer)` from a checkpoint folder, in eval mode on `device`.

    path: a folder written by `XGenMM.save_pretrained(dir, tokenizer=...)`, or a released snapshot folder (its
    `config.json` layout is read by `XGenMMConfig`). The tokenizer is read from the same folder with
    `xgenmm_lm.build_tokenizer`, which adds the special tokens the model expects.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"not a checkpoint folder (no config.json): {path}")
    dev = pick_device(device)
    model = XGenMM.from_pretrained(str(path), dtype=pick_dtype(dtype, dev))
    model.to(dev).eval()
    tokenizer = build_tokenizer(str(path))
    return model, tokenizer


__all__ = ["load_model", "pick_device", "pick_dtype", "DTYPES"]
