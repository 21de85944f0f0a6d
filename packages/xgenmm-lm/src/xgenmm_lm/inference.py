"""Batched text generation from prompts and PIL images (used by xgenmm-eval and xgenmm-train's default run)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .tokenization import END_TOKEN, stop_token_ids


def _as_image_list(item) -> list:
    if item is None:
        return []
    if isinstance(item, (list, tuple)):
        return list(item)
    return [item]


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id lists → (input_ids (B, L), attention_mask (B, L))."""
    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros(len(sequences), length, dtype=torch.long)
    for b, seq in enumerate(sequences):
        if len(seq):
            input_ids[b, length - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
            mask[b, length - len(seq) :] = 1
    return input_ids, mask


def cut_at_stop(ids: Sequence[int], stop_ids: Sequence[int]) -> list[int]:
    """Token ids before the first stop id."""
    out = []
    for i in ids:
        if i in stop_ids:
            break
        out.append(i)
    return out


@torch.no_grad()
def generate_texts(
    model,
    tokenizer,
    prompts: Sequence[str],
    images: Sequence | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    **generation_kwargs,
) -> list[str]:
    """Answer each prompt; greedy by default.

    Args:
        model: an `XGenMM`.
        tokenizer: its tokenizer (with the xGen-MM special tokens).
        prompts: full prompt strings (template applied, ending with the generation prompt), one `<image>` per image.
        images: per prompt None, one PIL image, or a list of PIL images (in `<image>` order); None = text only.
        batch_size: prompts per `generate` call (left padding).
        max_new_tokens, generation_kwargs: passed to `XGenMM.generate` (`do_sample`, `num_beams`, ...).
    Returns:
        the decoded answers, cut at the first `<|end|>` / eos, special tokens removed, stripped.
    """
    images = [None] * len(prompts) if images is None else list(images)
    if len(images) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(images)} image entries")
    processor = model.image_processor()
    stops = list(dict.fromkeys(stop_token_ids(tokenizer) + list(model.config.eos_token_id)))
    generation_kwargs.setdefault("do_sample", False)
    generation_kwargs.setdefault("eos_token_id", stops)
    answers: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = range(start, min(start + batch_size, len(prompts)))
        ids = [tokenizer(prompts[i], add_special_tokens=False).input_ids for i in chunk]
        input_ids, mask = left_pad(ids, model.config.pad_token_id)
        pixel_values, image_sizes = [], []
        for i in chunk:
            processed = [processor(img) for img in _as_image_list(images[i])]
            pixel_values.append([p.pixel_values for p in processed])
            image_sizes.append([p.image_size for p in processed])
        out = model.generate(
            input_ids,
            attention_mask=mask,
            pixel_values=pixel_values,
            image_sizes=image_sizes,
            max_new_tokens=max_new_tokens,
            **generation_kwargs,
        )
        for row in out.tolist():
            text = tokenizer.decode(cut_at_stop(row, stops), skip_special_tokens=True)
            answers.append(text.split(END_TOKEN)[0].strip())
    return answers


__all__ = ["cut_at_stop", "generate_texts", "left_pad"]
