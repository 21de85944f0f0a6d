"""A real 2-process run (torchrun, gloo, ZeRO-2) against 1 process with 2x gradient accumulation."""

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from xgenmm_train.checkpoint import latest_checkpoint
from xgenmm_train.config import to_yaml
from xgenmm_train.data import build_plan, rank_batches
from xgenmm_train.distributed import free_port


def _weights(run_dir):
    ckpt = latest_checkpoint(run_dir)
    out = {}
    for f in sorted((ckpt / "model").glob("*.safetensors")):
        out.update(load_file(f))
    return out


def test_each_sample_once_per_epoch_and_same_steps_for_both_layouts(synth, make_config, tmp_path):
    lengths = list(range(10, 58))  # 48 samples
    two_procs = make_config(tmp_path, synth["mixture"], **{"train.micro_batch_size": 4})
    one_proc = make_config(tmp_path, synth["mixture"], **{"train.micro_batch_size": 4, "train.grad_accum": 2})
    plan_a = build_plan(two_procs, lengths, world_size=2, epoch=0)
    plan_b = build_plan(one_proc, lengths, world_size=1, epoch=0)
    steps_a = [sorted(i for r in range(2) for b in rank_batches(s, r, 2, 1) for i in b) for s in plan_a]
    steps_b = [sorted(i for b in rank_batches(s, 0, 1, 2) for i in b) for s in plan_b]
    assert steps_a == steps_b
    seen = sorted(i for s in steps_a for i in s)
    assert seen == list(range(48))


@pytest.mark.slow
def test_torchrun_two_processes_zero2_matches_one_process_accumulation(tmp_path, synth, make_config):
    common = {"train.micro_batch_size": 4, "train.max_steps": 3, "deepspeed.zero_stage": 2}
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT", "MASTER_ADDR"):
        env.pop(k, None)

    two = make_config(tmp_path / "two", synth["mixture"], **common)
    (tmp_path / "two.yaml").write_text(to_yaml(two))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
    ]
    cmd += ["-m", "xgenmm_train.cli", "sft", "--config", str(tmp_path / "two.yaml")]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]

    one = make_config(tmp_path / "one", synth["mixture"], **common, **{"train.grad_accum": 2})
    (tmp_path / "one.yaml").write_text(to_yaml(one))
    cmd = [sys.executable, "-m", "xgenmm_train.cli", "sft", "--config", str(tmp_path / "one.yaml")]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]

    wa, wb = _weights(tmp_path / "two"), _weights(tmp_path / "one")
    init = {}
    for f in sorted((tmp_path / "one" / "init").glob("*.safetensors")):
        init.update(load_file(f))
    moved = 0
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)
        moved += not torch.equal(wa[k], init[k])
    assert moved > 0
