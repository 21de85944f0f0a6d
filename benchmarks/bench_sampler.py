"""Perceiver resampler forward+backward: fused SDPA vs the original's explicit-math attention.

    uv run python benchmarks/bench_sampler.py                # CPU, fp32, xgenmm preset, G = 5 groups
    uv run python benchmarks/bench_sampler.py --quick        # smoke run: 1 warm-up, 1 repetition
    uv run python benchmarks/bench_sampler.py --device cuda --groups 40 --dtype bf16   # on a GPU

Input (G, 729, 1152) + padding mask (G, 729) → output (G, 128, 3072), the xGen-MM preset (spec §1.5). The mask
follows a 640×480 image on the 2×2 grid, repeated: per 5 groups the visible-token counts are
[729, 351, 729, 729, 351] (base, then four chunks; spec §9 item 4).

Each attention implementation (`PerceiverResampler.attention_impl` = "sdpa" or "math") runs in its own process,
so peak-memory numbers do not mix: on CPU the peak is the growth of max RSS (`resource.getrusage`) from just before
the first forward to the end (activations + parameter gradients + allocator slack); on CUDA it is
`torch.cuda.max_memory_allocated()` (absolute, and its growth over the model + inputs). Time = median of the
timed repetitions after the warm-ups; FLOPs are counted analytically (matmuls only; backward = 2 × forward).
`matmul_gflops_now` (a plain 2048³ matmul, measured right after the timed steps) shows how much of the machine
the run actually had: on a shared CPU compare `achieved_gflops` against it, not against the nominal peak.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

NUM_TOKENS = 729  # SigLIP so400m-384 tokens per crop
VISIBLE_PATTERN = [729, 351, 729, 729, 351]  # 640×480 on 2×2 (spec §9 item 4)
IMPLS = ("sdpa", "math")


def matmul_flops_forward(
    groups: int,
    tokens: int,
    dim: int,
    dim_inner: int,
    num_latents: int,
    depth: int,
    heads: int,
    dim_head: int,
    ff_mult: int,
) -> int:
    """Multiply-add FLOPs (2 per MAC) of one forward pass; LayerNorm, softmax and GELU are not counted."""
    inner = heads * dim_head
    queries = groups * num_latents
    keys = groups * (tokens + num_latents)  # keys/values come from [media ; latents]
    per_layer = (
        2 * queries * dim * inner  # to_q
        + 2 * keys * dim * 2 * inner  # to_kv
        + 2 * 2 * groups * heads * num_latents * (tokens + num_latents) * dim_head  # q·kᵀ and attn·v
        + 2 * queries * inner * dim  # to_out
        + 2 * 2 * queries * dim * ff_mult * dim  # feed-forward, two linears
    )
    return depth * per_layer + 2 * queries * dim * dim_inner  # + final projection


def max_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def matmul_gflops(device, dtype) -> float:
    """What a plain 2048³ matmul achieves right now on this device (context for shared or throttled machines)."""
    import torch

    a = torch.randn(2048, 2048, device=device, dtype=dtype)
    b = torch.randn(2048, 2048, device=device, dtype=dtype)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    reps = 50 if device.type == "cuda" else 3
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return reps * 2 * 2048**3 / (time.perf_counter() - start) / 1e9


def worker(args: argparse.Namespace) -> dict:
    """Time forward+backward of one attention implementation; runs in a fresh process."""
    import torch

    from xgenmm_sampler import PerceiverResampler, PerceiverResamplerConfig

    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    cfg = PerceiverResamplerConfig.xgenmm()
    model = PerceiverResampler.from_config(cfg).to(device=device, dtype=dtype).train()
    model.attention_impl = args.worker

    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.groups, NUM_TOKENS, cfg.dim, generator=g).to(device=device, dtype=dtype)
    visible = [VISIBLE_PATTERN[i % len(VISIBLE_PATTERN)] for i in range(args.groups)]
    mask = torch.zeros(args.groups, NUM_TOKENS, dtype=torch.bool)
    for i, count in enumerate(visible):
        mask[i, :count] = True
    mask = mask.to(device)
    grad_out = torch.randn(args.groups, cfg.num_latents, cfg.dim_inner, generator=g).to(
        device=device, dtype=dtype
    )

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step() -> float:
        model.zero_grad(set_to_none=True)
        sync()
        start = time.perf_counter()
        model(x, mask).backward(grad_out)
        sync()
        return time.perf_counter() - start

    if device.type == "cuda":
        torch.cuda.synchronize()
        base_mem = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base_mem = max_rss_bytes()

    for _ in range(args.warmup):
        step()
    times = [step() for _ in range(args.reps)]

    result = {"times_s": [round(t, 4) for t in times], "median_s": statistics.median(times)}
    result["matmul_gflops_now"] = round(matmul_gflops(device, dtype), 1)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
        result["cuda_max_memory_allocated_mb"] = peak / 2**20
        result["peak_mem_growth_mb"] = (peak - base_mem) / 2**20
    else:
        result["peak_mem_growth_mb"] = (max_rss_bytes() - base_mem) / 2**20
        result["threads"] = torch.get_num_threads()
    result["visible"] = visible
    return result


def run_worker(impl: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        impl,
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--groups",
        str(args.groups),
        "--warmup",
        str(args.warmup),
        "--reps",
        str(args.reps),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"bench_sampler worker '{impl}' failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 warm-up and 1 timed repetition")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--groups", type=int, default=5, help="G, the number of 729-token groups")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 1; 3 on cuda)")
    parser.add_argument(
        "--reps", type=int, default=None, help="timed steps (default 5, 1 with --quick; 20 on cuda)"
    )
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    on_cuda = args.device == "cuda"
    if args.warmup is None:
        args.warmup = 3 if on_cuda else 1
    if args.reps is None:
        args.reps = 1 if args.quick else (20 if on_cuda else 5)

    if args.worker:
        result = worker(args)
        print(json.dumps(result))
        return result

    from xgenmm_sampler import PerceiverResamplerConfig

    cfg = PerceiverResamplerConfig.xgenmm()
    fwd = matmul_flops_forward(args.groups, NUM_TOKENS, **cfg.to_dict())
    step_flops = 3 * fwd
    report: dict = {
        "benchmark": "bench_sampler",
        "what": "PerceiverResampler (xgenmm preset) forward+backward, SDPA vs explicit-math attention",
        "device": args.device,
        "dtype": args.dtype,
        "input_shape": [args.groups, NUM_TOKENS, cfg.dim],
        "output_shape": [args.groups, cfg.num_latents, cfg.dim_inner],
        "warmup": args.warmup,
        "reps": args.reps,
        "gflop_per_step": round(step_flops / 1e9, 1),
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
    }
    for impl in IMPLS:
        res = run_worker(impl, args)
        report["visible_tokens_per_group"] = res.pop("visible")
        res["achieved_gflops"] = round(step_flops / res["median_s"] / 1e9, 1)
        if on_cuda:
            res["achieved_tflops"] = round(step_flops / res["median_s"] / 1e12, 2)
        res["median_s"] = round(res["median_s"], 4)
        res["peak_mem_growth_mb"] = round(res["peak_mem_growth_mb"], 1)
        report[impl] = res
    report["memory_metric"] = (
        "torch.cuda.max_memory_allocated (growth over model + inputs)"
        if on_cuda
        else "max RSS growth from first forward to end (resource.getrusage)"
    )
    report["speedup_sdpa_vs_math"] = round(report["math"]["median_s"] / report["sdpa"]["median_s"], 3)
    report["peak_mem_ratio_sdpa_vs_math"] = round(
        report["sdpa"]["peak_mem_growth_mb"] / max(report["math"]["peak_mem_growth_mb"], 1e-9), 3
    )
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
