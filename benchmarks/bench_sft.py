"""SFT step throughput on the CPU, tiny config: length-grouped batches vs packed rows.

    uv run python -m benchmarks.bench_sft [--quick]

Prints one JSON object: tokens/s (real tokens, text + vision) and s/step for each batching mode.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run(batching: str, steps: int, data_dir: str, run_dir: str) -> dict:
    from xgenmm_train.config import load_config
    from xgenmm_train.sft import run_sft

    overrides = [
        f"run_dir={run_dir}",
        "model.init=tiny",
        "model.train_vision_encoder=true",
        f"data.path={data_dir}/mixture.yaml",
        f"data.batching={batching}",
        "data.pack_tokens=512",
        "data.max_length=128",
        "train.micro_batch_size=16" if batching == "length_grouped" else "train.micro_batch_size=2",
        "train.precision=fp32",
        f"train.max_steps={steps}",
        "deepspeed.zero_stage=0",
        "checkpoint.save_every=null",
        "logging.progress_bar=false",
        "logging.plot=false",
    ]
    config = load_config(None, overrides)
    t0 = time.perf_counter()
    result = run_sft(config)
    wall = time.perf_counter() - t0
    with open(f"{run_dir}/metrics.jsonl") as f:
        rows = [json.loads(x) for x in f]
    rows = rows[1:] or rows  # drop the first (warm-up) step
    tok_s = sum(r["tokens_per_s"] for r in rows) / len(rows)
    return {
        "tokens_per_s": round(tok_s, 1),
        "samples": result["samples"],
        "wall_s": round(wall, 1),
        "steps": steps,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from xgenmm_train.demo.sft_data import make_dataset

    steps = 3 if args.quick else 20
    out = {"benchmark": "sft_cpu_tiny", "threads": 1}
    with tempfile.TemporaryDirectory() as tmp:
        make_dataset(f"{tmp}/data", n_train=200 if args.quick else 600, n_heldout=6, n_dpo=4)
        for mode in ("length_grouped", "packed"):
            out[mode] = run(mode, steps, f"{tmp}/data", f"{tmp}/{mode}")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
