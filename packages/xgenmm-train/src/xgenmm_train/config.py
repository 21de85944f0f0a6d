"""Typed training configuration: dataclass schemas merged with YAML files and dotted overrides by OmegaConf.

An unknown key or a value of the wrong type raises :class:`ConfigError` naming the full dotted key, e.g.
``train.lr: Value 'abc' of type 'str' could not be converted to Float``.

Layout of a config (every field has a default; see the shipped YAMLs under ``configs/``)::

    task: sft | dpo | pretrain
    run_dir: runs/my-run            # checkpoints, metrics.jsonl, loss.png, summary
    model:      what to build or load, which parts train
    data:       where the records are, template, batching
    train:      optimiser, schedule, batch sizes, precision, NaN policy
    deepspeed:  ZeRO stage, offload, raw overrides
    lora:       peft LoRA settings
    dpo:        beta, rpo_alpha, label smoothing, reference policy
    checkpoint: save_every, keep_last, resume
    logging:    log_every, progress bar, tensorboard, wandb
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key (and file, when there is one)."""


@dataclass
class ModelConfig:
    """The ``model`` section: what to build or load (pretrained, tiny, compose), which parts train, attention,
    checkpointing, compilation."""

    # "pretrained": XGenMM.from_pretrained(path) (a released snapshot or one of our checkpoints);
    # "tiny": xgenmm_lm.tiny_config(tokenizer) with a tokenizer trained in code on the training texts.
    init: str = "pretrained"
    path: str | None = None
    # Overrides applied to the tiny config (dotted XGenMMConfig attribute -> value), only for init=tiny.
    tiny_overrides: dict[str, Any] = field(default_factory=dict)
    tiny_vocab_size: int = 400
    # init=compose (pre-training a new model, see xgenmm_lm.compose_model): any transformers causal LM (folder or
    # hub id) + a SigLIP tower (folder or id) + a fresh perceiver of `num_latents` latents; `tokenizer`: default the
    # text model's; `sampler`: other perceiver sizes (depth, heads, dim_head, ff_mult); `compose_overrides`: further
    # XGenMMConfig fields (regroup_mode, anyres_grids, ...).
    text_model: str | None = None
    vision_model: str | None = None
    tokenizer: str | None = None
    num_latents: int = 128
    sampler: dict[str, Any] = field(default_factory=dict)
    compose_overrides: dict[str, Any] = field(default_factory=dict)
    # Trainable parts (the original's `set_trainable`: vision encoder frozen, sampler and LM trained).
    train_vision_encoder: bool = False
    train_vision_tokenizer: bool = True
    train_lang_model: bool = True
    gradient_checkpointing: bool = False
    # With gradient_checkpointing: how many LM decoder layers (the first ones) to checkpoint; -1 = all. Layers left
    # out keep their activations and skip the recompute (~1.3 GiB per layer at the released size, 9 200 tokens).
    gradient_checkpointing_layers: int = -1
    # Attention of the LM: "sdpa_varlen" (SDPA; packed and right-padded training rows are attended sample by
    # sample, with the flash-attention varlen kernel on CUDA, instead of one dense block-diagonal mask), or any
    # transformers implementation ("sdpa", "eager", "flash_attention_2", ...).
    attn_implementation: str = "sdpa_varlen"
    # Regional compilation: torch.compile each LM decoder layer and each perceiver layer (not the whole model;
    # xgenmm_train.modeling.compile_regions). Fuses the norm / rotary / activation elementwise chains; the first
    # steps compile (about a minute at the released size).
    compile: bool = False


