import math

import pytest
import torch

from xgenmm_train.losses import dpo_loss, sequence_logps, sft_loss_sum


def test_dpo_loss_hand_computed():
    # beta 0.1: chosen reward 0.1*(-1 - -2) = 0.1, rejected 0.1*(-3 - -2) = -0.1, h = 0.2
    # loss = -log sigmoid(0.2) = log(1 + e^-0.2) = 0.598139
    losses, m = dpo_loss(
        torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.1
    )
    assert losses.item() == pytest.approx(math.log1p(math.exp(-0.2)), abs=1e-6)
    assert m["rewards/chosen"].item() == pytest.approx(0.1)
    assert m["rewards/rejected"].item() == pytest.approx(-0.1)
    assert m["rewards/margin"].item() == pytest.approx(0.2)
    assert m["rewards/accuracy"].item() == 1.0
    # label smoothing 0.25: 0.75 * log(1+e^-0.2) + 0.25 * log(1+e^0.2) = 0.648139
    ls, _ = dpo_loss(
        torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]), 0.1, 0.25
    )
    assert ls.item() == pytest.approx(
        0.75 * math.log1p(math.exp(-0.2)) + 0.25 * math.log1p(math.exp(0.2)), abs=1e-6
    )
    # equal policy and reference: log 2, accuracy 0 (strict)
    l0, m0 = dpo_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.zeros(3))
    assert torch.allclose(l0, torch.full((3,), math.log(2)))
    assert m0["rewards/accuracy"].sum() == 0


def test_sequence_logps_counts_only_supervised_shifted_tokens():
    logits = torch.zeros(1, 4, 5)  # uniform: every token log(1/5)
    labels = torch.tensor([[-100, 2, -100, 3]])
    assert sequence_logps(logits, labels).item() == pytest.approx(2 * math.log(0.2))
    ce, n = sft_loss_sum(logits, labels)
    assert n == 2 and ce.item() == pytest.approx(-2 * math.log(0.2))


def test_sft_sum_matches_reference_mean_times_count():
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 11)
    labels = torch.randint(0, 11, (2, 7))
    labels[0, :3] = -100
    ce, n = sft_loss_sum(logits, labels)
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1))
    assert ce.item() / n == pytest.approx(ref.item(), rel=1e-5)
