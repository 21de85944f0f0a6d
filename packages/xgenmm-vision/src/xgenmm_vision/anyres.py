"""Anyres image preprocessing of xGen-MM (BLIP-3): grid choice, resize + pad, crops, pixel normalisation.

Reproduces LAVIS `open_flamingo/train/any_res_data_utils.py` (branch xgen-mm) followed by the per-crop transform of
`open_flamingo/src/factory.py`, bit-exact in float32 with the pixels the released models were trained on.

Pillow 13 changed `Image.resize`: when both sides change it may run the vertical pass before the horizontal one,
which moves pixels by up to tens of levels on high-frequency content (Pillow 10-12 always ran horizontal first, and
so did the original's training runs). `pil_resize` runs the two passes explicitly in the old order, so the output is
the same on every Pillow version. `resize_backend="torch"` resizes with `torch.nn.functional.interpolate`
(bicubic, antialias) instead: 3-8x faster, within 2 levels of `pil_resize` (measured; see `AnyResImageProcessor`).

All sizes in this module are (width, height), like PIL's `Image.size` and the original code. Note that transformers'
`select_best_resolution` of the same name takes and returns (height, width).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

# The five candidate resolutions of the released models, (width, height) in pixels, in this order (order breaks ties).
XGENMM_GRIDS: list[tuple[int, int]] = [(384, 768), (768, 384), (768, 768), (1152, 384), (384, 1152)]
# The same candidates as multiples of the crop size (LAVIS `--anyres_grids` default "(1,2),(2,1),(2,2),(3,1),(1,3)").
XGENMM_GRID_MULTIPLES: list[tuple[int, int]] = [(1, 2), (2, 1), (2, 2), (3, 1), (1, 3)]

ImageSize = tuple[int, int]


def normalize_grids(grids, base_size: int) -> list[ImageSize]:
    """Return candidate resolutions as a list of (width, height) pixel tuples.

    Accepts `None` (the xGen-MM layout, `XGENMM_GRID_MULTIPLES` × `base_size`; equal to `XGENMM_GRIDS` when
    `base_size` is 384), a LAVIS CLI string such as `"(1,2),(2,1)"`, multiples of `base_size` such as
    `[(1, 2), (2, 1)]` (every value smaller than `base_size`), or pixel sizes (every value a multiple of `base_size`).
    """
    if base_size <= 0:
        raise ValueError(f"base_size must be positive, got {base_size}")
    if grids is None:
        grids = XGENMM_GRID_MULTIPLES
    if isinstance(grids, str):
        pairs = re.findall(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)", grids)
        if not pairs:
            raise ValueError(f"cannot parse anyres grids {grids!r}; expected e.g. '(1,2),(2,1),(2,2)'")
        grids = [(int(a), int(b)) for a, b in pairs]
    pairs = [tuple(int(v) for v in g) for g in grids]
    if not pairs or any(len(p) != 2 or min(p) <= 0 for p in pairs):
        raise ValueError(
            f"anyres grids must be a non-empty list of positive (width, height) pairs, got {grids!r}"
        )
    if all(max(p) < base_size for p in pairs):
        return [(a * base_size, b * base_size) for a, b in pairs]
    if all(a % base_size == 0 and b % base_size == 0 for a, b in pairs):
        most = max(a * b for a, b in pairs) // (base_size * base_size)
        if most > 16:
            warnings.warn(
                f"anyres grids {pairs} give up to {most} crops per image at base_size={base_size}; for the xGen-MM "
                f"layout at another crop size pass grids=None or multiples such as XGENMM_GRID_MULTIPLES",
                stacklevel=2,
            )
        return [(a, b) for a, b in pairs]
    raise ValueError(
        f"anyres grids {pairs} are neither all multiples of base_size={base_size} (pixel sizes) nor all "
        f"smaller than it (grid multiples)"
    )


def select_best_resolution(original_size: Sequence[int], candidates: Iterable[Sequence[int]]) -> ImageSize:
    """Pick the candidate (width, height) that keeps the most of the original resolution
    (`select_best_resolution` of any_res_data_utils.py).

    For each candidate the image is scaled to fit inside it; the candidate with the largest effective resolution
    `min(scaled_w * scaled_h, w * h)` wins, an exact tie goes to the smaller wasted area, remaining ties to the
    earliest candidate. `original_size` and the result are (width, height).
    """
    w, h = original_size
    best, best_effective, best_wasted = None, 0, math.inf
    for cw, ch in candidates:
        scale = min(cw / w, ch / h)
        effective = min(int(w * scale) * int(h * scale), w * h)
        wasted = cw * ch - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (cw, ch), effective, wasted
    if best is None:
        raise ValueError("select_best_resolution needs at least one candidate resolution")
    return best


def grid_shape(image_size: Sequence[int], grids=None, base_size: int = 384) -> tuple[int, int]:
    """(cols, rows) of crops the anyres procedure uses for an image of `image_size` = (width, height)."""
    w, h = select_best_resolution(image_size, normalize_grids(grids, base_size))
    return w // base_size, h // base_size


def resized_size(original_size: Sequence[int], target_size: Sequence[int]) -> ImageSize:
    """Size (width, height) of the image inside the padded canvas (the original's resize step).

    The scale is a float quotient computed first, then multiplied and rounded up (a 68×85 image on 384×768 becomes
    384×481, clipped to the canvas).
    """
    w, h = original_size
    tw, th = target_size
    scale_w, scale_h = tw / w, th / h
    if scale_w < scale_h:
        return tw, min(math.ceil(h * scale_w), th)
    return min(math.ceil(w * scale_h), tw), th


RESIZE_BACKENDS = ("pil", "torch")


def pil_resize(image: Image.Image, size: Sequence[int]) -> Image.Image:
    """PIL bicubic resize to `size` = (width, height), horizontal pass first (the pixels of Pillow 10-12).

    Pillow >= 13 may run the vertical pass first when both sides change, which rounds and clips the intermediate
    image differently; two one-axis resizes pin the order the released models were trained with.
    """
    width, height = int(size[0]), int(size[1])
    if width != image.width and height != image.height:
        image = image.resize((width, image.height), Image.Resampling.BICUBIC)
    return image.resize((width, height), Image.Resampling.BICUBIC)


def torch_resize(pixels: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bicubic antialiased resize of uint8 pixels `(H, W, 3)` to `size` = (width, height): `(height, width, 3)` uint8.

    torch's uint8 kernel follows Pillow's algorithm (a = -0.5, support scaled on downsampling, horizontal pass
    first) with its own fixed-point rounding: each pass is within 1 level of Pillow's.
    """
    width, height = int(size[0]), int(size[1])
    batched = pixels.permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W), channels-last in memory: the fast kernel
    out = F.interpolate(batched, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return out[0].permute(1, 2, 0)


@dataclass
class AnyResImage:
    """One processed image.

    pixel_values: (Np, 3, S, S) float32, Np = 1 + cols·rows; index 0 is the whole image squashed to S×S, then the
        crops of the padded canvas in row-major order.
    image_size: the original (width, height), which the model needs to recompute the grid and the padding mask.
    """

    pixel_values: torch.Tensor
    image_size: ImageSize


@dataclass
class AnyResBatch:
    """Several processed images: `pixel_values` list of (Np_i, 3, S, S), `image_sizes` list of (width, height)."""

    pixel_values: list[torch.Tensor]
    image_sizes: list[ImageSize]

    def __len__(self) -> int:
        return len(self.pixel_values)

    def __getitem__(self, i: int) -> AnyResImage:
        return AnyResImage(self.pixel_values[i], self.image_sizes[i])

    def __iter__(self) -> Iterator[AnyResImage]:
        return (self[i] for i in range(len(self)))


class AnyResImageProcessor:
    """The xGen-MM anyres processor: PIL image → (1 + cols·rows, 3, S, S) normalised crops.

    Steps (as `process_anyres_image` of any_res_data_utils.py): convert to RGB; pick the best candidate (W, H)
    for the original size; resize the image with aspect ratio kept (PIL bicubic) and centre it on a black W×H
    canvas; cut the canvas into S×S crops row by row; put the whole image squashed to S×S (PIL bicubic) first;
    map every pixel x to (x/255 − mean)/std in float32.

    Unlike the original, the canvas lives in one uint8 array and the crops are views of it, so there are exactly two
    resizes and one conversion to float per image; with the PIL backend the result is bit-identical.

    Args:
        base_size: crop side S (the vision encoder's image size): 384 for the released models, e.g. 32 for tiny ones.
        grids: candidate resolutions, see `normalize_grids`; `None` = the xGen-MM layout scaled to `base_size`
            (= `XGENMM_GRIDS` for 384).
        mean, std: per-channel normalisation (SigLIP: 0.5, i.e. x/255·2 − 1).
        apply_exif: rotate by the EXIF orientation tag first. The reference ignores it (default False).
        resize_backend: `"pil"` (default): `pil_resize`, bit-identical to the original. `"torch"`: `torch_resize`,
            3-8x faster per resize, the data-pipeline choice when throughput matters more than the last bit: pixels
            are within 2 levels of 255 of the PIL backend (1 level on > 99% of pixels of photos; measured by
            `benchmarks/bench_anyres.py`), i.e. within 2/255·2 ≈ 0.016 after SigLIP normalisation.
    """

    def __init__(
        self,
        base_size: int = 384,
        grids=None,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        apply_exif: bool = False,
        resize_backend: str = "pil",
    ):
        if resize_backend not in RESIZE_BACKENDS:
            raise ValueError(f"resize_backend must be one of {RESIZE_BACKENDS}, got {resize_backend!r}")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {mean!r} and {std!r}")
        if any(s == 0 for s in std):
            raise ValueError(f"std must not contain 0, got {std!r}")
        self.base_size = int(base_size)
        self.grids = normalize_grids(grids, self.base_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.apply_exif = apply_exif
        self.resize_backend = resize_backend
        self._mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)

    def __repr__(self) -> str:
        return (
            f"AnyResImageProcessor(base_size={self.base_size}, grids={self.grids}, mean={self.mean}, "
            f"std={self.std}, apply_exif={self.apply_exif}, resize_backend={self.resize_backend!r})"
        )

    def grid_shape(self, image_size: Sequence[int]) -> tuple[int, int]:
        """(cols, rows) of crops for an image of (width, height) `image_size`."""
        w, h = select_best_resolution(image_size, self.grids)
        return w // self.base_size, h // self.base_size

    def num_crops(self, image_size: Sequence[int]) -> int:
        """Np = 1 + cols·rows: the number of S×S crops (base image included) for (width, height) `image_size`;
        also the number of perceiver groups the model makes of the image."""
        cols, rows = self.grid_shape(image_size)
        return 1 + cols * rows

    def __call__(self, image: Image.Image, apply_exif: bool | None = None) -> AnyResImage:
        if not isinstance(image, Image.Image):
            raise TypeError(f"AnyResImageProcessor expects a PIL.Image.Image, got {type(image).__name__}")
        if apply_exif if apply_exif is not None else self.apply_exif:
            image = ImageOps.exif_transpose(image)
        if image.mode != "RGB":
            image = image.convert("RGB")
        w, h = image.size
        if w <= 0 or h <= 0:
            raise ValueError(f"cannot process an empty image of size {image.size}")
        S = self.base_size
        W, H = select_best_resolution((w, h), self.grids)
        cols, rows = W // S, H // S
        nw, nh = resized_size((w, h), (W, H))
        x0, y0 = (W - nw) // 2, (H - nh) // 2

        # uint8 pixels (height, width, 3): the squashed base image, and the black canvas with the resized image
        # pasted in its centre.
        if self.resize_backend == "torch":
            pixels = torch.from_numpy(np.array(image, dtype=np.uint8))
            base, resized = torch_resize(pixels, (S, S)), torch_resize(pixels, (nw, nh))
        else:
            base = torch.from_numpy(np.array(pil_resize(image, (S, S)), dtype=np.uint8))
            resized = torch.from_numpy(np.array(pil_resize(image, (nw, nh)), dtype=np.uint8))
        canvas = torch.zeros(H, W, 3, dtype=torch.uint8)
        canvas[y0 : y0 + nh, x0 : x0 + nw] = resized

        out = torch.empty(1 + cols * rows, 3, S, S, dtype=torch.float32)
        out[0].copy_(base.permute(2, 0, 1))
        # (H, W, 3) = (rows, S, cols, S, 3) -> crops (rows, cols, 3, S, S), row-major like the reference.
        crops = canvas.view(rows, S, cols, S, 3).permute(0, 2, 4, 1, 3)
        out[1:].view(rows, cols, 3, S, S).copy_(crops)
        # Same float32 operations as torchvision's ToTensor + Normalize, hence the same bits.
        out.div_(255).sub_(self._mean).div_(self._std)
        return AnyResImage(pixel_values=out, image_size=(w, h))

    def batch(self, images: Iterable[Image.Image], apply_exif: bool | None = None) -> AnyResBatch:
        """Process several images: `AnyResBatch(pixel_values=[(Np_i, 3, S, S)], image_sizes=[(w, h)])`."""
        done = [self(image, apply_exif=apply_exif) for image in images]
        return AnyResBatch([d.pixel_values for d in done], [d.image_size for d in done])


__all__ = [
    "XGENMM_GRIDS",
    "XGENMM_GRID_MULTIPLES",
    "AnyResBatch",
    "AnyResImage",
    "AnyResImageProcessor",
    "RESIZE_BACKENDS",
    "grid_shape",
    "normalize_grids",
    "pil_resize",
    "resized_size",
    "select_best_resolution",
    "torch_resize",
]
