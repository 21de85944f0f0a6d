"""xgenmm-data throughput and padding efficiency. Prints one JSON object.

    uv run python benchmarks/bench_data.py            # full run (~1-2 min on 2 cores)
    uv run python benchmarks/bench_data.py --quick    # smoke run

1. samples/s of the full per-sample path (JSON record -> image decode -> anyres -> tokenize -> label mask),
   one worker, for 640x480, 1920x1080 and 500x2000 JPEGs. The processor is xgenmm_vision's
   AnyResImageProcessor when importable (else a simple stand-in); the tokenizer is trained here.
2. padding efficiency (real tokens / processed tokens, text + vision) of plain batches, the length-grouped
   sampler and packing, on a synthetic length mix shaped like LLaVA-665K.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from xgenmm_data import (  # noqa: E402
    LengthGroupedSampler,
    PackedBatchSampler,
    SupervisedDataset,
    get_template,
    padding_efficiency,
)

ROLE_TOKENS = ["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>", "<pad>"]


def train_tokenizer():
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    words = (
        "the a bus red white cat dog what is in image picture describe color how many people there".split()
    )
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(words) for _ in range(30)) + "?\n." for _ in range(500)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=1000, special_tokens=["<unk>", "<s>"]))
    tok.add_special_tokens(
        [AddedToken(t, rstrip=t.startswith("<|") and t != "<|endoftext|>") for t in ROLE_TOKENS]
    )
    tok.add_special_tokens([AddedToken("<image>", normalized=False)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<pad>")


def make_processor():
    try:
        from xgenmm_vision import AnyResImageProcessor

        proc = AnyResImageProcessor()
        return proc, (lambda size: 128 * proc.num_vision_groups(size)), "xgenmm_vision.AnyResImageProcessor"
    except ImportError:
        pass

    def simple(image):  # squash + fixed 2x2 grid stand-in, 384 px crops
        base = np.asarray(image.convert("RGB").resize((384, 384)), dtype=np.float32)
        canvas = np.asarray(image.convert("RGB").resize((768, 768)), dtype=np.float32)
        crops = [base] + [canvas[r : r + 384, c : c + 384] for r in (0, 384) for c in (0, 384)]
        return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2) / 127.5 - 1, image.size

    return simple, (lambda size: 640), "simple stand-in (xgenmm_vision not importable)"


def bench_throughput(sizes, n, tokenizer, processor, vtok, tmp: Path) -> dict:
    rng = random.Random(0)
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
        ds[0]  # warm-up
        t0 = time.perf_counter()
        for i in range(n):
            item = ds[i]
        dt = time.perf_counter() - t0
        out[f"{w}x{h}"] = {"samples_per_s": round(n / dt, 2), "num_tokens": item["num_tokens"]}
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
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    tokenizer = train_tokenizer()
    assert get_template("phi_3").render([{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}])
    processor, vtok, proc_name = make_processor()
    sizes = [(640, 480), (1920, 1080), (500, 2000)]
    with tempfile.TemporaryDirectory() as tmp:
        thr = bench_throughput(sizes, 5 if args.quick else 40, tokenizer, processor, vtok, Path(tmp))
    pad = bench_padding(2000 if args.quick else 50000)
    result = {
        "benchmark": "xgenmm-data",
        "quick": args.quick,
        "processor": proc_name,
        "per_sample_path_one_worker": thr,
        "padding_efficiency": pad,
        "goal_packing_ge_0.97": pad["packing"] >= 0.97,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
