"""Batched text generation from prompts and PIL images (used by xgenmm-eval and xgenmm-train's default run)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .processing import XGenMMProcessor
from .tokenization import END_TOKEN, stop_token_ids


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
        batch_size: prompts per `generate` call.
        max_new_tokens, generation_kwargs: passed to `XGenMM.generate` (`do_sample`, `num_beams`, ...).
    Returns:
        the decoded answers, cut at the first `<|end|>` / eos, special tokens removed, stripped.
    """
    images = [None] * len(prompts) if images is None else list(images)
    if len(images) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(images)} image entries")
    processor = XGenMMProcessor.from_model(model, tokenizer)
    stops = list(dict.fromkeys(stop_token_ids(tokenizer) + list(model.config.eos_token_id)))
    generation_kwargs.setdefault("do_sample", False)
    generation_kwargs.setdefault("eos_token_id", stops)
    answers: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = range(start, min(start + batch_size, len(prompts)))
        per_prompt = [[] if images[i] is None else images[i] for i in chunk]
        per_prompt = [list(x) if isinstance(x, (list, tuple)) else [x] for x in per_prompt]
        inputs = processor(text=[prompts[i] for i in chunk], images=per_prompt)
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, **generation_kwargs)
        for row in out.tolist():
            text = tokenizer.decode(cut_at_stop(row, stops), skip_special_tokens=True)
            answers.append(text.split(END_TOKEN)[0].strip())
    return answers


__all__ = ["cut_at_stop", "generate_texts"]
