"""Regroup per-crop vision features into perceiver groups with padding masks (LAVIS
`open_flamingo/src/vlm.py`, `VLM._encode_vision_x_anyres`).

Reproduces `VLM._encode_vision_x_anyres` of LAVIS `open_flamingo/src/vlm.py` (branch xgen-mm), including the way it
cuts the assembled feature map into groups (mode "reference").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .anyres import normalize_grids, select_best_resolution


def unpad_mask(image_size: Sequence[int], map_size: Sequence[int]) -> torch.Tensor:
    """Padding mask of the assembled crop map: (rows·g, cols·g) bool, True = real image, False = black padding.

    `image_size` = original (width, height); `map_size` = (width, height) of the token map = (cols·g, rows·g).
    Rule (LLaVA's `unpad_image`, keep-shape variant): if the image is wider than the map, keep
    `int(h · (Wm / w))` rows in the middle, else keep `int(w · (Hm / h))` columns; the quotient is computed first in
    floating point, then multiplied, then truncated; `(missing) // 2` rows/columns are dropped on both sides.
    """
    w, h = image_size
    map_w, map_h = map_size
    mask = torch.ones(map_h, map_w, dtype=torch.bool)
    if w / h > map_w / map_h:
        pad = (map_h - int(h * (map_w / w))) // 2
        if pad > 0:
            mask[:pad] = False
            mask[map_h - pad :] = False
    else:
        pad = (map_w - int(w * (map_h / h))) // 2
        if pad > 0:
            mask[:, :pad] = False
            mask[:, map_w - pad :] = False
    return mask


def regroup_anyres_features(
    features: torch.Tensor,
    image_sizes: Sequence[Sequence[int] | None],
    grids=None,
    base_size: int = 384,
    patch_size: int = 14,
    mode: str = "reference",
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Turn the vision encoder's per-crop features into `[base, group0, group1, ...]` per image, plus masks.

    Args:
        features: (ΣNp, V, D) encoder output for the crops of all images, concatenated image by image in the order
            of `AnyResImage.pixel_values` (base first, then row-major crops). V = (base_size // patch_size)².
        image_sizes: original (width, height) of every image, flat over the batch. `None` marks an image that was
            given as a single crop (e.g. the dummy image of a text-only sample): one group, mask all ones.
        grids, base_size: the anyres candidates the processor used (see `normalize_grids`).
        patch_size: encoder patch size (14 for SigLIP so400m; a 384 crop gives a g×g = 27×27 token grid).
        mode: "reference" reproduces the released model: the crop features are assembled into one
            (rows·g, cols·g) map, padding rows/columns are masked (`unpad_mask`), and the map is flattened row-major
            over its full width and cut into consecutive chunks of V tokens. With 1 column a chunk is a crop; with
            2 or 3 columns a chunk is a horizontal band across all crops. The released weights were trained this
            way. "crops" keeps each crop as its own group with its own part of the mask: more natural for new
            training, but NOT equivalent to the released checkpoint.

    Returns:
        groups: (G, V, D) features, image by image, `[base, chunk0, chunk1, ...]`.
        masks: (G, V) bool, True = attend (real image). The base group is all True.
        groups_per_image: number of groups of each image (1 + cols·rows, or 1 for `None`).
    """
    if mode not in ("reference", "crops"):
        raise ValueError(f"mode must be 'reference' or 'crops', got {mode!r}")
    if features.dim() != 3:
        raise ValueError(f"features must be (num_crops, tokens, dim), got shape {tuple(features.shape)}")
    candidates = normalize_grids(grids, base_size)
    g = base_size // patch_size
    V, D = g * g, features.shape[-1]
    if features.shape[1] != V:
        raise ValueError(
            f"features have {features.shape[1]} tokens per crop, expected ({base_size} // {patch_size})² = {V}"
        )

    shapes = []
    for size in image_sizes:
        if size is None:
            shapes.append(None)
        else:
            w, h = select_best_resolution(size, candidates)
            shapes.append((w // base_size, h // base_size))
    expected = sum(1 if s is None else 1 + s[0] * s[1] for s in shapes)
    if expected != features.shape[0]:
        raise ValueError(
            f"features hold {features.shape[0]} crops but image_sizes {list(image_sizes)} need {expected} "
            f"(grids {candidates}, base_size {base_size})"
        )

    groups, masks, groups_per_image = [], [], []
    start = 0
    for size, shape in zip(image_sizes, shapes):
        groups.append(features[start : start + 1])
        masks.append(torch.ones(1, V, dtype=torch.bool, device=features.device))
        start += 1
        if shape is None:
            groups_per_image.append(1)
            continue
        cols, rows = shape
        n = cols * rows
        crops = features[start : start + n]
        start += n
        mask = unpad_mask(size, (cols * g, rows * g)).to(features.device)
        if mode == "reference":
            # (rows, cols, g, g, D) -> map (rows, g, cols, g, D): row-major over the full width, then chunks of V.
            feature_map = crops.view(rows, cols, g, g, D).permute(0, 2, 1, 3, 4)
            groups.append(feature_map.reshape(n, V, D))
            masks.append(mask.reshape(n, V))
        else:
            groups.append(crops)
            masks.append(mask.view(rows, g, cols, g).permute(0, 2, 1, 3).reshape(n, V))
        groups_per_image.append(1 + n)
    return torch.cat(groups), torch.cat(masks), groups_per_image


__all__ = ["regroup_anyres_features", "unpad_mask"]
