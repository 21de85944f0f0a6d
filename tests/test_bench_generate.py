"""benchmarks/bench_generate.py: decode tokens/s per batch size, with the dynamic and the static KV cache."""

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("cache", [None, "static"])
def test_generate_benchmark_quick_runs(run_benchmark, cache):
    args = ["--quick", "--batch-sizes", "1", "2"] + (["--cache-implementation", cache] if cache else [])
    report = run_benchmark("bench_generate", *args)
    assert set(report["results"]) == {"batch_1", "batch_2"}
    assert report["results"]["batch_2"]["decode_tokens_per_s"] > 0
    assert all(r["total_s"] > 0 and r["prefill_s"] > 0 for r in report["results"].values())
    # the static cache is used where it works, else the dynamic one with the reason
    assert report["cache_implementation"] == (cache or "dynamic") or report["cache_implementation_fallback"]
