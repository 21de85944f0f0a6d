"""Streamed pre-training data: caption-shard throughput against the JSON path, and the cost of exact resume.
Prints one JSON object.

    uv run python -m benchmarks.bench_stream            # full run (~2 min on 2 cores)
    uv run python -m benchmarks.bench_stream --quick    # smoke run

1. samples/s of one worker (torch threads 1, in-process) on the same 640x480 JPEGs and captions:
   * stream: img2dataset-layout caption shards -> `ShardStream` (shuffle buffer 100) -> `PretrainProcessor`
     (decode, anyres, tokenize, labels) -> `PackedRows` (4096-token rows, 2 per batch) -> `DataCollator`;
   * JSON: LLaVA records (one caption turn) -> `SupervisedDataset[row]` (decode, anyres, template, tokenize,
     label mask) over `PackedBatchSampler` rows (4096 tokens, 2 per batch) -> `DataCollator`; its one-off
     construction (headers + tokenization of every record) is reported apart, per sample.
   Interleaved repetition by repetition (A, B, A, B, ...), median of `--reps` after `--warmup`.
2. exact resume in a 10,000-sample caption shard set (10 shards x 1,000, shuffle buffer 1,000): the stream
   is read to sample 7,500, its state saved (JSON); timed: a new stream from that state up to its first
   sample, against reading the 7,500 samples again (what a replay-based resume costs, without processing);
   with processing, the same at sample 400 with a packing pool of 32 (the pool is re-processed on resume).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from benchmarks._common import add_standard_args, emit, interleaved, machine_info, resolve_reps
from xgenmm_data import (
    DataCollator,
    PackedBatchSampler,
    PackedRows,
    PretrainProcessor,
    ShardStream,
    SupervisedDataset,
)
from xgenmm_lm import train_tiny_tokenizer
from xgenmm_vision import AnyResImageProcessor

WORDS = "the a bus red white cat dog what is in image picture describe color how many people there".split()


def make_tokenizer():
    rng = random.Random(0)
    return train_tiny_tokenizer(
        [" ".join(rng.choice(WORDS) for _ in range(30)) + "?\n." for _ in range(500)], vocab_size=1000
    )


def jpeg(seed: int, size, noise: bool) -> bytes:
    w, h = size
    rng = np.random.default_rng(seed)
    if noise:
        arr = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    else:  # photo-like: smooth gradients, compresses like a photo
        y, x = np.mgrid[0:h, 0:w]
        arr = np.stack([(x * (1 + c) + y * (3 - c) + seed * 40) % 256 for c in range(3)], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_caption_shards(folder: Path, n_shards: int, per_shard: int, images: list[bytes], rng) -> list[str]:
    """img2dataset layout: KEY.jpg + KEY.txt + KEY.json {"caption"}."""
    folder.mkdir(parents=True, exist_ok=True)
    urls = []
    for s in range(n_shards):
        urls.append(str(folder / f"{s:05d}.tar"))
        with wds.TarWriter(urls[-1]) as w:
            for i in range(per_shard):
                caption = " ".join(rng.choice(WORDS) for _ in range(30))
                key = f"{s:05d}{i:04d}"
                meta = {"caption": caption, "key": key, "status": "success"}
                w.write(
                    {
                        "__key__": key,
                        "jpg": images[i % len(images)],
                        "txt": caption.encode(),
                        "json": json.dumps(meta).encode(),
                    }
                )
    return urls


def bench_throughput(tmp: Path, per_rep: int, reps: int, warmup: int, tokenizer, processor, vtok) -> dict:
    rng = random.Random(0)
    images = [jpeg(k, (640, 480), noise=True) for k in range(8)]
    n = (per_rep + 40) * (reps + warmup) * 2 + 64
    urls = write_caption_shards(tmp / "caps", 4, -(-n // 4), images, random.Random(0))
    for k, data in enumerate(images):
        (tmp / f"img{k}.jpg").write_bytes(data)
    records = [
        {
            "id": i,
            "image": f"img{i % len(images)}.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe the picture."},
                {"from": "gpt", "value": " ".join(rng.choice(WORDS) for _ in range(30))},
            ],
        }
        for i in range(n)
    ]
    (tmp / "d.json").write_text(json.dumps(records))
    collate = DataCollator(tokenizer.pad_token_id)

    t0 = time.perf_counter()
    ds = SupervisedDataset(tmp / "d.json", tokenizer, processor, vtok, image_root=str(tmp))
    setup_s = time.perf_counter() - t0
    sampler = PackedBatchSampler(ds.lengths, max_tokens_per_row=4096, rows_per_batch=2)
    json_batches = iter([b for _ in range(4) for b in sampler])

    proc = PretrainProcessor(tokenizer, processor, vtok)
    mix = {"shuffle": 100, "streams": {"captions": {"urls": urls, "kind": "caption"}}}
    stream = iter(ShardStream(mix, processor=proc, batcher=PackedRows(4096, 2, collate, pool_size=32)))

    counts: dict[str, list[int]] = {"stream": [], "json": []}

    def read_json():
        done = 0
        while done < per_rep:
            batch = next(json_batches)
            collate([ds[row] for row in batch])
            done += sum(len(row) for row in batch)
        counts["json"].append(done)

    def read_stream():
        done = 0
        while done < per_rep:
            done += int(next(stream)["position_ids"].eq(0).sum())  # samples in the packed rows
        counts["stream"].append(done)

    timing = interleaved({"stream": read_stream, "json": read_json}, reps=reps, warmup=warmup)
    out = {}
    for name, t in timing.items():
        rates = [c / s for c, s in zip(counts[name][warmup:], t["reps_s"])]
        out[name] = {
            "samples_per_s": round(float(np.median(rates)), 2),
            "reps_samples_per_s": [round(r, 2) for r in rates],
            "samples_per_rep": counts[name][warmup:],
        }
    out["json"]["construction_s_per_sample"] = round(setup_s / n, 5)
    out["stream_vs_json_samples_per_s"] = round(
        out["stream"]["samples_per_s"] / out["json"]["samples_per_s"], 3
    )
    return out


def bench_resume(tmp: Path, quick: bool, tokenizer, processor, vtok) -> dict:
    per_shard = 100 if quick else 1000
    images = [jpeg(k, (640, 480), noise=False) for k in range(16)]
    urls = write_caption_shards(tmp / "resume", 10, per_shard, images, random.Random(1))
    total = 10 * per_shard
    at = int(0.75 * total)
    mix = {"shuffle": min(1000, total // 10), "streams": {"captions": {"urls": urls, "kind": "caption"}}}

    stream = ShardStream(mix)
    it = iter(stream)
    t0 = time.perf_counter()
    for _ in range(at):
        next(it)
    replay_s = time.perf_counter() - t0
    state = json.loads(json.dumps(stream.state_dict()))
    resumed = ShardStream(mix)
    t0 = time.perf_counter()
    resumed.load_state_dict(state)
    next(iter(resumed))
    resume_s = time.perf_counter() - t0
    expected = next(it)
    check = ShardStream(mix)
    check.load_state_dict(state)
    same = next(iter(check))["key"] == expected["key"]

    # with processing + packing: the pool is re-processed on resume
    at_p = 40 if quick else 400
    proc = PretrainProcessor(tokenizer, processor, vtok)
    collate = DataCollator(tokenizer.pad_token_id)

    def packed():
        return ShardStream(mix, processor=proc, batcher=PackedRows(4096, 2, collate, pool_size=32))

    stream = packed()
    it = iter(stream)
    t0 = time.perf_counter()
    done = 0
    while done < at_p:
        done += int(next(it)["position_ids"].eq(0).sum())
    replay_p = time.perf_counter() - t0
    state_p = json.loads(json.dumps(stream.state_dict()))
    resumed = packed()
    t0 = time.perf_counter()
    resumed.load_state_dict(state_p)
    first = next(iter(resumed))
    resume_p = time.perf_counter() - t0
    same_p = torch.equal(first["input_ids"], next(it)["input_ids"])
    return {
        "shard_set_samples": total,
        "shards": 10,
        "shuffle_buffer": mix["shuffle"],
        "raw": {
            "position": at,
            "resume_s": round(resume_s, 3),
            "replay_s": round(replay_s, 3),
            "state_json_bytes": len(json.dumps(state)),
            "same_next_sample": same,
        },
        "processed_packed": {
            "position_samples": done,
            "packing_pool": 32,
            "resume_s": round(resume_p, 3),
            "replay_s": round(replay_p, 3),
            "same_next_batch": same_p,
        },
    }


def main(argv=None) -> dict:
    parser = add_standard_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument(
        "--samples", type=int, default=None, help="samples per timed repetition (48; 8 quick)"
    )
    args = resolve_reps(parser.parse_args(argv))
    machine = machine_info()
    torch.set_num_threads(1)
    tokenizer = make_tokenizer()
    processor = AnyResImageProcessor()
    vtok = lambda size: 128 * processor.num_crops(size)  # noqa: E731 - 128 latents per group
    per_rep = args.samples or (8 if args.quick else 48)
    with tempfile.TemporaryDirectory() as tmp:
        thr = bench_throughput(Path(tmp), per_rep, args.reps, args.warmup, tokenizer, processor, vtok)
    with tempfile.TemporaryDirectory() as tmp:
        resume = bench_resume(Path(tmp), args.quick, tokenizer, processor, vtok)
    return emit(
        {
            "benchmark": "xgenmm-data stream",
            "machine": machine,
            "quick": args.quick,
            "reps": args.reps,
            "samples_per_rep": per_rep,
            "torch_threads": 1,
            "image_size": [640, 480],
            "processor": "xgenmm_vision.AnyResImageProcessor",
            "throughput_one_worker": thr,
            "resume": resume,
            "goal_stream_not_slower_than_json": thr["stream_vs_json_samples_per_s"] >= 1.0,
        }
    )


if __name__ == "__main__":
    main()
