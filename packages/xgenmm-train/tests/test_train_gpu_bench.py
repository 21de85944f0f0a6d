"""benchmarks/gpu_sft.py keeps working: its --tiny mode runs the same code path on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "gpu_sft.py"


@pytest.mark.slow
@pytest.mark.skipif(not BENCH.exists(), reason="benchmarks/ not present (package installed alone)")
def test_gpu_sft_tiny_config_with_ab_variant_and_profile():
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--tiny",
            "--configs",
            "4:ckpt:pack:prof+sdpa",
            "--steps",
            "2",
            "--warmup",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    (run,) = report["runs"]
    assert "error" not in run, run["error"]
    assert run["micro_batch"] == 4 and run["packed"] and run["gradient_checkpointing"]
    base, sdpa = run["variants"]
    assert (base["attn"], sdpa["attn"]) == ("sdpa_varlen", "sdpa")
    # the same first loss: the variant changes the attention kernel, not the numbers
    assert base["loss_before_update"] == pytest.approx(sdpa["loss_before_update"], rel=1e-4)
    assert base["tokens_per_s"] > 0 and sdpa["tokens_per_s"] > 0
    assert run["profile"]["top20"], "the profile lists the top operators"
