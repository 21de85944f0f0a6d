"""Faults in a run's files: bad model/data/checkpoint files (one-line errors, exit 2), crafted and damaged
checkpoints on resume, a full disk during a checkpoint write."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from xgenmm_train.checkpoint import latest_checkpoint, list_checkpoints, verify_checkpoint, write_manifest
from xgenmm_train.cli import main
from xgenmm_train.config import to_yaml
from xgenmm_train.errors import EXIT_ERROR, TrainError
from xgenmm_train.tracking import read_metrics


def _copy_run(src, dst, config, **changes):
    """A copy of a run folder and its config pointing at the copy, with ``changes`` (dotted keys) applied."""
    shutil.copytree(src, dst)
    config = type(config)(**vars(config))
    text = to_yaml(config).replace(str(src), str(dst))
    cfg = dst.parent / f"{dst.name}.yaml"
    cfg.write_text(text)
    return cfg, [f"{k}={v}" for k, v in changes.items()]


def _error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("xgenmm-train:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------------------------------------------------
# 1. errors after the config validated: one line, exit 2; --debug / XGENMM_DEBUG=1 show the traceback


def test_file_errors_are_one_line_with_exit_status_2(tmp_path, synth, make_config, checkpointed_run, capsys):
    run_dir, _ = checkpointed_run
    ckpt = latest_checkpoint(run_dir)
    damaged = tmp_path / "damaged-model"
    shutil.copytree(ckpt / "model", damaged)
    weights = sorted(damaged.glob("*.safetensors"))[0]
    weights.write_bytes(weights.read_bytes()[:1000])
    records = json.loads(synth["train"].read_text())
    records[0] = dict(records[0], image="images/missing.png")  # 1 bad of 48 > 1 %
    bad_data = synth["train"].parent / "one_missing_image.json"
    bad_data.write_text(json.dumps(records))

    cases = {
        "missing model": ({"model.init": "pretrained", "model.path": tmp_path / "nope"}, "no such folder"),
        "missing mixture": ({"data.path": tmp_path / "nope.yaml"}, "mixture file not found"),
        "truncated safetensors": (
            {"model.init": "pretrained", "model.path": damaged},
            f"{weights}: unreadable safetensors file",
        ),
        "not a checkpoint": ({"checkpoint.resume": synth["train"].parent}, "not a complete checkpoint"),
        "negative lr": ({"train.lr": -1e-4}, "config key 'train.lr': -0.0001 is not allowed"),
        "bad records": (
            {"data.path": bad_data, "data.image_folder": bad_data.parent},
            "data: 1 of 48 records are bad (2.08% > max_bad_fraction 1.00%); missing image file",
        ),
    }
    for name, (changes, expected) in cases.items():
        config = make_config(tmp_path / name.replace(" ", "-"), synth["mixture"])
        cfg = tmp_path / f"{name.replace(' ', '-')}.yaml"
        cfg.write_text(to_yaml(config))
        overrides = [f"{k}={v}" for k, v in changes.items()]
        assert main(["sft", "--config", str(cfg), *overrides]) == EXIT_ERROR, name
        line = _error_line(capsys.readouterr().err)
        assert expected in line, (name, line)

    with pytest.raises(TrainError, match="no such folder"):  # the traceback, on request
        main(
            [
                "sft",
                "--config",
                str(cfg),
                "--debug",
                f"model.path={tmp_path / 'nope'}",
                "model.init=pretrained",
            ]
        )
    os.environ["XGENMM_DEBUG"] = "1"
    try:
        with pytest.raises(Exception, match="records are bad"):
            main(
                ["sft", "--config", str(cfg), f"data.path={bad_data}", f"data.image_folder={bad_data.parent}"]
            )
    finally:
        del os.environ["XGENMM_DEBUG"]


def test_the_real_cli_exits_2_with_one_line(tmp_path, synth, make_config, launch_env):
    config = make_config(tmp_path / "run", tmp_path / "no-such-mixture.yaml")
    (tmp_path / "run.yaml").write_text(to_yaml(config))
    cmd = [sys.executable, "-m", "xgenmm_train.cli", "sft", "--config", str(tmp_path / "run.yaml")]
    p = subprocess.run(cmd, env=launch_env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr[-3000:]
    assert _error_line(p.stderr) == (
        f"xgenmm-train: error: data: {tmp_path / 'no-such-mixture.yaml'}: mixture file not found; "
        "check data.path and the files it names"
    )


# ---------------------------------------------------------------------------------------------------------
# 2. resume never unpickles arbitrary objects


class _Payload:
    """Unpickling this writes a marker file (what a crafted checkpoint could do with any code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_resume_refuses_a_checkpoint_that_pickles_code(tmp_path, checkpointed_run, capsys):
    run_dir, config = checkpointed_run
    cfg, _ = _copy_run(run_dir, tmp_path / "run", config)
    ckpt = latest_checkpoint(tmp_path / "run")
    marker = tmp_path / "marker"
    state_file = ckpt / "deepspeed" / "state" / "mp_rank_00_model_states.pt"
    state = torch.load(state_file, weights_only=True)
    state["client_state"] = _Payload(marker)
    torch.save(state, state_file)
    write_manifest(ckpt)  # a crafted folder comes with a manifest that matches
    assert verify_checkpoint(ckpt) is None

    assert main(["sft", "--config", str(cfg), f"checkpoint.resume={ckpt}", "train.max_steps=3"]) == 2
    line = _error_line(capsys.readouterr().err)
    assert f"{state_file}: refusing to resume" in line and "object of type exec" in line
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------------
# 3. resume after damage: a torn metrics line, a truncated newest checkpoint


def test_resume_tolerates_a_torn_metrics_line(tmp_path, checkpointed_run):
    run_dir, config = checkpointed_run
    cfg, _ = _copy_run(run_dir, tmp_path / "run", config)
    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 3, "loss": 4.1')  # power loss in the middle of a line
    assert main(["sft", "--config", str(cfg), "checkpoint.resume=auto", "train.max_steps=3"]) == 0
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2, 3]
    assert all(json.loads(ln) for ln in metrics.read_text().splitlines())


