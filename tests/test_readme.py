"""The root README's commands, as written (the `readme` fixture is the repository's conftest.py).

Run here: the end-to-end path (check the data, fine-tune on one process, evaluate the last checkpoint) in a folder
laid out as the README says, with test-size overrides appended to the fine-tuning line (2 steps, fp32, micro-batch
2) and to the evaluation line (8 new tokens); the lint commands. Checked against the place that runs them: the
8-GPU / several-nodes lines and `pip install` lines are the package READMEs' (their tests run them: 2 CPU
processes, fresh virtual environments); `uv run xgenmm-train` is the train README's first demo (its command line
is checked there, test_train_default.py runs the demo); `uv run pytest` cannot run inside pytest: it is the
command CI runs as its whole-suite step."""

import json
import re
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PATH = "From data to a fine-tuned, evaluated model"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 70, 230), "yellow": (240, 220, 40)}


def test_every_command_of_the_readme_is_run_or_checked_below(readme):
    doc = readme.open(README)
    assert doc.sections_with_commands() == ["Set up and run", "The packages", PATH, "Development"]
    assert [len(doc.commands(s)) for s in doc.sections_with_commands()] == [2, 2, 5, 2]


def test_setup_commands_are_the_default_run_and_the_suite_ci_runs(readme):
    default_run, suite = readme.open(README).commands("Set up and run")
    train = readme.open(ROOT / "packages/xgenmm-train/README.md")
    demo = train.commands("The embedded demos (CPU, no download)")[0]
    assert readme.expand(default_run, ROOT) == readme.expand(demo, ROOT) == ["uv", "run", "xgenmm-train"]
    ci = (ROOT / ".ci" / "run").read_text()
    step = ci[ci.index('step "whole suite (the README\'s test command)"') :].splitlines()[1]
    assert step.strip() == "run_pytest " + suite.split("#")[0].strip().replace("uv run", "uv run --locked", 1)


def test_install_lines_are_the_package_readmes(readme):
    for command in readme.open(README).commands("The packages"):
        package = re.fullmatch(r"pip install \./packages/(xgenmm-\w+)", command).group(1)
        assert command in readme.open(ROOT / "packages" / package / "README.md").commands("Install alone")


def test_multi_gpu_lines_are_the_train_readmes(readme):
    train = readme.open(ROOT / "packages/xgenmm-train/README.md")
    sft = train.commands("Fine-tuning (SFT): one GPU, eight GPUs, several nodes")
    check, one_gpu, evaluate, eight_gpus, nodes = readme.open(README).commands(PATH)
    assert [one_gpu, eight_gpus, nodes] == sft  # test_train_readme.py runs them (on 2 CPU processes)


@pytest.fixture
def folder(tmp_path):
    """packages/ (the repository's), models/base (a tiny XGenMM), data/mixture.yaml + train.json, data/eval.json."""
    from xgenmm_lm import XGenMM, tiny_config, train_tiny_tokenizer

    (tmp_path / "packages").symlink_to(ROOT / "packages")
    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    records, evals = [], []
    for i, (name, rgb) in enumerate(COLOURS.items()):
        Image.new("RGB", (32 + 16 * i, 48), rgb).save(images / f"{name}.png")
        question = [{"from": "human", "value": "<image>\nWhat colour is the picture?"}]
        records.append({"id": name, "image": f"images/{name}.png", "conversations": question +
                        [{"from": "gpt", "value": f"It is {name}."}]})  # fmt: skip
        evals.append({"id": name, "image": f"images/{name}.png", "question_type": "colour",
                      "conversations": question + [{"from": "gpt", "value": name}]})  # fmt: skip
    (tmp_path / "data" / "train.json").write_text(json.dumps(records * 2))
    (tmp_path / "data" / "mixture.yaml").write_text("data_path:\n  train.json: {count: 8, image_root: .}\n")
    (tmp_path / "data" / "eval.json").write_text(json.dumps(evals))
    tokenizer = train_tiny_tokenizer(
        [t["value"] for r in records for t in r["conversations"]] * 4, vocab_size=300
    )
    XGenMM.from_config(tiny_config(tokenizer)).save_pretrained(
        tmp_path / "models" / "base", tokenizer=tokenizer
    )
    return tmp_path


def test_end_to_end_path_runs_as_written(readme, folder):
    check, one_gpu, evaluate = readme.open(README).commands(PATH)[:3]
    r = readme.run(check, folder)
    assert r.returncode == 0 and "0 problem(s) in 8 record(s)" in r.stdout, (r.stdout, r.stderr)

    small = ["train.max_steps=2", "train.precision=fp32", "train.micro_batch_size=2", "data.num_workers=0"]
    small += ["model.gradient_checkpointing=false", "data.max_length=256", "logging.progress_bar=false"]
    r = readme.run(one_gpu, folder, append=small)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert (folder / "runs/sft/checkpoints/step-000002/model/config.json").is_file()

    r = readme.run(evaluate, folder, append=["--max-new-tokens", "8"])
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((folder / "runs/sft/eval/report.json").read_text())
    assert report["num_samples"] == 4 and set(report["per_type"]) == {"colour"}
    assert report["model"] == "runs/sft/checkpoints/step-000002/model"  # the last checkpoint, by the $(...)
    assert len((folder / "runs/sft/eval/predictions.jsonl").read_text().splitlines()) == 4


def test_lint_commands_run_as_written(readme):
    for command in readme.open(README).commands("Development"):
        r = readme.run(command, ROOT)
        assert r.returncode == 0, (command, r.stdout[-3000:], r.stderr[-3000:])
    ci = (ROOT / ".ci" / "run").read_text()
    assert "uv run --locked ruff check .\n" in ci and "uv run --locked ruff format --check .\n" in ci


READMES = [README, *sorted(ROOT.glob("packages/*/README.md"))]


@pytest.mark.parametrize("path", READMES, ids=[p.parent.name for p in READMES])
def test_relative_links_of_every_readme_resolve(path):
    links = re.findall(r"\]\(([^)#]+)\)", path.read_text())
    named = re.findall(
        r"`((?:packages|docs|benchmarks|tests)/[\w./-]+|BENCHMARKS\.md|[\w-]+\.md)`", path.read_text()
    )
    missing = [t for t in links if not t.startswith("http") and not (path.parent / t).exists()]
    missing += [t for t in named if not (ROOT / t).exists() and not (path.parent / t).exists()]
    assert missing == [], missing
