"""Building the model to train: a released/own checkpoint, a tiny config or a model composed from a causal LM
and a SigLIP tower (pre-training), trainable parts, LoRA (peft),
and saving weights with ``save_pretrained`` (safetensors; under ZeRO-3 the shards are gathered first)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import peft
import torch
from safetensors import safe_open

from xgenmm_lm import XGenMM, build_tokenizer, compose_model, tiny_config, train_tiny_tokenizer
from xgenmm_lm.attention import segment_lengths_as_tensor

from .config import Config
from .errors import TrainError


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


def _damaged_safetensors(folder: Path) -> str | None:
    """The first ``*.safetensors`` file under ``folder`` whose header cannot be read (e.g. a truncated copy)."""
    for f in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(f, framework="pt") as h:
                h.keys()
        except Exception as e:
            return f"{f}: unreadable safetensors file ({e})"
    return None


def load_pretrained(path, attn: str):
    """``XGenMM.from_pretrained`` + ``build_tokenizer`` → (model, tokenizer); a missing or damaged checkpoint
    raises TrainError naming the file and what to do."""
    try:
        return XGenMM.from_pretrained(path, attn_implementation=attn), build_tokenizer(path)
    except Exception as e:
        folder = Path(path)
        damaged = folder.is_dir() and _damaged_safetensors(folder)
        if damaged:
            message = f"{damaged}; the file is damaged or incomplete: copy it again"
        elif not folder.exists():
            message = (
                f"model.path={path}: no such folder (nor a hub id in the local cache); point model.path at a "
                "checkpoint folder (config.json + *.safetensors, e.g. <run_dir>/final-model)"
            )
        else:
            message = (
                f"model.path={path}: cannot load the model ({e.__class__.__name__}: {e}); point model.path at "
                "a checkpoint folder (config.json + *.safetensors, e.g. <run_dir>/final-model)"
            )
        raise TrainError(message) from e


def build_model(config: Config, texts=None, rank: int = 0):
    """→ (model, tokenizer). ``texts``: a callable returning training strings (only for init=tiny)."""
    m = config.model
    attn = m.attn_implementation
    if m.init == "pretrained":
        model, tokenizer = load_pretrained(m.path, attn)
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
        model, tokenizer = load_pretrained(init_dir(config), attn)
    else:
        tokenizer = train_tiny_tokenizer(texts(), vocab_size=m.tiny_vocab_size)
        cfg = tiny_config(tokenizer)
        for key, value in m.tiny_overrides.items():
            _set_dotted(cfg, key, value)
        torch.manual_seed(config.train.seed)
        model = XGenMM.from_config(cfg, attn_implementation=attn)
        if rank == 0:
            model.save_pretrained(init_dir(config), tokenizer=tokenizer)
    return prepare_model(model, config), tokenizer


def prepare_model(model, config: Config):
    """The training set-up of a built XGenMM, as the ``model`` and ``lora`` config sections say: trainable parts,
    (selective) gradient checkpointing, LoRA adapters, regional compilation → the model (peft-wrapped with
    LoRA). ``build_model`` calls it; benchmarks that build their own model (random real-size weights) too."""
    m = config.model
    model.set_trainable(
        vision_encoder=m.train_vision_encoder,
        vision_tokenizer=m.train_vision_tokenizer,
        lang_model=m.train_lang_model,
    )
    if m.gradient_checkpointing:
        layers = m.gradient_checkpointing_layers
        model.gradient_checkpointing_enable(lm_layers=None if layers < 0 else layers)
    if config.lora.enabled:
        model = apply_lora(model, config, base=base_checkpoint(config))
    if m.compile:
        compile_regions(model)
    return model


def compiled_regions(model) -> list[torch.nn.Module]:
    """The repeated blocks that ``compile_regions`` compiles: each LM decoder layer, and each perceiver layer's
    attention and feed-forward modules (a perceiver layer is a (attention, feed-forward) pair in a ModuleList,
    which has no forward of its own)."""
    xgenmm = base_model(model)
    lm = xgenmm.lang_model
    decoder = getattr(lm, lm.base_model_prefix, lm)
    regions = list(decoder.layers)
    for attention, feed_forward in xgenmm.vision_tokenizer.layers:
        regions += [attention, feed_forward]
    return regions


def compile_regions(model, **compile_kwargs) -> None:
    """Regional compilation (config key ``model.compile``): ``torch.compile`` each block of
    ``compiled_regions`` in place (``nn.Module.compile``), not the whole model.

    The blocks of one kind share their code, so one compilation serves every layer (parameters are graph
    inputs). Compilation happens on the first forward. The packed-row ("sdpa_varlen") attention inside each
    decoder layer runs outside the graph (``xgenmm_lm.attention``) and receives the sample lengths as a CPU
    tensor (a forward pre-hook on the decoder), so a new number of samples per row does not recompile.
    Checkpointing and LoRA compose: the checkpointed call recomputes the compiled block."""
    for module in compiled_regions(model):
        module.compile(**compile_kwargs)
    lm = base_model(model).lang_model
    decoder = getattr(lm, lm.base_model_prefix, lm)
    decoder.register_forward_pre_hook(segment_lengths_as_tensor, with_kwargs=True)


def base_checkpoint(config: Config) -> str:
    """The checkpoint the model starts from: ``model.path`` (absolute when it is a local folder) or, for
    ``model.init=tiny``, ``<run_dir>/init``. Saved LoRA adapters record it as ``base_model_name_or_path``."""
    if config.model.init == "pretrained":
        path = Path(config.model.path)
        return str(path.resolve()) if path.exists() else str(config.model.path)
    return str(init_dir(config).resolve())


def apply_lora(model, config: Config, base: str | None = None):
    """Wrap ``model`` with peft LoRA adapters on ``lora.target_modules``; the perceiver stays fully trainable
    (``modules_to_save``) when ``lora.train_sampler``. With adapters disabled the model is the starting model.
    ``base``: the base checkpoint written into the saved ``adapter_config.json`` (``base_model_name_or_path``;
    peft would take ``model.name_or_path``, which an ``XGenMM`` does not have, and write None)."""
    lc = config.lora
    peft_config = peft.LoraConfig(
        r=lc.r,
        lora_alpha=lc.alpha,
        lora_dropout=lc.dropout,
        target_modules=list(lc.target_modules),
        modules_to_save=["vision_tokenizer"] if lc.train_sampler else None,
    )
    model = peft.get_peft_model(model, peft_config)
    if base is not None:
        model.peft_config["default"].base_model_name_or_path = base
    return model


def is_peft(model) -> bool:
    """Whether ``model`` is peft-wrapped (LoRA adapters)."""
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def base_model(model):
    """The XGenMM under a peft wrapper (or the model itself)."""
    return model.get_base_model() if is_peft(model) else model


def count_parameters(model) -> tuple[int, int]:
    """→ (all parameters, trainable parameters) of ``model``, in elements."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def save_weights(
    model, tokenizer, out_dir: Path, rank: int, zero_stage: int, merge_lora: bool = False
) -> None:
    """Called on every rank: ``out_dir/model`` (XGenMM.save_pretrained) or, with LoRA, ``out_dir/adapter``
    (peft safetensors) unless ``merge_lora``, which saves merged full weights in ``out_dir/model``."""
    gather = contextlib.nullcontext()
    if zero_stage == 3:
        import deepspeed  # on use (see the docstring of distributed.py: ~2 s and a log line on every --help)

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
    """Whether every trainable parameter of ``model`` is finite (checked before each checkpoint save)."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.requires_grad)


__all__ = [
    "apply_lora",
    "base_checkpoint",
    "base_model",
    "build_model",
    "compile_regions",
    "compiled_regions",
    "count_parameters",
    "init_dir",
    "is_peft",
    "prepare_model",
    "save_weights",
]
