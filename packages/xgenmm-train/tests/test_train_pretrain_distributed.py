"""Streamed pre-training data over 2 processes (torchrun, gloo on the CPU): the ranks read disjoint samples that
together are the whole epoch; and a 2-process ZeRO-2 pre-training run stores both ranks' stream positions."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xgenmm_data import StreamMixture, iter_shard
from xgenmm_train.checkpoint import latest_checkpoint
from xgenmm_train.config import load_config, to_yaml
from xgenmm_train.distributed import free_port

HERE = Path(__file__).resolve().parent


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT", "MASTER_ADDR"):
        env.pop(k, None)
    return env


def _torchrun(*args):
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        *args,
    ]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from xgenmm_train.demo.pretrain_data import make_pretrain_data

    root = tmp_path_factory.mktemp("dist")
    paths = make_pretrain_data(root, n_captions=80, n_documents=16, n_heldout=1, per_shard=10, seed=2)
    one_epoch = root / "one-epoch.yaml"
    one_epoch.write_text(paths["mixture"].read_text().replace("epochs: null", "epochs: 1"))
    return root, paths, one_epoch


def test_torchrun_two_ranks_read_disjoint_samples_that_cover_the_epoch(shards, tmp_path):
    root, _, one_epoch = shards
    cmd = _torchrun(str(HERE / "read_stream_rank.py"), str(one_epoch), str(tmp_path))
    p = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    read = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in read] == [2, 2]
    a, b = (r["keys"] for r in read)
    assert len(a) == len(set(a)) and len(b) == len(set(b))  # nothing twice on a rank
    assert not set(a) & set(b)  # disjoint
    everything = {
        f"{s.name}/{key}"
        for s in StreamMixture.from_yaml(one_epoch).sources
        for url in s.urls
        for _, key, *_ in iter_shard(url)
    }
    assert len(everything) == 80 + 16
    assert set(a) | set(b) == everything  # together: the whole epoch
    assert a and b


@pytest.mark.slow
def test_torchrun_two_process_pretraining_stores_both_stream_positions(shards, tmp_path):
    from xgenmm_train.demo.pretrain_run import ensure_parts

    root, paths, _ = shards
    overrides = [
        f"run_dir={tmp_path / 'run'}",
        f"model.text_model={root / 'parts' / 'lm'}",
        f"model.vision_model={root / 'parts' / 'siglip'}",
        f"data.path={paths['mixture']}",
        "train.max_steps=2",
        "train.micro_batch_size=2",
        "deepspeed.zero_stage=2",
        "data.pack_pool=8",
        "logging.progress_bar=false",
        "logging.plot=false",
        "eval.path=null",
    ]
    config = load_config(HERE.parent / "configs" / "default-pretrain.yaml", overrides)
    ensure_parts(config)
    (tmp_path / "pre.yaml").write_text(to_yaml(config))
    cmd = _torchrun("-m", "xgenmm_train.cli", "pretrain", "--config", str(tmp_path / "pre.yaml"))
    p = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    state = json.loads((latest_checkpoint(tmp_path / "run") / "trainer_state.json").read_text())
    assert [s["rank"] for s in state["data"]] == [0, 1] and all(s["world_size"] == 2 for s in state["data"])
