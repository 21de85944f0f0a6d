import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_generate.py"


@pytest.mark.slow
@pytest.mark.skipif(not BENCH.exists(), reason="benchmarks/ not present (package installed alone)")
def test_generate_benchmark_quick_runs():
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--caches", "dynamic", "static"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(report["results"]) == {"batch_1", "batch_8"}
    assert all(r["decode_tokens_per_s"] > 0 for r in report["results"].values())
    static = report["caches"]["static"]
    assert all(r["same_tokens_as_dynamic"] for r in static.values())  # the static cache gives the same tokens
    assert set(report["decode_ratio_vs_dynamic"]["static"]) == {"batch_1", "batch_8"}
