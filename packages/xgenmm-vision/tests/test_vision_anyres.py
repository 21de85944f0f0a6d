"""Grid choice, resize rule and pixel exactness of the anyres processor (LAVIS any_res_data_utils.py)."""

import hashlib
import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import PIL
import pytest
import torch
from PIL import Image

from xgenmm_vision import (
    XGENMM_GRID_MULTIPLES,
    XGENMM_GRIDS,
    AnyResImageProcessor,
    grid_shape,
    normalize_grids,
    pil_resize,
    resized_size,
    select_best_resolution,
    torch_resize,
)

GOLDEN = Path(__file__).parent / "golden"


def test_candidate_list_is_the_released_one_in_order():
    assert XGENMM_GRIDS == [(384, 768), (768, 384), (768, 768), (1152, 384), (384, 1152)]
    assert normalize_grids(None, 384) == XGENMM_GRIDS
    assert normalize_grids(XGENMM_GRID_MULTIPLES, 384) == XGENMM_GRIDS
    assert normalize_grids("(1,2),(2,1),(2,2),(3,1),(1,3)", 384) == XGENMM_GRIDS
    assert normalize_grids(XGENMM_GRIDS, 384) == XGENMM_GRIDS
    assert normalize_grids(None, 32) == [(32, 64), (64, 32), (64, 64), (96, 32), (32, 96)]


def test_released_pixel_grids_at_tiny_base_size_warn():
    with pytest.warns(UserWarning, match="XGENMM_GRID_MULTIPLES"):
        assert AnyResImageProcessor(base_size=32, grids=XGENMM_GRIDS).grids[0] == (384, 768)


@pytest.mark.parametrize("grids", [[], [(1, 2), (400, 384)], [(384, 500)], "nonsense", [(0, 1)]])
def test_bad_grids_are_rejected(grids):
    with pytest.raises(ValueError):
        normalize_grids(grids, 384)


@pytest.mark.parametrize(
    "size, best, shape",
    [
        ((640, 480), (768, 768), (2, 2)),
        ((1920, 1080), (768, 768), (2, 2)),
        ((384, 384), (384, 768), (1, 2)),
        ((100, 100), (384, 768), (1, 2)),
        ((2000, 500), (1152, 384), (3, 1)),
        ((500, 2000), (384, 1152), (1, 3)),
        ((4000, 100), (1152, 384), (3, 1)),
    ],
)
def test_grid_choice_examples(size, best, shape):
    assert select_best_resolution(size, XGENMM_GRIDS) == best
    assert grid_shape(size, XGENMM_GRIDS, 384) == shape
    assert AnyResImageProcessor().num_crops(size) == 1 + shape[0] * shape[1]


def test_grid_choice_matches_restated_rule_on_random_sizes(reference_best):
    rng = random.Random(0)
    for _ in range(3000):
        size = (rng.randint(1, 5000), rng.randint(1, 5000))
        assert select_best_resolution(size, XGENMM_GRIDS) == reference_best(size, XGENMM_GRIDS), size
    # ties: an image exactly one candidate's size, and a candidate list with a duplicate (earliest wins)
    assert select_best_resolution((768, 384), XGENMM_GRIDS) == (768, 384)
    assert select_best_resolution((10, 10), [(20, 10), (10, 20)]) == (20, 10)


def test_width_height_convention_is_not_transformers():
    # transformers' namesake takes (height, width) pairs; ours takes (width, height): transposed inputs agree.
    from transformers.image_processing_utils import select_best_resolution as hf_select

    for w, h in [(2000, 500), (500, 2000), (640, 480), (4000, 100)]:
        hf = hf_select((h, w), [(ch, cw) for cw, ch in XGENMM_GRIDS])
        assert select_best_resolution((w, h), XGENMM_GRIDS) == (hf[1], hf[0])


def test_resize_rule_rounds_up_the_float_product():
    assert resized_size((68, 85), (384, 768)) == (384, 481)  # 85 * (384 / 68) = 480.00000000000006
    assert resized_size((640, 480), (768, 768)) == (768, 576)
    assert resized_size((4000, 100), (1152, 384)) == (1152, 29)
    assert resized_size((500, 2000), (384, 1152)) == (288, 1152)


SIZES_384 = [
    (68, 85),
    (640, 480),
    (4000, 100),
    (500, 2000),
    (2000, 500),
    (384, 384),
    (1, 1),
    (49, 49),
    (385, 383),
]


