"""The `readme` fixture, for every package's tests: read a README's blocks and run its commands as written.

Loaded by every test run, each package's isolated run included, so it imports only the standard library.

A README's ```bash block holds one command per line (`#` lines are comments). `readme.run(command, cwd)` runs
one: bash expands it (quotes, `$VAR`, `$(...)`, a trailing `# comment`); a leading `uv run [--package P]
[--extra E]` is dropped, since the tests already run in the environment `uv run` would use. Then the
workspace's console scripts (`xgenmm-*`, and `lmms-eval`) and `python -c CODE` run in this process (what the
script would call, with this `sys.argv`, working directory and standard input: no second interpreter start,
~20 s on 2 cores); everything else (`torchrun`, `python -m ...`) runs as a subprocess with this environment's
scripts first on PATH. `readme.pip_install(command, folder)` runs a `pip install ...` line (see there).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import sysconfig
import venv
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
UV_RUN_OPTIONS_WITH_VALUE = {"--package", "--extra", "--with", "--group"}
IN_PROCESS = ("xgenmm_", "lmms_eval")  # console scripts whose function runs in this process


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class Readme:
    """One README: its fenced blocks, the `## ` sections holding them, its commands."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.text = self.path.read_text()

    def section(self, heading: str) -> str:
        """The text of the `## heading` section (to the next `## `)."""
        start = self.text.index(f"\n## {heading}\n")
        end = self.text.find("\n## ", start + 1)
        return self.text[start : end if end != -1 else len(self.text)]

    def sections(self) -> list[str]:
        """The `## ` headings, in order."""
        return re.findall(r"^## (.+)$", self.text, flags=re.M)

    def blocks(self, section: str | None = None) -> list[tuple[str, str]]:
        """(language, body) of every fenced block (of one section)."""
        return BLOCK.findall(self.text if section is None else self.section(section))

    def commands(self, section: str | None = None) -> list[str]:
        """Every command of the ```bash blocks (of one section), in order."""
        return [c for lang, body in self.blocks(section) if lang == "bash" for c in commands_of(body)]

    def sections_with_commands(self) -> list[str]:
        return [s for s in self.sections() if self.commands(s)]

    def python(self, section: str | None = None) -> list[str]:
        return [body for lang, body in self.blocks(section) if lang == "python"]

    def write_files(self, folder: Path, section: str | None = None) -> list[Path]:
        """Write each json / jsonl / yaml / python block whose first line is `# <relative/path.ext>` to that
        path in `folder`, as the README shows it (the naming line dropped) → the written paths."""
        written = []
        for lang, body in self.blocks(section):
            first, _, rest = body.partition("\n")
            name = re.fullmatch(r"# ([\w./-]+\.\w+)", first.strip())
            if lang in ("json", "jsonl", "yaml", "python") and name:
                target = folder / name.group(1)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(rest)
                written.append(target)
        return written


