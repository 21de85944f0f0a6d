"""Generation speed of `XGenMM.generate` (KV cache on, greedy) at batch 1 and 8; prints one JSON object.

    uv run python benchmarks/bench_generate.py                 # tiny config, CPU
    uv run python benchmarks/bench_generate.py --quick         # smoke run
    uv run python benchmarks/bench_generate.py --device cuda --real-size   # released sizes, random bf16 weights

Each sample holds one 640x480 image (5 crops → 640 vision tokens at real size) and a text prompt; every run
generates exactly `--new-tokens` tokens (eos disabled). Reported: prefill seconds (vision + splice + first
forward, measured as a 1-token generate), end-to-end seconds, and decode tokens/s = batch·(new−1)/(total−prefill).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from PIL import Image

from xgenmm_lm import XGenMM, XGenMMConfig, tiny_config


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


def timed_generate(model, inputs, new_tokens: int, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    out = model.generate(
        *inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, eos_token_id=None
    )
    sync(device)
    assert out.shape[1] == new_tokens, out.shape
    return time.perf_counter() - start


def run(args) -> dict:
    model = build(args)
    results = {}
    for batch in args.batch_sizes:
        inputs = make_batch(model, batch, args.prompt_tokens, args.device)
        timed_generate(model, inputs, 2, args.device)  # warm-up
        prefill = min(timed_generate(model, inputs, 1, args.device) for _ in range(args.repeats))
        total = min(timed_generate(model, inputs, args.new_tokens, args.device) for _ in range(args.repeats))
        decode_tps = batch * (args.new_tokens - 1) / max(total - prefill, 1e-9)
        results[f"batch_{batch}"] = {
            "prefill_s": round(prefill, 4),
            "total_s": round(total, 4),
            "decode_tokens_per_s": round(decode_tps, 1),
            "end_to_end_tokens_per_s": round(batch * args.new_tokens / total, 1),
            "expanded_prompt_len": int(model.prepare_inputs(*inputs).attention_mask.shape[1]),
        }
    report = {
        "benchmark": "generate",
        "config": "real-size (random weights)" if args.real_size else "tiny",
        "device": torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else platform.processor() or "cpu",
        "dtype": "bfloat16" if args.real_size else "float32",
        "attn_implementation": args.attn,
        "threads": torch.get_num_threads(),
        "prompt_text_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "results": results,
    }
    if args.device.startswith("cuda"):
        report["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return report


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--real-size", action="store_true", help="released sizes (4.36B params), random bf16 weights"
    )
    p.add_argument("--attn", default="sdpa")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="smoke run: 8 new tokens, 1 repeat")
    args = p.parse_args(argv)
    if args.quick:
        args.new_tokens, args.repeats, args.prompt_tokens = 8, 1, 16
    return args


def main(argv=None) -> dict:
    report = run(parse_args(argv))
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