def test_resume_falls_back_to_the_newest_checkpoint_that_verifies(
    tmp_path, checkpointed_run, capsys, read_weights
):
    run_dir, config = checkpointed_run
    cfg, _ = _copy_run(run_dir, tmp_path / "run", config)
    step1, step2 = list_checkpoints(tmp_path / "run")
    optimizer = step2 / "deepspeed" / "state" / "mp_rank_00_model_states.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:5000])  # torn by a full disk or a crash
    assert "truncated" in verify_checkpoint(step2)

    assert main(["sft", "--config", str(cfg), "checkpoint.resume=auto"]) == 0
    err = capsys.readouterr().err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning: skipping damaged checkpoint")]
    assert len(warnings) == 1 and "step-000002" in warnings[0] and str(step1) in warnings[0]
    assert f"resumed from {step1} at step 1" in err
    resumed = read_weights(latest_checkpoint(tmp_path / "run") / "model")
    original = read_weights(latest_checkpoint(run_dir) / "model")  # the same step 2, never interrupted
    assert resumed.keys() == original.keys()
    assert all(torch.equal(resumed[k], original[k]) for k in original)


# ---------------------------------------------------------------------------------------------------------
# 4. a full disk during a checkpoint write


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path, checkpointed_run, launch_env):
    import resource

    run_dir, config = checkpointed_run
    cfg, _ = _copy_run(run_dir, tmp_path / "run", config)
    previous = latest_checkpoint(tmp_path / "run")

    def small_files():  # files above 64 KiB fail with EFBIG, as writes to a full disk fail with ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    cmd = [sys.executable, "-m", "xgenmm_train.cli", "sft", "--config", str(cfg)]
    cmd += ["checkpoint.resume=auto", "train.max_steps=3"]
    p = subprocess.run(
        cmd, env=launch_env, capture_output=True, text=True, timeout=300, preexec_fn=small_files
    )
    assert p.returncode == 2, p.stderr[-3000:]
    line = _error_line(p.stderr)
    assert line.startswith(
        f"xgenmm-train: error: could not write checkpoint {previous.parent / 'step-000003'}"
    )
    assert f"the previous checkpoint {previous} is intact" in line and "checkpoint.resume=auto" in line
    assert latest_checkpoint(tmp_path / "run") == previous and verify_checkpoint(previous) is None
    names = sorted(p.name for p in previous.parent.iterdir())
    assert names == ["step-000001", "step-000002"]  # no temp folder left behind
