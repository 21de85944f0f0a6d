"""Perceiver resampler forward+backward: fused SDPA vs the original's explicit-math attention.

    uv run python -m benchmarks.bench_sampler                # CPU, fp32, xgenmm preset, G = 5 groups
    uv run python -m benchmarks.bench_sampler --quick        # smoke run: 1 warm-up, 2 repetitions (not for reporting)
    uv run python -m benchmarks.bench_sampler --device cuda --groups 40 --dtype bf16   # on a GPU

Input (G, 729, 1152) + padding mask (G, 729) → output (G, 128, 3072), the xGen-MM preset (LAVIS
`open_flamingo/src/helpers.py`, `PerceiverResampler`). The mask follows a 640×480 image on the 2×2 grid,
repeated: per 5 groups the visible-token counts are [729, 351, 729, 729, 351] (base, then four chunks of the
54×54 feature map with rows 0–6 and 47–53 padding).

Peak memory: each attention implementation (`PerceiverResampler.attention_impl` = "sdpa" or "math") runs one
step in its own process, so the numbers do not mix: on CPU the growth of max RSS (`resource.getrusage`) over the
step (activations + parameter gradients + allocator slack); on CUDA `torch.cuda.max_memory_allocated()` over
two steps (absolute, and its growth over the model + inputs). Time: one model, the two implementations
interleaved step by step, the order alternating every repetition (sdpa math, math sdpa, ...); median of the
timed repetitions after the warm-ups (`speedup_sdpa_vs_math`, the ratio of the medians), plus the median of the
per-repetition ratios (`..._paired_median`). On CPU each step's process CPU time (all threads) is recorded too:
on a shared machine a step's wall time swings 2× with the other processes' load, its CPU time far less, so
`speedup_sdpa_vs_math_cpu_time` (median of the paired CPU-time ratios) is the load-robust number.
`attention_only` times just what differs, the attention kernel forward+backward at the preset's shapes (q/k/v
laid out as the model makes them, the same key mask), interleaved over more repetitions.

The two implementations differ only in the attention, ~6 % of a step's FLOPs (the `to_kv` projection of the
857 keys is most of the rest), so the whole-step speed-up is bounded by that share even where the kernel
itself is ~2× faster. FLOPs are counted analytically (matmuls only; backward = 2 × forward).
`matmul_gflops_now` (a plain 2048³ matmul, measured right after the timed steps) shows how much of the machine
the run actually had: on a shared CPU compare `achieved_gflops` against it, not against the nominal peak.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time

from benchmarks._common import (
    ROOT,
    add_standard_args,
    emit,
    machine_info,
    module_command,
    require_cuda,
    resolve_reps,
    warm_up_gpu,
)

NUM_TOKENS = 729  # SigLIP so400m-384 tokens per crop
VISIBLE_PATTERN = [729, 351, 729, 729, 351]  # 640×480 on 2×2: padding rows 0–6 and 47–53 of the 54×54 map
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


def build(args: argparse.Namespace):
    """The preset model (train mode) and one step's inputs → `(model, step)`; `step()` runs forward+backward."""
    import torch

    from xgenmm_sampler import PerceiverResampler, PerceiverResamplerConfig

    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    cfg = PerceiverResamplerConfig.xgenmm()
    model = PerceiverResampler.from_config(cfg).to(device=device, dtype=dtype).train()

    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.groups, NUM_TOKENS, cfg.dim, generator=g).to(device=device, dtype=dtype)
    mask = torch.zeros(args.groups, NUM_TOKENS, dtype=torch.bool)
    for i, count in enumerate(visible_counts(args.groups)):
        mask[i, :count] = True
    mask = mask.to(device)
    grad_out = torch.randn(args.groups, cfg.num_latents, cfg.dim_inner, generator=g)
    grad_out = grad_out.to(device=device, dtype=dtype)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(x, mask).backward(grad_out)

    return model, step


