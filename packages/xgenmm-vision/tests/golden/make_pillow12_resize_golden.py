"""Write `pillow12_resize_sha256.json`: SHA-256 of Pillow 12's one-call bicubic `Image.resize` on fixed noise images.

Pillow 10-12 always ran the horizontal pass first (the pixels the released xGen-MM models were trained on); Pillow 13
may run the vertical pass first. `test_pil_resize_reproduces_pillow_12` checks `xgenmm_vision.pil_resize` against
these hashes on whatever Pillow is installed. Regenerate (needs network access to PyPI) with:

    uv run --no-project --with pillow==12.0.0 --with numpy \
        python packages/xgenmm-vision/tests/golden/make_pillow12_resize_golden.py
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

# (width, height) -> (width, height): anyres resizes (squash to 384 / 32, grid fits) and odd sizes both ways.
CASES = [
    ((500, 2000), (288, 1152)),
    ((500, 2000), (384, 384)),
    ((2000, 500), (1152, 288)),
    ((640, 480), (768, 576)),
    ((640, 480), (384, 384)),
    ((68, 85), (384, 481)),
    ((195, 1037), (338, 881)),
    ((322, 445), (224, 98)),
    ((66, 674), (177, 217)),
    ((399, 388), (498, 363)),
    ((3, 301), (32, 32)),
    ((41, 23), (32, 32)),
    ((100, 100), (32, 64)),
    ((1, 1), (32, 32)),
    ((7, 300), (5, 77)),
    ((600, 37), (96, 32)),
]


def noise_image(width: int, height: int, seed: int) -> np.ndarray:
    """(height, width, 3) uint8 from a fixed 64-bit LCG: the same bytes with any numpy version."""
    state = np.arange(width * height * 3, dtype=np.uint64) + np.uint64(seed * 1_000_003)
    state = state * np.uint64(6364136223846793005) + np.uint64(1442695040888963407)
    return ((state >> np.uint64(33)) & np.uint64(255)).astype(np.uint8).reshape(height, width, 3)


def main() -> None:
    hashes = []
    for seed, (size, target) in enumerate(CASES):
        image = Image.fromarray(noise_image(*size, seed), "RGB")
        out = np.asarray(image.resize(target, Image.Resampling.BICUBIC))
        hashes.append(
            {
                "size": size,
                "target": target,
                "seed": seed,
                "sha256": hashlib.sha256(out.tobytes()).hexdigest(),
            }
        )
    path = Path(__file__).with_name("pillow12_resize_sha256.json")
    path.write_text(json.dumps({"pillow": PIL.__version__, "cases": hashes}, indent=1) + "\n")
    print(f"wrote {path} with Pillow {PIL.__version__}")


if __name__ == "__main__":
    main()
