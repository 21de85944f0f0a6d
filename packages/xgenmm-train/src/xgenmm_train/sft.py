"""Supervised fine-tuning recipe.

Loss of one optimizer step = (sum over every micro-batch on every rank of the shifted token CE) / (number of
supervised tokens in all of them). Each micro-batch backpropagates ``sum_CE × W / N_step``: DeepSpeed then
averages gradients over the W ranks, giving exactly the gradient of the step loss (``scale_wrt_gas=False``,
so DeepSpeed does not divide by the accumulation steps again). The reference instead averages per micro-batch
(LAVIS `train_utils.finetune_one_epoch`); ours makes the result independent of how samples are split into
micro-batches, rows or GPUs, which is what makes packed and unpacked batches give the same loss.
"""

from __future__ import annotations

from xgenmm_data import DataCollator

from .config import Config
from .data import build_sft_dataset, mixture_texts
from .errors import TrainError
from .losses import count_supervised_tokens
from .recipe import Recipe, StepContext, all_reduce_sum, model_inputs, to_device, vision_tokens_times_zero
from .trainer import train


class SFTRecipe(Recipe):
    """Supervised fine-tuning on LLaVA records: the summed shifted token CE of the step over its supervised
    tokens (see the module docstring). ``train_step`` is the whole step; the methods below it are what it calls."""

    bar_keys = ("loss", "lr")

    def texts(self, config: Config) -> list[str]:
        """The strings of every record of ``data.path`` (to train a tiny tokenizer on, init=tiny)."""
        return mixture_texts(config.data.path)

    def build_data(self, config: Config, model, tokenizer):
        """→ (``SupervisedDataset`` of ``data.path``, ``DataCollator``); kept for the stand-in batch."""
        dataset = build_sft_dataset(config, tokenizer, model)
        self.dataset, self.collate = dataset, DataCollator(tokenizer.pad_token_id)
        self._stand_in = None
        return dataset, self.collate

    def train_step(self, ctx: StepContext, micro: list[dict]) -> dict:
        """Each micro-batch backpropagates ``sum_CE × W / N_step`` (N_step: supervised tokens of the step on all
        ranks) → this rank's sums: loss_sum, supervised, tokens, samples."""
        engine = ctx.engine
        n_local = sum(count_supervised_tokens(b["labels"]) for b in micro)
        n_step = all_reduce_sum([n_local], ctx.device)[0]
        scale = ctx.world_size / max(n_step, 1.0)
        loss_sum = tokens = samples = 0.0
        for batch in micro:
            if batch["input_ids"].shape[0] == 0:  # every sample failed to load: no tokens, the step goes on
                _, ce_sum = self.ce_sum(engine, to_device(self.stand_in(), ctx.device))
                engine.backward(ctx.guard(ce_sum * 0.0), scale_wrt_gas=False)
                ctx.engine_step()
                ctx.empty += 1
                continue
            batch = to_device(batch, ctx.device)
            out, ce_sum = self.ce_sum_with_vision(engine, batch, ctx.device)
            loss = ctx.guard(ce_sum * scale)
            engine.backward(loss, scale_wrt_gas=False)
            ctx.engine_step()
            if bool(ce_sum.isfinite()):
                loss_sum += float(ce_sum.detach())
            tokens += float(out.attention_mask.sum())
            samples += _num_samples(batch)
        return {"loss_sum": loss_sum, "supervised": n_local, "tokens": tokens, "samples": samples}

    def stand_in(self) -> dict:
        """A one-sample batch (the first sample with an image that loads) for a micro-batch whose samples all
        failed: forwarded with its loss × 0 it uses the model's parameters as a real micro-batch does, so
        DeepSpeed's gradient reduction (ZeRO-1/2 buckets of the parameters that got gradients) matches the
        other ranks', and adds exactly nothing."""
        if self._stand_in is None:
            order = sorted(range(len(self.dataset)), key=lambda i: not self.dataset.has_image[i])
            item = next((it for it in map(self.dataset.__getitem__, order) if it is not None), None)
            if item is None:
                raise TrainError(
                    f"data.path: not one sample loads ({len(self.dataset)} tried); check the images"
                )
            self._stand_in = self.collate([item])
        return self._stand_in

    def ce_sum_with_vision(self, engine, batch: dict, device):
        """`ce_sum`, inside `vision_tokens_times_zero` with the stand-in: a text-only micro-batch still reaches
        the trainable vision parameters (with zero gradients), as ZeRO-2 needs when another rank has images."""
        with vision_tokens_times_zero(engine, batch, self.stand_in, device):
            return self.ce_sum(engine, batch)

    def ce_sum(self, engine, batch: dict):
        """Forward one device batch → (model output, summed shifted CE over its supervised tokens (scalar)).

        `token_logps`: the LM head and the fp32 cross-entropy run only on the supervised positions."""
        out = engine(**model_inputs(batch), token_logps=True)
        return out, -out.token_logps.sum()

    def metrics(self, sums: dict) -> dict:
        """loss = summed CE / supervised tokens of the step (all ranks), and that token count."""
        return {
            "loss": sums["loss_sum"] / max(sums["supervised"], 1.0),
            "supervised_tokens": int(sums["supervised"]),
        }


def _num_samples(batch: dict) -> int:
    if "segment_ids" in batch:
        return int((batch["segment_ids"].max(dim=1).values + 1).sum())
    return int(batch["input_ids"].shape[0])


def run_sft(config: Config) -> dict:
    """Run an SFT job (``trainer.train`` with ``SFTRecipe``) → the run's summary dict."""
    return train(config, SFTRecipe())


__all__ = ["SFTRecipe", "run_sft"]
