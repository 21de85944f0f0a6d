"""Token-level losses for SFT and DPO.

SFT normalisation (differs from the reference on purpose): the reference averages the cross-entropy over the
supervised tokens of each micro-batch and then averages micro-batches (LAVIS
`train_utils.finetune_one_epoch`), so a micro-batch with few supervised tokens weighs as much as a long one.
Here each micro-batch contributes ``sum of token CE`` and the optimizer step divides by the number of
supervised tokens across ALL micro-batches of the step on ALL ranks, so the gradient is the same whatever the
micro-batch split, the packing or the number of GPUs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The next-token quantities live in xgenmm_lm.losses (one implementation each); re-exported here.
from xgenmm_lm.losses import (
    IGNORE_INDEX,
    count_supervised_tokens,
    sequence_logps,
    sft_loss_sum,
    shifted_token_logps,
)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sigmoid DPO loss (Rafailov et al. 2023, eq. 7) with conservative label smoothing (cDPO).

    All inputs (B,) summed sequence log-probs. With ``h = beta * ((pc - rc) - (pr - rr))``:
    ``loss = -(1 - ε) log σ(h) - ε log σ(-h)``, averaged over the batch. Returns the per-pair losses (B,) and
    the metrics ``rewards/chosen = beta (pc - rc)``, ``rewards/rejected``, ``rewards/accuracy`` (chosen > rejected)
    and ``rewards/margin`` (each (B,), detached).
    """
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    h = chosen_rewards - rejected_rewards
    losses = -(1.0 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)
    metrics = {
        "rewards/chosen": chosen_rewards.detach(),
        "rewards/rejected": rejected_rewards.detach(),
        "rewards/accuracy": (chosen_rewards > rejected_rewards).float().detach(),
        "rewards/margin": h.detach(),
    }
    return losses, metrics


__all__ = [
    "IGNORE_INDEX",
    "count_supervised_tokens",
    "dpo_loss",
    "sequence_logps",
    "sft_loss_sum",
    "shifted_token_logps",
]
