"""Throughput of the anyres image processor vs the original xGen-MM procedure (JPEG decode included).

    uv run python -m benchmarks.bench_anyres            # full run (a few minutes on 2 cores)
    uv run python -m benchmarks.bench_anyres --quick    # smoke run

"original" restates LAVIS `any_res_data_utils.process_anyres_image` + the factory.py per-crop transform: decode with
`.convert("RGB")`, PIL resize + paste on a black canvas + PIL crops, base image squashed with PIL, then for every
crop a torchvision `Resize((S, S), bicubic) → ToTensor → Normalize(0.5, 0.5)` and `torch.stack`. torchvision's
transform is used when it is installed, else the same steps written out (PIL resize, to tensor, normalise).
"ours" is `xgenmm_vision.AnyResImageProcessor` on `Image.open(...)` with the default bit-exact PIL backend, and
"ours_torch" the same with `resize_backend="torch"`. All run single-threaded (torch threads = 1, as in a DataLoader
worker), interleaved rep by rep so machine load hits them alike. Prints one JSON object: images/s (median over
reps) per input size, the speed-ups, whether the PIL backend is bit-identical to the original, and how far the
torch backend is from it (in levels of 255). It also times decode + the two PIL bicubic resizes alone, the part any
bit-exact version must do, which bounds the speed-up possible without changing pixels.

Bit-identity is checked against the original as it computed pixels on Pillow <= 12 (horizontal resize pass first):
Pillow 13 may run the vertical pass first, which changes some pixels. The original's TIMING is its code as written
(one `Image.resize` call) on the installed Pillow.
"""

from __future__ import annotations

import argparse
import io
import math

import numpy as np
import PIL
import torch
from PIL import Image

from benchmarks._common import add_standard_args, emit, interleaved, machine_info, resolve_reps
from xgenmm_vision import XGENMM_GRIDS, AnyResImageProcessor, pil_resize, resized_size, select_best_resolution

SIZES = [(640, 480), (1920, 1080), (500, 2000)]


def make_jpeg(width: int, height: int, seed: int) -> bytes:
    """A photo-like JPEG (smooth gradients + noise), quality 90."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = np.stack([xx * 255 // width, yy * 255 // height, (xx // 3 + yy // 5 + 40 * seed) % 256], axis=-1)
    pixels = np.clip(smooth * 3 // 4 + rng.integers(0, 64, size=(height, width, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# ------------------------------------------------ the original procedure (LAVIS any_res_data_utils.py)
def original_select_best_resolution(original_size, possible_resolutions):
    original_width, original_height = original_size
    best_fit, max_effective, min_wasted = None, 0, float("inf")
    for width, height in possible_resolutions:
        scale = min(width / original_width, height / original_height)
        downscaled_width, downscaled_height = int(original_width * scale), int(original_height * scale)
        effective = min(downscaled_width * downscaled_height, original_width * original_height)
        wasted = width * height - effective
        if effective > max_effective or (effective == max_effective and wasted < min_wasted):
            max_effective, min_wasted, best_fit = effective, wasted, (width, height)
    return best_fit


def original_resize_and_pad(image, target_resolution, resize=Image.Image.resize):
    original_width, original_height = image.size
    target_width, target_height = target_resolution
    scale_w, scale_h = target_width / original_width, target_height / original_height
    if scale_w < scale_h:
        new_width, new_height = target_width, min(math.ceil(original_height * scale_w), target_height)
    else:
        new_height, new_width = target_height, min(math.ceil(original_width * scale_h), target_width)
    resized = resize(image, (new_width, new_height))
    canvas = Image.new("RGB", (target_width, target_height), (0, 0, 0))
    canvas.paste(resized, ((target_width - new_width) // 2, (target_height - new_height) // 2))
    return canvas


def original_divide_to_patches(image, patch_size):
    width, height = image.size
    return [
        image.crop((left, top, left + patch_size, top + patch_size))
        for top in range(0, height, patch_size)
        for left in range(0, width, patch_size)
    ]


def make_crop_transform(size: int):
    """factory.py "google" branch: Resize((S,S), bicubic, antialias) → RGB → ToTensor → Normalize(0.5, 0.5)."""
    try:
        from torchvision import transforms
    except ImportError:
        transforms = None
    if transforms is not None:
        return "torchvision", transforms.Compose(
            [
                transforms.Resize(
                    (size, size), interpolation=transforms.InterpolationMode.BICUBIC, antialias=True
                ),
                lambda image: image.convert("RGB"),
                transforms.ToTensor(),
                transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
            ]
        )
    mean = torch.tensor((0.5, 0.5, 0.5)).view(-1, 1, 1)
    std = torch.tensor((0.5, 0.5, 0.5)).view(-1, 1, 1)

    def transform(image):  # the same steps as torchvision's Resize / ToTensor / Normalize on a PIL image
        image = image.resize((size, size), Image.Resampling.BICUBIC).convert("RGB")
        tensor = torch.from_numpy(np.array(image, np.uint8, copy=True))
        tensor = tensor.view(size, size, 3).permute((2, 0, 1)).contiguous().to(torch.float32).div(255)
        return tensor.clone().sub_(mean).div_(std)

    return "restated (torchvision not installed)", transform


def original_process(data: bytes, transform, base_size: int = 384, old_pillow_pixels: bool = False):
    """The original's code. `old_pillow_pixels`: resize with `pil_resize`, i.e. as Pillow <= 12 did (same pixels as
    the original's training runs; horizontal pass first); else one `Image.resize` call of the installed Pillow."""
    resize = pil_resize if old_pillow_pixels else Image.Image.resize
    image = Image.open(io.BytesIO(data)).convert("RGB")
    best = original_select_best_resolution(image.size, XGENMM_GRIDS)
    patches = original_divide_to_patches(original_resize_and_pad(image, best, resize), base_size)
    patches = [resize(image, (base_size, base_size))] + patches
    return torch.stack([transform(p) for p in patches]), image.size


