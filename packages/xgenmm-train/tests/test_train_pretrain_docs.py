"""Runs the pre-training commands of packages/xgenmm-train/README.md as written, in a folder laid out as the
README shows: tiny stand-ins at models/qwen2 (a Qwen2 LM) and models/siglip,
img2dataset caption shards in shards/captions/, OBELICS-style documents in data/, the doc's mixture YAML.

What the test changes, and only that: `uv run ` is dropped (the commands run with this environment's scripts on
PATH); test-size overrides are appended to every xgenmm-train command (2 steps, fp32, tiny perceiver); the
GPU counts `--nproc_per_node 8` become 2 CPU processes (gloo) and the multi-node line runs as one node
(NNODES=1 NODE_RANK=0 MASTER_ADDR=127.0.0.1)."""

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xgenmm_train.checkpoint import latest_checkpoint
from xgenmm_train.distributed import free_port

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "packages" / "xgenmm-train" / "README.md"
PRETRAIN = dict(
    {"train.max_steps": 2, "train.precision": "fp32", "train.micro_batch_size": 1, "model.num_latents": 4},
    **{
        "model.sampler.depth": 1,
        "model.sampler.heads": 2,
        "model.sampler.dim_head": 16,
        "model.sampler.ff_mult": 2,
    },
    **{"model.gradient_checkpointing": "false"},
    **{"data.num_workers": 0, "data.pack_tokens": 512, "data.pack_pool": 4, "logging.progress_bar": "false"},
)
SFT = {"train.max_steps": 1, "train.precision": "fp32", "train.micro_batch_size": 2, "data.num_workers": 0}
SFT |= {"model.gradient_checkpointing": "false", "data.max_length": 256, "logging.progress_bar": "false"}


def _section(path: Path) -> str:
    text = path.read_text()
    start = text.index("Pre-training: a new xGen-MM from any causal LM")
    return text[start : text.index("\n## ", start) if "\n## " in text[start:] else len(text)]


def _blocks(text):
    return re.findall(r"```(\w+)\n(.*?)```", text, flags=re.S)


def _commands(text) -> list[str]:
    return [
        line for lang, body in _blocks(text) if lang == "bash" for line in body.splitlines() if line.strip()
    ]


def _layout(tmp: Path, synth) -> None:
    """The files the doc's commands expect, tiny."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig

    from xgenmm_lm import train_tiny_tokenizer
    from xgenmm_train.demo.pretrain_data import corpus, write_caption_shards, write_documents
    from xgenmm_vision import SiglipVisionEncoder

    (tmp / "packages").symlink_to(ROOT / "packages")
    tokenizer = train_tiny_tokenizer(corpus(), vocab_size=200)
    small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=320, num_key_value_heads=2, **small)).save_pretrained(
        tmp / "models/qwen2"
    )
    tokenizer.save_pretrained(tmp / "models/qwen2")
    siglip = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    SiglipVisionEncoder.from_config(siglip).save_pretrained(tmp / "models/siglip")
    rng = random.Random(0)
    write_caption_shards(tmp / "shards/captions", rng, n=40, per_shard=10)
    write_documents(tmp / "data", rng, n=8)
    for lang, body in _blocks(_section(README)):
        first, _, rest = body.partition("\n")
        if lang == "yaml" and first.startswith("# "):
            (tmp / first[2:].strip()).write_text(rest)
    train_json = Path(synth["train"])
    (tmp / "data/sft-mixture.yaml").write_text(
        f"data_path:\n  {train_json}: {{count: 48, image_root: {train_json.parent}}}\n"
    )


def _run(line: str, tmp: Path, env: dict) -> subprocess.CompletedProcess:
    cmd = line.removeprefix("uv run ")
    if " pretrain --config " in cmd:
        cmd += "".join(f" {k}={v}" for k, v in PRETRAIN.items())
    elif " sft --config " in cmd:
        cmd += "".join(f" {k}={v}" for k, v in SFT.items())
    cmd = cmd.replace("--nproc_per_node 8", "--nproc_per_node 2")
    if cmd.startswith("torchrun") and "--master_port" not in cmd:
        cmd = cmd.replace("torchrun ", f"torchrun --master_port {free_port()} ", 1)
    cmd = cmd.replace("--master_port 29500", f"--master_port {free_port()}")
    return subprocess.run(cmd, shell=True, cwd=tmp, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture
def env():
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", NNODES="1", NODE_RANK="0")
    env.update(MASTER_ADDR="127.0.0.1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT"):
        env.pop(k, None)
    return env


def test_the_readme_shows_the_pretraining_commands_run_below():
    assert len(_commands(_section(README))) == 6


@pytest.mark.slow
def test_documented_pretraining_commands_run_as_written(tmp_path, synth, env):
    _layout(tmp_path, synth)
    for line in _commands(_section(README)):
        if " pretrain --config " in line:  # each launch form is an alternative: a fresh run, not a resume
            shutil.rmtree(tmp_path / re.search(r"run_dir=(\S+)", line).group(1), ignore_errors=True)
        p = _run(line, tmp_path, env)
        assert p.returncode == 0, (line, p.stdout[-3000:], p.stderr[-3000:])
        if " pretrain --config " in line:
            run_dir = tmp_path / re.search(r"run_dir=(\S+)", line).group(1)
            state = json.loads((latest_checkpoint(run_dir) / "trainer_state.json").read_text())
            ranks = 2 if "--nproc_per_node" in line else 1
            assert state["step"] == 2 and len(state["data"]) == ranks, line
    assert (tmp_path / "shards/interleaved/docs-000000.tar").is_file()
    assert latest_checkpoint(tmp_path / "runs/qwen2-sft") is not None
