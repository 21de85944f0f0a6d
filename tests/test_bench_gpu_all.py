"""benchmarks/gpu_all.sh: the prepared GPU session; its --tiny mode runs the whole plan on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu_all import PLAN, TINY_PLAN, headlines

ROOT = Path(__file__).resolve().parents[1]


def test_plan_fits_the_budget_in_order_of_importance():
    assert [step[0] for step in PLAN] == ["sft", "dpo", "generate", "generate_static"]
    assert [step[0] for step in TINY_PLAN] == [step[0] for step in PLAN]
    assert sum(step[3] for step in PLAN) <= 420  # 7 minutes
    sft_args = PLAN[0][2]
    assert {"sft-mb8-pack", "sft-mb8-pack-nockpt", "sft-mb8-pack-compile"} <= set(sft_args)


def test_headlines_mark_the_issue_targets():
    run = {"config": "sft-mb8-pack", "mfu": 0.47, "peak_memory_gib": 80.1, "tokens_per_s": 9000.0}
    run["variants"] = [
        {"name": "base", "loss_before_update": 10.5},
        {"name": "dense-sdpa", "loss_before_update": 10.51},
    ]
    run["lm_attention_calls"] = {"varlen": 96, "per_segment": 0}
    dpo = {"config": "dpo-lora", "variants": [{"name": "base", "s_per_step": 0.5}]}
    dpo["variants"].append({"name": "live-reference", "s_per_step": 1.0})
    results = {"sft": {"runs": [run]}, "dpo": {"runs": [dpo]}}
    rows = {name: (value, status) for name, value, _, status in headlines(results)}
    assert rows["sft-mb8-pack: MFU"] == (0.47, "met")
    assert rows["sft-mb8-pack: peak GPU memory GiB"] == (80.1, "NOT met")
    assert rows["loss before update, sdpa_varlen / dense SDPA"][1] == "met"
    assert rows["DPO step, precomputed / live reference"] == (0.5, "met")


@pytest.mark.slow
def test_gpu_all_tiny_runs_the_whole_plan_on_the_cpu(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("OUT", None)
    proc = subprocess.run(
        ["bash", "benchmarks/gpu_all.sh", "--tiny", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=1800, cwd=ROOT, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    (json_path,) = tmp_path.glob("*-gpu-tiny.json")
    record = json.loads(json_path.read_text())
    results = record["results"]
    assert set(results) == {"sft", "dpo", "generate", "generate_static"}
    sft = {run["config"]: run for run in results["sft"]["runs"]}
    assert set(sft) == {"sft-mb8-pack", "sft-mb8-pack-nockpt", "sft-mb8-pack-compile"}
    assert all("error" not in run and run["tokens_per_s"] > 0 for run in sft.values())
    assert sft["sft-mb8-pack-compile"]["compile"] and not sft["sft-mb8-pack-nockpt"]["gradient_checkpointing"]
    (dpo,) = results["dpo"]["runs"]
    # while the policy is the reference, every reference gives the DPO loss log 2
    assert [v["loss_before_update"] for v in dpo["variants"]] == pytest.approx([0.69315] * 3, abs=1e-4)
    for label in ("generate", "generate_static"):
        assert results[label]["results"]["batch_8"]["decode_tokens_per_s"] > 0
    markdown = json_path.with_suffix(".md").read_text()
    assert "| sft-mb8-pack: MFU |" in markdown and "DPO step, precomputed / live reference" in markdown
