"""The recipe interface that :func:`xgenmm_train.trainer.train` drives, and what a recipe gets inside a step.

A *recipe* says what a task trains on and how one optimizer step computes its loss; the trainer owns the rest
(distributed set-up, model, DeepSpeed engine, step plan, resume, NaN policy, logging, checkpoints). The trainer
calls the hooks of :class:`Recipe` in this order::

    build model (texts, only for model.init=tiny) → build_data → step_source → engine → prepare → resume
    → per optimizer step: train_step, metrics → final checkpoint → finish
    → on rank 0, for the summary table: summary_rows, next_command

``SFTRecipe`` (sft.py), ``DPORecipe`` (dpo.py) and ``PretrainRecipe`` (pretrain.py, SFT's step on streamed
shards) implement it. Inside ``train_step`` a recipe uses :class:`StepContext` (engine, NaN guard, engine step)
and the batch helpers below.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable
from pathlib import Path

import torch

from .config import Config
from .data import PlanSteps
from .errors import NonFiniteLoss
from .modeling import base_model


class Recipe(abc.ABC):
    """Base class of a training recipe: ``texts``, ``build_data``, ``train_step`` and ``metrics`` are the task's
    own; ``step_source``, ``prepare``, ``summary_rows``, ``finish`` and ``next_command`` have defaults."""

    #: metrics shown in the progress bar next to ``tok/s`` (those the step's metrics have)
    bar_keys: tuple[str, ...] = ("loss", "lr")

    @abc.abstractmethod
    def texts(self, config: Config) -> list[str]:
        """Strings to train the tiny tokenizer on; called only for ``model.init=tiny``, before ``build_data``."""

    @abc.abstractmethod
    def build_data(self, config: Config, model, tokenizer) -> tuple:
        """→ (dataset, collate_fn) for the built model (peft-wrapped with LoRA) and its tokenizer. Every rank
        calls it, after the model is built and the RNGs are reseeded with ``train.seed + rank``."""

    def step_source(self, config: Config, dataset, collate_fn: Callable, rank: int, world_size: int):
        """What the loop takes its optimizer steps from (``steps_per_epoch``, ``epoch_steps``, ``describe``,
        ``state_dict``; see :class:`~xgenmm_train.data.PlanSteps`). Default: the step plan of a map-style
        dataset with ``lengths``; pre-training returns its shard stream's ``StreamSteps``."""
        return PlanSteps(config, dataset, collate_fn, rank, world_size)

    def prepare(
        self, config: Config, engine, dataset, collate_fn, rank: int, world_size: int, device
    ) -> None:
        """Once, after the DeepSpeed engine is built and before a checkpoint is resumed or a step runs (DPO:
        the reference policy from the starting weights). Default: nothing."""
        return None

    @abc.abstractmethod
    def train_step(self, ctx: StepContext, micro: list[dict]) -> dict[str, float]:
        """One optimizer step on this rank's ``grad_accum`` collated micro-batches (on the CPU): per micro-batch
        forward, ``ctx.guard(loss)``, ``ctx.engine.backward`` and ``ctx.engine_step()`` → this rank's sums for
        the step (floats). The trainer adds them over the ranks and counts ``samples`` and ``tokens`` itself."""

    @abc.abstractmethod
    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """The step's metrics (``loss`` among them) from ``train_step``'s sums over all ranks; the trainer adds
        ``lr``, ``grad_norm``, ``tokens_per_s``, ``epoch`` and the skipped / empty micro-batch counts."""

    def summary_rows(self, last: dict) -> list[tuple[str, float | str]]:
        """Rows of the end-of-run table from the last step's metrics. Default: the final loss."""
        return [("final loss", last.get("loss", float("nan")))]

    def finish(self, config: Config, engine, tokenizer, rank: int, world_size: int, device) -> dict:
        """After the final checkpoint of a run that was not preempted, on every rank (it may be collective) →
        entries for the run's summary dict. Default: none."""
        return {}

    def next_command(self, config: Config, checkpoint: Path | None) -> str:
        """The summary table's ``next`` row for the final checkpoint ('' for none). Default: evaluate the saved
        model with ``xgenmm-eval run``, or name the peft adapter of a LoRA run that was not merged."""
        if checkpoint is None:
            return ""
        if config.lora.enabled and not config.lora.merge_on_save:
            return f"weights: {checkpoint / 'adapter'} (peft adapter)"
        return (
            f"uv run xgenmm-eval run --model {checkpoint / 'model'} --data <llava.json> --image-folder <dir>"
        )


# ---------------------------------------------------------------------------------------------------------
# what a recipe uses inside a step


