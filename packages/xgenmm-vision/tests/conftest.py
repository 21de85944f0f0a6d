"""Shared fixtures of the xgenmm-vision tests: offline hub, test images, and a plain re-statement of the reference
anyres procedure (LAVIS any_res_data_utils.py + the per-crop torchvision transform of
`open_flamingo/src/factory.py`)."""

import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

os.environ["HF_HUB_OFFLINE"] = "1"

REFERENCE_GRIDS = [(384, 768), (768, 384), (768, 768), (1152, 384), (384, 1152)]


def reference_select_best_resolution(original_size, candidates):
    """The original's `select_best_resolution`, written out plainly."""
    original_width, original_height = original_size
    best_fit = None
    max_effective_resolution = 0
    min_wasted_resolution = float("inf")
    for width, height in candidates:
        scale = min(width / original_width, height / original_height)
        downscaled_width = int(original_width * scale)
        downscaled_height = int(original_height * scale)
        effective_resolution = min(downscaled_width * downscaled_height, original_width * original_height)
        wasted_resolution = (width * height) - effective_resolution
        if effective_resolution > max_effective_resolution or (
            effective_resolution == max_effective_resolution and wasted_resolution < min_wasted_resolution
        ):
            max_effective_resolution = effective_resolution
            min_wasted_resolution = wasted_resolution
            best_fit = (width, height)
    return best_fit


def legacy_resize(image, size):
    """`image.resize(size)` as Pillow 10-12 computed it (horizontal pass, then vertical), on any Pillow version.

    Pillow 13 may run the vertical pass first; `test_pil_resize_reproduces_pillow_12` pins the old pixels with hashes
    made by Pillow 12 itself.
    """
    if size[0] != image.width and size[1] != image.height:
        image = image.resize((size[0], image.height))
    return image.resize(size)


def reference_anyres(image, base_size=384, grids=REFERENCE_GRIDS, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
    """The original procedure, one PIL step at a time: resize with aspect, paste on black, crop row-major, squashed
    base first, per-crop bicubic resize to S×S, to tensor, normalise. Returns ((Np, 3, S, S), (w, h)).
    Resizes as the original's Pillow (<= 12) computed them."""
    image = image.convert("RGB")
    original_width, original_height = image.size
    target_width, target_height = reference_select_best_resolution(image.size, grids)
    scale_w = target_width / original_width
    scale_h = target_height / original_height
    if scale_w < scale_h:
        new_width = target_width
        new_height = min(math.ceil(original_height * scale_w), target_height)
    else:
        new_height = target_height
        new_width = min(math.ceil(original_width * scale_h), target_width)
    resized = legacy_resize(image, (new_width, new_height))
    canvas = Image.new("RGB", (target_width, target_height), (0, 0, 0))
    canvas.paste(resized, ((target_width - new_width) // 2, (target_height - new_height) // 2))
    crops = []
    for top in range(0, target_height, base_size):
        for left in range(0, target_width, base_size):
            crops.append(canvas.crop((left, top, left + base_size, top + base_size)))
    base = legacy_resize(image, (base_size, base_size))
    tensors = []
    for patch in [base] + crops:
        patch = patch.resize((base_size, base_size), Image.Resampling.BICUBIC).convert("RGB")
        tensor = torch.from_numpy(np.array(patch)).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        tensor = tensor.sub_(torch.tensor(mean).view(-1, 1, 1)).div_(torch.tensor(std).view(-1, 1, 1))
        tensors.append(tensor)
    return torch.stack(tensors), (original_width, original_height)


def random_image(width, height, seed=0, mode="RGB"):
    """A noisy image with smooth structure (so resampling filters matter), deterministic per seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = np.stack(
        [(xx * 255 // max(width - 1, 1)), (yy * 255 // max(height - 1, 1)), ((xx + yy) * 7) % 256], axis=-1
    )
    noise = rng.integers(0, 64, size=(height, width, 3))
    pixels = np.clip(smooth * 3 // 4 + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    return image if mode == "RGB" else image.convert(mode)


@pytest.fixture
def reference():
    return reference_anyres


@pytest.fixture
def reference_best():
    return reference_select_best_resolution


@pytest.fixture
def make_image():
    return random_image


@pytest.fixture
def old_pillow_resize():
    return legacy_resize
