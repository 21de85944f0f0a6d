"""The training loop shared by pre-training, SFT and DPO: distributed set-up, model, DeepSpeed engine, step plan,
resume, NaN policy, logging and checkpoints. A recipe (:class:`~xgenmm_train.recipe.Recipe`: ``SFTRecipe``,
``DPORecipe``, ``PretrainRecipe``) supplies the data and the loss of one optimizer step.

Order of operations: init distributed → build model (seeded with ``train.seed`` on every rank) → reseed with
``seed + rank`` → data and step source → engine → recipe.prepare (e.g. reference log-probs) → resume → steps
→ final checkpoint → recipe.finish → summary.

SIGTERM / SIGUSR1 (cluster preemption) only set a flag: the ranks agree on it after the optimizer step in
progress, write a checkpoint of that step and raise :class:`~xgenmm_train.errors.Preempted` (the CLI exits 75).
A micro-batch whose samples all failed to load (the dataset logs each once) still takes part in the step on
its rank (the recipe forwards a stand-in with loss × 0), so distributed runs stay in step.
"""

from __future__ import annotations

import random
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from .config import Config, to_yaml
from .distributed import build_engine, init_distributed
from .errors import NonFiniteLoss, Preempted
from .modeling import all_finite, build_model, count_parameters, save_weights
from .recipe import Recipe, StepContext, all_reduce_sum, model_inputs, to_device
from .tracking import MetricsLogger, Timer, plot_loss, summary_table


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
    """Seed Python's, numpy's and torch's RNGs (the trainer reseeds with ``train.seed + rank``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(config: Config, recipe: Recipe) -> dict:
    """Run a training job with ``recipe`` (see :class:`~xgenmm_train.recipe.Recipe` for when each hook is
    called) → the summary dict (steps, samples, tokens, time_s, final_metrics, checkpoint and the recipe's
    ``finish`` entries); rank 0 also prints the summary table."""
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
    source = recipe.step_source(config, dataset, collate, rank, world)
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
    summary = recipe.finish(config, engine, tokenizer, rank, world, device)
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
        nxt = recipe.next_command(config, last_saved)
        if nxt:
            rows.append(("next", nxt))
        print(summary_table(rows), file=sys.stderr)
    return result


# NonFiniteLoss (errors.py), StepContext, model_inputs and to_device (recipe.py) are importable from here too.
__all__ = [
    "NonFiniteLoss",
    "StepContext",
    "StopSignals",
    "model_inputs",
    "seed_everything",
    "to_device",
    "train",
]
