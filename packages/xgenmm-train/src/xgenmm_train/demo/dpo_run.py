"""The embedded default DPO run: ``uv run xgenmm-train dpo``.

Start from the default SFT run's final weights (running the SFT default first if there are none), train with
``configs/default-dpo.yaml`` on its synthetic preference pairs and print the reward accuracy on held-out pairs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import peft
import torch

from xgenmm_lm import XGenMM, build_tokenizer

from ..config import Config, load_config
from ..data import PreferenceCollator, PreferenceDataset
from ..dpo import pair_logps, run_dpo
from .common import configs_dir, cpu_threads, fresh_start, is_rank0
from .sft_run import default_sft_config, ensure_dataset, run_default_sft

DPO_CONFIG = "default-dpo.yaml"


def default_dpo_config(overrides: list[str] | None = None) -> Config:
    """``configs/default-dpo.yaml`` with dotted ``overrides``."""
    return load_config(configs_dir() / DPO_CONFIG, overrides)


def run_default_dpo(overrides: list[str] | None = None, sft_overrides: list[str] | None = None) -> dict:
    """DPO from the default SFT run's final weights on its synthetic preference pairs (the SFT default runs
    first when its final model is missing). ``sft_overrides`` locate that SFT run (e.g. ``run_dir=...``);
    the DPO paths (model, data, eval) follow it unless ``overrides`` set them."""
    cpu_threads()
    sft_config = default_sft_config(sft_overrides)
    sft_dir = Path(sft_config.run_dir)
    data_dir = sft_dir / "data"
    follow = [
        f"model.path={sft_dir / 'final-model'}",
        f"data.path={data_dir / 'dpo_train.json'}",
        f"data.image_folder={data_dir}",
        f"eval.path={data_dir / 'dpo_heldout.json'}",
    ]
    config = default_dpo_config(follow + list(overrides or []))
    if config.model.init == "pretrained" and not Path(config.model.path).is_dir():
        print(f"no default SFT model at {config.model.path}: running the SFT default first", file=sys.stderr)
        run_default_sft(sft_overrides)
    if is_rank0():
        fresh_start(config)  # reference log-probs of an earlier start model must not be reused
        ensure_dataset(data_dir)
    result = run_dpo(config)
    if not is_rank0():
        return result
    acc, n = heldout_reward_accuracy(config, Path(result["checkpoint"]))
    print(f"held-out reward accuracy: {100 * acc:.1f}% on {n} pairs (chance 50%)")
    result["heldout_reward_accuracy"] = acc
    return result


@torch.no_grad()
def heldout_reward_accuracy(config: Config, checkpoint: Path) -> tuple[float, int]:
    """Reward accuracy on the ``eval.path`` pairs → (accuracy, number of pairs): the fraction where the
    policy's implicit reward (log-prob gain over the starting model) of the chosen reply exceeds the rejected's."""
    ref = XGenMM.from_pretrained(config.model.path).eval()
    tokenizer = build_tokenizer(config.model.path)
    if (checkpoint / "model").is_dir():
        policy = XGenMM.from_pretrained(checkpoint / "model").eval()
    else:
        policy = peft.PeftModel.from_pretrained(
            XGenMM.from_pretrained(config.model.path), checkpoint / "adapter"
        ).eval()
    data = PreferenceDataset(config.eval.path, tokenizer, ref, config)
    collate = PreferenceCollator(tokenizer.pad_token_id)
    wins = []
    for s in range(0, len(data), config.eval.batch_size):
        batch = collate([data[i] for i in range(s, min(len(data), s + config.eval.batch_size))])
        pc, pr, _ = pair_logps(policy, batch)
        rc, rr, _ = pair_logps(ref, batch)
        wins += ((pc - rc) > (pr - rr)).tolist()
    return sum(wins) / max(len(wins), 1), len(wins)


__all__ = ["default_dpo_config", "heldout_reward_accuracy", "run_default_dpo"]
