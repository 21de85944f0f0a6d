"""benchmarks/bench_generate.py: decode tokens/s per batch size, dynamic vs static KV cache, same tokens."""

import pytest


@pytest.mark.slow
def test_generate_benchmark_quick_runs(run_benchmark):
    # the tiny model on the CPU, the dynamic and the static KV cache
    report = run_benchmark("bench_generate", "--quick", "--caches", "dynamic", "static")
    assert set(report["results"]) == {"batch_1", "batch_8"} and report["cache_implementation"] == "dynamic"
    assert report["results"]["batch_8"]["decode_tokens_per_s"] > 0
    assert all(r["total_s"] > 0 and r["prefill_s"] > 0 for r in report["results"].values())
    static = report["caches"]["static"]
    assert all(r["same_tokens_as_dynamic"] for r in static.values())  # the static cache gives the same tokens
    assert set(report["decode_ratio_vs_dynamic"]["static"]) == {"batch_1", "batch_8"}
    assert "cache_errors" not in report
