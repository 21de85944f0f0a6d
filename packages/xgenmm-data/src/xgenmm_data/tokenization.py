"""Tokenize a rendered conversation and build its labels (LAVIS `open_flamingo/train/sft_data_utils.py`,
`preprocess_phi_3_new`).

Labels are computed from the template's segments, not with the reference's count-and-skip arithmetic:

* fast tokenizers: the whole string is tokenized once with `return_offsets_mapping`; each token is assigned
  to the segment its (whitespace-trimmed) character span starts in. A token whose non-whitespace text crosses
  a segment boundary is a `TokenizationMismatch`.
* other tokenizers: each segment is tokenized alone and the concatenation must equal the tokenization of the
  whole string, else `TokenizationMismatch`.

The whole-string token ids are always the ones returned, so training sees exactly what inference sees.
A mismatch is raised (the dataset reports and skips the record); nothing is silently masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .templates import get_template

IGNORE_INDEX = -100
IMAGE_TOKEN = "<image>"


class TokenizationMismatch(ValueError):
    """Segment boundaries and tokens disagree (e.g. a token merges a reply with the text around it)."""


@dataclass
class EncodedConversation:
    """Token ids and labels of one conversation (1-D long tensors of equal length).

    `truncated`: the text was cut at `max_length`; `num_text_tokens`: length before truncation;
    `num_image_tokens`: `<image>` ids left in `input_ids` (trailing images beyond this were cut away).
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    truncated: bool
    num_text_tokens: int
    num_image_tokens: int


def _encode(tokenizer, text: str, offsets: bool):
    kwargs = {"add_special_tokens": False}
    if offsets:
        kwargs["return_offsets_mapping"] = True
    return tokenizer(text, **kwargs)


def _labels_from_offsets(text, ids, offsets, segments) -> list[bool]:
    bounds, start = [], 0
    for s in segments:
        bounds.append((start, start + len(s.text), s.supervised))
        start += len(s.text)
    supervised, seg = [], 0
    for tok_i, (a, b) in enumerate(offsets):
        piece = text[a:b]
        core_a = a + (len(piece) - len(piece.lstrip())) if piece.strip() else a
        core_b = b - (len(piece) - len(piece.rstrip())) if piece.strip() else b
        while seg < len(bounds) - 1 and core_a >= bounds[seg][1]:
            seg += 1
        lo, hi, sup = bounds[seg]
        if core_b > hi and core_b > core_a:
            raise TokenizationMismatch(
                f"token {tok_i} (id {ids[tok_i]}, text {piece!r}) crosses the boundary between segment "
                f"{text[lo:hi]!r} and the next one"
            )
        supervised.append(sup)
    return supervised


def _labels_from_segments(tokenizer, text, ids, segments) -> list[bool]:
    pieces, supervised = [], []
    for s in segments:
        seg_ids = _encode(tokenizer, s.text, offsets=False)["input_ids"]
        pieces.extend(seg_ids)
        supervised.extend([s.supervised] * len(seg_ids))
    if pieces != list(ids):
        raise TokenizationMismatch(
            "tokenizing segment by segment gives different ids than tokenizing the whole string "
            f"({len(pieces)} vs {len(ids)} tokens)"
        )
    return supervised


def encode_conversation(
    conversations: list[dict],
    tokenizer,
    template="phi_3",
    max_length: int | None = 2048,
    image_token: str = IMAGE_TOKEN,
) -> EncodedConversation:
    """Render `conversations` with `template`, tokenize (no BOS/EOS added) and mask labels.

    Supervised positions = each assistant reply + its end marker (`<|end|>` for phi_3); everything else
    (system block, user turns, generation prompts, separators, `<image>`) is -100 (as in
    `preprocess_phi_3_new`). Truncation keeps the first `max_length` text tokens; callers drop the images
    whose `<image>` was cut.
    """
    tmpl = get_template(template, tokenizer)
    segments = tmpl.segments(conversations)
    text = "".join(s.text for s in segments)
    fast = getattr(tokenizer, "is_fast", False)
    enc = _encode(tokenizer, text, offsets=fast)
    ids = list(enc["input_ids"])
    if fast:
        supervised = _labels_from_offsets(text, ids, enc["offset_mapping"], segments)
    else:
        supervised = _labels_from_segments(tokenizer, text, ids, segments)
    n = len(ids)
    truncated = max_length is not None and n > max_length
    if truncated:
        ids, supervised = ids[:max_length], supervised[:max_length]
    input_ids = torch.tensor(ids, dtype=torch.long)
    labels = torch.where(torch.tensor(supervised, dtype=torch.bool), input_ids, IGNORE_INDEX)
    image_id = tokenizer.convert_tokens_to_ids(image_token)
    num_images = int((input_ids == image_id).sum()) if image_id is not None else 0
    return EncodedConversation(input_ids, labels, truncated, n, num_images)


def tokenize_conversation(conversations, tokenizer, template="phi_3", max_length: int | None = 2048):
    """`(input_ids (L,) long, labels (L,) long)` for one conversation; see `encode_conversation`."""
    enc = encode_conversation(conversations, tokenizer, template, max_length)
    return enc.input_ids, enc.labels


__all__ = [
    "IGNORE_INDEX",
    "IMAGE_TOKEN",
    "TokenizationMismatch",
    "EncodedConversation",
    "encode_conversation",
    "tokenize_conversation",
]
