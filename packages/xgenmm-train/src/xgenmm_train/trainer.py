"""The training loop shared by SFT and DPO: distributed set-up, model, DeepSpeed engine, step plan, resume,
NaN policy, logging and checkpoints. A *recipe* (``sft.SFTRecipe``, ``dpo.DPORecipe``) supplies the data and
the loss of one optimizer step.

Order of operations: init distributed → build model (seeded with ``train.seed`` on every rank) → reseed with
``seed + rank`` → data and plan → engine → recipe.prepare (e.g. reference log-probs) → resume → steps → final
checkpoint → summary.

SIGTERM / SIGUSR1 (cluster preemption) only set a flag: the ranks agree on it after the optimizer step in
progress, write a checkpoint of that step and raise :class:`~xgenmm_train.errors.Preempted` (the CLI exits 75).
A micro-batch whose samples all failed to load (the dataset logs each once) still takes part in the step on
its rank (the recipe forwards a stand-in with loss × 0), so distributed runs stay in step.
"""

from __future__ import annotations

import random
import shlex
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from .config import Config, to_yaml
from .data import PlanSteps
from .distributed import build_engine, init_distributed
from .errors import Preempted
from .modeling import all_finite, build_model, count_parameters, save_weights
from .tracking import MetricsLogger, Timer, plot_loss, summary_table


class NonFiniteLoss(FloatingPointError):
    pass