def ours_process(data: bytes, processor):
    out = processor(Image.open(io.BytesIO(data)))
    return out.pixel_values, out.image_size


def floor_process(data: bytes, processor):
    """Only the steps any bit-exact implementation must do: decode and the two PIL bicubic resizes."""
    image = Image.open(io.BytesIO(data))
    best = select_best_resolution(image.size, processor.grids)
    image.resize((processor.base_size, processor.base_size), Image.Resampling.BICUBIC)
    image.resize(resized_size(image.size, best), Image.Resampling.BICUBIC)


# ---------------------------------------------------------------- measurement
def over(fn, inputs):
    """A no-argument callable running `fn` on every input (one timed repetition)."""

    def run_all() -> None:
        for data in inputs:
            fn(data)

    return run_all


def main(argv=None) -> dict:
    parser = add_standard_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--images", type=int, default=None, help="images per repetition")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = like a DataLoader worker)")
    args = resolve_reps(parser.parse_args(argv))
    machine = machine_info()
    reps = args.reps
    per_rep = args.images or (2 if args.quick else 8)
    torch.set_num_threads(args.threads)

    processor = AnyResImageProcessor()
    fast_processor = AnyResImageProcessor(resize_backend="torch")
    baseline_name, transform = make_crop_transform(processor.base_size)
    original = lambda data: original_process(data, transform)  # noqa: E731
    original_old_pixels = lambda data: original_process(data, transform, old_pillow_pixels=True)  # noqa: E731
    ours = lambda data: ours_process(data, processor)  # noqa: E731
    ours_torch = lambda data: ours_process(data, fast_processor)  # noqa: E731
    floor = lambda data: floor_process(data, processor)  # noqa: E731

    results = {}
    for width, height in SIZES:
        inputs = [make_jpeg(width, height, seed) for seed in range(per_rep)]
        identical, identical_to_installed_pillow, worst_levels, differing = True, True, 0.0, 0.0
        for data in inputs:
            (a, size_a), (b, size_b) = original_old_pixels(data), ours(data)
            identical &= size_a == size_b and a.shape == b.shape and torch.equal(a, b)
            identical_to_installed_pillow &= torch.equal(original(data)[0], b)
            levels = (ours_torch(data)[0] - b).abs() * 255 / 2  # std 0.5: one level of 255 = 2/255
            worst_levels = max(worst_levels, float(levels.max()))
            differing += float((levels > 0.5).float().mean()) / len(inputs)
        # interleaved rep by rep, so load from other processes hits all of them alike
        timing = interleaved(
            {
                "original": over(original, inputs),
                "ours": over(ours, inputs),
                "ours_torch": over(ours_torch, inputs),
                "floor": over(floor, inputs),
            },
            reps=reps,
            warmup=args.warmup,
        )
        original_ips, our_ips, torch_ips, floor_ips = (
            per_rep / timing[k]["median_s"] for k in ("original", "ours", "ours_torch", "floor")
        )
        results[f"{width}x{height}"] = {
            "original_images_per_s": round(original_ips, 2),
            "ours_images_per_s": round(our_ips, 2),
            "speedup": round(our_ips / original_ips, 2),
            "ours_torch_images_per_s": round(torch_ips, 2),
            "speedup_torch_backend": round(torch_ips / original_ips, 2),
            "torch_backend_max_levels_off": round(worst_levels, 2),
            "torch_backend_fraction_values_off": round(differing, 5),
            # decode + the two PIL resizes alone: no bit-exact implementation can beat this
            "decode_and_resizes_only_images_per_s": round(floor_ips, 2),
            "max_bit_exact_speedup": round(floor_ips / original_ips, 2),
            "bit_identical": bool(identical),
            "bit_identical_to_installed_pillow_one_call": bool(identical_to_installed_pillow),
            "crops_per_image": int(processor.num_crops((width, height))),
        }
    report = {
        "benchmark": "anyres_preprocessing",
        "machine": machine,
        "unit": "images/s, JPEG decode included, median of reps",
        "quick": args.quick,
        "reps": reps,
        "images_per_rep": per_rep,
        "torch_threads": args.threads,
        "baseline_crop_transform": baseline_name,
        "pillow": PIL.__version__,
        "results": results,
        "all_bit_identical": all(r["bit_identical"] for r in results.values()),
        "min_speedup": min(r["speedup"] for r in results.values()),
        "min_speedup_torch_backend": min(r["speedup_torch_backend"] for r in results.values()),
        "torch_backend_max_levels_off": max(r["torch_backend_max_levels_off"] for r in results.values()),
    }
    return emit(report)


if __name__ == "__main__":
    main()