def commands_of(bash_block: str) -> list[str]:
    """The commands of one ```bash block: its lines that are neither blank nor comments."""
    return [
        line.strip() for line in bash_block.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def bin_dir() -> str:
    return str(Path(sys.executable).parent)


def command_env(extra: dict | None = None) -> dict:
    """os.environ with this environment's scripts first on PATH, no hub access, plus `extra`."""
    env = dict(os.environ, PATH=f"{bin_dir()}{os.pathsep}{os.environ.get('PATH', '')}")
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(extra or {})
    return env


def expand(command: str, cwd: Path, env: dict | None = None) -> list[str]:
    """The argument vector bash makes of `command` in `cwd` (quotes, variables, `$(...)`, comments)."""
    p = subprocess.run(
        ["bash", "-c", "printf '%s\\0' " + command],
        cwd=cwd,
        env=command_env(env),
        capture_output=True,
        text=True,
        check=True,
    )
    return p.stdout.split("\0")[:-1]


def strip_uv_run(args: list[str]) -> list[str]:
    """`uv run [options] CMD ...` → `CMD ...` (the tests run in the environment uv would run it in)."""
    if args[:2] != ["uv", "run"]:
        return args
    i = 2
    while args[i].startswith("--"):
        i += 2 if args[i] in UV_RUN_OPTIONS_WITH_VALUE else 1
    return args[i:]


def _console_script(name: str):
    for ep in entry_points(group="console_scripts", name=name):
        if ep.value.startswith(IN_PROCESS):
            return ep.load()
    return None


def run(
    command: str, cwd: Path, env: dict | None = None, stdin: str = "", append=(), timeout: float = 900
) -> Result:
    """Run one README command in `cwd` (see the module docstring), with the arguments `append` after its own
    (before its trailing comment) → its exit status and output."""
    args = strip_uv_run(expand(command, cwd, env)) + list(append)
    if args[:2] == ["python", "-c"]:
        code = args[2]
        return _in_process(
            lambda: exec(compile(code, "<python -c>", "exec"), {"__name__": "__main__"}),
            args,
            cwd,
            env,
            stdin,
        )
    script = _console_script(args[0])
    if script is not None:
        return _in_process(script, args, cwd, env, stdin)
    p = subprocess.run(
        args, cwd=cwd, env=command_env(env), input=stdin, capture_output=True, text=True, timeout=timeout
    )
    return Result(p.returncode, p.stdout, p.stderr)


def _in_process(function, args, cwd, env, stdin) -> Result:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv, sys.stdin, os.getcwd(), dict(os.environ)
    sys.argv, sys.stdin = list(args), io.StringIO(stdin)
    os.chdir(cwd)
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = function()
            except SystemExit as e:
                code = e.code
        if isinstance(code, str):  # sys.exit("message")
            err.write(code)
            code = 1
        return Result(code or 0, out.getvalue(), err.getvalue())
    finally:
        sys.argv, sys.stdin = saved[0], saved[1]
        os.chdir(saved[2])
        os.environ.clear()
        os.environ.update(saved[3])


def pip_install(command: str, folder: Path, cwd: Path = ROOT) -> Path:
    """Run a README's `pip install ...` line (from the repository root) with the pip of a fresh virtual
    environment in `folder` → that environment's python.

    The fresh environment also sees this test environment's packages (a `.pth` file adds its site-packages
    behind its own), so the dependencies already here (torch, ~3 GB) are not downloaded again: pip builds the
    named packages and installs them into the fresh environment, fetching from PyPI only what is missing
    (the build backend, hatchling)."""
    args = expand(command, cwd)
    assert args[:2] == ["pip", "install"], command
    venv.create(folder, with_pip=True, clear=True)
    python = folder / "bin" / "python"
    purelib = subprocess.check_output(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
    ).strip()
    here = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "_outer_test_env.pth").write_text(f"import site; site.addsitedir({here!r})\n")
    env = command_env({"PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    p = subprocess.run([python, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, (command, p.stdout[-3000:], p.stderr[-3000:])
    return python


def imported_from(python: Path, modules: list[str]) -> dict[str, str]:
    """{module: the file `python` imports it from}."""
    code = "import importlib, json; print(json.dumps({m: importlib.import_module(m).__file__ for m in %r}))"
    out = subprocess.check_output([python, "-c", code % (modules,)], cwd=python.parents[2], text=True)
    return json.loads(out.strip().splitlines()[-1])


def ci_package_tests(package: str) -> list[str]:
    """The argument vector of `.ci/run`'s per-package test run of `package` (the loop of the step "per-package
    suites"), `$pkg` set as the loop sets it."""
    script = (ROOT / ".ci" / "run").read_text().replace("\\\n", " ")
    loop = script[script.index('step "per-package suites') :]
    line = next(x for x in loop.splitlines() if "run_pytest uv run" in x)
    command = line.strip().removeprefix("run_pytest ")
    return expand(command, ROOT, {"pkg": package.removeprefix("xgenmm-")})


class ReadmeTools:
    """What the `readme` fixture gives: `readme.open(path)`, `readme.run(...)`, `readme.expand(...)`,
    `readme.pip_install(...)`, `readme.imported_from(...)`, `readme.ROOT`."""

    ROOT = ROOT
    open = staticmethod(Readme)
    commands_of = staticmethod(commands_of)
    run = staticmethod(run)
    expand = staticmethod(expand)
    strip_uv_run = staticmethod(strip_uv_run)
    env = staticmethod(command_env)
    pip_install = staticmethod(pip_install)
    imported_from = staticmethod(imported_from)
    ci_package_tests = staticmethod(ci_package_tests)


@pytest.fixture(scope="session")
def readme() -> ReadmeTools:
    return ReadmeTools()
