"""Shared fixtures: a small synthetic LLaVA dataset and tiny-model configs for CPU runs."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """A small synthetic dataset (LLaVA JSON + PNGs + mixture YAML + preference pairs)."""
    from xgenmm_train.demo.sft_data import make_dataset

    out = tmp_path_factory.mktemp("synth")
    return make_dataset(out, n_train=48, n_heldout=12, n_dpo=16, seed=1)


@pytest.fixture
def launch_env() -> dict:
    """The environment for a training subprocess (CLI or torchrun): one OpenMP thread, offline, and none of the
    launcher / debug variables of the test process."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT", "MASTER_ADDR", "XGENMM_DEBUG"):
        env.pop(k, None)
    return env


@pytest.fixture
def read_weights():
    """``read_weights(folder)`` → {name: tensor} of every ``*.safetensors`` file in ``folder``."""

    def _read(folder) -> dict:
        out = {}
        for f in sorted(folder.glob("*.safetensors")):
            out.update(load_file(f))
        return out

    return _read


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_overrides(run_dir, data_path, **extra) -> list[str]:
    """Dotted overrides for a short tiny-model CPU run."""
    base = {
        "run_dir": str(run_dir),
        "model.init": "tiny",
        "model.tiny_vocab_size": 200,
        "model.train_vision_encoder": "true",
        "data.path": str(data_path),
        "data.max_length": 128,
        "train.seed": 0,
        "train.micro_batch_size": 4,
        "train.grad_accum": 1,
        "train.lr": 1e-3,
        "train.lr_scheduler": "constant",
        "train.warmup_steps": 0,
        "train.precision": "fp32",
        "train.max_steps": 3,
        "deepspeed.zero_stage": 0,
        "checkpoint.save_every": "null",
        "logging.progress_bar": "false",
        "logging.plot": "false",
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture
def make_config():
    from xgenmm_train.config import load_config

    def _make(run_dir, data_path, task="sft", **extra):
        return load_config(None, tiny_overrides(run_dir, data_path, **extra), task=task)

    return _make


@pytest.fixture(scope="session")
def checkpointed_run(tmp_path_factory, synth):
    """A finished 2-step tiny SFT run (ZeRO-0, fp32) with checkpoints after steps 1 and 2 → (run_dir, config).
    Shared: copy the run folder before changing anything in it."""
    from xgenmm_train.config import load_config
    from xgenmm_train.sft import run_sft

    run_dir = tmp_path_factory.mktemp("checkpointed") / "run"
    extra = {"train.max_steps": 2, "checkpoint.save_every": 1}
    config = load_config(None, tiny_overrides(run_dir, synth["mixture"], **extra))
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the tests (session fixtures are set up before `_one_thread`)
    try:
        run_sft(config)
    finally:
        torch.set_num_threads(n)
    return run_dir, config
