import re

import pytest

from xgenmm_train.demo import run_default_sft


def test_nan_loss_stops_naming_the_step(tmp_path, synth, make_config):
    import torch

    from xgenmm_train.distributed import build_engine, init_distributed
    from xgenmm_train.errors import NonFiniteLoss
    from xgenmm_train.recipe import StepContext

    _, world, device = init_distributed()
    engine, _, _ = build_engine(torch.nn.Linear(2, 2), make_config(tmp_path, synth["mixture"]), world, 5)
    ctx = StepContext(engine, device, world, make_config(tmp_path, synth["mixture"]), step=6)
    with pytest.raises(NonFiniteLoss, match="step 7"):
        ctx.guard(torch.tensor(float("nan")))
    skip = StepContext(
        engine, device, world, make_config(tmp_path, synth["mixture"], **{"train.nan_policy": "skip"}), 0
    )
    zero = skip.guard(torch.tensor(float("inf")))
    assert zero.item() == 0.0 and zero.requires_grad and skip.skipped == 1


@pytest.fixture(scope="module")
def default_sft(tmp_path_factory):
    """The embedded SFT default, run once into a temporary run dir: (sft overrides, result, stdout)."""
    import contextlib
    import io

    sft_dir = tmp_path_factory.mktemp("default") / "default-sft"
    overrides = [f"run_dir={sft_dir}", "logging.progress_bar=false"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = run_default_sft(overrides)
    return overrides, result, out.getvalue()


@pytest.mark.slow
def test_embedded_default_run_learns(default_sft):
    from xgenmm_train.demo.sft_data import CHANCE

    _, result, out = default_sft
    acc = result["heldout_accuracy"]
    assert set(acc) == set(CHANCE)
    for qtype in CHANCE:
        assert re.search(rf"^held-out accuracy {qtype}: \d+\.\d% \(chance \d+%\)$", out, re.M), out
    # the requirement: >= 90 % on every question type whose chance level is <= 25 %
    assert {t: a for t, a in acc.items() if CHANCE[t] <= 0.25 and a < 0.9} == {}


@pytest.mark.slow
def test_embedded_default_dpo_improves_reward_accuracy(default_sft, tmp_path, capsys):
    from xgenmm_train.demo import run_default_dpo

    sft_overrides, _, _ = default_sft
    result = run_default_dpo(
        [f"run_dir={tmp_path}/default-dpo", "logging.progress_bar=false"], sft_overrides=sft_overrides
    )
    assert "held-out reward accuracy:" in capsys.readouterr().out
    assert result["heldout_reward_accuracy"] > 0.8
