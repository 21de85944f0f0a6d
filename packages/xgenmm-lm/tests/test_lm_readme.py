"""The package README's commands and Python blocks run as written, in order, in a fresh folder; every `print(...)`
prints what its comment says."""

import contextlib
import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = Path(__file__).resolve().parents[3] / "docs" / "sections" / "lm.md"  # the root README's lm section


def blocks():
    return re.findall(r"```(bash|python)\n(.*?)```", README.read_text(), flags=re.S)


def run_bash(body: str, cwd: Path) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for line in body.splitlines():
        # Installing and the benchmark (tests/test_bench_generate.py at the root runs it) are not part of this.
        if not line.startswith("uv run ") or line.startswith("uv run python -m benchmarks."):
            continue
        if "lavis-to-xgenmm" in line:  # a LAVIS .pt of the tiny model, as the original's training writes it
            from xgenmm_lm import XGenMM

            state = XGenMM.from_pretrained(cwd / "tiny-xgenmm").state_dict()
            torch.save({"model_state_dict": state, "epoch": 0}, cwd / "lavis-checkpoint.pt")
        command = line.removeprefix("uv run ").split("  #")[0]
        command = command.replace("python -c", f"{sys.executable} -c", 1)
        r = subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (command, r.stdout[-2000:], r.stderr[-2000:])


def run_python(body: str, namespace: dict) -> None:
    expected = [
        line.split("# ", 1)[1].strip() for line in body.splitlines() if line.strip().startswith("print(")
    ]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        exec(compile(body, str(README), "exec"), namespace)
    # (DeepSpeed, when installed beside, logs "[date] [WARNING] ..." to stdout as transformers probes it)
    printed = [
        line for line in stdout.getvalue().strip().splitlines() if not re.match(r"\[\d{4}-\d\d-\d\d ", line)
    ]
    assert printed == expected, body


def walk(tmp_path, monkeypatch, with_compile: bool) -> list[str]:
    monkeypatch.chdir(tmp_path)
    namespace, ran = {}, []
    for lang, body in blocks():
        if lang == "bash":
            run_bash(body, tmp_path)
        elif "compile_config" in body and not with_compile:
            continue
        elif "torchao" in body and importlib.util.find_spec("torchao") is None:
            continue  # the `quantization` extra: installed in xgenmm-lm's own test environment
        else:
            run_python(body, namespace)
        ran.append(body.splitlines()[0])
    return ran


def test_readme_runs_as_written(tmp_path, monkeypatch):
    ran = walk(tmp_path, monkeypatch, with_compile=False)
    assert len(ran) >= 6
    for folder in (
        "tiny-xgenmm",
        "tiny-copy",
        "tiny-xgenmm-hf",
        "tiny-converted",
        "tiny-back-to-hf",
        "tiny-from-lavis",
    ):
        assert (tmp_path / folder / "config.json").is_file(), folder
    if SECTION.exists():  # a checkout, not the package installed alone
        code = re.search(r"```python\n(.*?)```", SECTION.read_text(), flags=re.S).group(1)
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            exec(compile(code, str(SECTION), "exec"), {})
        assert re.search(r"^\[.*\]$", stdout.getvalue().strip().splitlines()[-1])  # one decoded answer


@pytest.mark.slow
def test_readme_compile_block_runs_as_written(tmp_path, monkeypatch):
    walk(tmp_path, monkeypatch, with_compile=True)
