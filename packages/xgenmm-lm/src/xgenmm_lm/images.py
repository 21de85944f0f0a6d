"""Image inputs of `XGenMM`: the accepted forms of `pixel_values` / `image_sizes`, their checks, and the vision
path (SigLIP once over every crop of the batch → anyres regrouping → perceiver resampler once over every group).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from xgenmm_vision import regroup_anyres_features


def normalise_images(pixel_values, image_sizes, batch: int):
    """Accept None / [] (text only), a per-sample list of tensors or of per-image lists; return lists of lists."""
    if pixel_values is None:
        return [[] for _ in range(batch)], [[] for _ in range(batch)]
    if isinstance(pixel_values, torch.Tensor):
        raise ValueError(
            "pixel_values must be a list (one entry per sample) of lists of per-image (Np, 3, S, S) tensors, "
            f"got a tensor of shape {tuple(pixel_values.shape)}"
        )
    if len(pixel_values) != batch:
        raise ValueError(f"pixel_values has {len(pixel_values)} samples but input_ids has {batch}")
    pixels = [[p] if isinstance(p, torch.Tensor) else list(p or []) for p in pixel_values]
    if image_sizes is None:
        if any(pixels):
            raise ValueError("image_sizes (original (w, h) of every image) is required with pixel_values")
        image_sizes = [[] for _ in range(batch)]
    sizes = []
    for p, s in zip(pixels, image_sizes):
        s = list(s or [])
        if len(p) == 1 and len(s) == 2 and all(isinstance(x, int) for x in s):
            s = [tuple(s)]  # a single (w, h) for a single image
        sizes.append(s)
    return pixels, sizes


def execution_device(module: nn.Module) -> torch.device:
    """Where `module` computes: its accelerate hook's execution device (offloaded models keep `meta` weights
    until the hook brings them in), else the device of its first real parameter, else the CPU."""
    for m in (module, *module.modules()):
        device = getattr(getattr(m, "_hf_hook", None), "execution_device", None)
        if device is not None:
            return torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    for p in module.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def encode_images(
    model, pixel_values: list[list[torch.Tensor]], image_sizes: list[list[Sequence[int]]]
) -> list[list[torch.Tensor]]:
    """Vision tokens of every image of an `XGenMM` batch: per sample, per image `(num_latents · groups, D_lm)`.

    pixel_values: per sample, per image `(Np, 3, S, S)`; image_sizes: per sample, per image original (w, h).
    An image given as one crop `(1, 3, S, S)` is a base-resolution image: one group of `num_latents` tokens
    (pre-training at base resolution); otherwise `1 + cols·rows` anyres crops.
    """
    batch = len(pixel_values)
    if image_sizes is None or len(image_sizes) != batch:
        raise ValueError(
            f"image_sizes must give one list of (w, h) per sample: got {None if image_sizes is None else len(image_sizes)} "
            f"for {batch} samples"
        )
    size = model.config.vision_config.image_size
    processor = model.image_processor()
    flat_pixels, flat_sizes, counts = [], [], []
    for b, (images, sizes) in enumerate(zip(pixel_values, image_sizes)):
        if len(images) != len(sizes):
            raise ValueError(f"sample {b}: {len(images)} images but {len(sizes)} image_sizes")
        for k, (pixels, wh) in enumerate(zip(images, sizes)):
            # A single crop is a base-resolution image (anyres always gives 1 + cols·rows >= 2 crops).
            base_only = pixels.ndim == 4 and pixels.shape[0] == 1
            expected = 1 if base_only else processor.num_crops(tuple(wh))
            if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, size, size) or pixels.shape[0] != expected:
                raise ValueError(
                    f"sample {b}, image {k}: pixel_values of shape {tuple(pixels.shape)}, expected "
                    f"({expected}, 3, {size}, {size}) for an image of size {tuple(wh)} (1 base + grid crops)"
                )
            flat_pixels.append(pixels)
            flat_sizes.append(None if base_only else tuple(int(x) for x in wh))
        counts.append(len(images))
    if not flat_pixels:
        return [[] for _ in range(batch)]

    vision_dtype = next(model.vision_encoder.parameters()).dtype
    crops = torch.cat(flat_pixels).to(device=execution_device(model.vision_encoder), dtype=vision_dtype)
    features = model.vision_encoder(crops)  # (ΣNp, V, Dv)
    groups, masks, groups_per_image = regroup_anyres_features(
        features,
        flat_sizes,
        grids=[tuple(g) for g in model.config.anyres_grids],
        base_size=size,
        patch_size=model.config.vision_config.patch_size,
        mode=model.config.regroup_mode,
    )
    sampler_dtype = next(model.vision_tokenizer.parameters()).dtype
    tokens = model.vision_tokenizer(groups.to(sampler_dtype), masks)  # (G, n, D)
    blocks = [t.reshape(-1, t.shape[-1]) for t in tokens.split(groups_per_image)]
    out, start = [], 0
    for count in counts:
        out.append(blocks[start : start + count])
        start += count
    return out


__all__ = ["encode_images", "execution_device", "normalise_images"]
