"""xgenmm-train: pre-training, SFT and DPO of xGen-MM models on DeepSpeed, exact resume, and embedded CPU demo runs
(``xgenmm_train.demo``).

from xgenmm_train import load_config, run_sft
run_sft(load_config("packages/xgenmm-train/configs/default-sft.yaml", ["train.max_steps=20"]))
"""

from .checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from .config import Config, ConfigError, load_config, to_yaml
from .distributed import build_engine, deepspeed_config, init_distributed
from .dpo import DPORecipe, run_dpo
from .errors import (
    EXIT_ERROR,
    EXIT_PREEMPTED,
    BadPreferenceRecord,
    CheckpointError,
    NonFiniteLoss,
    Preempted,
    TrainError,
)
from .losses import dpo_loss, sequence_logps, sft_loss_sum
from .pretrain import PretrainRecipe, run_pretrain
from .recipe import Recipe, StepContext
from .sft import SFTRecipe, run_sft
from .trainer import train

__version__ = "0.1.0"

__all__ = [
    "EXIT_ERROR",
    "EXIT_PREEMPTED",
    "CheckpointError",
    "Config",
    "ConfigError",
    "DPORecipe",
    "NonFiniteLoss",
    "Preempted",
    "PretrainRecipe",
    "Recipe",
    "SFTRecipe",
    "StepContext",
    "build_engine",
    "deepspeed_config",
    "dpo_loss",
    "init_distributed",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_config",
    "run_dpo",
    "run_pretrain",
    "run_sft",
    "save_checkpoint",
    "sequence_logps",
    "sft_loss_sum",
    "BadPreferenceRecord",
    "TrainError",
    "to_yaml",
    "train",
    "verify_checkpoint",
]
