"""Every block and command of the package README runs as written; each `print(...)` prints what its comment
says. The `readme` fixture is the repository's conftest.py."""

import contextlib
import importlib.util
import io
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_command_of_the_readme_is_run_below(readme):
    doc = readme.open(README)
    assert doc.sections_with_commands() == ["Install alone", "Tests"]
    assert len(doc.commands()) == 3 and len(doc.python()) == 2


@pytest.mark.parametrize("index", [0, 1])
def test_readme_python_block_prints_what_its_comments_say(readme, index):
    code = readme.open(README).python()[index]
    expected = [line.split("# ", 1)[1].strip() for line in code.splitlines() if line.startswith("print(")]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        exec(compile(code, str(README), "exec"), {})
    assert stdout.getvalue().strip().splitlines() == expected


@pytest.mark.slow  # fresh virtual environments and wheel builds (~30 s)
def test_install_commands_install_the_package_alone(readme, tmp_path):
    plain, with_open_clip = readme.open(README).commands("Install alone")
    python = readme.pip_install(plain, tmp_path / "venv")
    assert readme.imported_from(python, ["xgenmm_vision"])["xgenmm_vision"].startswith(str(tmp_path))
    if importlib.util.find_spec("open_clip") is None:  # else pip would download open_clip_torch and its deps
        pytest.skip("open_clip_torch is not in this test environment (the workspace one has it)")
    python = readme.pip_install(with_open_clip, tmp_path / "venv-open-clip")
    assert readme.imported_from(python, ["xgenmm_vision"])["xgenmm_vision"].startswith(str(tmp_path))


def test_tests_command_is_what_ci_runs(readme):
    (command,) = readme.open(README).commands("Tests")
    assert readme.expand(command, readme.ROOT) == readme.ci_package_tests("xgenmm-vision")
