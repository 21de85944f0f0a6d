import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_generate.py"


@pytest.mark.slow
def test_generate_benchmark_quick_runs():
    spec = importlib.util.spec_from_file_location("bench_generate", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.main(["--quick", "--batch-sizes", "1", "2"])
    assert set(report["results"]) == {"batch_1", "batch_2"}
    assert all(r["decode_tokens_per_s"] > 0 for r in report["results"].values())
