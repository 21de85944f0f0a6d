"""Checkpoints: weights (safetensors via ``save_pretrained``) + DeepSpeed optimizer/scheduler state + trainer
state (step, data position, RNG), written atomically and pruned to the last K.

Layout of ``<run_dir>/checkpoints/step-000120/``::

    model/               XGenMM.save_pretrained (config, safetensors, tokenizer) - or, with LoRA, adapter/
    deepspeed/state/     engine.save_checkpoint: trainable weights in fp32, optimizer, scheduler (all ranks)
    rng/rank-00000.json  python/numpy/torch RNG states of each rank
    trainer_state.json   written last: step, epoch, batch position, counters

Everything is first written to ``.tmp-step-000120/`` and renamed when complete, so a process killed during
a save leaves the previous checkpoint as the newest complete one (``.tmp-*`` leftovers are ignored and removed
by the next save).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def resolve_resume(resume: str | None, run_dir: str | Path) -> Path | None:
    """``None`` → no resume; ``auto`` → newest complete checkpoint of the run (or none); a path → that one."""
    if not resume:
        return None
    if resume == "auto":
        return latest_checkpoint(run_dir)
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"checkpoint.resume: {path} is not a complete checkpoint (no {STATE_FILE})")
    return path


def rng_state() -> dict:
    state = {
        "python": _jsonable(random.getstate()),
        "numpy": _jsonable(np.random.get_state()),
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state().tolist()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_tuples(state["python"]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.tensor(state["cuda"], dtype=torch.uint8))


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (tuple, list)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


def _barrier():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    engine,
    save_weights: Callable[[Path], None],
    trainer_state: dict,
    rank: int,
    keep_last: int = 2,
    save_optimizer: bool = True,
) -> Path:
    """Write checkpoint ``step`` atomically. All ranks call this (and ``save_weights(dir)``, which writes on rank 0)."""
    root = checkpoint_root(run_dir)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    _barrier()
    if save_optimizer:
        engine.save_checkpoint(str(tmp / "deepspeed"), tag="state", exclude_frozen_parameters=True)
    (tmp / "rng").mkdir(exist_ok=True)
    (tmp / "rng" / f"rank-{rank:05d}.json").write_text(json.dumps(rng_state()))
    save_weights(tmp)  # every rank (ZeRO-3 gathers shards); only rank 0 writes
    _barrier()
    if rank == 0:
        state = dict(trainer_state, step=step, has_optimizer=save_optimizer)
        _write_json_synced(tmp / STATE_FILE, state)
        if (
            final.exists()
        ):  # re-saving the same step (e.g. the end of a resumed run that was already finished)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def load_checkpoint(path: Path, engine, rank: int) -> dict:
    """Restore optimizer/scheduler/trainable weights into ``engine`` and this rank's RNG → the trainer state."""
    state = json.loads((path / STATE_FILE).read_text())
    if state.get("has_optimizer", True):
        engine.load_checkpoint(
            str(path / "deepspeed"),
            tag="state",
            load_module_strict=False,
            load_optimizer_states=True,
            load_lr_scheduler_states=True,
        )
    rng_file = path / "rng" / f"rank-{rank:05d}.json"
    if rng_file.is_file():
        set_rng_state(json.loads(rng_file.read_text()))
    return state


def _write_json_synced(path: Path, obj: dict) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "checkpoint_root",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "resolve_resume",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]
