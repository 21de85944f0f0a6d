"""DPO under torchrun: 2 processes (ZeRO-2) give the same steps as 1 process × 2 accumulation steps, also when
one rank's pairs are text-only while the other's have images (the perceiver trains, so the text-only rank's
backward must still reach it; see recipe.vision_tokens_times_zero)."""

import json
import subprocess
import sys

import pytest
import torch

from xgenmm_train.checkpoint import latest_checkpoint
from xgenmm_train.config import to_yaml
from xgenmm_train.distributed import free_port
from xgenmm_train.tracking import read_metrics


def _mixed_preferences(synth, folder):
    """The synthetic preference pairs, every other one without its image (and its `<image>` placeholder)."""
    records = json.loads(synth["dpo_train"].read_text())
    for r in records[1::2]:
        r.pop("image")
        for turn in r["conversations"]:
            turn["value"] = turn["value"].replace("<image>\n", "").replace("<image>", "")
    path = folder / "mixed_preferences.json"
    path.write_text(json.dumps(records))
    return path, len(records)


@pytest.mark.slow
def test_two_processes_with_text_only_pairs_match_one_process_accumulation(
    tmp_path, synth, make_config, launch_env, read_weights
):
    data, n = _mixed_preferences(synth, synth["dpo_train"].parent)
    common = {
        "data.image_folder": str(data.parent),
        "train.micro_batch_size": 1,
        "train.max_steps": "null",
        "train.lr": 1e-3,
        "deepspeed.zero_stage": 2,
    }
    two = make_config(tmp_path / "two", data, task="dpo", **common)
    (tmp_path / "two.yaml").write_text(to_yaml(two))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_port", str(free_port()), "-m", "xgenmm_train.cli", "dpo", "--config"]
    p = subprocess.run(
        [*cmd, str(tmp_path / "two.yaml")], env=launch_env, capture_output=True, text=True, timeout=900
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    one = make_config(tmp_path / "one", data, task="dpo", **common, **{"train.grad_accum": 2})
    (tmp_path / "one.yaml").write_text(to_yaml(one))
    cmd = [sys.executable, "-m", "xgenmm_train.cli", "dpo", "--config", str(tmp_path / "one.yaml")]
    p = subprocess.run(cmd, env=launch_env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]

    two, one = read_metrics(tmp_path / "two"), read_metrics(tmp_path / "one")
    assert len(two) == len(one) == n // 2
    for a, b in zip(two, one):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    wa = read_weights(latest_checkpoint(tmp_path / "two") / "model")
    wb = read_weights(latest_checkpoint(tmp_path / "one") / "model")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=1e-4)
