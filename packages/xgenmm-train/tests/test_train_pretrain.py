"""Pre-training: compose from parts, streamed shards, packed rows, frozen parts, base resolution, exact resume
with the stream position, and SFT starting from the pre-trained checkpoint."""

import json

import pytest
import torch
from safetensors.torch import load_file

from xgenmm_train.checkpoint import latest_checkpoint
from xgenmm_train.config import ConfigError, load_config


@pytest.fixture(scope="module")
def pretrain_data(tmp_path_factory):
    """Small demo shards (4 caption shards x 30, interleaved docs) and the tiny parts to compose."""
    from xgenmm_train.demo.pretrain_data import make_pretrain_data
    from xgenmm_train.demo.pretrain_run import ensure_parts

    root = tmp_path_factory.mktemp("pretrain")
    paths = make_pretrain_data(
        root / "data", n_captions=120, n_documents=40, n_heldout=8, per_shard=30, seed=1
    )
    parts = load_config(None, _overrides(root, paths["mixture"]), task="pretrain")
    ensure_parts(parts)
    return root, paths


def _overrides(root, mixture, **extra):
    base = {
        "run_dir": str(root / "run"),
        "model.init": "compose",
        "model.text_model": str(root / "parts" / "lm"),
        "model.vision_model": str(root / "parts" / "siglip"),
        "model.num_latents": 4,
        "model.sampler": "{depth: 1, heads: 2, dim_head: 16, ff_mult: 2}",
        "data.path": str(mixture),
        "data.batching": "packed",
        "data.pack_tokens": 160,
        "data.pack_pool": 8,
        "data.max_length": 128,
        "train.seed": 0,
        "train.micro_batch_size": 2,
        "train.lr": 1e-3,
        "train.lr_scheduler": "constant",
        "train.precision": "fp32",
        "train.max_steps": 3,
        "deepspeed.zero_stage": 0,
        "checkpoint.save_every": "null",
        "logging.progress_bar": "false",
        "logging.plot": "false",
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def _config(root, mixture, **extra):
    return load_config(None, _overrides(root, mixture, **extra), task="pretrain")


def _weights(folder):
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def test_config_errors_name_the_key(pretrain_data):
    root, paths = pretrain_data
    with pytest.raises(ConfigError, match="model.text_model"):
        _config(root, paths["mixture"], **{"model.text_model": "null"})
    with pytest.raises(ConfigError, match="train.max_steps"):
        _config(root, paths["mixture"], **{"train.max_steps": -1})
    with pytest.raises(ConfigError, match="data.image_mode"):
        _config(root, paths["mixture"], **{"data.image_mode": "tiles"})


def test_stream_batches_mask_images_and_pack_rows(pretrain_data):
    from xgenmm_train.modeling import build_model
    from xgenmm_train.pretrain import PretrainRecipe

    root, paths = pretrain_data
    config = _config(root, paths["mixture"])
    model, tokenizer = build_model(config)
    stream, _ = PretrainRecipe().build_data(config, model, tokenizer)
    batch = next(iter(stream))
    media = model.config.media_token_id
    assert batch["input_ids"].shape[0] == 2 and "segment_ids" in batch  # 2 packed rows
    assert int(batch["segment_ids"].max()) >= 1  # several samples in a row
    assert (batch["labels"][batch["input_ids"] == media] == -100).all()
    eoc = model.config.end_of_chunk_token_id
    assert (batch["labels"] == eoc).any()  # <|endofchunk|> is trained
    out = model(
        **{
            k: batch[k]
            for k in ("input_ids", "labels", "pixel_values", "image_sizes", "position_ids", "segment_ids")
        }
    )
    images = sum(len(p) for p in batch["pixel_values"])
    assert (
        int((out.labels == -100).sum()) >= images * 4 * 2
    )  # the vision positions (>= 2 groups x 4 latents) masked


def test_pretrain_then_sft_from_the_checkpoint(pretrain_data, synth, make_config, tmp_path):
    from xgenmm_lm import XGenMM
    from xgenmm_train import run_pretrain, run_sft

    root, paths = pretrain_data
    config = _config(
        tmp_path,
        paths["mixture"],
        **{
            "run_dir": str(tmp_path / "pre"),
            "model.text_model": str(root / "parts" / "lm"),
            "model.vision_model": str(root / "parts" / "siglip"),
        },
    )
    result = run_pretrain(config)
    ckpt = latest_checkpoint(tmp_path / "pre")
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["step"] == 3 and len(state["data"]) == 1 and state["data"][0]["workers"]
    assert result["stream_bad"] == {} and result["stream_samples"] > 0
    # the vision encoder stayed as composed (frozen by default), the perceiver and LM moved
    model = XGenMM.from_pretrained(ckpt / "model")
    siglip = _weights(root / "parts" / "siglip")
    for k, v in model.vision_encoder.state_dict().items():
        torch.testing.assert_close(v, siglip[k])
    lm = _weights(root / "parts" / "lm")
    assert not torch.equal(
        model.lang_model.state_dict()["model.layers.0.mlp.down_proj.weight"],
        lm["model.layers.0.mlp.down_proj.weight"],
    )
    # SFT starts from it directly
    sft = make_config(
        tmp_path / "sft",
        synth["mixture"],
        **{"model.init": "pretrained", "model.path": str(ckpt / "model"), "train.max_steps": 2},
    )
    assert run_sft(sft)["steps"] == 2


def test_warmup_trains_only_the_perceiver_and_new_token_rows(pretrain_data, tmp_path):
    from xgenmm_lm import XGenMM
    from xgenmm_train import run_pretrain
    from xgenmm_train.modeling import build_model

    root, paths = pretrain_data
    extra = {
        "run_dir": str(tmp_path),
        "model.train_lang_model": "false",
        "train.max_steps": 2,
        "data.image_mode": "base",
    }
    run_pretrain(_config(root, paths["mixture"], **extra))
    model = XGenMM.from_pretrained(latest_checkpoint(tmp_path) / "model")
    lm = _weights(root / "parts" / "lm")
    mine = model.lang_model.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in lm.items() if k in mine)
    emb = model.lang_model.get_input_embeddings()
    fresh, _ = build_model(_config(root, paths["mixture"], **extra))  # the same composed start
    assert not torch.equal(
        emb.additional_embedding.weight, fresh.get_input_embeddings().additional_embedding.weight
    )
    moved = [
        not torch.equal(a, b)
        for a, b in zip(model.vision_tokenizer.parameters(), fresh.vision_tokenizer.parameters())
    ]
    assert all(moved)


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_reads_what_the_uninterrupted_run_reads(pretrain_data, tmp_path, workers):
    """6 steps straight vs 3 steps, stop, resume to 6: same weights, same stream position."""
    from xgenmm_train import run_pretrain

    root, paths = pretrain_data
    common = {"train.max_steps": 6, "data.num_workers": workers}
    run_pretrain(_config(root, paths["mixture"], **common, run_dir=str(tmp_path / "straight")))
    split = dict(
        common, run_dir=str(tmp_path / "split"), **{"checkpoint.save_every": 3, "checkpoint.keep_last": 3}
    )
    run_pretrain(_config(root, paths["mixture"], **{**split, "train.max_steps": 3}))
    run_pretrain(_config(root, paths["mixture"], **split, **{"checkpoint.resume": "auto"}))
    a, b = latest_checkpoint(tmp_path / "straight"), latest_checkpoint(tmp_path / "split")
    assert a.name == b.name == "step-000006"
    wa, wb = _weights(a / "model"), _weights(b / "model")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    sa = json.loads((a / "trainer_state.json").read_text())["data"]
    sb = json.loads((b / "trainer_state.json").read_text())["data"]
    assert sa == sb
