"""The CUDA profile of a few training steps: top kernels, kernel time by kind, host syncs (for `gpu_sft`)."""

from __future__ import annotations

import time

KERNEL_KINDS = (  # first match wins; names of cuBLAS/CUTLASS/flash/NCCL/torch kernels
    ("gemm", ("gemm", "nvjet", "xmma", "cutlass", "wgmma", "matmul")),
    ("attention", ("flash", "fmha", "attention", "attn", "cudnn")),
    ("optimizer", ("adam", "multi_tensor", "foreach", "fused_adamw")),
    ("nccl", ("nccl",)),
    ("copy", ("memcpy", "memset", "copy", "cat", "index", "gather", "scatter")),
    ("reduce/norm", ("reduce", "norm", "softmax", "cross_entropy", "nll", "log_softmax")),
)
SYNC_OPS = (
    "aten::_local_scalar_dense",
    "aten::nonzero",
    "aten::unique_consecutive",
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaEventSynchronize",
    "cudaMemcpyAsync",
    "Memcpy HtoD (Pageable -> Device)",
    "Memcpy DtoH (Device -> Pageable)",
)


def kernel_kind(name: str) -> str:
    low = name.lower()
    for kind, keys in KERNEL_KINDS:
        if any(k in low for k in keys):
            return kind
    return "elementwise/other"


def profile_steps(step_fn, n_steps: int, cuda: bool) -> dict:
    """Run `n_steps` steps under torch.profiler → top-20 kernels (CUDA; top-20 CPU ops on the CPU) by total
    time with count, ms per step and % of the step's wall time; kernel time by kind; sync-ish ops per step."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(n_steps):
            step_fn()
        sync()
        wall = time.perf_counter() - t0
    step_ms = wall * 1e3 / n_steps
    totals: dict[str, list] = {}
    if cuda:
        for evt in prof.events():
            if evt.device_type == DeviceType.CUDA:
                entry = totals.setdefault(evt.name, [0, 0.0])
                entry[0] += 1
                entry[1] += evt.time_range.elapsed_us() / 1e3
    else:
        for avg in prof.key_averages():
            totals[avg.key] = [avg.count, avg.self_cpu_time_total / 1e3]
    busy = sum(ms for _, ms in totals.values())
    top = sorted(totals.items(), key=lambda kv: -kv[1][1])[:20]
    kinds: dict[str, float] = {}
    if cuda:
        for name, (_, ms) in totals.items():
            kinds[kernel_kind(name)] = kinds.get(kernel_kind(name), 0.0) + ms / n_steps
    counts = {}
    for avg in prof.key_averages():
        if avg.key in SYNC_OPS:
            counts[avg.key] = round(avg.count / n_steps, 1)
    return {
        "steps": n_steps,
        "step_ms_under_profiler": round(step_ms, 1),
        "what": "CUDA kernels" if cuda else "CPU ops (self time)",
        "busy_ms_per_step": round(busy / n_steps, 1),
        "busy_fraction_of_step": round(busy / n_steps / step_ms, 3),
        "by_kind_ms_per_step": {k: round(v, 1) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
        "top20": [
            {
                "name": name[:160],
                "count_per_step": round(count / n_steps, 1),
                "ms_per_step": round(ms / n_steps, 2),
                "pct_of_step": round(100 * ms / n_steps / step_ms, 1),
            }
            for name, (count, ms) in top
        ],
        "sync_ops_per_step": counts,
    }