@dataclass
class DataConfig:
    """The ``data`` section: where the records or shards are, template, image handling, batching (padded or
    packed), DataLoader workers."""

    # A LLaVA JSON file, a directory of JSON files or a mixture YAML (the original's `--data_path`).
    path: str | None = None
    # Optional image-path map (first substring key wins, as the original's image folder dict) and base folder
    # for relative paths.
    image_folder: str | None = None
    path_map: dict[str, str] = field(default_factory=dict)
    template: str = "phi_3"
    max_length: int = 2048
    # "length_grouped" (reference sampler, fixed micro-batch size) or "packed" (rows of up to pack_tokens).
    batching: str = "length_grouped"
    pack_tokens: int = 4096
    # length_grouped: global steps per length-sorted megabatch (1 = random batches, only sorted within a step).
    megabatch_steps: int = 8
    num_workers: int = 0
    # Image resize of the anyres processor: "pil" (bit-identical to the original's pixels) or "torch" (more than
    # twice the images/s per data worker; pixels within 2 levels of 255, see xgenmm_vision.AnyResImageProcessor).
    resize_backend: str = "pil"
    # Pre-training (task=pretrain; `path` = a stream mixture YAML of webdataset shards, see xgenmm_data.ShardStream):
    # "anyres" crops or "base" resolution (one crop of the vision tower's size per image); images kept per
    # sample; items in the packing pool (batching=packed); whether <|endofchunk|> is trained; the fraction of bad
    # samples (after 100) that stops the run (None = never, they are counted and reported).
    image_mode: str = "anyres"
    max_images: int = 4
    pack_pool: int = 32
    endofchunk_loss: bool = True
    max_bad_fraction: float | None = None


@dataclass
class TrainConfig:
    """The ``train`` section: seed, length, batch sizes, optimiser and schedule, precision, NaN policy."""

    seed: int = 42
    epochs: int = 1
    max_steps: int | None = None  # stop after this many optimizer steps; null = no limit (the epochs)
    micro_batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2e-5
    lr_scheduler: str = "cosine"  # cosine | linear | constant
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    clip_grad: float = 1.0  # 0 disables clipping
    # "adamw": torch AdamW, its fused kernel when the parameters are on a GPU (no full-size temporaries);
    # "adamw_foreach": torch AdamW's multi-tensor form (each step allocates temporaries as large as the
    # optimizer state); "deepspeed_adam": deepspeed.ops.adam.FusedAdam (GPU only, JIT-built on first use).
    # With deepspeed.offload_optimizer the optimizer is always DeepSpeedCPUAdam.
    optimizer: str = "adamw"
    # Trainable parameters are split, in model order, into optimizer param groups of at most this many elements
    # (same hyper-parameters, so the same update). ZeRO-1/2 turn one group's gradients into fp32 at a time in
    # the optimizer step: with one group of all 3.9 B parameters that transient (bf16 copy + fp32, 6 bytes per
    # parameter) is what tops the GPU memory peak. 0 = one group. Models below this size keep one group.
    optimizer_group_params: int = 250_000_000
    precision: str = "bf16"  # bf16 | fp16 | fp32
    nan_policy: str = "stop"  # stop | skip


