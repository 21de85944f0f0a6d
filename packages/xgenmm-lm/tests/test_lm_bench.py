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
        [sys.executable, str(BENCH), "--quick", "--batch-sizes", "1", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(report["results"]) == {"batch_1", "batch_2"}
    assert all(r["decode_tokens_per_s"] > 0 for r in report["results"].values())
