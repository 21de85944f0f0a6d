"""Every block and command of the package README runs as written, in order, in one folder (the `readme` fixture
is the repository's conftest.py): the tiny checkpoint and image commands, the files the README shows (named by
their first line), the evaluator, chat (the interactive one fed two lines on standard input), lmms-eval.

Not run: `git clone` of VLMEvalKit and its install (GitHub, not reachable from the tests); instead the test
checks that they are the lines `xgenmm-eval vlmevalkit` itself prints when VLMEvalKit is missing, which it runs
as written."""

import importlib.util
import json
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
TINY, LOCAL, CHAT = "A tiny checkpoint to try the commands", "Local evaluator", "Chat"
HAVE_VLMEVAL = importlib.util.find_spec("vlmeval") is not None


def test_every_command_of_the_readme_is_run_below(readme):
    doc = readme.open(README)
    assert doc.sections_with_commands() == [
        "Install alone",
        TINY,
        LOCAL,
        CHAT,
        "VLMEvalKit",
        "lmms-eval",
        "Tests",
    ]
    assert [len(doc.commands(s)) for s in (TINY, LOCAL, CHAT, "VLMEvalKit", "lmms-eval")] == [2, 1, 2, 3, 1]


@pytest.fixture(scope="module")
def folder(readme, tmp_path_factory):
    """The folder after the tiny-checkpoint commands, with the README's files written into it."""
    folder = tmp_path_factory.mktemp("readme")
    for command in readme.open(README).commands(TINY):
        r = readme.run(command, folder)
        assert r.returncode == 0, (command, r.stderr[-2000:])
    written = readme.open(README).write_files(folder)
    assert sorted(p.relative_to(folder).as_posix() for p in written) == [
        "eval.json",
        "lmms_tasks/xgenmm_toy/toy.jsonl",
        "lmms_tasks/xgenmm_toy/utils.py",
        "lmms_tasks/xgenmm_toy/xgenmm_toy.yaml",
    ]
    return folder


def test_local_evaluator_command_and_snippet_run_as_written(readme, folder, monkeypatch, capsys):
    (command,) = readme.open(README).commands(LOCAL)
    r = readme.run(command, folder)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((folder / "eval-out" / "report.json").read_text())
    assert report["num_samples"] == 3 and set(report["per_type"]) == {"choice", "color", "count"}
    assert json.loads(r.stdout)["metric"] == "vqa"  # the report, printed
    predictions = (folder / "eval-out" / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in predictions] == ["q1", "q2", "q3"]

    monkeypatch.chdir(folder)
    exec(compile(readme.open(README).python(LOCAL)[0], str(README), "exec"), {})
    assert capsys.readouterr().out.strip().startswith(f"{report['accuracy']} {{")  # same records, same model


def test_chat_commands_run_as_written(readme, folder):
    one_shot, interactive = readme.open(README).commands(CHAT)
    r = readme.run(one_shot, folder)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr[-2000:]
    r = readme.run(interactive, folder, stdin="What colour is the bus?\n/reset\nAnd now?\n/quit\n")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.count(">>> ") == 4 and "(conversation cleared)" in r.stderr  # a prompt per line read
    assert r.stdout.strip()  # the (streamed) replies


@pytest.mark.skipif(HAVE_VLMEVAL, reason="VLMEvalKit is installed: its datasets would be downloaded")
def test_vlmevalkit_commands_are_the_install_lines_the_bridge_prints(readme, folder):
    clone, install, bridge = readme.open(README).commands("VLMEvalKit")
    r = readme.run(bridge, folder)
    assert r.returncode == 2  # stops at once, before loading anything
    assert clone in r.stderr and install in r.stderr, r.stderr
    from xgenmm_eval import VLMEvalKitMissing

    with pytest.raises(VLMEvalKitMissing, match="git clone https://github.com/open-compass/VLMEvalKit.git"):
        exec(compile(readme.open(README).python("VLMEvalKit")[0], str(README), "exec"), {})


def test_lmms_eval_command_runs_as_written(readme, folder):
    pytest.importorskip(
        "lmms_eval", reason="lmms-eval: the `lmms` extra (xgenmm-eval's own test environment)"
    )
    (command,) = readme.open(README).commands("lmms-eval")
    r = readme.run(command, folder)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    (results,) = (folder / "lmms-out").rglob("*results*.json")
    assert "exact_match,none" in json.loads(results.read_text())["results"]["xgenmm_toy"]


@pytest.mark.slow  # a fresh virtual environment and five wheel builds (~40 s)
def test_install_command_installs_the_package_alone(readme, tmp_path):
    (command,) = readme.open(README).commands("Install alone")
    python = readme.pip_install(command, tmp_path / "venv")
    files = readme.imported_from(python, ["xgenmm_data", "xgenmm_lm", "xgenmm_eval"])
    assert all(f.startswith(str(tmp_path)) for f in files.values()), files


def test_tests_command_is_what_ci_runs(readme):
    (command,) = readme.open(README).commands("Tests")
    assert readme.expand(command, readme.ROOT) == readme.ci_package_tests("xgenmm-eval")
