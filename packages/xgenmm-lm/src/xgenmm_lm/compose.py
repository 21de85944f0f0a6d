"""Compose a new xGen-MM from parts: any transformers causal LM + a SigLIP vision tower + a fresh perceiver.

    model, tokenizer = compose_model("Qwen/Qwen2-0.5B", "google/siglip-so400m-patch14-384", num_latents=128)

The LM and its tokenizer come from `text_model` (a folder or hub id; any `AutoModelForCausalLM`), the vision tower
from `vision_model` (a SigLIP folder or id: a full `SiglipModel` or a saved `SiglipVisionModel`). The perceiver
resampler is new: `dim` = the vision hidden size, `dim_inner` = the LM hidden size, `num_latents` latents and the
released depth / heads / dim_head / ff_mult (6 / 16 / 96 / 4) unless `sampler` says otherwise. The tokenizer gets
`<pad>` (when it has none, or pads with eos) and `<image>`, `<image placeholder>`, `<|endofchunk|>`; the LM gets the
decoupled vocabulary extension for those three (`vocab.py`). A tokenizer longer than the LM's tables (e.g. Llama 3,
whose 128 256 tokens fill its table, plus `<pad>`) first grows the tables (`resize_token_embeddings`, mean-initialised
rows, rounded up to a multiple of 64). The pretrained weights of both parts are kept as loaded.

The open_clip vision backend (`xgenmm_vision.OpenClipVisionEncoder`) is not an `XGenMM` vision encoder: `XGenMM`
builds SigLIP towers only, so `vision_model="open_clip:..."` is refused with that reason.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from xgenmm_sampler import PerceiverResampler, PerceiverResamplerConfig
from xgenmm_vision import SiglipVisionEncoder

from .configuration import RELEASED_SAMPLER, XGenMMConfig
from .modeling import XGenMM
from .tokenization import add_special_tokens, initial_tokenizer_len, stop_token_ids
from .vocab import extend_vocabulary


def _image_stats(vision_model: str) -> dict:
    """`image_mean` / `image_std` of a local SigLIP folder's `preprocessor_config.json` (SigLIP: 0.5), else {}."""
    path = Path(vision_model) / "preprocessor_config.json"
    if not path.is_file():
        return {}
    d = json.loads(path.read_text())
    return {k: d[k] for k in ("image_mean", "image_std") if k in d}


def compose_model(
    text_model: str | os.PathLike,
    vision_model: str | os.PathLike,
    tokenizer=None,
    num_latents: int = 128,
    sampler: dict | None = None,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype | str | None = None,
    **config_overrides,
) -> tuple[XGenMM, object]:
    """A new `XGenMM` from a pretrained causal LM and a pretrained SigLIP → (model, tokenizer).

    Args:
        text_model: folder or hub id of any transformers causal LM (with its tokenizer unless `tokenizer` is given).
        vision_model: folder or hub id of a SigLIP checkpoint.
        tokenizer: a tokenizer object, a folder / id to load one from, or None (= `text_model`'s).
        num_latents: perceiver output tokens per vision group (128 in the released models).
        sampler: other `PerceiverResamplerConfig` fields (depth, heads, dim_head, ff_mult).
        attn_implementation: of the LM ("sdpa", "sdpa_varlen", "flash_attention_2", ...).
        dtype: of all weights (None = float32 / as loaded).
        config_overrides: further `XGenMMConfig` fields (`anyres_grids`, `regroup_mode`, ...).
    The perceiver is drawn from torch's global RNG: seed it for a reproducible start.
    """
    if str(vision_model).startswith("open_clip:"):
        raise NotImplementedError(
            f"vision_model={vision_model!r}: XGenMM builds SigLIP vision towers only; the open_clip backend of "
            "xgenmm_vision (OpenClipVisionEncoder) is not supported by compose. Pass a SigLIP folder or hub id."
        )
    if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer or text_model)
    add_special_tokens(tokenizer)
    n = initial_tokenizer_len(tokenizer)
    load = {"dtype": dtype} if dtype is not None else {}

    lm = AutoModelForCausalLM.from_pretrained(text_model, attn_implementation=attn_implementation, **load)
    if n > lm.get_input_embeddings().num_embeddings:
        lm.resize_token_embeddings(n, pad_to_multiple_of=64, mean_resizing=True)
    vision = SiglipVisionEncoder.from_pretrained(str(vision_model), attn_implementation="sdpa", **load)

    sampler_config = PerceiverResamplerConfig(
        **{
            **RELEASED_SAMPLER,
            "dim": vision.config.hidden_size,
            "dim_inner": lm.config.hidden_size,
            "num_latents": num_latents,
            **(sampler or {}),
        }
    )
    eos = stop_token_ids(tokenizer)
    if not eos:
        raise ValueError(f"{text_model}: the tokenizer has no eos token to end generation")
    kwargs = dict(
        vision_config=copy.deepcopy(vision.config),
        text_config=copy.deepcopy(lm.config),  # vocab_size = the size of the LM's own tables
        sampler_config=sampler_config,
        initial_tokenizer_len=n,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos,
        bos_token_id=tokenizer.bos_token_id,
        **_image_stats(str(vision_model)),
    )
    config = XGenMMConfig(**{**kwargs, **config_overrides})

    with torch.device("meta"):  # the skeleton only: its parts are replaced by the loaded ones
        model = XGenMM.from_config(config, attn_implementation=attn_implementation, dtype=dtype)
    model.vision_encoder = vision
    model.lang_model = extend_vocabulary(
        lm, n, num_additional=3, initializer_range=getattr(lm.config, "initializer_range", 0.02)
    )
    sampler_dtype = next(lm.parameters()).dtype
    model.vision_tokenizer = PerceiverResampler.from_config(sampler_config).to(sampler_dtype)
    leftover = [name for name, p in model.named_parameters() if p.device.type == "meta"]
    leftover += [name for name, b in model.named_buffers() if b.device.type == "meta"]
    if leftover:
        raise RuntimeError(f"compose left parameters unset: {leftover[:5]}")
    model.vision_encoder.freeze()
    return model, tokenizer


__all__ = ["compose_model"]
