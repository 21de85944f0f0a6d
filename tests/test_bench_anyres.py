"""benchmarks/bench_anyres.py keeps measuring what BENCHMARKS.md says it does."""

import pytest


@pytest.mark.slow
def test_anyres_benchmark_quick_run_checks_pixels(run_benchmark):
    report = run_benchmark("bench_anyres", "--quick")
    assert set(report["results"]) == {"640x480", "1920x1080", "500x2000"}
    assert report["all_bit_identical"]  # the exact backend reproduces the original's pixels
    assert report["torch_backend_max_levels_off"] <= 2
    for result in report["results"].values():
        assert result["speedup"] > 0 and result["speedup_torch_backend"] > 0
