"""Real-size xGen-MM SFT steps on one GPU with random weights (no download): tokens/s, MFU, peak memory.

    uv run python benchmarks/gpu_sft.py                      # 20 steps, micro-batch 4, bf16, checkpointing
    uv run python benchmarks/gpu_sft.py --sweep              # micro-batch 1/4/8, packing and checkpointing on/off
    uv run python benchmarks/gpu_sft.py --tiny --steps 2     # the same code path on the CPU (smoke test)

Each sample: 1 image of 640x480 (anyres 2x2 grid: 5 crops -> 640 LM tokens) + 512 text tokens, a third of
them supervised. Model: XGenMMConfig() (SigLIP so400m-384, perceiver 128 latents, Phi-3-mini), vision encoder
frozen (spec §1.8), DeepSpeed ZeRO-2, bf16, AdamW, clip 1.0 - the engine and loss of xgenmm-train.
MFU = 6 · N · tokens / time / peak with N = trainable parameters (perceiver + LM, 3.93 B) and tokens = LM
positions (text + vision); the frozen SigLIP forward is not counted. Peak: H100/H200 SXM dense bf16
989 TFLOP/s. Prints one JSON object per configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PEAK_TFLOPS = 989.0

from _common import emit, require_cuda  # noqa: E402  (benchmarks/ is on sys.path)


def synthetic_batch(model, micro: int, text_len: int, packed: bool):
    import torch

    cfg = model.config
    S = cfg.vision_config.image_size
    n_crops = model.image_processor().num_crops((640, 480))
    vocab = cfg.initial_tokenizer_len
    items = []
    for _ in range(micro):
        ids = torch.randint(100, vocab - 100, (text_len,))
        ids[8] = cfg.media_token_id
        labels = ids.clone()
        labels[: 2 * text_len // 3] = -100
        items.append((ids, labels, [torch.randn(n_crops, 3, S, S)], [(640, 480)]))
    if not packed:
        return {
            "input_ids": torch.stack([i[0] for i in items]),
            "attention_mask": torch.ones(micro, text_len, dtype=torch.long),
            "labels": torch.stack([i[1] for i in items]),
            "pixel_values": [i[2] for i in items],
            "image_sizes": [i[3] for i in items],
        }
    # one packed row holding all samples (same tokens, no padding)
    return {
        "input_ids": torch.cat([i[0] for i in items])[None],
        "attention_mask": torch.ones(1, micro * text_len, dtype=torch.long),
        "labels": torch.cat([i[1] for i in items])[None],
        "position_ids": torch.arange(text_len).repeat(micro)[None],
        "segment_ids": torch.arange(micro).repeat_interleave(text_len)[None],
        "pixel_values": [[p for i in items for p in i[2]]],
        "image_sizes": [[s for i in items for s in i[3]]],
    }


def bench(micro: int, steps: int, checkpointing: bool, packed: bool, tiny: bool, text_len: int) -> dict:
    import torch

    from xgenmm_lm import XGenMM, XGenMMConfig, tiny_config
    from xgenmm_train.config import Config
    from xgenmm_train.distributed import build_engine, init_distributed
    from xgenmm_train.sft import SFTRecipe
    from xgenmm_train.trainer import StepContext

    _, world, device = init_distributed()
    cfg = tiny_config() if tiny else XGenMMConfig()
    dtype = torch.float32 if tiny else torch.bfloat16
    # Build the random weights directly on the GPU: initialising 4.3 B parameters on the host takes minutes.
    with torch.device(device if torch.cuda.is_available() else "cpu"):
        model = XGenMM.from_config(cfg, dtype=dtype)
    model.set_trainable(vision_encoder=False, vision_tokenizer=True, lang_model=True)
    if checkpointing:
        model.gradient_checkpointing_enable()
    config = Config()
    config.train.micro_batch_size = micro
    config.train.precision = "fp32" if tiny else "bf16"
    config.train.lr = 2e-5
    config.deepspeed.zero_stage = 2
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    engine, _, _ = build_engine(model, config, world, 10_000)
    recipe = SFTRecipe()
    batch = synthetic_batch(model, micro, text_len, packed)
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    tokens, t_run = 0, 0.0
    warmup = 2
    for s in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        sums = recipe.train_step(StepContext(engine, device, world, config, s), [batch])
        sync()
        if s >= warmup:
            t_run += time.perf_counter() - t0
            tokens += sums["tokens"]
    tok_s = tokens / t_run
    out = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "micro_batch": micro,
        "packed": packed,
        "gradient_checkpointing": checkpointing,
        "steps": steps,
        "tokens_per_step": tokens / steps,
        "tokens_per_s": round(tok_s, 1),
        "s_per_step": round(t_run / steps, 3),
        "trainable_params": n_trainable,
        "mfu": round(6 * n_trainable * tok_s / (PEAK_TFLOPS * 1e12), 4),
        "mfu_peak": f"{PEAK_TFLOPS} TFLOP/s bf16 dense (H100/H200 SXM)",
        "final_loss": round(sums["loss_sum"] / max(sums["supervised"], 1), 4),
    }
    if torch.cuda.is_available():
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    del engine, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--micro", type=int, default=4)
    p.add_argument("--text-len", type=int, default=512)
    p.add_argument("--no-checkpointing", action="store_true")
    p.add_argument("--packed", action="store_true")
    p.add_argument(
        "--sweep", action="store_true", help="micro-batch 1/4/8, then packing / no checkpointing at 4"
    )
    p.add_argument(
        "--configs",
        nargs="*",
        help="explicit runs as MICRO:ckpt|nockpt:pad|pack, e.g. 4:ckpt:pad 8:ckpt:pack",
    )
    p.add_argument("--tiny", action="store_true", help="tiny config (CPU smoke run of the same code path)")
    p.add_argument("--quick", action="store_true", help="= --tiny --steps 2")
    args = p.parse_args(argv)
    if not (args.quick or args.tiny):
        require_cuda("gpu_sft.py")
    if args.quick:
        args.tiny, args.steps, args.text_len = True, 2, 64
    runs = [(args.micro, not args.no_checkpointing, args.packed)]
    if args.sweep:
        runs = [(1, True, False), (4, True, False), (8, True, False), (4, True, True), (4, False, False)]
    if args.configs:
        runs = []
        for spec in args.configs:
            micro, ckpt, packing = spec.split(":")
            runs.append((int(micro), ckpt == "ckpt", packing == "pack"))
    results = []
    if len(runs) > 1:
        # One process per configuration: DeepSpeed's optimizer state of a finished run is not reliably freed
        # inside a process, which made later configurations of a sweep run out of GPU memory.
        base = [
            sys.executable,
            os.path.abspath(__file__),
            "--steps",
            str(args.steps),
            "--text-len",
            str(args.text_len),
        ]
        base += ["--tiny"] if args.tiny else []
        for micro, ckpt, packed in runs:
            spec = f"{micro}:{'ckpt' if ckpt else 'nockpt'}:{'pack' if packed else 'pad'}"
            proc = subprocess.run([*base, "--configs", spec], capture_output=True, text=True)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            r = json.loads(lines[-1]) if lines else {"config": spec, "error": proc.stderr.strip()[-300:]}
            print(json.dumps(r), flush=True)
            results.append(r)
        emit({"benchmark": "gpu_sft", "runs": results})
        return results
    for micro, ckpt, packed in runs:
        try:
            r = bench(micro, args.steps, ckpt, packed, args.tiny, args.text_len)
        except RuntimeError as e:  # e.g. CUDA out of memory for one configuration of the sweep
            r = {
                "micro_batch": micro,
                "gradient_checkpointing": ckpt,
                "packed": packed,
                "error": str(e)[:300],
            }
        print(json.dumps(r), flush=True)
        results.append(r)
    if not args.configs or len(args.configs) != 1:  # a sweep's child prints only its own line
        emit({"benchmark": "gpu_sft", "runs": results})
    return results


if __name__ == "__main__":
    main()
