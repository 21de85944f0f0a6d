"""The pieces of one measured training step for `gpu_sft`: synthetic records and pairs, the earlier SFT loss,
the A/B switches, the loss before any update, and a step timed phase by phase."""

from __future__ import annotations

import time


def sample(model, text_len: int, image_size, reply_seed: int | None = None) -> dict:
    """One synthetic record as the datasets give it: ids with one <image>, the last third supervised."""
    import torch

    cfg = model.config
    S = cfg.vision_config.image_size
    ids = torch.randint(100, cfg.initial_tokenizer_len - 100, (text_len,))
    ids[8] = cfg.media_token_id
    labels = ids.clone()
    labels[: 2 * text_len // 3] = -100
    item = {"input_ids": ids, "labels": labels, "image_sizes": [image_size]}
    item["pixel_values"] = [torch.randn(model.image_processor().num_crops(image_size), 3, S, S)]
    return item


class Pairs:
    """`micro` synthetic preference pairs (same prompt and image, another reply) as a dataset: `ids`, items."""

    def __init__(self, model, micro: int, text_len: int, image_size):
        import torch

        self.items, self.ids = [], [f"pair-{i}" for i in range(micro)]
        for i in range(micro):
            chosen = sample(model, text_len, image_size)
            reply = chosen["labels"] != -100
            rejected_ids = chosen["input_ids"].clone()
            rejected_ids[reply] = torch.randint(
                100, model.config.initial_tokenizer_len - 100, (int(reply.sum()),)
            )
            rejected = dict(chosen, input_ids=rejected_ids, labels=torch.where(reply, rejected_ids, -100))
            self.items.append({"chosen": chosen, "rejected": rejected, "index": i})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def pin(batch):
    """Page-locked copies of the batch's tensors (nested lists too), as the trainer's DataLoader on CUDA."""
    if isinstance(batch, dict):
        return {k: pin(v) for k, v in batch.items()}
    if isinstance(batch, list):
        return [pin(v) for v in batch]
    return batch.pin_memory() if hasattr(batch, "pin_memory") else batch


def legacy_recipe():
    """SFTRecipe with the loss as it was before the token-logps path: full (B, L', V) logits, fp32 CE over all
    of them, and the model's own (unused) loss kept alive through backward. For `bench.loss=full`."""
    from xgenmm_train.losses import sft_loss_sum
    from xgenmm_train.recipe import model_inputs
    from xgenmm_train.sft import SFTRecipe

    class LegacyLoss(SFTRecipe):
        def ce_sum(self, engine, batch):
            out = engine(**model_inputs(batch))
            return out, sft_loss_sum(out.logits, out.labels)[0]

    return LegacyLoss()


def apply_ab(engine, config, toggle_overflow: bool) -> None:
    """Set what a variant may change between steps: LM attention, DeepSpeed's bf16 overflow check."""
    from xgenmm_train.modeling import base_model

    lm = base_model(engine.module).lang_model
    attn = config.model.attn_implementation
    if lm.config._attn_implementation != attn:
        if hasattr(lm, "set_attn_implementation"):
            lm.set_attn_implementation(attn)
        else:
            lm.config._attn_implementation = attn
    if toggle_overflow:
        if not hasattr(engine.optimizer, "check_grad_overflow"):
            raise ValueError(f"{type(engine.optimizer).__name__} has no check_grad_overflow switch")
        engine.optimizer.check_grad_overflow = config.deepspeed.extra["bf16"]["check_grad_overflow"]


def loss_before_update(recipe, ctx, batch) -> float:
    """SFT: mean CE per supervised token; DPO: mean DPO loss (log 2 while the policy is the reference)."""
    from xgenmm_train.dpo import pair_logps
    from xgenmm_train.losses import IGNORE_INDEX, dpo_loss
    from xgenmm_train.recipe import to_device

    # With grad enabled, as in training: a compiled model then reuses its training graphs (no_grad would
    # compile a second, inference set first).
    batch = to_device(batch, ctx.device)
    if ctx.config.task == "dpo":
        rc, rr = recipe.reference(ctx, batch)
        pc, pr, _ = pair_logps(ctx.engine, batch)
        return float(dpo_loss(pc, pr, rc, rr, beta=ctx.config.dpo.beta)[0].mean().detach())
    out, ce = recipe.ce_sum(ctx.engine, batch)
    return float(ce.detach()) / max(int((out.labels[:, 1:] != IGNORE_INDEX).sum()), 1)


def phase_step(engine, recipe, batch, device, grad_accum: int, cuda: bool) -> dict:
    """One SFT optimizer step (`grad_accum` micro-batches) in its three phases, each summed over the
    micro-batches with its own peak memory: forward (+ loss), backward, engine.step (the optimizer runs in the
    last one). Same calls as `recipe.train_step` without the NaN guard's sync."""
    import torch

    from xgenmm_train.losses import count_supervised_tokens
    from xgenmm_train.recipe import to_device

    def mark():
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return time.perf_counter()

    def peak():
        return round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None

    scale = 1.0 / max(count_supervised_tokens(batch["labels"]) * grad_accum, 1)
    batch = to_device(batch, device)
    ms = {"forward_ms": 0.0, "backward_ms": 0.0, "step_ms": 0.0}
    peaks = {"peak_gib_forward": 0.0, "peak_gib_backward": 0.0, "peak_gib_step": 0.0}
    for _ in range(grad_accum):
        t0 = mark()
        out, ce = recipe.ce_sum(engine, batch)
        for_peak = peak()
        t1 = mark()
        engine.backward(ce * scale, scale_wrt_gas=False)
        back_peak = peak()
        t2 = mark()
        del out, ce
        engine.step()
        if cuda:
            torch.cuda.synchronize()
        t3 = time.perf_counter()
        for key, dt in (("forward_ms", t1 - t0), ("backward_ms", t2 - t1), ("step_ms", t3 - t2)):
            ms[key] += dt * 1e3
        if cuda:
            for key, value in zip(peaks, (for_peak, back_peak, peak())):
                peaks[key] = max(peaks[key], value)
    out = {k: round(v, 1) for k, v in ms.items()}
    out.update(peaks if cuda else dict.fromkeys(peaks))
    return out
