"""Kill-and-resume equality and atomic checkpoints (real subprocesses, SIGKILL)."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import torch
from safetensors.torch import load_file

from xgenmm_train.checkpoint import latest_checkpoint, list_checkpoints
from xgenmm_train.config import to_yaml


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("RANK", None)
    env.pop("MASTER_PORT", None)
    return env


def _launch(config, cfg_path, extra=()):
    cfg_path.write_text(to_yaml(config))
    cmd = [sys.executable, "-m", "xgenmm_train.cli", "sft", "--config", str(cfg_path), *extra]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _final_weights(run_dir):
    ckpt = latest_checkpoint(run_dir)
    out = {}
    for f in sorted((ckpt / "model").glob("*.safetensors")):
        out.update(load_file(f))
    return ckpt, out


def test_kill_and_resume_gives_the_same_final_weights(tmp_path, synth, make_config):
    steps = 6
    common = {"train.max_steps": steps, "checkpoint.save_every": 2, "checkpoint.keep_last": 2}
    full = make_config(tmp_path / "full", synth["mixture"], **common)
    p = _launch(full, tmp_path / "full.yaml")
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out

    killed = make_config(tmp_path / "killed", synth["mixture"], **common, **{"checkpoint.resume": "auto"})
    kill_after = random.Random().randint(3, steps - 1)
    p = _launch(killed, tmp_path / "killed.yaml")
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and p.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= kill_after:
            break
        time.sleep(0.05)
    assert p.poll() is None, "the run ended before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    first = list_checkpoints(tmp_path / "killed")
    assert first and int(first[-1].name.split("-")[1]) < steps

    p = _launch(killed, tmp_path / "killed.yaml")
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out
    assert "resumed from" in out

    ckpt_a, wa = _final_weights(tmp_path / "full")
    ckpt_b, wb = _final_weights(tmp_path / "killed")
    assert ckpt_a.name == ckpt_b.name == f"step-{steps:06d}"
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    la = [json.loads(x)["loss"] for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in metrics.read_text().splitlines()]
    assert la == lb  # metrics.jsonl was trimmed to the checkpoint and continued: one line per step


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import torch
    from xgenmm_train.checkpoint import save_checkpoint
    from xgenmm_train.distributed import build_engine, init_distributed
    from xgenmm_train.config import load_config

    run_dir, ready = Path(sys.argv[1]), Path(sys.argv[2])
    config = load_config(None, ["data.path=x", "model.init=tiny", "train.precision=fp32", "deepspeed.zero_stage=2",
                                "train.micro_batch_size=1", f"run_dir={run_dir}"])
    _, world, _ = init_distributed()
    model = torch.nn.Linear(4, 4)
    engine, _, _ = build_engine(model, config, world, 10)

    def weights(d):
        (d / "model").mkdir()
        (d / "model" / "w.txt").write_text("ok")

    save_checkpoint(run_dir, 1, engine, weights, {"note": "first"}, 0)

    def slow_weights(d):
        weights(d)
        ready.write_text("in the middle of a save")
        time.sleep(120)

    save_checkpoint(run_dir, 2, engine, slow_weights, {"note": "second"}, 0)
    """
)


def test_kill_during_save_keeps_the_previous_checkpoint(tmp_path):
    run_dir, ready = tmp_path / "run", tmp_path / "ready"
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(run_dir), str(ready)], env=_env())
    deadline = time.time() + 300
    while not ready.exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert ready.exists(), "child never reached the second save"
    p.send_signal(signal.SIGKILL)
    p.wait()
    root = run_dir / "checkpoints"
    assert (root / ".tmp-step-000002").is_dir()  # the torn save stays a temp dir
    newest = latest_checkpoint(run_dir)
    assert newest.name == "step-000001"
    assert json.loads((newest / "trainer_state.json").read_text())["note"] == "first"
    assert (newest / "deepspeed" / "state").is_dir()