def all_reduce_sum(values: list[float], device) -> list[float]:
    """Sum ``values`` over the ranks (float64). One process: the values themselves, without the round trip
    through the device (each round trip waits for the GPU to finish all queued work)."""
    if not (torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1):
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def to_device(batch: dict, device) -> dict:
    """A collated batch on ``device``: its tensors, and ``pixel_values`` (per sample a list of (crops, 3, H, W)
    tensors); other entries as they are."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.to(device, non_blocking=True)
        elif k == "pixel_values":
            out[k] = [[p.to(device, non_blocking=True) for p in row] for row in v]
        else:
            out[k] = v
    return out


@contextlib.contextmanager
def vision_tokens_times_zero(engine, batch: dict, stand_in: Callable[[], dict], device):
    """Around the forward of a text-only micro-batch while a vision part (perceiver, encoder) trains: the vision
    tokens of ``stand_in()`` (a collated batch with images, on the CPU) × 0 are added to the LM's input
    embeddings. The backward then gives the vision parameters (zero) gradients in the same order as an image
    micro-batch does (after the LM's), so ZeRO-2's gradient buckets, filled in that order, match those of an
    image micro-batch on another rank; the numbers are unchanged (one rank's text-only micro-batch beside
    another's images used to fail the reduction). Any other micro-batch: nothing is done."""
    xgenmm = base_model(engine.module)
    vision = (*xgenmm.vision_tokenizer.parameters(), *xgenmm.vision_encoder.parameters())
    if any(batch.get("pixel_values") or []) or not any(p.requires_grad for p in vision):
        yield
        return
    images = to_device(stand_in(), device)
    blocks = xgenmm.encode_images(images["pixel_values"], images["image_sizes"])
    zero = 0.0 * sum(block.sum() for sample in blocks for block in sample)
    hook = xgenmm.get_input_embeddings().register_forward_hook(lambda module, args, out: out + zero)
    try:
        yield
    finally:
        hook.remove()


MODEL_INPUTS = (
    "input_ids",
    "attention_mask",
    "labels",
    "pixel_values",
    "image_sizes",
    "position_ids",
    "segment_ids",
)


def model_inputs(batch: dict) -> dict:
    """The entries of a batch that ``XGenMM.forward`` takes (``MODEL_INPUTS``), e.g. without DPO's ``index``."""
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}


class StepContext:
    """What a recipe needs inside one optimizer step: the engine, device, world size, config and step number,
    the NaN guard and ``engine_step``; it counts skipped (non-finite) and empty micro-batches."""

    def __init__(self, engine, device, world_size: int, config: Config, step: int):
        self.engine, self.device, self.world_size, self.config, self.step = (
            engine,
            device,
            world_size,
            config,
            step,
        )
        self.skipped = 0
        self.empty = 0
        self.grad_norm: float | None = None
        # DeepSpeed reports the gradient norm only when its own optimizer wrapper (ZeRO, bf16, fp16) computes it.
        self._own_norm = not hasattr(engine.optimizer, "_global_grad_norm")

    def zero_loss(self) -> torch.Tensor:
        """A loss of 0 that reaches every trainable parameter, so each gets a (zero) gradient and DeepSpeed's
        gradient reduction runs on this rank as on the others."""
        params = [p for p in self.engine.module.parameters() if p.requires_grad]
        return sum(p.reshape(-1)[:1].sum() for p in params) * 0.0

    def engine_step(self) -> None:
        """``engine.step()``; at the accumulation boundary first records the pre-clip global gradient norm when
        DeepSpeed does not (ZeRO-0 with fp32: the gradients are already averaged over the ranks here)."""
        if self._own_norm and self.engine.is_gradient_accumulation_boundary():
            norms = [
                torch.linalg.vector_norm(p.grad.float())
                for p in self.engine.module.parameters()
                if p.requires_grad and p.grad is not None
            ]
            self.grad_norm = float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
        self.engine.step()

    def global_grad_norm(self) -> float:
        """The step's pre-clip global gradient norm: ours (see ``engine_step``) or DeepSpeed's."""
        if self.grad_norm is not None:
            return self.grad_norm
        return float(self.engine.get_global_grad_norm() or 0.0)

    def guard(self, loss: torch.Tensor) -> torch.Tensor:
        """NaN/inf policy, agreed across ranks: ``stop`` raises naming the step; ``skip`` replaces the
        micro-batch's loss by a zero loss (its gradient contribution is dropped, the step goes on)."""
        bad = all_reduce_sum([0.0 if bool(torch.isfinite(loss)) else 1.0], self.device)[0]
        if not bad:
            return loss
        if self.config.train.nan_policy == "stop":
            raise NonFiniteLoss(
                f"non-finite loss ({loss.item()}) at optimizer step {self.step + 1}; stopping without saving "
                "(set train.nan_policy=skip to drop such micro-batches)"
            )
        self.skipped += 1
        return self.zero_loss()


__all__ = ["MODEL_INPUTS", "Recipe", "StepContext", "all_reduce_sum", "model_inputs", "to_device"]
