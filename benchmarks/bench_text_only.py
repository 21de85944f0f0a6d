"""Vision compute on text-only samples: crops passed to the vision encoder per record, and the time it saves.

    uv run python -m benchmarks.bench_text_only            # full run (~1 min on 2 cores)
    uv run python -m benchmarks.bench_text_only --quick    # smoke run

The released recipe gives every text-only sample a dummy all-zero 384×384 image that is encoded by SigLIP and the
perceiver and then thrown away (LAVIS `open_flamingo/train/sft_data_utils.py`, `LazySupervisedDataset`). Here
text-only records carry no image at all. The script builds a tiny XGenMM
(`tiny_config(train_tiny_tokenizer(...))`), makes LLaVA-style records with `xgenmm_data` (`SupervisedDataset`
+ `DataCollator`), and runs forward passes on:

* a batch of text-only records,
* a mixed batch (half with one image, half text-only), and the same records packed into rows,

counting with a forward hook on `model.vision_encoder` the crops it receives: per text-only record this must be 0,
per image record it must equal Np = 1 + cols·rows of its anyres grid.

Time saved: the text-only batch's forward, timed interleaved against the same forward preceded by what the
reference does for those records (one zero crop per record through the vision encoder, then the perceiver over one
all-ones-mask group, result discarded). At the tiny sizes the vision tower is small, so the real-size FLOPs of that
dummy work are also estimated (parameter counts from the released configuration built on the `meta` device;
matmul FLOPs = 2·params·tokens + attention) against the LM forward of a text-only record of LLaVA-665K-like length.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks._common import add_standard_args, emit, interleaved, machine_info, resolve_reps
from xgenmm_data import DataCollator, SupervisedDataset
from xgenmm_lm import XGenMM, XGenMMConfig, tiny_config, train_tiny_tokenizer

WORDS = (
    "the a bus red white cat dog what is in image picture describe color how many people there street".split()
)
# Image sizes of the tiny model (base crop 32 px): 2×2, 3×1 and 1×3 grids → Np = 5, 4, 4.
IMAGE_SIZES = [(64, 48), (100, 30), (30, 100)]


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def make_records(folder: Path, num_text: int, num_image: int, seed: int = 0) -> list[dict]:
    """LLaVA-format records: `num_image` with one JPEG each (sizes cycle IMAGE_SIZES), `num_text` without."""
    rng = random.Random(seed)
    records = []
    for i in range(num_image):
        w, h = IMAGE_SIZES[i % len(IMAGE_SIZES)]
        pixels = (np.random.default_rng(i).random((h, w, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.jpg", quality=90)
        question = "<image>\nDescribe the picture."
        records.append(
            {
                "id": f"img{i}",
                "image": f"img{i}.jpg",
                "conversations": [
                    {"from": "human", "value": question},
                    {"from": "gpt", "value": sentence(rng, rng.randint(10, 30))},
                ],
            }
        )
    for i in range(num_text):
        turns = []
        for _ in range(rng.randint(1, 3)):
            turns.append({"from": "human", "value": sentence(rng, rng.randint(5, 15)) + "?"})
            turns.append({"from": "gpt", "value": sentence(rng, rng.randint(10, 30)) + "."})
        records.append({"id": f"text{i}", "conversations": turns})
    return records


class CropCounter:
    """Forward hook on the vision encoder: number of crops (first input's leading dimension) per call."""

    def __init__(self, module: torch.nn.Module):
        self.calls: list[int] = []
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        self.calls.append(int(inputs[0].shape[0]))

    def take(self) -> int:
        total, self.calls = sum(self.calls), []
        return total


def real_size_estimate(mean_text_tokens: float) -> dict:
    """Matmul FLOPs of the reference's dummy-image work per text-only record vs the LM forward, at real size."""
    from bench_sampler import matmul_flops_forward

    with torch.device("meta"):
        model = XGenMM.from_config(XGenMMConfig(), dtype=torch.bfloat16)
    vcfg = model.config.vision_config
    tokens = (vcfg.image_size // vcfg.patch_size) ** 2  # 729
    n_vision = sum(p.numel() for p in model.vision_encoder.parameters())
    vision = 2 * n_vision * tokens + 2 * 2 * tokens * tokens * vcfg.hidden_size * vcfg.num_hidden_layers
    sampler = matmul_flops_forward(1, tokens, **model.config.sampler_config.to_dict())
    tcfg = model.config.text_config
    n_lm = sum(p.numel() for p in model.lang_model.parameters())
    n_lm -= model.lang_model.get_input_embeddings().weight.numel()  # a lookup, not a matmul
    t = mean_text_tokens
    lm = 2 * n_lm * t + 2 * 2 * t * t * tcfg.hidden_size * tcfg.num_hidden_layers
    return {
        "vision_encoder_params": n_vision,
        "lm_params_excluding_input_embedding": n_lm,
        "dummy_vision_gflop_per_record": round(vision / 1e9, 1),
        "dummy_sampler_gflop_per_record": round(sampler / 1e9, 1),
        "text_only_record_tokens": round(t, 1),
        "lm_forward_gflop_per_record": round(lm / 1e9, 1),
        "dummy_work_vs_lm_forward": round((vision + sampler) / lm, 3),
        "note": "forward only; training adds the perceiver backward for the dummy (the encoder is frozen)",
    }


def main(argv: list[str] | None = None) -> dict:
    parser = add_standard_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--batch-size", type=int, default=8, help="records per batch")
    args = resolve_reps(parser.parse_args(argv))
    report = {"benchmark": "text_only_vision_compute", "quick": args.quick, "machine": machine_info()}
    torch.manual_seed(0)
    rng = random.Random(0)
    corpus = [sentence(rng, 40) + "?\n." for _ in range(300)]
    tokenizer = train_tiny_tokenizer(corpus, vocab_size=300)
    model = XGenMM.from_config(tiny_config(tokenizer)).eval()
    processor = model.image_processor()
    counter = CropCounter(model.vision_encoder)
    collate = DataCollator(tokenizer.pad_token_id)
    B, half = args.batch_size, args.batch_size // 2

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "data.json").write_text(json.dumps(make_records(folder, num_text=B, num_image=half)))
        dataset = SupervisedDataset(
            folder / "data.json", tokenizer, processor, model.num_vision_tokens, image_root=str(folder)
        )
        items = [dataset[i] for i in range(len(dataset))]
    image_items = [it for it in items if it["pixel_values"]]
    text_items = [it for it in items if not it["pixel_values"]]
    if len(image_items) != half or len(text_items) != B:
        raise RuntimeError(
            f"expected {half} image and {B} text-only records, got {len(image_items)}/{len(text_items)}"
        )
    expected_np = [int(it["pixel_values"][0].shape[0]) for it in image_items]
    for it, np_ in zip(image_items, expected_np):
        assert np_ == processor.num_crops(tuple(it["image_sizes"][0])), "processor and pixel_values disagree"

    text_batch = collate(text_items)
    mixed_items = image_items + text_items[: B - half]
    mixed_batch = collate(mixed_items)
    packed_batch = collate([mixed_items[0::2], mixed_items[1::2]])  # two rows, images and text in both
    batches = {"text_only": (text_batch, 0, B), "mixed": (mixed_batch, half, B - half)}
    batches["mixed_packed"] = (packed_batch, half, B - half)

    counts = {}
    with torch.no_grad():
        for name, (batch, n_image, n_text) in batches.items():
            model(**batch)
            crops = counter.take()
            image_crops = sum(expected_np[:n_image])
            counts[name] = {
                "image_records": n_image,
                "text_only_records": n_text,
                "crops_encoded": crops,
                "crops_per_image_record": round(image_crops / n_image, 2) if n_image else None,
                # crops beyond those of the image records, spread over the text-only records (must be 0)
                "crops_per_text_only_record": (crops - image_crops) / n_text,
            }
    report["crop_counts"] = counts
    report["expected_crops_per_image_record"] = expected_np

    size = model.config.vision_config.image_size
    tokens_per_crop = model.vision_encoder.tokens_per_crop
    dummy = torch.zeros(B, 3, size, size)
    all_ones = torch.ones(B, tokens_per_crop, dtype=torch.bool)

    def ours() -> None:
        model(**text_batch)

    def reference() -> None:  # dummy zero crop per record through SigLIP + perceiver, discarded, then the LM
        model.vision_tokenizer(model.vision_encoder(dummy), all_ones)
        model(**text_batch)

    with torch.no_grad():
        reference()
        report["reference_crops_per_text_only_record"] = counter.take() / B
        reps = args.reps * (3 if args.quick else 10)  # forwards are ~ms: take many short reps
        timing = interleaved({"ours": ours, "reference_dummy_image": reference}, reps=reps, warmup=3)
    counter.handle.remove()
    t_ours, t_ref = timing["ours"]["median_s"], timing["reference_dummy_image"]["median_s"]
    report["tiny_forward_text_only_batch"] = {
        "batch_size": B,
        "ours_median_s": t_ours,
        "reference_dummy_image_median_s": t_ref,
        "speedup": round(t_ref / t_ours, 3),
        "saved_ms_per_text_only_record": round((t_ref - t_ours) / B * 1e3, 4),
        "reps": reps,
    }
    from bench_data import synthetic_llava_lengths

    text_lengths = [-n for n in synthetic_llava_lengths(20000) if n < 0]
    report["real_size_estimate"] = real_size_estimate(statistics.mean(text_lengths))
    report["zero_vision_compute_on_text_only"] = all(
        c["crops_per_text_only_record"] == 0 for c in counts.values() if c["text_only_records"]
    )
    report["image_records_get_np_crops"] = all(
        c["crops_per_image_record"] == statistics.mean(expected_np[: c["image_records"]])
        for c in counts.values()
        if c["image_records"]
    )
    return emit(report)


if __name__ == "__main__":
    main()
