"""Checkpoints: weights (safetensors via ``save_pretrained``) + DeepSpeed optimizer/scheduler state + trainer
state (step, data position, RNG), written atomically, verified on resume and pruned to the last K.

Layout of ``<run_dir>/checkpoints/step-000120/``::

    model/               XGenMM.save_pretrained (config, safetensors, tokenizer) - or, with LoRA, adapter/
    deepspeed/state/     engine.save_checkpoint: trainable weights in fp32, optimizer, scheduler (all ranks)
    rng/rank-00000.json  python/numpy/torch RNG states of each rank
    trainer_state.json   step, epoch, batch position, counters
    manifest.json        written last: every other file's size and sha256

Everything is first written to ``.tmp-step-000120/`` and renamed when complete, so a process killed during
a save leaves the previous checkpoint as the newest complete one (``.tmp-*`` leftovers are ignored and removed
by the next save). A failed write (e.g. a full disk) removes the temp folder and raises
:class:`CheckpointError`; the earlier checkpoints are untouched.

Resume trusts nothing it has not verified: a checkpoint counts only if every file of its manifest is there with
its size and sha256 (the ranks hash a share of the files each). ``checkpoint.resume=auto`` takes the newest
checkpoint that verifies, with one warning line per damaged newer one. DeepSpeed loads its ``*.pt`` files
with ``torch.load(weights_only=False)``; here every ``torch.load`` of the resume runs with ``weights_only=True``
and only DeepSpeed's three plain state classes allow-listed, so a crafted checkpoint cannot run code.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import pickle
import random
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .errors import CheckpointError

STATE_FILE = "trainer_state.json"
MANIFEST = "manifest.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_root(run_dir: str | Path) -> Path:
    """``<run_dir>/checkpoints``, the folder of a run's ``step-NNNNNN`` checkpoints."""
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints of a run whose save finished (a manifest is there), oldest first; see verify_checkpoint."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / MANIFEST).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint of a run whose save finished (not verified), or None."""
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


# ---------------------------------------------------------------------------------------------------------
# manifest


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _gather(obj):
    """Every rank's ``obj`` → a list (one process: ``[obj]``)."""
    rank, world = _world()
    if world == 1:
        return [obj]
    out = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 16 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def _shared_checksums(folder: Path, names: list[str]) -> dict[str, str]:
    """sha256 of ``folder/name`` for every name; the ranks hash every W-th file each. Collective."""
    rank, world = _world()
    mine = {n: sha256_file(folder / n) for n in names[rank::world]}
    return {k: v for part in _gather(mine) for k, v in part.items()}


def write_manifest(folder: Path) -> dict:
    """Write ``folder/manifest.json`` (size + sha256 of every other file), fsynced. Collective: all ranks call
    it after their files are written; rank 0 writes."""
    rank, _ = _world()
    names = sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST
    )
    sums = _shared_checksums(folder, names)
    manifest = {"files": {n: {"size": (folder / n).stat().st_size, "sha256": sums[n]} for n in names}}
    if rank == 0:
        _write_json_synced(folder / MANIFEST, manifest)
    return manifest


