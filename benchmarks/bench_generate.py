"""Generation speed of `XGenMM.generate` (KV cache on, greedy) at batch 1 and 8, with the dynamic cache, the
static cache and the static cache + `torch.compile`'d decode step; prints one JSON object.

    uv run python -m benchmarks.bench_generate                 # tiny config, CPU, all three caches
    uv run python -m benchmarks.bench_generate --quick --caches dynamic static   # smoke run
    uv run python -m benchmarks.bench_generate --device cuda --real-size   # released sizes, random bf16 weights

Each sample holds one 640x480 image (5 crops → 640 vision tokens at real size) and a text prompt; every run
generates exactly `--new-tokens` tokens (eos disabled). Reported: prefill seconds (vision + splice + first
forward, measured as a 1-token generate), end-to-end seconds, and decode tokens/s = batch·(new−1)/(total−prefill),
all from medians of `--reps` (5) timed runs after `--warmup` (1) untimed full-length runs at the same batch size
(the compile happens there). Each cache's greedy tokens are checked against the dynamic cache's, and its decode
tokens/s is reported as a ratio to the dynamic cache's at the same batch size. A cache mode that fails (a model or
transformers without it) is recorded with its error and the others are still measured.
On CUDA the GPU is first kept busy for `--gpu-warmup-s` seconds so batch 1 is not timed on ramping clocks.
`benchmarks/gpu_generate.py` runs this at the real size on a GPU.
"""

from __future__ import annotations

import argparse

import torch
from PIL import Image
from transformers import CompileConfig

from benchmarks._common import add_standard_args, emit, machine_info, resolve_reps, time_reps, warm_up_gpu
from xgenmm_lm import XGenMM, XGenMMConfig, tiny_config


def cache_kwargs(cache: str) -> dict:
    """`generate` arguments of a cache mode: "dynamic", "static" (never compiled) or "compiled" (static cache,
    decode step under torch.compile; transformers only compiles on GPUs unless told, so the CPU is told)."""
    if cache == "dynamic":
        return {}
    if cache == "static":
        return {"cache_implementation": "static", "disable_compile": True}
    compile_config = CompileConfig(mode="default")  # "reduce-overhead" (CUDA graphs) is for GPUs
    compile_config._compile_all_devices = True
    return {"cache_implementation": "static", "compile_config": compile_config}


def build(args) -> XGenMM:
    torch.manual_seed(0)
    dtype = torch.bfloat16 if args.real_size else torch.float32
    config = XGenMMConfig() if args.real_size else tiny_config(initial_len=256)
    with torch.device(args.device):
        model = XGenMM.from_config(config, attn_implementation=args.attn, dtype=dtype)
    return model.eval()


def make_batch(model: XGenMM, batch: int, prompt_tokens: int, device: str):
    cfg = model.config
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, cfg.pad_token_id - 20, (batch, prompt_tokens), generator=g)
    ids[:, 4] = cfg.media_token_id
    pixels = (torch.rand(480, 640, 3, generator=g) * 255).to(torch.uint8).numpy()
    processed = model.image_processor()(Image.fromarray(pixels))
    pv = [[processed.pixel_values.to(device)] for _ in range(batch)]
    sizes = [[processed.image_size] for _ in range(batch)]
    return ids.to(device), torch.ones_like(ids), pv, sizes


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def generate(model, inputs, new_tokens: int, cache: str) -> torch.Tensor:
    """Exactly `new_tokens` greedy tokens per sample (eos disabled)."""
    ids, mask, pv, sizes = inputs
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, eos_token_id=None)
    out = model.generate(ids, mask, pv, sizes, **kwargs, **cache_kwargs(cache))
    assert out.shape[1] == new_tokens, out.shape
    return out


def generate_fn(model, inputs, new_tokens: int, cache: str = "dynamic"):
    """A no-argument callable for `time_reps`."""
    return lambda: generate(model, inputs, new_tokens, cache)


