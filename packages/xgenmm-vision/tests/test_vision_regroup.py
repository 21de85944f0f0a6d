"""Padding masks and regrouping of crop features into perceiver groups (LAVIS
`VLM._encode_vision_x_anyres`)."""

import pytest
import torch

from xgenmm_vision import AnyResImageProcessor, grid_shape, regroup_anyres_features, unpad_mask


def position_features(image_sizes, base_size=384, patch_size=14):
    """Features whose two channels are the (row, col) of each token in its image's assembled crop map; the base
    image's tokens get (-1, -1). Built per crop, in processor order (base, then row-major crops)."""
    g = base_size // patch_size
    rows_in_crop, cols_in_crop = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
    out = []
    for size in image_sizes:
        out.append(torch.full((1, g * g, 2), -1.0))
        cols, rows = grid_shape(size, None, base_size)
        for r in range(rows):
            for c in range(cols):
                pos = torch.stack([rows_in_crop + r * g, cols_in_crop + c * g], dim=-1).float()
                out.append(pos.view(1, g * g, 2))
    return torch.cat(out)


def unmasked_counts(size, mode="reference"):
    features = position_features([size])
    _, masks, n = regroup_anyres_features(features, [size], mode=mode)
    assert masks[0].all(), "the base group is never masked"
    return masks[1:].sum(dim=1).tolist()


def test_spec_mask_examples():
    assert unmasked_counts((640, 480)) == [351, 729, 729, 351]
    assert unmasked_counts((384, 384)) == [378, 378]
    assert unmasked_counts((4000, 100)) == [0, 243, 0]
    for size in [(49, 49), (163, 163), (196, 196)]:  # float quotient first: int(26.999...) = 26
        assert unmasked_counts(size) == [351, 351], size


def test_unpad_mask_rows_and_columns():
    mask = unpad_mask((640, 480), (54, 54))
    assert not mask[:7].any() and not mask[47:].any() and mask[7:47].all()
    mask = unpad_mask((384, 384), (27, 54))
    assert not mask[:13].any() and not mask[41:].any() and mask[13:41].all()
    mask = unpad_mask((500, 2000), (27, 81))  # tall image on a tall map: columns are padded
    assert mask.shape == (81, 27)
    keep = int(500 * (81 / 2000))
    pad = (27 - keep) // 2
    assert not mask[:, :pad].any() and not mask[:, 27 - pad :].any() and mask[:, pad : 27 - pad].all()


@pytest.mark.parametrize("size", [(640, 480), (2000, 500), (500, 2000), (384, 384), (1920, 1080), (768, 384)])
def test_reference_groups_are_row_major_chunks_of_the_map(size):
    features = position_features([size])
    groups, masks, n = regroup_anyres_features(features, [size])
    cols, rows = grid_shape(size)
    g = 27
    assert n == [1 + cols * rows]
    assert groups.shape == (1 + cols * rows, g * g, 2) and masks.shape == (1 + cols * rows, g * g)
    assert masks.dtype == torch.bool
    assert torch.equal(groups[0], features[0])
    # flat row-major position p of the (rows·g, cols·g) map sits in group 1 + p // 729 at slot p % 729
    flat = groups[1:].reshape(-1, 2)
    p = torch.arange(flat.shape[0])
    assert torch.equal(flat[:, 0], (p // (cols * g)).float())
    assert torch.equal(flat[:, 1], (p % (cols * g)).float())
    # the masks are cut identically: the map mask, flattened row-major
    full = unpad_mask(size, (cols * g, rows * g))
    assert torch.equal(masks[1:].reshape(-1), full.reshape(-1))


def test_two_column_group_contents():
    # on 2x2 the first group after the base = map rows 0-12 fully + row 13 columns 0-26
    groups, _, _ = regroup_anyres_features(position_features([(640, 480)]), [(640, 480)])
    first = {tuple(int(v) for v in t) for t in groups[1]}
    expected = {(r, c) for r in range(13) for c in range(54)} | {(13, c) for c in range(27)}
    assert first == expected


def test_three_column_groups_are_nine_full_rows():
    groups, _, _ = regroup_anyres_features(position_features([(2000, 500)]), [(2000, 500)])
    for k in range(3):
        rows = groups[1 + k, :, 0]
        assert rows.min() == 9 * k and rows.max() == 9 * k + 8
        assert sorted(set(groups[1 + k, :, 1].int().tolist())) == list(range(81))


def test_one_column_groups_equal_crops():
    for size in [(500, 2000), (384, 384)]:
        features = torch.randn(1 + grid_shape(size)[1], 729, 5)
        groups, _, _ = regroup_anyres_features(features, [size])
        assert torch.equal(groups, features)


def test_crops_mode_keeps_crops_and_splits_the_mask_per_crop():
    size = (640, 480)
    features = torch.randn(5, 729, 3)
    groups, masks, n = regroup_anyres_features(features, [size], mode="crops")
    assert torch.equal(groups, features) and n == [5]
    full = unpad_mask(size, (54, 54))
    for k in range(4):
        r, c = divmod(k, 2)
        assert torch.equal(masks[1 + k], full[27 * r : 27 * (r + 1), 27 * c : 27 * (c + 1)].reshape(-1))
    assert masks.sum() == unmasked_counts_total(size)
    assert (
        unmasked_counts(size, mode="crops") == [540] * 4
    )  # 20 of 27 rows per crop, not [351, 729, 729, 351]


def unmasked_counts_total(size):
    _, masks, _ = regroup_anyres_features(position_features([size]), [size])
    return int(masks.sum())


def test_batch_of_images_tiny_sizes():
    # tiny model geometry: base 32, patch 8 -> 4x4 tokens per crop
    processor = AnyResImageProcessor(base_size=32)
    sizes = [(64, 32), (20, 90), None, (50, 50)]
    crops = [processor.num_crops(s) if s else 1 for s in sizes]
    features = torch.randn(sum(crops), 16, 6)
    groups, masks, n = regroup_anyres_features(features, sizes, base_size=32, patch_size=8)
    assert n == crops == [3, 4, 1, 5]
    assert groups.shape == (13, 16, 6) and masks.shape == (13, 16)
    starts = [0, 3, 7, 8]
    for s in starts:  # every image's base group (and the single-crop image) is unmasked and unchanged
        assert masks[s].all() and torch.equal(groups[s], features[s])


def test_count_and_token_mismatches_raise():
    with pytest.raises(ValueError, match="need 5"):
        regroup_anyres_features(torch.randn(4, 729, 2), [(640, 480)])
    with pytest.raises(ValueError, match="tokens per crop"):
        regroup_anyres_features(torch.randn(5, 730, 2), [(640, 480)])
    with pytest.raises(ValueError, match="mode"):
        regroup_anyres_features(torch.randn(5, 729, 2), [(640, 480)], mode="bands")
