"""Splice vision tokens into the text stream (LAVIS `open_flamingo/src/vlm.py`,
`VLMWithLanguageStream._prepare_inputs_for_forward`).

The k-th `<image>` token of a sample is removed and replaced by the k-th image's block of embeddings (base image
first, `num_latents` tokens per group). Vision positions get attention 1 and label -100. The batch is re-padded to
the longest expanded sample — right padding for training, left padding for generation — with zero embedding
rows, mask 0, label -100, position 0 and segment -1.

Packed rows (several samples in one row, `segment_ids` = sample index in the row, -1 on padding) are expanded the
same way; each vision block takes the segment of its `<image>` token and position ids restart at every sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SpliceOutput:
    """The LM inputs over the expanded sequence of length L'.

    inputs_embeds `(B, L', D)`, attention_mask `(B, L')` long, labels `(B, L')` long or None, position_ids
    `(B, L')` long, segment_ids `(B, L')` long or None (None unless the rows are packed).
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None
    position_ids: torch.Tensor
    segment_ids: torch.Tensor | None


def _restarting_positions(segments: torch.Tensor, first_position: torch.Tensor) -> torch.Tensor:
    """Positions counting from the start of each run of equal `segments` values, plus that run's `first_position`.

    segments `(n,)`, first_position `(n,)` (the text position id of the token each expanded position came from).
    """
    n = segments.shape[0]
    index = torch.arange(n, device=segments.device)
    starts = torch.ones(n, dtype=torch.bool, device=segments.device)
    starts[1:] = segments[1:] != segments[:-1]
    run_start = torch.where(starts, index, torch.zeros_like(index)).cummax(0).values
    return index - run_start + first_position[run_start]


def splice_vision_tokens(
    inputs_embeds: torch.Tensor,
    input_ids: torch.Tensor,
    media_token_id: int,
    image_embeds: list[list[torch.Tensor]],
    attention_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    segment_ids: torch.Tensor | None = None,
    padding_side: str = "right",
) -> SpliceOutput:
    """Replace each `<image>` token by its image's embeddings and re-pad the batch.

    Args:
        inputs_embeds: `(B, L, D)` text embeddings of `input_ids`.
        input_ids: `(B, L)`; padding anywhere is dropped (tokens with mask 0, or segment -1 for packed rows).
        media_token_id: id of `<image>`.
        image_embeds: per sample, per image `(n_k, D)` blocks, in the order of the sample's `<image>` tokens.
        attention_mask: `(B, L)` 0/1; None = all ones.
        labels: `(B, L)` or None.
        position_ids, segment_ids: packed rows, TEXT coordinates: position ids restarting at 0 per sample and the
            sample index (-1 on padding). `position_ids` alone: samples are found where positions restart.
        padding_side: "right" (training) or "left" (generation).

    Raises:
        ValueError: a sample's number of images differs from its number of `<image>` tokens, or a block has the
            wrong embedding width.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    batch, length, dim = inputs_embeds.shape
    if len(image_embeds) != batch:
        raise ValueError(f"image_embeds has {len(image_embeds)} samples, input_ids has {batch}")
    device = inputs_embeds.device
    real = torch.ones(batch, length, dtype=torch.bool, device=device)
    if attention_mask is not None:
        real &= attention_mask.to(device).bool()
    packed = segment_ids is not None or position_ids is not None
    if segment_ids is not None:
        real &= segment_ids.to(device) >= 0
    elif position_ids is not None:
        # Samples restart where the position does not follow its predecessor.
        diff = torch.diff(position_ids, prepend=position_ids[:, :1] - 1, dim=-1)
        segment_ids = (diff != 1).long().cumsum(-1) - 1
    if position_ids is None and segment_ids is not None:
        position_ids = torch.zeros_like(segment_ids)  # first position of each run = 0

    rows = []
    for b in range(batch):
        keep = real[b].nonzero().squeeze(-1)
        ids = input_ids[b, keep]
        media = (ids == media_token_id).nonzero().squeeze(-1).tolist()
        images = image_embeds[b]
        if len(media) != len(images):
            raise ValueError(
                f"sample {b}: {len(media)} <image> token(s) (id {media_token_id}) but {len(images)} image(s); "
                "each image needs exactly one <image> token in the text, in order"
            )
        src = []  # for each expanded position: index into `keep` of the text token it comes from
        embeds, is_vision, within = [], [], []
        cursor = 0
        text = inputs_embeds[b, keep]
        for pos, block in zip(media, images):
            if block.ndim != 2 or block.shape[-1] != dim:
                raise ValueError(
                    f"sample {b}: image block of shape {tuple(block.shape)}, expected (n, {dim})"
                )
            embeds += [text[cursor:pos], block.to(device=text.device, dtype=text.dtype)]
            src += list(range(cursor, pos)) + [pos] * block.shape[0]
            is_vision += [False] * (pos - cursor) + [True] * block.shape[0]
            within += [0] * (pos - cursor) + list(range(block.shape[0]))
            cursor = pos + 1
        embeds.append(text[cursor:])
        src += list(range(cursor, len(ids)))
        is_vision += [False] * (len(ids) - cursor)
        within += [0] * (len(ids) - cursor)
        src_t = torch.tensor(src, dtype=torch.long, device=device)
        vision_t = torch.tensor(is_vision, dtype=torch.bool, device=device)
        row = {"embeds": torch.cat(embeds, dim=0)}
        if labels is not None:
            row["labels"] = labels[b, keep].to(device)[src_t].masked_fill(vision_t, -100)
        if packed:
            seg = segment_ids[b, keep].to(device)[src_t]
            first = position_ids[b, keep].to(device)[src_t] + torch.tensor(within, device=device)
            row["segments"] = seg
            row["positions"] = _restarting_positions(seg, first)
        else:
            row["positions"] = torch.arange(len(src), device=device)
        rows.append(row)

    new_len = max(r["embeds"].shape[0] for r in rows)
    out_embeds = inputs_embeds.new_zeros(batch, new_len, dim)
    out_mask = torch.zeros(batch, new_len, dtype=torch.long, device=device)
    out_pos = torch.zeros(batch, new_len, dtype=torch.long, device=device)
    out_labels = (
        torch.full((batch, new_len), -100, dtype=torch.long, device=device) if labels is not None else None
    )
    out_seg = torch.full((batch, new_len), -1, dtype=torch.long, device=device) if packed else None
    for b, r in enumerate(rows):
        n = r["embeds"].shape[0]
        sl = slice(0, n) if padding_side == "right" else slice(new_len - n, new_len)
        out_embeds[b, sl] = r["embeds"]
        out_mask[b, sl] = 1
        out_pos[b, sl] = r["positions"]
        if out_labels is not None:
            out_labels[b, sl] = r["labels"]
        if out_seg is not None:
            out_seg[b, sl] = r["segments"]
    return SpliceOutput(out_embeds, out_mask, out_labels, out_pos, out_seg)


__all__ = ["SpliceOutput", "splice_vision_tokens"]
