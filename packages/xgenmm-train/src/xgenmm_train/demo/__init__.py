"""The embedded default runs (CPU demos on a tiny model and synthetic data): ``uv run xgenmm-train``,
``uv run xgenmm-train dpo`` and ``uv run xgenmm-train pretrain``.

Demo code only: the recipes, the trainer and the rest of ``xgenmm_train`` never import this package; the CLI does
(for the runs without ``--config``). ``sft_data`` / ``pretrain_data`` write the synthetic datasets,
``sft_run`` / ``dpo_run`` / ``pretrain_run`` run the real pipeline on them and report held-out accuracy.
"""

from .dpo_run import default_dpo_config, run_default_dpo
from .pretrain_run import default_pretrain_config, run_default_pretrain
from .sft_run import default_sft_config, run_default_sft

__all__ = [
    "default_dpo_config",
    "default_pretrain_config",
    "default_sft_config",
    "run_default_dpo",
    "run_default_pretrain",
    "run_default_sft",
]