@pytest.mark.parametrize("size", SIZES_384)
def test_pixels_bit_exact_with_reference(size, reference, make_image):
    image = make_image(*size, seed=size[0] * 7 + size[1])
    out = AnyResImageProcessor()(image)
    expected, expected_size = reference(image)
    assert out.image_size == expected_size == size
    assert out.pixel_values.dtype == torch.float32
    assert out.pixel_values.shape == expected.shape
    assert torch.equal(out.pixel_values, expected)


def test_pixels_bit_exact_tiny_base_many_sizes(reference, make_image):
    processor = AnyResImageProcessor(base_size=32, grids=XGENMM_GRID_MULTIPLES)
    grids = processor.grids
    rng = random.Random(1)
    sizes = [(68, 85), (1, 1), (33, 31), (100, 3), (3, 100)] + [
        (rng.randint(1, 300), rng.randint(1, 300)) for _ in range(40)
    ]
    for i, size in enumerate(sizes):
        image = make_image(*size, seed=i)
        expected, _ = reference(image, base_size=32, grids=grids)
        assert torch.equal(processor(image).pixel_values, expected), size


def test_pixels_bit_exact_other_mean_std_and_modes(reference, make_image):
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    processor = AnyResImageProcessor(base_size=32, mean=mean, std=std)
    for mode in ["RGB", "L", "RGBA", "P", "CMYK"]:
        image = make_image(70, 45, seed=3, mode=mode)
        expected, _ = reference(image, base_size=32, grids=processor.grids, mean=mean, std=std)
        assert torch.equal(processor(image).pixel_values, expected), mode


def test_640x480_layout_and_padding():
    # 640x480: 5 crops; the image is resized to 768x576 and pasted at y=96 on a black 768x768 canvas.
    out = AnyResImageProcessor()(Image.new("RGB", (640, 480), (255, 255, 255)))
    pv = out.pixel_values
    assert pv.shape == (5, 3, 384, 384)
    assert torch.all(pv[0] == 1.0)  # squashed base image: no padding
    for top in (1, 2):  # upper crops: canvas rows 0..95 black, the rest image
        assert torch.all(pv[top, :, :96] == -1.0) and torch.all(pv[top, :, 96:] == 1.0)
    for bottom in (3, 4):  # lower crops: canvas rows 672..767 = crop rows 288..383 black
        assert torch.all(pv[bottom, :, :288] == 1.0) and torch.all(pv[bottom, :, 288:] == -1.0)
    assert out.image_size == (640, 480)


