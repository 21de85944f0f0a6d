"""Building the model to train: a released/own checkpoint, a tiny config or a model composed from a causal LM
and a SigLIP tower (pre-training), trainable parts, LoRA (peft),
and saving weights with ``save_pretrained`` (safetensors; under ZeRO-3 the shards are gathered first)."""

from __future__ import annotations

from pathlib import Path

import torch

from .config import Config


def _set_dotted(obj, key: str, value) -> None:
    *parents, last = key.split(".")
    for p in parents:
        obj = obj[p] if isinstance(obj, dict) else getattr(obj, p)
    if isinstance(obj, dict):
        obj[last] = value
    elif not hasattr(obj, last):
        raise KeyError(f"model.tiny_overrides: the tiny config has no attribute '{key}'")
    else:
        setattr(obj, last, value)


def init_dir(config: Config) -> Path:
    """Where a tiny model's initial weights and tokenizer are kept (so a resume rebuilds the same start)."""
    return Path(config.run_dir) / "init"


def build_model(config: Config, texts=None, rank: int = 0):
    """→ (model, tokenizer). ``texts``: a callable returning training strings (only for init=tiny)."""
    from xgenmm_lm import XGenMM, build_tokenizer, compose_model, tiny_config, train_tiny_tokenizer

    m = config.model
    attn = m.attn_implementation
    if m.init == "pretrained":
        model = XGenMM.from_pretrained(m.path, attn_implementation=attn)
        tokenizer = build_tokenizer(m.path)
    elif m.init == "compose":  # pretrained parts, fresh perceiver (seeded alike on every rank)
        torch.manual_seed(config.train.seed)
        model, tokenizer = compose_model(
            m.text_model,
            m.vision_model,
            tokenizer=m.tokenizer,
            num_latents=m.num_latents,
            sampler=dict(m.sampler),
            attn_implementation=attn,
            **dict(m.compose_overrides),
        )
    elif (init_dir(config) / "config.json").is_file():
        model = XGenMM.from_pretrained(init_dir(config), attn_implementation=attn)
        tokenizer = build_tokenizer(init_dir(config))
    else:
        tokenizer = train_tiny_tokenizer(texts(), vocab_size=m.tiny_vocab_size)
        cfg = tiny_config(tokenizer)
        for key, value in m.tiny_overrides.items():
            _set_dotted(cfg, key, value)
        torch.manual_seed(config.train.seed)
        model = XGenMM.from_config(cfg, attn_implementation=attn)
        if rank == 0:
            model.save_pretrained(init_dir(config), tokenizer=tokenizer)
    model.set_trainable(
        vision_encoder=m.train_vision_encoder,
        vision_tokenizer=m.train_vision_tokenizer,
        lang_model=m.train_lang_model,
    )
    if m.gradient_checkpointing:
        layers = m.gradient_checkpointing_layers
        model.gradient_checkpointing_enable(lm_layers=None if layers < 0 else layers)
    if config.lora.enabled:
        model = apply_lora(model, config)
    return model, tokenizer


def apply_lora(model, config: Config):
    """Wrap ``model`` with peft LoRA adapters on ``lora.target_modules``; the perceiver stays fully trainable
    (``modules_to_save``) when ``lora.train_sampler``. With adapters disabled the model is the starting model."""
    import peft

    lc = config.lora
    peft_config = peft.LoraConfig(
        r=lc.r,
        lora_alpha=lc.alpha,
        lora_dropout=lc.dropout,
        target_modules=list(lc.target_modules),
        modules_to_save=["vision_tokenizer"] if lc.train_sampler else None,
    )
    return peft.get_peft_model(model, peft_config)


def is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def base_model(model):
    """The XGenMM under a peft wrapper (or the model itself)."""
    return model.get_base_model() if is_peft(model) else model


def count_parameters(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def save_weights(
    model, tokenizer, out_dir: Path, rank: int, zero_stage: int, merge_lora: bool = False
) -> None:
    """Called on every rank: ``out_dir/model`` (XGenMM.save_pretrained) or, with LoRA, ``out_dir/adapter``
    (peft safetensors) unless ``merge_lora``, which saves merged full weights in ``out_dir/model``."""
    import contextlib

    gather = contextlib.nullcontext()
    if zero_stage == 3:
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)
    with gather:
        if rank != 0:
            return
        if is_peft(model) and not merge_lora:
            model.save_pretrained(str(out_dir / "adapter"), safe_serialization=True)
        elif is_peft(model):
            merged = model.merge_and_unload()
            merged.save_pretrained(out_dir / "model", tokenizer=tokenizer)
        else:
            model.save_pretrained(out_dir / "model", tokenizer=tokenizer)


def all_finite(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.requires_grad)


__all__ = [
    "apply_lora",
    "base_model",
    "build_model",
    "count_parameters",
    "init_dir",
    "is_peft",
    "save_weights",
]