def interleaved_alternating(fns: dict, reps: int, warmup: int, sync=None) -> dict[str, dict]:
    """Like `_common.interleaved`, but the order flips every repetition (A B, B A, A B, ...), so neither
    implementation always runs right after the other, and each run's process CPU time (all threads,
    `time.process_time`) is kept beside its wall time. → per name `{"reps_s": [...], "cpu_s": [...]}`.
    """
    sync = sync or (lambda: None)
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    out = {name: {"reps_s": [], "cpu_s": []} for name in names}
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            sync()
            wall, cpu = time.perf_counter(), time.process_time()
            fns[name]()
            sync()
            out[name]["reps_s"].append(time.perf_counter() - wall)
            out[name]["cpu_s"].append(time.process_time() - cpu)
    return out


def paired_median_ratio(numerators: list[float], denominators: list[float]) -> float:
    return statistics.median(n / d for n, d in zip(numerators, denominators))


def build_attention(args: argparse.Namespace):
    """The attention kernels alone at the preset's shapes → `{impl: step}`; `step()` runs forward+backward.

    q `(G, 16, 128, 96)` and k/v `(G, 16, 857, 96)` are views of `to_q`/`to_kv`-shaped tensors, as in
    `PerceiverAttention`; the key mask is the benchmark's (plus the always-visible latent keys).
    """
    import torch
    from einops import rearrange

    from xgenmm_sampler import PerceiverResamplerConfig
    from xgenmm_sampler.modeling import math_attention, sdpa_attention

    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    cfg = PerceiverResamplerConfig.xgenmm()
    heads, inner, keys = cfg.heads, cfg.heads * cfg.dim_head, NUM_TOKENS + cfg.num_latents
    g = torch.Generator().manual_seed(2)
    q_in = torch.randn(args.groups, cfg.num_latents, inner, generator=g).to(device=device, dtype=dtype)
    kv_in = torch.randn(args.groups, keys, 2 * inner, generator=g).to(device=device, dtype=dtype)
    q_in.requires_grad_(True)
    kv_in.requires_grad_(True)
    grad_out = torch.randn(args.groups, heads, cfg.num_latents, cfg.dim_head, generator=g)
    grad_out = grad_out.to(device=device, dtype=dtype)
    key_mask = torch.ones(args.groups, keys, dtype=torch.bool)
    for i, count in enumerate(visible_counts(args.groups)):
        key_mask[i, count:NUM_TOKENS] = False
    key_mask = key_mask.to(device)[:, None, None, :]

    def make_step(kernel):
        def step() -> None:
            q_in.grad = kv_in.grad = None
            q = rearrange(q_in, "b s (h d) -> b h s d", h=heads)
            k, v = (rearrange(t, "b s (h d) -> b h s d", h=heads) for t in kv_in.chunk(2, dim=-1))
            kernel(q, k, v, key_mask).backward(grad_out)

        return step

    return {"sdpa": make_step(sdpa_attention), "math": make_step(math_attention)}


def visible_counts(groups: int) -> list[int]:
    return [VISIBLE_PATTERN[i % len(VISIBLE_PATTERN)] for i in range(groups)]


def memory_worker(args: argparse.Namespace) -> dict:
    """Peak memory of forward+backward with one attention implementation; runs in a fresh process."""
    import torch

    model, step = build(args)
    model.attention_impl = args.worker
    if args.device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(2):
            step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return {"cuda_max_memory_allocated_mb": peak / 2**20, "peak_mem_growth_mb": (peak - base) / 2**20}
    base = max_rss_bytes()
    step()  # the peak of one step: parameter gradients + activations + allocator slack
    return {"peak_mem_growth_mb": (max_rss_bytes() - base) / 2**20}