def time_generation(model, inputs, batch: int, args, sync_fn, cache: str) -> dict:
    """Prefill (a 1-token generate) and the full generate, medians of `args.reps` after `args.warmup`
    full-length generations (cache growth, compilation, kernels of every shape)."""
    prefill = time_reps(generate_fn(model, inputs, 1, cache), args.reps, args.warmup, sync_fn)
    total = time_reps(generate_fn(model, inputs, args.new_tokens, cache), args.reps, args.warmup, sync_fn)
    p, t = prefill["median_s"], total["median_s"]
    return {
        "prefill_s": round(p, 4),
        "total_s": round(t, 4),
        "total_reps_s": total["reps_s"],
        # None when the full generate was not slower than the 1-token one (timing noise on tiny runs)
        "decode_tokens_per_s": round(batch * (args.new_tokens - 1) / (t - p), 1) if t > p else None,
        "decode_tokens_per_s_per_sequence": round((args.new_tokens - 1) / (t - p), 1) if t > p else None,
        "end_to_end_tokens_per_s": round(batch * args.new_tokens / t, 1),
        "expanded_prompt_len": int(model.prepare_inputs(*inputs).attention_mask.shape[1]),
    }


def ratio(row: dict, reference: dict | None) -> float | None:
    a, b = row.get("decode_tokens_per_s"), (reference or {}).get("decode_tokens_per_s")
    return round(a / b, 2) if a and b else None


def run(args) -> dict:
    """Time prefill (a 1-token generate) and the full generate at each batch size; medians of `args.reps`."""
    report = {"benchmark": "generate", "quick": args.quick, "machine": machine_info()}
    if args.device.startswith("cuda") and args.gpu_warmup_s > 0:  # ramp the clocks before anything is timed
        report["gpu_warmup"] = {
            "seconds": args.gpu_warmup_s,
            "bf16_matmul_tflops": round(warm_up_gpu(args.gpu_warmup_s), 1),
        }
    model = build(args)
    sync_fn = lambda: sync(args.device)  # noqa: E731
    by_cache, errors = {}, {}
    for cache in args.caches:
        try:
            for batch in args.batch_sizes:
                inputs = make_batch(model, batch, args.prompt_tokens, args.device)
                row = time_generation(model, inputs, batch, args, sync_fn, cache)
                same = torch.equal(*(generate(model, inputs, args.new_tokens, c) for c in (cache, "dynamic")))
                by_cache.setdefault(cache, {})[f"batch_{batch}"] = dict(row, same_tokens_as_dynamic=same)
        except Exception as e:  # an optional path that does not run here: say why, measure the others
            errors[cache] = f"{type(e).__name__}: {e}"[:400]
            by_cache.pop(cache, None)
    measured = [c for c in args.caches if c in by_cache]
    results = by_cache[measured[0]] if measured else {}
    report["cache_implementation"] = measured[0] if measured else None
    if errors:
        report["cache_errors"] = errors
        report["cache_implementation_fallback"] = "; ".join(f"{c} failed: {e}" for c, e in errors.items())
    dynamic = by_cache.get("dynamic", {})
    report["caches"] = by_cache
    report["decode_ratio_vs_dynamic"] = {
        cache: {b: ratio(r, dynamic.get(b)) for b, r in rows.items()}
        for cache, rows in by_cache.items()
        if cache != "dynamic" and dynamic
    }
    first, last = f"batch_{args.batch_sizes[0]}", f"batch_{args.batch_sizes[-1]}"
    report.update(
        {
            "config": "real-size (random weights)" if args.real_size else "tiny",
            "device": args.device,
            "dtype": "bfloat16" if args.real_size else "float32",
            "attn_implementation": args.attn,
            "prompt_text_tokens": args.prompt_tokens,
            "new_tokens": args.new_tokens,
            "reps": args.reps,
            "warmup": args.warmup,
            "results": results,
        }
    )
    if len(results) > 1 and results[first]["decode_tokens_per_s"] and results[last]["decode_tokens_per_s"]:
        report[f"decode_throughput_ratio_{last}_vs_{first}"] = round(
            results[last]["decode_tokens_per_s"] / results[first]["decode_tokens_per_s"], 2
        )
    if args.device.startswith("cuda"):
        report["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return report


def parse_args(argv=None):
    p = add_standard_args(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--real-size", action="store_true", help="released sizes (4.36B params), random bf16 weights"
    )
    p.add_argument("--attn", default="sdpa")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument(
        "--caches", nargs="+", default=["dynamic", "static", "compiled"], choices=["dynamic", "static", "compiled"],
        help="the first one fills `results`; ratios are against dynamic",
    )  # fmt: skip
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument(
        "--gpu-warmup-s", type=float, default=10.0, help="seconds of bf16 matmuls before timing (cuda only)"
    )
    args = resolve_reps(p.parse_args(argv))
    if args.quick:
        args.new_tokens, args.prompt_tokens = 8, 16
    return args


def main(argv=None) -> dict:
    return emit(run(parse_args(argv)))


if __name__ == "__main__":
    main()
