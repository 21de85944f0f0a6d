"""xgenmm-data throughput and padding efficiency. Prints one JSON object.

    uv run python -m benchmarks.bench_data            # full run (~1-2 min on 2 cores)
    uv run python -m benchmarks.bench_data --quick    # smoke run

1. samples/s of the full per-sample path (JSON record -> image decode -> anyres -> tokenize -> label mask),
   one worker (torch threads = 1, as in a DataLoader worker), for 640x480, 1920x1080 and 500x2000 JPEGs:
   median over `--reps` repetitions of `--samples` items each, after one untimed repetition. The processor is
   xgenmm_vision's `AnyResImageProcessor` with the bit-exact PIL resize and again with `resize_backend="torch"`,
   the tokenizer `xgenmm_lm.train_tiny_tokenizer` (Phi-3 layout).
2. padding efficiency (real tokens / processed tokens, text + vision) of plain batches, the length-grouped
   sampler and packing, on a synthetic length mix shaped like LLaVA-665K (deterministic, not timed).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks._common import add_standard_args, emit, machine_info, resolve_reps, time_reps
from xgenmm_data import (
    LengthGroupedSampler,
    PackedBatchSampler,
    SupervisedDataset,
    get_template,
    padding_efficiency,
)
from xgenmm_lm import train_tiny_tokenizer
from xgenmm_vision import AnyResImageProcessor

SIZES = [(640, 480), (1920, 1080), (500, 2000)]
WORDS = "the a bus red white cat dog what is in image picture describe color how many people there".split()


def make_tokenizer():
    rng = random.Random(0)
    return train_tiny_tokenizer(
        [" ".join(rng.choice(WORDS) for _ in range(30)) + "?\n." for _ in range(500)], vocab_size=1000
    )


def reader(dataset, per_rep: int):
    """One timed repetition: the next `per_rep` items of `dataset` (every repetition reads fresh records)."""
    cursor = iter(range(len(dataset)))

    def one_rep() -> None:
        for _ in range(per_rep):
            dataset[next(cursor)]

    return one_rep


def bench_throughput(
    sizes, per_rep: int, reps: int, warmup: int, tokenizer, processor, vtok, tmp: Path
) -> dict:
    rng = random.Random(0)
    n = per_rep * (reps + warmup)
    out = {}
    for w, h in sizes:
        folder = tmp / f"{w}x{h}"
        folder.mkdir()
        arr = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / "img.jpg", quality=90)
        records = [
            {
                "id": i,
                "image": "img.jpg",
                "conversations": [
                    {"from": "human", "value": "<image>\nDescribe the picture in detail."},
                    {
                        "from": "gpt",
                        "value": " ".join(rng.choice(["a", "red", "bus", "cat"]) for _ in range(60)),
                    },
                    {"from": "human", "value": "How many people are there?"},
                    {"from": "gpt", "value": "There are two people."},
                ],
            }
            for i in range(n)
        ]
        (folder / "d.json").write_text(json.dumps(records))
        ds = SupervisedDataset(folder / "d.json", tokenizer, processor, vtok, image_root=str(folder))
        timing = time_reps(reader(ds, per_rep), reps=reps, warmup=warmup)
        out[f"{w}x{h}"] = {
            "samples_per_s": round(per_rep / timing["median_s"], 2),
            "reps_samples_per_s": [round(per_rep / t, 2) for t in timing["reps_s"]],
            "num_tokens": ds[0]["num_tokens"],
        }
    return out


def synthetic_llava_lengths(n: int, seed: int = 0) -> list[int]:
    """LLaVA-665K-like lengths (text + vision): 90 % one image of 384/512/640 vision tokens, 1-10 turns;
    10 % text-only. Returns modality lengths (negative = text-only)."""
    rng = random.Random(seed)
    system = 40
    lengths = []
    for _ in range(n):
        turns = min(10, max(1, int(rng.expovariate(1 / 3)) + 1))
        text = system + sum(rng.randint(8, 40) + rng.randint(5, 160) for _ in range(turns))
        if rng.random() < 0.1:
            lengths.append(-(text + rng.randint(0, 600)))
        else:
            lengths.append(text + rng.choices([384, 512, 640], weights=[0.25, 0.15, 0.6])[0])
    return lengths


def bench_padding(n: int, batch_size=8, world=8, row=4096) -> dict:
    lengths = synthetic_llava_lengths(n)
    rng = random.Random(1)
    order = list(range(n))
    rng.shuffle(order)
    plain = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    grouped = LengthGroupedSampler(lengths, batch_size=batch_size, world_size=world, rank=0, drop_last=True)
    grouped_batches = [b for step in grouped.plan() for b in step]
    packed = PackedBatchSampler(
        lengths, max_tokens_per_row=row, rows_per_batch=2, world_size=world, drop_last=True
    )
    t0 = time.perf_counter()
    packed_batches = [b for step in packed.plan() for b in step]
    pack_s = time.perf_counter() - t0
    return {
        "num_samples": n,
        "mean_tokens": round(float(np.mean(np.abs(lengths))), 1),
        "plain_batches": round(padding_efficiency(plain, lengths), 4),
        "length_grouped": round(padding_efficiency(grouped_batches, lengths), 4),
        "packing": round(padding_efficiency(packed_batches, lengths), 4),
        "packing_row_tokens": row,
        "packing_plan_seconds": round(pack_s, 3),
        "batch_size": batch_size,
        "world_size": world,
    }


def main(argv=None) -> dict:
    parser = add_standard_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--samples", type=int, default=None, help="samples per timed repetition (8; 2 quick)")
    parser.add_argument(
        "--resize-backends",
        nargs="+",
        default=["pil", "torch"],
        choices=["pil", "torch"],
        help="processors to time",
    )
    args = resolve_reps(parser.parse_args(argv))
    machine = machine_info()
    torch.set_num_threads(1)
    tokenizer = make_tokenizer()
    assert get_template("phi_3").render([{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}])
    per_rep = args.samples or (2 if args.quick else 8)
    throughput = {}
    for backend in args.resize_backends:
        processor = AnyResImageProcessor(resize_backend=backend)
        vtok = lambda size, p=processor: 128 * p.num_crops(size)  # noqa: E731 - 128 latents per group
        with tempfile.TemporaryDirectory() as tmp:
            throughput[backend] = bench_throughput(
                SIZES, per_rep, args.reps, args.warmup, tokenizer, processor, vtok, Path(tmp)
            )
    thr = throughput[args.resize_backends[0]]
    pad = bench_padding(2000 if args.quick else 50000)
    return emit(
        {
            "benchmark": "xgenmm-data",
            "machine": machine,
            "quick": args.quick,
            "reps": args.reps,
            "samples_per_rep": per_rep,
            "torch_threads": 1,
            "processor": "xgenmm_vision.AnyResImageProcessor",
            "per_sample_path_one_worker": thr,
            "per_sample_path_one_worker_by_resize_backend": throughput,
            "padding_efficiency": pad,
            "goal_one_worker_ge_10_samples_per_s_at_640x480": thr["640x480"]["samples_per_s"] >= 10,
            "goal_packing_ge_0.97": pad["packing"] >= 0.97,
        }
    )


if __name__ == "__main__":
    main()
