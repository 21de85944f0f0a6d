import re

import pytest


@pytest.mark.slow
def test_embedded_default_pretraining_learns_and_sft_continues(tmp_path, capsys):
    """`uv run xgenmm-train pretrain` (into a temporary run dir): >= 90 % held-out caption accuracy on every
    attribute whose chance is <= 25 %, judged from generated captions; then the printed SFT command runs."""
    from xgenmm_train.cli import main
    from xgenmm_train.demo import run_default_pretrain
    from xgenmm_train.demo.pretrain_data import CHANCE

    result = run_default_pretrain([f"run_dir={tmp_path}/default-pretrain", "logging.progress_bar=false"])
    out = capsys.readouterr().out
    acc = result["heldout_accuracy"]
    assert set(acc) == set(CHANCE)
    for name in CHANCE:
        assert re.search(rf"^held-out accuracy {name}: \d+\.\d% \(chance \d+%\)$", out, re.M), out
    assert {n: a for n, a in acc.items() if CHANCE[n] <= 0.25 and a < 0.9} == {}
    command = re.search(r"^fine-tune it on the SFT demo: uv run (xgenmm-train sft .*)$", out, re.M).group(1)
    assert command == result["sft_command"].removeprefix("uv run ")
    args = command.split()[1:] + [f"run_dir={tmp_path}/sft", "train.max_steps=2", "eval.path=null"]
    assert main(args + ["logging.progress_bar=false"]) == 0