class StopSignals:
    """Context manager: SIGTERM and SIGUSR1 set ``received`` (the signal's name) instead of ending the process;
    the previous handlers come back on exit. Only in the main thread (Python delivers signals there)."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self):
        self.received: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def all_reduce_sum(values: list[float], device) -> list[float]:
    """Sum ``values`` over the ranks (float64). One process: the values themselves, without the round trip
    through the device (each round trip waits for the GPU to finish all queued work)."""
    if not (torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1):
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def to_device(batch: dict, device) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.to(device, non_blocking=True)
        elif k == "pixel_values":
            out[k] = [[p.to(device, non_blocking=True) for p in row] for row in v]
        else:
            out[k] = v
    return out


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
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}


class StepContext:
    """What a recipe needs inside one optimizer step."""

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


def _next_command(config: Config, ckpt: Path | None) -> str:
    if ckpt is None:
        return ""
    if config.lora.enabled and not config.lora.merge_on_save:
        return f"weights: {ckpt / 'adapter'} (peft adapter)"
    return f"uv run xgenmm-eval run --model {ckpt / 'model'} --data <llava.json> --image-folder <dir>"


def train(config: Config, recipe) -> dict:
    """Run a training job; returns the summary dict (rank 0 also prints the summary table)."""
    timer = Timer()
    rank, world, device = init_distributed()
    run_dir = Path(config.run_dir)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(to_yaml(config))
    t = config.train

    resume_path = resolve_resume(config.checkpoint.resume, run_dir)
    model, tokenizer = build_model(config, texts=lambda: recipe.texts(config), rank=rank)
    seed_everything(t.seed + rank)
    dataset, collate = recipe.build_data(config, model, tokenizer)
    # the recipe's own step source (pretrain: a shard stream), else the step plan of a map-style dataset
    make_source = getattr(recipe, "step_source", PlanSteps)
    source = make_source(config, dataset, collate, rank, world)
    steps_per_epoch = source.steps_per_epoch
    total_steps = steps_per_epoch * t.epochs
    if t.max_steps is not None:
        total_steps = min(total_steps, t.max_steps)

    engine, _, _ = build_engine(model, config, world, total_steps)
    recipe.prepare(config, engine, dataset, collate, rank, world, device)

    state = {"step": 0, "samples": 0, "tokens": 0, "elapsed": 0.0}
    if resume_path is not None:
        state = load_checkpoint(resume_path, engine, rank)
        source.load_state_dict(state.get("data"))
        if rank == 0:
            print(f"resumed from {resume_path} at step {state['step']}", file=sys.stderr)
    step = int(state["step"])
    logger = MetricsLogger(config, rank, total_steps, initial_step=step)
    total, trainable = count_parameters(engine.module)
    if rank == 0:
        print(
            f"{config.task}: {source.describe()}, {total_steps} steps, "
            f"{world} process(es) × {t.grad_accum} accumulation × micro-batch {t.micro_batch_size}; "
            f"parameters {total:,} ({trainable:,} trainable)",
            file=sys.stderr,
        )

    last_saved = None
    last_metrics: dict = {}
    samples, tokens, elapsed0 = int(state["samples"]), int(state["tokens"]), float(state["elapsed"])
    save_every = config.checkpoint.save_every

    def do_save(at_step: int, final: bool):
        if not all_finite(engine.module):
            raise NonFiniteLoss(f"non-finite weights after step {at_step}: refusing to save a checkpoint")
        trainer_state = {
            "epoch": at_step // steps_per_epoch,
            "batch_in_epoch": at_step % steps_per_epoch,
            "samples": samples,
            "tokens": tokens,
            "elapsed": elapsed0 + timer.elapsed(),
            "world_size": world,
            "metrics": last_metrics,
        }
        # every rank takes part (pretrain gathers the ranks' stream positions)
        data_state = source.state_dict()
        if data_state is not None:
            trainer_state["data"] = data_state
        return save_checkpoint(
            run_dir,
            at_step,
            engine,
            lambda d: save_weights(
                engine.module,
                tokenizer,
                d,
                rank,
                config.deepspeed.zero_stage,
                merge_lora=final and config.lora.merge_on_save,
            ),
            trainer_state,
            rank,
            keep_last=config.checkpoint.keep_last,
            save_optimizer=config.checkpoint.save_optimizer,
        )

    engine.train()
    step_timer = Timer()
    stop_requested = False
    with StopSignals() as signals:
        while step < total_steps and not stop_requested:
            epoch, start = divmod(step, steps_per_epoch)
            for micro in source.epoch_steps(epoch, start):
                ctx = StepContext(engine, device, world, config, step)
                sums = recipe.train_step(ctx, micro)
                sums.update(empty_micro_batches=ctx.empty, stop=float(signals.received is not None))
                keys = sorted(sums)
                reduced = dict(zip(keys, all_reduce_sum([float(sums[k]) for k in keys], device)))
                step += 1
                samples += int(reduced.get("samples", 0))
                tokens += int(reduced.get("tokens", 0))
                dt = step_timer.elapsed()
                step_timer = Timer()
                metrics = recipe.metrics(reduced)
                metrics.update(
                    lr=engine.get_lr()[0],
                    grad_norm=ctx.global_grad_norm(),
                    tokens_per_s=reduced.get("tokens", 0) / max(dt, 1e-9),
                    epoch=epoch,
                    skipped_micro_batches=ctx.skipped,
                    empty_micro_batches=int(reduced["empty_micro_batches"]),
                )
                last_metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
                if step % config.logging.log_every == 0 or step == total_steps:
                    logger.log(step, metrics)
                logger.progress(
                    1,
                    {k: metrics[k] for k in recipe.bar_keys if k in metrics}
                    | {"tok/s": round(metrics["tokens_per_s"])},
                )
                stop_requested = reduced["stop"] > 0  # every rank stops after the same step
                if save_every and step % save_every == 0 and step < total_steps and not stop_requested:
                    last_saved = do_save(step, final=False)
                if step >= total_steps or stop_requested:
                    break
        logger.close()
        if last_saved is None or not last_saved.name.endswith(f"{step:06d}"):
            last_saved = do_save(step, final=not stop_requested)
    if stop_requested:
        raise Preempted(signals.received or "a signal on another rank", step, last_saved)
    summary = recipe.finish(config, engine, tokenizer, rank, world, device) or {}
    elapsed = elapsed0 + timer.elapsed()
    result = {
        "steps": step,
        "samples": samples,
        "tokens": tokens,
        "time_s": elapsed,
        "final_metrics": last_metrics,
        "checkpoint": str(last_saved),
        **summary,
    }
    if rank == 0:
        plot = plot_loss(run_dir) if config.logging.plot else None
        rows = [
            ("task", config.task),
            ("steps", str(step)),
            ("samples", f"{samples:,}"),
            ("tokens", f"{tokens:,}"),
            ("time", f"{elapsed:.1f} s"),
            *[
                (k, f"{v:.4f}" if isinstance(v, float) else str(v))
                for k, v in recipe.summary_rows(last_metrics)
            ],
            ("checkpoint", str(last_saved)),
            ("metrics", str(run_dir / "metrics.jsonl")),
        ]
        if plot is not None:
            rows.append(("loss plot", str(plot)))
        nxt = getattr(recipe, "next_command", _next_command)(config, last_saved)
        if nxt:
            rows.append(("next", nxt))
        print(summary_table(rows), file=sys.stderr)
    return result


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in sys.argv)


__all__ = ["NonFiniteLoss", "StepContext", "StopSignals", "model_inputs", "to_device", "train"]
