"""Observability on rank 0: ``metrics.jsonl``, a tqdm bar, optional tensorboard/wandb, ``loss.png`` and the
end-of-run summary table. Other ranks get a logger that does nothing.

tensorboard, wandb and matplotlib (the ``plot`` extra) are optional: each is imported only when the config asks
for it, and a missing one is named.
"""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from .config import Config, to_dict
from .errors import TrainError


def _optional(module: str, package: str, key: str):
    """``importlib.import_module(module)``, or a TrainError naming the config key and the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise TrainError(f"{key}=true needs the '{package}' package ({e}); pip install {package}") from None


class MetricsLogger:
    """Appends one JSON object per logged step to ``<run_dir>/metrics.jsonl`` (kept across resumes)."""

    def __init__(self, config: Config, rank: int, total_steps: int, initial_step: int = 0):
        self.enabled = rank == 0
        self.run_dir = Path(config.run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.bar = None
        self.tb = None
        self.wandb = None
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if initial_step == 0 and self.path.exists():
            self.path.unlink()
        elif self.path.exists():  # drop lines written after the checkpoint we resume from (and torn ones)
            kept = [json.dumps(r) for r in read_metrics(self.run_dir) if r["step"] <= initial_step]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        if config.logging.progress_bar:
            self.bar = tqdm(total=total_steps, initial=initial_step, desc=config.task, dynamic_ncols=True)
        if config.logging.tensorboard:
            tensorboard = _optional("torch.utils.tensorboard", "tensorboard", "logging.tensorboard")
            self.tb = tensorboard.SummaryWriter(str(self.run_dir / "tensorboard"))
        if config.logging.wandb:
            wandb = _optional("wandb", "wandb", "logging.wandb")
            self.wandb = wandb.init(
                project=config.logging.wandb_project, dir=str(self.run_dir), config=to_dict(config)
            )

    def log(self, step: int, metrics: dict) -> None:
        """Append ``{"step": step, **metrics}`` to metrics.jsonl (and tensorboard / wandb when on)."""
        if not self.enabled:
            return
        record = {"step": step, **{k: _scalar(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(record, step=step)

    def progress(self, n: int, postfix: dict) -> None:
        """Advance the progress bar by ``n`` steps, showing ``postfix`` (short numbers)."""
        if self.bar is not None:
            self.bar.set_postfix({k: _short(v) for k, v in postfix.items()}, refresh=False)
            self.bar.update(n)

    def close(self) -> None:
        """Close the progress bar, tensorboard writer and wandb run."""
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _scalar(v):
    return v.item() if hasattr(v, "item") else v


def _short(v):
    return f"{v:.4g}" if isinstance(v, float) else v


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``metrics.jsonl``; a line that is not a whole record (torn by a power loss or a full disk
    while it was written) is left out."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def plot_loss(run_dir: str | Path, key: str = "loss") -> Path | None:
    """``loss.png`` from metrics.jsonl; returns None (quietly) without the `plot` extra."""
    try:  # the optional `plot` extra (matplotlib): imported only here
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [r for r in read_metrics(run_dir) if key in r]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in rows], [r[key] for r in rows])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(run_dir) / "loss.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def summary_table(rows: list[tuple[str, str]]) -> str:
    """A two-column box table (plain ASCII so it survives any terminal or log file)."""
    width = max(len(k) for k, _ in rows)
    vwidth = max(len(v) for _, v in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * (vwidth + 2) + "+"
    body = [f"| {k.ljust(width)} | {v.ljust(vwidth)} |" for k, v in rows]
    return "\n".join([line, *body, line])


class Timer:
    """Wall-clock seconds since it was made (``time.perf_counter``)."""

    def __init__(self):
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the timer was made."""
        return time.perf_counter() - self.start


__all__ = ["MetricsLogger", "Timer", "plot_loss", "read_metrics", "summary_table"]
