"""benchmarks/bench_anyres.py keeps measuring what BENCHMARKS.md says it does."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_anyres.py"


@pytest.mark.slow
@pytest.mark.skipif(not BENCH.exists(), reason="benchmarks/ not present (package installed alone)")
def test_anyres_benchmark_quick_run_checks_pixels():
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(report["results"]) == {"640x480", "1920x1080", "500x2000"}
    assert report["all_bit_identical"]  # the exact backend reproduces the original's pixels
    assert report["torch_backend_max_levels_off"] <= 2
    for result in report["results"].values():
        assert result["speedup"] > 0 and result["speedup_torch_backend"] > 0
