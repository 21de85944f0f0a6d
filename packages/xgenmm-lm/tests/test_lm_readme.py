"""Every block and command of the package README runs as written, in order, in a fresh folder; every `print(...)`
prints what its comment says. The `readme` fixture is the repository's conftest.py."""

import contextlib
import importlib.util
import io
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_command_of_the_readme_is_run_below(readme):
    doc = readme.open(README)
    assert doc.sections_with_commands() == ["Install alone", "Load, chat template, generate", "Convert weights",
                                            "Tests"]  # fmt: skip
    assert len(doc.commands()) == 6


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


def walk(readme, tmp_path, monkeypatch, with_compile: bool) -> list[str]:
    """The usage sections' blocks in README order (installing and the CI command: their own tests below)."""
    monkeypatch.chdir(tmp_path)
    doc = readme.open(README)
    namespace, ran = {}, []
    for lang, body in [block for section in doc.sections()[1:-1] for block in doc.blocks(section)]:
        if lang == "bash":
            for command in readme.commands_of(body):
                if (
                    "lavis-to-xgenmm" in command
                ):  # a LAVIS .pt of the tiny model, as the original's training writes it
                    from xgenmm_lm import XGenMM

                    state = XGenMM.from_pretrained(tmp_path / "tiny-xgenmm").state_dict()
                    torch.save({"model_state_dict": state, "epoch": 0}, tmp_path / "lavis-checkpoint.pt")
                r = readme.run(command, tmp_path)
                assert r.returncode == 0, (command, r.stdout[-2000:], r.stderr[-2000:])
                ran.append(command)
        elif lang != "python" or "compile_config" in body and not with_compile:
            continue
        elif "torchao" in body and importlib.util.find_spec("torchao") is None:
            continue  # the `quantization` extra: installed in xgenmm-lm's own test environment
        else:
            run_python(body, namespace)
            ran.append(body.splitlines()[0])
    return ran


def test_readme_runs_as_written(readme, tmp_path, monkeypatch):
    ran = walk(readme, tmp_path, monkeypatch, with_compile=False)
    assert len(ran) >= 8
    for folder in (
        "tiny-xgenmm",
        "tiny-copy",
        "tiny-xgenmm-hf",
        "tiny-converted",
        "tiny-back-to-hf",
        "tiny-from-lavis",
    ):
        assert (tmp_path / folder / "config.json").is_file(), folder


@pytest.mark.slow
def test_readme_compile_block_runs_as_written(readme, tmp_path, monkeypatch):
    walk(readme, tmp_path, monkeypatch, with_compile=True)


def test_convert_help_named_in_the_api_runs(readme, tmp_path):
    assert "`xgenmm-convert --help`" in readme.open(README).section("API")
    r = readme.run("xgenmm-convert --help", tmp_path)
    assert r.returncode == 0 and all(
        c in r.stdout for c in ("hf-to-xgenmm", "xgenmm-to-hf", "lavis-to-xgenmm")
    )


@pytest.mark.slow  # a fresh virtual environment and three wheel builds (~30 s)
def test_install_command_installs_the_package_alone(readme, tmp_path):
    (command,) = readme.open(README).commands("Install alone")
    python = readme.pip_install(command, tmp_path / "venv")
    files = readme.imported_from(python, ["xgenmm_sampler", "xgenmm_vision", "xgenmm_lm"])
    assert all(f.startswith(str(tmp_path)) for f in files.values()), files


def test_tests_command_is_what_ci_runs(readme):
    (command,) = readme.open(README).commands("Tests")
    assert readme.expand(command, readme.ROOT) == readme.ci_package_tests("xgenmm-lm")
