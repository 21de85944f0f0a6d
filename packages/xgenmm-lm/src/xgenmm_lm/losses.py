"""The next-token quantities, in one place: per-token log-probabilities of the shifted labels, and what the
trainers reduce them to (the mean CE of `XGenMM.forward`, SFT's summed CE, DPO's summed sequence log-probs).

Position t predicts `labels[t + 1]`, as in the transformers causal-LM loss; -100 is not supervised. With
`segment_ids` (packed rows) a target in another sample than its predicting position is not supervised either, so
packed and unpacked rows give the same numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


def shifted_token_logps(
    logits: torch.Tensor, labels: torch.Tensor, segment_ids: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits `(B, L, V)`, labels `(B, L)`, segment_ids `(B, L)` or None → (logps `(B, L-1)` fp32, 0 where not
    supervised; mask `(B, L-1)` bool)."""
    target = labels[:, 1:].to(logits.device)
    mask = target != IGNORE_INDEX
    if segment_ids is not None:
        segments = segment_ids.to(logits.device)
        mask &= segments[:, 1:] == segments[:, :-1]
    logps = -F.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), target.masked_fill(~mask, 0), reduction="none"
    )
    return logps.masked_fill(~mask, 0.0), mask


def shifted_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    segment_ids: torch.Tensor | None = None,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean next-token CE over the supervised targets, or their sum divided by `num_items_in_batch` when given
    (gradient accumulation). Shapes as `shifted_token_logps`."""
    logps, mask = shifted_token_logps(logits, labels, segment_ids)
    return -logps.sum() / (mask.sum() if num_items_in_batch is None else num_items_in_batch)


def sft_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum of the shifted CE over the supervised tokens, and their count: logits `(B, L, V)`, labels `(B, L)`."""
    logps, mask = shifted_token_logps(logits, labels)
    return -logps.sum(), int(mask.sum())


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of the supervised tokens of each row: `(B, L, V)`, `(B, L)` → `(B,)`."""
    return shifted_token_logps(logits, labels)[0].sum(-1)


def count_supervised_tokens(labels: torch.Tensor) -> int:
    """Supervised targets after the causal shift: labels `(B, L)` → an int."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def supervised_token_logps(
    hidden: torch.Tensor, labels: torch.Tensor, head: nn.Module, where: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`shifted_token_logps` of `head(hidden)`, with the LM head run only where a label is supervised.

    hidden `(B, L, D)` final hidden states, labels `(B, L)`, head the LM's output layer, where `(N, 2)` =
    `(labels[:, 1:] != -100).nonzero()` if already computed → (logps `(B, L-1)` fp32, mask `(B, L-1)` bool),
    without the `(B, L, V)` logits (nor their fp32 copy) of the unsupervised positions.
    """
    batch, length, dim = hidden.shape
    mask = labels[:, 1:] != IGNORE_INDEX  # (B, L-1)
    if where is None:
        where = mask.nonzero()  # (N, 2): row, position (a host sync)
    rows, pos = where[:, 0], where[:, 1]
    picked = hidden.reshape(batch * length, dim).index_select(0, rows * length + pos)  # (N, D)
    logits = head(picked).float()  # (N, V)
    targets = labels.reshape(-1).index_select(0, rows * length + pos + 1)
    logps = -F.cross_entropy(logits, targets, reduction="none")  # (N,)
    out = logps.new_zeros(batch * (length - 1)).index_put((rows * (length - 1) + pos,), logps)
    return out.view(batch, length - 1), mask


__all__ = [
    "IGNORE_INDEX",
    "count_supervised_tokens",
    "sequence_logps",
    "sft_loss_sum",
    "shifted_cross_entropy",
    "shifted_token_logps",
    "supervised_token_logps",
]