def run_memory_worker(impl: str, args: argparse.Namespace) -> dict:
    cmd = module_command("bench_sampler", "--worker", impl, "--device", args.device, "--dtype", args.dtype)
    cmd += ["--groups", str(args.groups)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(
            f"bench_sampler memory worker '{impl}' failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_standard_args(parser)  # --quick, --reps (default 5; 20 on cuda), --warmup (default 1; 3 on cuda)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--groups", type=int, default=5, help="G, the number of 729-token groups")
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    on_cuda = args.device == "cuda"
    resolve_reps(args, full=20 if on_cuda else 5, warmup=3 if on_cuda else 1)

    if args.worker:
        result = memory_worker(args)
        print(json.dumps(result))
        return result

    import torch

    from xgenmm_sampler import PerceiverResamplerConfig

    if on_cuda:
        require_cuda("bench_sampler.py")
    cfg = PerceiverResamplerConfig.xgenmm()
    step_flops = 3 * matmul_flops_forward(args.groups, NUM_TOKENS, **cfg.to_dict())
    report: dict = {
        "benchmark": "bench_sampler",
        "quick": args.quick,
        "machine": machine_info(),
        "what": "PerceiverResampler (xgenmm preset) forward+backward, SDPA vs explicit-math attention",
        "device": args.device,
        "dtype": args.dtype,
        "input_shape": [args.groups, NUM_TOKENS, cfg.dim],
        "output_shape": [args.groups, cfg.num_latents, cfg.dim_inner],
        "visible_tokens_per_group": visible_counts(args.groups),
        "warmup": args.warmup,
        "reps": args.reps,
        "gflop_per_step": round(step_flops / 1e9, 1),
    }

    # Peak memory: each implementation in its own process.
    memory = {impl: run_memory_worker(impl, args) for impl in IMPLS}

    # Time: one model, the two implementations interleaved step by step (order alternating) so machine load
    # hits them alike.
    model, step = build(args)

    def run_with(impl: str):
        def run() -> None:
            model.attention_impl = impl
            step()

        return run

    sync = torch.cuda.synchronize if on_cuda else None
    if on_cuda:
        report["gpu_warmup_tflops"] = round(warm_up_gpu(5.0), 1)  # clocks up before timing
    timing = interleaved_alternating(
        {impl: run_with(impl) for impl in IMPLS}, reps=args.reps, warmup=args.warmup, sync=sync
    )
    report["matmul_gflops_now"] = round(matmul_gflops(torch.device(args.device), model.latents.dtype), 1)

    for impl in IMPLS:
        median = statistics.median(timing[impl]["reps_s"])
        res = {"median_s": round(median, 4), "times_s": [round(t, 4) for t in timing[impl]["reps_s"]]}
        if not on_cuda:
            res["cpu_median_s"] = round(statistics.median(timing[impl]["cpu_s"]), 4)
            res["cpu_times_s"] = [round(t, 4) for t in timing[impl]["cpu_s"]]
        res["achieved_gflops"] = round(step_flops / median / 1e9, 1)
        if on_cuda:
            res["achieved_tflops"] = round(step_flops / median / 1e12, 2)
        res.update({key: round(value, 1) for key, value in memory[impl].items()})
        report[impl] = res
    report["memory_metric"] = (
        "torch.cuda.max_memory_allocated over 2 steps (absolute, and growth over model + inputs)"
        if on_cuda
        else "max RSS growth over one step (resource.getrusage), fresh process per implementation"
    )
    report["speedup_sdpa_vs_math"] = round(report["math"]["median_s"] / report["sdpa"]["median_s"], 3)
    paired = paired_median_ratio(timing["math"]["reps_s"], timing["sdpa"]["reps_s"])
    report["speedup_sdpa_vs_math_paired_median"] = round(paired, 3)
    if not on_cuda:
        paired_cpu = paired_median_ratio(timing["math"]["cpu_s"], timing["sdpa"]["cpu_s"])
        report["speedup_sdpa_vs_math_cpu_time"] = round(paired_cpu, 3)

    # The attention kernels alone: short runs, so more repetitions for the same time.
    attn_reps, attn_warmup = 4 * args.reps, max(args.warmup, 2)
    attn = interleaved_alternating(build_attention(args), reps=attn_reps, warmup=attn_warmup, sync=sync)
    attention_only = {"reps": attn_reps}
    for impl in IMPLS:
        attention_only[f"{impl}_median_ms"] = round(1e3 * statistics.median(attn[impl]["reps_s"]), 2)
    attention_only["speedup_sdpa_vs_math"] = round(
        paired_median_ratio(attn["math"]["reps_s"], attn["sdpa"]["reps_s"]), 3
    )
    if not on_cuda:
        attention_only["speedup_sdpa_vs_math_cpu_time"] = round(
            paired_median_ratio(attn["math"]["cpu_s"], attn["sdpa"]["cpu_s"]), 3
        )
    report["attention_only"] = attention_only
    report["peak_mem_ratio_sdpa_vs_math"] = round(
        report["sdpa"]["peak_mem_growth_mb"] / max(report["math"]["peak_mem_growth_mb"], 1e-9), 3
    )
    return emit(report)


if __name__ == "__main__":
    main()
