import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_stream.py"


@pytest.mark.slow
@pytest.mark.skipif(not BENCH.exists(), reason="benchmarks/ not present (package installed alone)")
def test_stream_benchmark_quick_runs():
    """`bench_stream.py --quick`: both paths produce samples, and a resumed stream goes on with the very sample
    the uninterrupted one would have read next."""
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    thr = report["throughput_one_worker"]
    assert report["quick"] is True and thr["stream_vs_json_samples_per_s"] > 0
    assert report["resume"]["raw"]["same_next_sample"] is True
