import pytest
import torch

from xgenmm_lm import splice_vision_tokens

MEDIA = 9
PAD = 0


def embed(ids):
    """Embedding = the id in every dimension (D = 2), so positions can be read back."""
    return ids.float().unsqueeze(-1).repeat(1, 1, 2)


def block(value, n):
    return torch.full((n, 2), float(value))


def test_single_image_replaces_the_token():
    ids = torch.tensor([[1, 2, MEDIA, 3, 4]])
    labels = torch.tensor([[-100, 2, 5, 3, 4]])
    out = splice_vision_tokens(embed(ids), ids, MEDIA, [[block(-1, 3)]], labels=labels)
    assert out.inputs_embeds[0, :, 0].tolist() == [1, 2, -1, -1, -1, 3, 4]
    assert out.attention_mask.tolist() == [[1] * 7]
    assert out.labels.tolist() == [[-100, 2, -100, -100, -100, 3, 4]]
    assert out.position_ids.tolist() == [list(range(7))]
    assert out.segment_ids is None


def test_two_interleaved_images_in_order():
    ids = torch.tensor([[1, MEDIA, 2, MEDIA, 3]])
    out = splice_vision_tokens(embed(ids), ids, MEDIA, [[block(-1, 2), block(-2, 3)]], labels=ids.clone())
    assert out.inputs_embeds[0, :, 0].tolist() == [1, -1, -1, 2, -2, -2, -2, 3]
    assert out.labels.tolist() == [[1, -100, -100, 2, -100, -100, -100, 3]]


def test_mixed_batch_right_and_left_padding():
    ids = torch.tensor([[1, MEDIA, 2, PAD], [3, 4, 5, 6]])  # image sample (padded), text-only sample
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    labels = torch.tensor([[1, 9, 2, -100], [3, 4, 5, 6]])
    images = [[block(-1, 4)], []]
    right = splice_vision_tokens(embed(ids), ids, MEDIA, images, mask, labels)
    assert right.inputs_embeds[:, :, 0].tolist() == [[1, -1, -1, -1, -1, 2], [3, 4, 5, 6, 0, 0]]
    assert right.attention_mask.tolist() == [[1] * 6, [1, 1, 1, 1, 0, 0]]
    assert right.labels.tolist() == [[1, -100, -100, -100, -100, 2], [3, 4, 5, 6, -100, -100]]
    assert right.position_ids.tolist() == [[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 0, 0]]
    left = splice_vision_tokens(embed(ids), ids, MEDIA, images, mask, labels, padding_side="left")
    assert left.inputs_embeds[1, :, 0].tolist() == [0, 0, 3, 4, 5, 6]  # zero pad rows
    assert left.attention_mask[1].tolist() == [0, 0, 1, 1, 1, 1]
    assert left.position_ids[1].tolist() == [0, 0, 0, 1, 2, 3]
    # input padding on the left is dropped the same way
    lids = torch.tensor([[PAD, 1, MEDIA, 2]])
    lmask = torch.tensor([[0, 1, 1, 1]])
    again = splice_vision_tokens(embed(lids), lids, MEDIA, [[block(-1, 4)]], lmask)
    assert again.inputs_embeds[0, :, 0].tolist() == right.inputs_embeds[0, :, 0].tolist()


def test_packed_rows_expand_segments_and_positions():
    # two samples in one row: [1, MEDIA, 2] and [3, MEDIA, 4, 5], then padding
    ids = torch.tensor([[1, MEDIA, 2, 3, MEDIA, 4, 5, PAD]])
    seg = torch.tensor([[0, 0, 0, 1, 1, 1, 1, -1]])
    pos = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 0]])
    out = splice_vision_tokens(
        embed(ids),
        ids,
        MEDIA,
        [[block(-1, 2), block(-2, 3)]],
        labels=ids.clone(),
        position_ids=pos,
        segment_ids=seg,
    )
    assert out.segment_ids.tolist() == [[0, 0, 0, 0, 1, 1, 1, 1, 1, 1]]
    assert out.position_ids.tolist() == [[0, 1, 2, 3, 0, 1, 2, 3, 4, 5]]
    assert out.attention_mask.tolist() == [[1] * 10]
    assert out.labels.tolist() == [[1, -100, -100, 2, 3, -100, -100, -100, 4, 5]]


def test_count_mismatch_is_an_error():
    ids = torch.tensor([[1, MEDIA, 2]])
    with pytest.raises(ValueError, match=r"sample 0: 1 <image> token\(s\) .* but 2 image\(s\)"):
        splice_vision_tokens(embed(ids), ids, MEDIA, [[block(-1, 2), block(-2, 2)]])
    with pytest.raises(ValueError, match=r"sample 0: 1 <image> token\(s\) .* but 0 image\(s\)"):
        splice_vision_tokens(embed(ids), ids, MEDIA, [[]])
