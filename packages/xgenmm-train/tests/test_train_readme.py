"""Every command and block of the package README runs as written (the `readme` fixture is the repository's
conftest.py), in a folder laid out as the README says: `packages/` (the repository's), `models/base` (a tiny
XGenMM built in code), `data/` (a small synthetic LLaVA-format dataset: mixture.yaml, preferences.json).

What the tests change, and only that: test-size overrides are appended to the SFT / DPO commands (2 steps, fp32,
micro-batch 2, no gradient checkpointing); `--nproc_per_node 8` becomes 2 CPU processes (gloo) and the multi-node
line runs as one node (NNODES=1 NODE_RANK=0 MASTER_ADDR=127.0.0.1). The demos (`uv run xgenmm-train [dpo|pretrain]`,
~3 min each) are run by test_train_default.py and test_train_default_pretrain.py through the same functions; here
their command lines are checked with `--print-config` (the config each would run). The pre-training section:
test_train_pretrain_docs.py."""

import json
import re
import shutil
from pathlib import Path

import pytest

from xgenmm_train.checkpoint import latest_checkpoint
from xgenmm_train.config import load_config, to_yaml
from xgenmm_train.distributed import free_port

README = Path(__file__).resolve().parents[1] / "README.md"
CONFIGS = README.parent / "configs"
DEMOS, CONFIG = "The embedded demos (CPU, no download)", "Configs and overrides"
SFT, DPO = "Fine-tuning (SFT): one GPU, eight GPUs, several nodes", "DPO"
PRETRAIN = "Pre-training: a new xGen-MM from any causal LM"
SMALL = {"train.max_steps": 2, "train.precision": "fp32", "train.micro_batch_size": 2, "data.num_workers": 0}
SMALL |= {"model.gradient_checkpointing": "false", "data.max_length": 256, "logging.progress_bar": "false"}
SMALL_ARGS = [f"{k}={v}" for k, v in SMALL.items()]


def test_every_command_of_the_readme_is_run_below(readme):
    doc = readme.open(README)
    assert doc.sections_with_commands() == ["Install alone", DEMOS, CONFIG, SFT, DPO, PRETRAIN, "Tests"]
    assert [len(doc.commands(s)) for s in (DEMOS, CONFIG, SFT, DPO)] == [3, 2, 3, 1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, synth):
    from xgenmm_lm import XGenMM, tiny_config, train_tiny_tokenizer

    tmp = tmp_path_factory.mktemp("readme")
    (tmp / "packages").symlink_to(README.parents[1])
    shutil.copytree(Path(synth["mixture"]).parent, tmp / "data")
    shutil.copy(tmp / "data" / "dpo_train.json", tmp / "data" / "preferences.json")
    records = json.loads((tmp / "data" / "train.json").read_text())
    texts = [turn["value"] for r in records for turn in r["conversations"]]
    tokenizer = train_tiny_tokenizer(texts, vocab_size=300)
    XGenMM.from_config(tiny_config(tokenizer)).save_pretrained(tmp / "models" / "base", tokenizer=tokenizer)
    return tmp


def test_demo_command_lines_run_the_demo_configs(readme, tmp_path):
    for command, config in zip(readme.open(README).commands(DEMOS), ["sft", "dpo", "pretrain"]):
        r = readme.run(command, tmp_path, append=["--print-config"])
        assert r.returncode == 0, (command, r.stderr)
        assert r.stdout == to_yaml(load_config(CONFIGS / f"default-{config}.yaml")), command


def test_config_commands_run_as_written(readme, tmp_path):
    (tmp_path / "packages").symlink_to(README.parents[1])
    reference, demo = readme.open(README).commands(CONFIG)
    r = readme.run(reference, tmp_path)
    assert r.returncode == 0 and r.stdout == to_yaml(load_config(CONFIGS / "xgenmm-phi3-sft.yaml")), r.stderr
    r = readme.run(demo, tmp_path)
    assert r.returncode == 0 and re.search(r"^  lr: 0\.001$", r.stdout, re.M), r.stdout


def _finished(run_dir: Path, world_size: int = 1) -> Path:
    checkpoint = latest_checkpoint(run_dir)
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["world_size"] == world_size, state
    return checkpoint


def test_one_gpu_sft_then_dpo_run_as_written(readme, folder):
    """The 1-GPU SFT line, then the DPO line, which starts from that run's last checkpoint."""
    one_gpu = readme.open(README).commands(SFT)[0]
    shutil.rmtree(folder / "runs" / "sft", ignore_errors=True)
    r = readme.run(one_gpu, folder, append=SMALL_ARGS)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert (_finished(folder / "runs" / "sft") / "model" / "config.json").is_file()
    assert "uv run xgenmm-eval run --model runs/sft/checkpoints/step-000002/model" in r.stderr  # the summary

    (dpo,) = readme.open(README).commands(DPO)
    r = readme.run(dpo, folder, append=SMALL_ARGS)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert (_finished(folder / "runs" / "dpo") / "model" / "model.safetensors").is_file()  # merged LoRA


def test_python_snippet_runs_as_written(readme, folder, monkeypatch, capsys):
    monkeypatch.chdir(folder)
    exec(compile(readme.open(README).python(SFT)[0], str(README), "exec"), {})
    assert capsys.readouterr().out.strip().splitlines()[-1] == "2"
    _finished(folder / "runs" / "try")


@pytest.mark.slow  # two launches of 2 CPU processes each (~2 min on 2 cores)
@pytest.mark.parametrize("line", [1, 2], ids=["8-gpus", "several-nodes"])
def test_multi_gpu_sft_lines_run_as_written_on_two_cpu_processes(readme, folder, line):
    command = readme.open(README).commands(SFT)[line].replace("--nproc_per_node 8", "--nproc_per_node 2")
    if "--master_port" not in command:
        command = command.replace("torchrun ", f"torchrun --master_port {free_port()} ", 1)
    command = command.replace("--master_port 29500", f"--master_port {free_port()}")
    shutil.rmtree(
        folder / "runs" / "sft", ignore_errors=True
    )  # each launch form is a fresh run, not a resume
    env = {"NNODES": "1", "NODE_RANK": "0", "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    r = readme.run(command, folder, env=env, append=SMALL_ARGS)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    _finished(folder / "runs" / "sft", world_size=2)


@pytest.mark.slow  # a fresh virtual environment and five wheel builds (~40 s)
def test_install_command_installs_the_package_alone(readme, tmp_path):
    (command,) = readme.open(README).commands("Install alone")
    python = readme.pip_install(command, tmp_path / "venv")
    files = readme.imported_from(python, ["xgenmm_data", "xgenmm_lm", "xgenmm_train"])
    assert all(f.startswith(str(tmp_path)) for f in files.values()), files


def test_tests_command_is_what_ci_runs(readme):
    (command,) = readme.open(README).commands("Tests")
    assert readme.expand(command, readme.ROOT) == readme.ci_package_tests("xgenmm-train")