def test_crops_are_row_major():
    # a 768x768 image made of four flat quadrants: crop k must be quadrant k in reading order
    colours = [(10, 0, 0), (0, 20, 0), (0, 0, 30), (40, 40, 40)]
    image = Image.new("RGB", (768, 768))
    for k, colour in enumerate(colours):
        image.paste(Image.new("RGB", (384, 384), colour), ((k % 2) * 384, (k // 2) * 384))
    pv = AnyResImageProcessor()(image).pixel_values
    for k, colour in enumerate(colours):
        expected = torch.tensor(colour, dtype=torch.float32).div(255).sub(0.5).div(0.5)
        assert torch.equal(pv[1 + k, :, 100, 100], expected)


def test_batch_and_counts(make_image):
    processor = AnyResImageProcessor(base_size=32)
    images = [make_image(64, 32), make_image(20, 90), make_image(50, 50)]
    batch = processor.batch(images)
    assert len(batch) == 3
    assert batch.image_sizes == [(64, 32), (20, 90), (50, 50)]
    assert [p.shape[0] for p in batch.pixel_values] == [3, 4, 5]  # 50x50 fits 64x64 whole at base 32
    for item, size in zip(batch, batch.image_sizes):
        assert item.pixel_values.shape[1:] == (3, 32, 32)
        assert processor.num_crops(size) == item.pixel_values.shape[0]
    assert torch.equal(batch[1].pixel_values, processor(images[1]).pixel_values)


def test_exif_orientation_ignored_by_default(make_image):
    image = make_image(60, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    image.info["exif"] = exif.tobytes()
    image.getexif()[0x0112] = 6
    assert AnyResImageProcessor(base_size=32)(image).image_size == (60, 30)
    assert AnyResImageProcessor(base_size=32, apply_exif=True)(image).image_size == (30, 60)
    assert AnyResImageProcessor(base_size=32)(image, apply_exif=True).image_size == (30, 60)


def test_bad_inputs():
    with pytest.raises(TypeError, match="PIL"):
        AnyResImageProcessor()(torch.zeros(3, 10, 10))
    with pytest.raises(ValueError, match="std"):
        AnyResImageProcessor(std=(0.5, 0.0, 0.5))


def test_matches_real_torchvision_transform(make_image, old_pillow_resize):
    """The original per-crop transform itself (torchvision, when installed) gives the same bits."""
    transforms = pytest.importorskip("torchvision.transforms")
    transform = transforms.Compose(
        [
            transforms.Resize((384, 384), interpolation=transforms.InterpolationMode.BICUBIC, antialias=True),
            transforms.ToTensor(),
            transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ]
    )
    image = make_image(640, 480, seed=5)
    canvas = Image.new("RGB", (768, 768))
    canvas.paste(old_pillow_resize(image, (768, 576)), (0, 96))
    patches = [old_pillow_resize(image, (384, 384))] + [
        canvas.crop((x, y, x + 384, y + 384)) for y in (0, 384) for x in (0, 384)
    ]
    expected = torch.stack([transform(p) for p in patches])
    assert torch.equal(AnyResImageProcessor()(image).pixel_values, expected)


# ---------------------------------------------------------------- resize backends


def _golden():
    spec = importlib.util.spec_from_file_location("golden_maker", GOLDEN / "make_pillow12_resize_golden.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    cases = json.loads((GOLDEN / "pillow12_resize_sha256.json").read_text())["cases"]
    return maker, cases


def test_pil_resize_reproduces_pillow_12():
    """`pil_resize` gives Pillow 10-12's pixels (the released models' training data) on the installed Pillow."""
    maker, cases = _golden()
    assert len(cases) == len(maker.CASES) >= 16
    for case in cases:
        image = Image.fromarray(maker.noise_image(*case["size"], case["seed"]), "RGB")
        out = np.asarray(pil_resize(image, case["target"]))
        assert out.shape == (case["target"][1], case["target"][0], 3)
        assert hashlib.sha256(out.tobytes()).hexdigest() == case["sha256"], case


@pytest.mark.skipif(
    int(PIL.__version__.split(".")[0]) < 13, reason="Pillow <= 12 runs the old pass order itself"
)
def test_pillow_13_one_call_resize_differs_from_the_old_pixels():
    """Why `pil_resize` exists: Pillow 13's own `Image.resize` changes some of the golden cases."""
    maker, cases = _golden()
    changed = 0
    for case in cases:
        image = Image.fromarray(maker.noise_image(*case["size"], case["seed"]), "RGB")
        out = np.asarray(image.resize(tuple(case["target"]), Image.Resampling.BICUBIC))
        changed += hashlib.sha256(out.tobytes()).hexdigest() != case["sha256"]
    assert changed > 0


@pytest.mark.parametrize("size", [(640, 480), (500, 2000), (2000, 500), (68, 85), (1, 1), (385, 383)])
def test_torch_backend_is_within_two_levels_of_pil(size, make_image):
    image = make_image(*size, seed=size[0] + size[1])
    exact = AnyResImageProcessor()(image)
    fast = AnyResImageProcessor(resize_backend="torch")(image)
    assert fast.image_size == exact.image_size == size
    assert fast.pixel_values.shape == exact.pixel_values.shape and fast.pixel_values.dtype == torch.float32
    levels = (fast.pixel_values - exact.pixel_values).abs() * 255 / 2  # std 0.5: one level = 2/255
    assert levels.max() <= 2 + 1e-4
    assert (levels > 0.5).float().mean() < 0.02  # almost every value is identical


def test_torch_resize_on_noise_is_within_two_levels():
    rng = np.random.default_rng(0)
    for _ in range(12):
        w, h, tw, th = (int(v) for v in rng.integers(1, 700, 4))
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        exact = np.asarray(pil_resize(Image.fromarray(pixels, "RGB"), (tw, th))).astype(int)
        fast = torch_resize(torch.from_numpy(pixels), (tw, th))
        assert fast.dtype == torch.uint8 and tuple(fast.shape) == (th, tw, 3)
        assert np.abs(fast.numpy().astype(int) - exact).max() <= 2


def test_unknown_resize_backend_is_refused():
    with pytest.raises(ValueError, match="resize_backend"):
        AnyResImageProcessor(resize_backend="cv2")
