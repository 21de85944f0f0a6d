"""Model inputs for one prompt with its images (used where `generate_texts` does not fit: token streaming in
the chat CLI and log-likelihood scoring in the lmms-eval plugin)."""

from __future__ import annotations

import torch


def model_device_dtype(model) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's parameters."""
    p = next(model.parameters())
    return p.device, p.dtype


def encode_images(model, images) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
    """PIL images -> anyres pixel tensors `[(Np, 3, S, S), ...]` (model device/dtype) and sizes `[(w, h), ...]`."""
    device, dtype = model_device_dtype(model)
    processor = model.image_processor()
    pixels, sizes = [], []
    for im in images:
        out = processor(im)
        pixels.append(out.pixel_values.to(device=device, dtype=dtype))
        sizes.append(tuple(out.image_size))
    return pixels, sizes


def encode_sample(model, tokenizer, prompt: str, images, continuation: str | None = None) -> dict:
    """Batch of one for `XGenMM.forward` / `generate`.

    Returns `input_ids (1, L)`, `attention_mask (1, L)`, `pixel_values` [[(Np, 3, S, S), ...]], `image_sizes`
    [[(w, h), ...]]; with `continuation`, also `labels (1, L)`: -100 on the prompt, the ids of the continuation.
    The continuation ids are taken from the tokenization of `prompt + continuation` (what the model would read),
    falling back to tokenizing the continuation alone when the prompt's tokens are not a prefix of it.
    """
    device, _ = model_device_dtype(model)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    labels = None
    if continuation is not None:
        full = tokenizer(prompt + continuation, add_special_tokens=False)["input_ids"]
        if full[: len(ids)] == ids and len(full) > len(ids):
            cont = full[len(ids) :]
        else:
            cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        if not cont:
            raise ValueError(f"empty continuation after tokenization: {continuation!r}")
        labels = torch.tensor([[-100] * len(ids) + cont], device=device)
        ids = ids + cont
    pixels, sizes = encode_images(model, images)
    batch = {
        "input_ids": torch.tensor([ids], device=device),
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long, device=device),
        "pixel_values": [pixels],
        "image_sizes": [sizes],
    }
    if labels is not None:
        batch["labels"] = labels
    return batch


@torch.no_grad()
def continuation_logprob(model, tokenizer, prompt: str, continuation: str, images) -> tuple[float, bool]:
    """Sum of log p(continuation tokens | prompt, images) and whether greedy decoding would produce them."""
    batch = encode_sample(model, tokenizer, prompt, images, continuation=continuation)
    out = model(**batch)
    logits = out.logits[:, :-1].float()  # (1, L'-1, V): position t predicts token t+1
    targets = out.labels[:, 1:]  # labels expanded over the vision blocks (-100 there)
    mask = targets != -100
    logp = torch.log_softmax(logits, dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    total = picked[mask].sum().item()
    greedy = bool((logits.argmax(-1)[mask] == targets[mask]).all().item())
    return total, greedy


__all__ = ["continuation_logprob", "encode_images", "encode_sample", "model_device_dtype"]
