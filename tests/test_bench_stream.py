"""benchmarks/bench_stream.py: caption-shard stream vs JSON path, and the cost of exact resume."""

import pytest


@pytest.mark.slow
def test_stream_benchmark_quick_runs(run_benchmark):
    """`--quick`: both paths produce samples, and a resumed stream goes on with the very sample the
    uninterrupted one would have read next."""
    report = run_benchmark("bench_stream", "--quick")
    thr = report["throughput_one_worker"]
    assert report["quick"] is True and thr["stream_vs_json_samples_per_s"] > 0
    assert report["resume"]["raw"]["same_next_sample"] is True