def verify_checkpoint(path: Path) -> str | None:
    """None if every file of ``path/manifest.json`` is there with its size and checksum, else what is wrong.
    Collective (all ranks call it, each hashes a share of the files)."""
    try:
        files = json.loads((path / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"no readable {MANIFEST} ({e.__class__.__name__}): the save did not finish"
    for name, meta in files.items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != meta["size"]:
            return f"{name} has {f.stat().st_size} bytes, the manifest says {meta['size']} (truncated?)"
    sums = _shared_checksums(path, sorted(files))
    for name, meta in files.items():
        if sums[name] != meta["sha256"]:
            return f"{name} does not match its sha256 in {MANIFEST} (damaged)"
    return None


def resolve_resume(resume: str | None, run_dir: str | Path) -> Path | None:
    """``None`` → no resume; ``auto`` → the newest checkpoint of the run that verifies (or none when the run
    has none yet); a path → that checkpoint, which must verify. Collective. Raises CheckpointError."""
    if not resume:
        return None
    rank, _ = _world()
    if resume != "auto":
        path = Path(resume)
        if not (path / MANIFEST).is_file():
            raise CheckpointError(
                f"checkpoint.resume={path}: not a complete checkpoint of xgenmm-train (no {MANIFEST}); "
                "give a checkpoints/step-NNNNNN folder, or checkpoint.resume=auto for the run's newest"
            )
        problem = verify_checkpoint(path)
        if problem:
            raise CheckpointError(
                f"checkpoint.resume={path}: {problem}; give another checkpoint, or checkpoint.resume=auto "
                "to take the newest one that verifies"
            )
        return path
    damaged = []
    for path in reversed(list_checkpoints(run_dir)):
        problem = verify_checkpoint(path)
        if problem is None:
            if damaged and rank == 0:
                skipped = "; ".join(f"{p.name}: {why}" for p, why in damaged)
                print(
                    f"warning: skipping damaged checkpoint(s) {skipped}; resuming from {path}",
                    file=sys.stderr,
                )
            return path
        damaged.append((path, problem))
    if damaged:
        raise CheckpointError(
            f"checkpoint.resume=auto: no checkpoint under {checkpoint_root(run_dir)} verifies "
            f"({damaged[0][0].name}: {damaged[0][1]}); move them away to start over"
        )
    return None


def rng_state() -> dict:
    """This process's Python, numpy, torch (and CUDA) RNG states as JSON-able lists."""
    state = {
        "python": _jsonable(random.getstate()),
        "numpy": _jsonable(np.random.get_state()),
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state().tolist()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the RNG states saved by ``rng_state``."""
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
    """Write checkpoint ``step`` atomically. All ranks call this (and ``save_weights(dir)``, which writes on rank 0).

    Raises CheckpointError when a file cannot be written (full disk, quota, permissions): the temp folder is
    removed and the earlier checkpoints stay as they were."""
    root = checkpoint_root(run_dir)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    previous = latest_checkpoint(run_dir)
    try:
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
            _write_json_synced(tmp / STATE_FILE, dict(trainer_state, step=step, has_optimizer=save_optimizer))
        _barrier()
        write_manifest(tmp)
    except Exception as e:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
        reason = f"{e.__class__.__name__}: {e}".splitlines()[0]
        with contextlib.suppress(OSError):
            reason += f"; {shutil.disk_usage(root).free / 2**20:,.0f} MiB free there"
        raise CheckpointError(
            f"could not write checkpoint {final} ({reason}); {kept}; free disk space (or fix the folder's "
            "permissions), then rerun the same command with checkpoint.resume=auto"
        ) from e
    if rank == 0:
        if (
            final.exists()
        ):  # re-saving the same step (e.g. the end of a resumed run that was already finished)
            old = root / f".tmp-old-{final.name}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


# DeepSpeed's optimizer files pickle these three small classes next to tensors and plain containers.
_SAFE_GLOBALS = (
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
)


def _safe_globals() -> list:
    out = []
    for name in _SAFE_GLOBALS:
        module, _, attr = name.rpartition(".")
        with contextlib.suppress(ImportError, AttributeError):
            out.append(getattr(importlib.import_module(module), attr))
    return out


@contextlib.contextmanager
def weights_only_torch_load(where: Path):
    """Within the block every ``torch.load`` (DeepSpeed's included) runs with ``weights_only=True``; a file that
    pickles anything else raises CheckpointError naming it, and nothing of it is executed."""
    original = torch.load
    allowed = _safe_globals()

    def load(f, *args, **kwargs):
        kwargs["weights_only"] = True
        try:
            with torch.serialization.safe_globals(allowed):
                return original(f, *args, **kwargs)
        except pickle.UnpicklingError as e:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
            what = f"an object of type {found.group(1)}" if found else "an object that is not plain state"
            raise CheckpointError(
                f"{f}: refusing to resume from {where}: the file pickles {what}, which is not training state "
                "(tensors, numbers, strings, DeepSpeed's state classes); it was not written by xgenmm-train "
                "and may run code - do not load it, resume from another checkpoint"
            ) from None

    torch.load = load
    try:
        yield
    finally:
        torch.load = original


def load_checkpoint(path: Path, engine, rank: int) -> dict:
    """Restore optimizer/scheduler/trainable weights into ``engine`` and this rank's RNG → the trainer state.
    ``path`` should have passed verify_checkpoint (resolve_resume does that)."""
    state = json.loads((path / STATE_FILE).read_text())
    if state.get("has_optimizer", True):
        with weights_only_torch_load(path):
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
    "MANIFEST",
    "checkpoint_root",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "resolve_resume",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "sha256_file",
    "verify_checkpoint",
    "weights_only_torch_load",
    "write_manifest",
]