@dataclass
class DeepSpeedConfig:
    """The ``deepspeed`` section: ZeRO stage, CPU offload, raw DeepSpeed config entries."""

    zero_stage: int = 2
    offload_optimizer: bool = False
    offload_params: bool = False  # ZeRO-3 only
    # Raw DeepSpeed config entries merged last (e.g. {"zero_optimization": {"reduce_bucket_size": 5e8}}).
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoraConfig:
    """The ``lora`` section: peft LoRA adapters (rank, alpha, dropout, target modules) and how they are saved."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    )
    train_sampler: bool = True  # keep the vision tokenizer (perceiver) fully trainable next to the adapters
    merge_on_save: bool = False  # save merged full weights instead of the adapters


@dataclass
class DpoConfig:
    """The ``dpo`` section: beta, RPO weight, label smoothing and the reference policy."""

    beta: float = 0.1
    rpo_alpha: float = 0.0  # weight of the SFT (NLL) term on the chosen reply
    label_smoothing: float = 0.0
    # Reference policy: "precompute" (one pass writes log-probs to disk, resumable), "lora" (adapters disabled),
    # or "model" (a second, frozen copy of the starting model: costs its memory; for comparison).
    reference: str = "precompute"


@dataclass
class CheckpointConfig:
    """The ``checkpoint`` section: how often to save, how many to keep, what to resume from."""

    save_every: int | None = 500  # optimizer steps; null saves only at the end
    keep_last: int = 2
    resume: str | None = None  # None | "auto" | a checkpoint directory
    save_optimizer: bool = True


@dataclass
class LoggingConfig:
    """The ``logging`` section: metrics.jsonl interval, progress bar, tensorboard, wandb, loss plot."""

    log_every: int = 1
    progress_bar: bool = True
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "xgenmm"
    plot: bool = True  # loss.png at the end (needs the `plot` extra)


@dataclass
class EvalConfig:
    """The ``eval`` section: the held-out set the embedded default runs evaluate on after training."""

    # Held-out evaluation after training (used by the embedded default): greedy generation on `path`.
    path: str | None = None
    max_new_tokens: int = 8
    batch_size: int = 32


@dataclass
class Config:
    """A whole training config: the task, the run folder and one section per concern (module docstring)."""

    task: str = "sft"  # sft | dpo | pretrain
    run_dir: str = "runs/xgenmm-sft"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    dpo: DpoConfig = field(default_factory=DpoConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


_CHOICES = {
    "task": ("sft", "dpo", "pretrain"),
    "model.init": ("pretrained", "tiny", "compose"),
    "data.image_mode": ("anyres", "base"),
    "data.batching": ("length_grouped", "packed"),
    "data.resize_backend": ("pil", "torch"),
    "train.lr_scheduler": ("cosine", "linear", "constant"),
    "train.precision": ("bf16", "fp16", "fp32"),
    "train.nan_policy": ("stop", "skip"),
    "train.optimizer": ("adamw", "adamw_foreach", "deepspeed_adam"),
    "dpo.reference": ("precompute", "lora", "model"),
}


# Numeric keys: (dotted key, check, the rule in words). A value must be finite and pass the check.
_NUMBERS = [
    ("model.tiny_vocab_size", lambda v: v >= 1, ">= 1"),
    ("data.max_length", lambda v: v >= 1, ">= 1"),
    ("data.pack_tokens", lambda v: v >= 1, ">= 1"),
    ("data.megabatch_steps", lambda v: v >= 1, ">= 1"),
    ("data.num_workers", lambda v: v >= 0, ">= 0"),
    ("train.seed", lambda v: v >= 0, ">= 0"),
    ("train.epochs", lambda v: v >= 1, ">= 1"),
    ("train.max_steps", lambda v: v >= 1, "a positive number of optimizer steps"),
    ("train.micro_batch_size", lambda v: v >= 1, ">= 1"),
    ("train.grad_accum", lambda v: v >= 1, ">= 1"),
    ("train.lr", lambda v: v > 0, "> 0"),
    ("train.warmup_steps", lambda v: v >= 0, ">= 0"),
    ("train.min_lr_ratio", lambda v: 0 <= v <= 1, "between 0 and 1"),
    ("train.weight_decay", lambda v: v >= 0, ">= 0"),
    ("train.betas", lambda v: 0 <= v < 1, "two numbers in [0, 1)"),
    ("train.eps", lambda v: v > 0, "> 0"),
    ("train.clip_grad", lambda v: v >= 0, ">= 0 (0 disables clipping)"),
    ("train.optimizer_group_params", lambda v: v >= 0, ">= 0"),
    ("lora.r", lambda v: v >= 1, ">= 1"),
    ("lora.alpha", lambda v: v > 0, "> 0"),
    ("lora.dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("dpo.beta", lambda v: v > 0, "> 0"),
    ("dpo.rpo_alpha", lambda v: v >= 0, ">= 0"),
    ("dpo.label_smoothing", lambda v: 0 <= v < 0.5, "in [0, 0.5)"),
    ("checkpoint.save_every", lambda v: v >= 1, "a positive number of optimizer steps"),
    ("checkpoint.keep_last", lambda v: v >= 1, ">= 1"),
    ("logging.log_every", lambda v: v >= 1, ">= 1"),
    ("eval.max_new_tokens", lambda v: v >= 1, ">= 1"),
    ("eval.batch_size", lambda v: v >= 1, ">= 1"),
]
_NULLABLE = {"train.max_steps": "no limit", "checkpoint.save_every": "save only at the end"}


def _error(e: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(e, "full_key", None) or "?"
    msg = str(e).split("\n")[0]
    return ConfigError(f"{source}: config key '{key}': {msg}")


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, task: str | None = None
) -> Config:
    """Schema defaults ← YAML file ← ``task`` ← dotted overrides (``train.lr=1e-4``) → a validated :class:`Config`."""
    cfg: DictConfig = OmegaConf.structured(Config)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
        except OmegaConfBaseException as e:
            raise _error(e, str(path)) from None
    if task is not None:
        cfg.task = task
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key.sub=value")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as e:
            raise _error(e, f"override '{item}'") from None
    try:
        OmegaConf.resolve(cfg)
        config: Config = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        raise _error(e, str(path or "config")) from None
    validate(config)
    return config


def validate(config: Config) -> None:
    """Check choices and combinations that the types alone do not catch."""
    for key, choices in _CHOICES.items():
        value = OmegaConf.select(OmegaConf.structured(config), key)
        if value not in choices:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {', '.join(choices)}")
    if config.model.init == "pretrained" and not config.model.path:
        raise ConfigError("config key 'model.path': required when model.init=pretrained")
    if config.model.init == "compose":
        for key in ("text_model", "vision_model"):
            if not getattr(config.model, key):
                raise ConfigError(f"config key 'model.{key}': required when model.init=compose")
    if config.task == "pretrain" and config.train.max_steps <= 0:
        raise ConfigError(
            "config key 'train.max_steps': pre-training reads a stream, give the number of steps (> 0)"
        )
    if not config.data.path:
        raise ConfigError("config key 'data.path': no training data given")
    if config.deepspeed.zero_stage not in (0, 1, 2, 3):
        raise ConfigError(
            f"config key 'deepspeed.zero_stage': {config.deepspeed.zero_stage} is not 0, 1, 2 or 3"
        )
    if config.deepspeed.offload_params and config.deepspeed.zero_stage != 3:
        raise ConfigError("config key 'deepspeed.offload_params': needs deepspeed.zero_stage=3")
    if config.model.gradient_checkpointing_layers < -1:
        raise ConfigError("config key 'model.gradient_checkpointing_layers': must be -1 (all) or >= 0")
    for key, ok, rule in _NUMBERS:
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value is None and key in _NULLABLE:
            continue
        values = value if isinstance(value, list) else [value]
        bad_length = key == "train.betas" and len(values) != 2
        if value is None or bad_length or not all(math.isfinite(v) and ok(v) for v in values):
            null = f" (null = {_NULLABLE[key]})" if key in _NULLABLE else ""
            raise ConfigError(f"config key '{key}': {value!r} is not allowed; it must be {rule}{null}")
    if config.dpo.reference == "lora" and config.task == "dpo" and not config.lora.enabled:
        raise ConfigError("config key 'dpo.reference': 'lora' needs lora.enabled=true")


def to_yaml(config: Config) -> str:
    """The config as YAML (what ``--print-config`` prints and ``<run_dir>/config.yaml`` holds)."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def to_dict(config: Config) -> dict:
    """The config as plain nested dicts and lists (e.g. for wandb)."""
    return OmegaConf.to_container(OmegaConf.structured(config))


__all__ = [
    "CheckpointConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DeepSpeedConfig",
    "DpoConfig",
    "EvalConfig",
    "LoggingConfig",
    "LoraConfig",
    "ModelConfig",
    "TrainConfig",
    "load_config",
    "to_dict",
    "to_yaml",
    "validate",
]
