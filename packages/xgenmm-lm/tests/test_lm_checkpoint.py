import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from xgenmm_lm import XGenMM
from xgenmm_lm.convert import main as convert_main


def inputs(model, tokenizer, images):
    ids = torch.tensor([tokenizer("<|user|>\n<image>\nWhat is in the image?<|end|>\n").input_ids])
    p = model.image_processor()(images[1])
    return dict(input_ids=ids, pixel_values=[[p.pixel_values]], image_sizes=[[p.image_size]])


def write_released_by_hand(model, directory):
    """A released-layout snapshot written without this package's writer: config.json with the three sub-configs,
    two shards of `vlm.*` tensors and an index."""
    directory.mkdir()
    cfg = model.config
    config = {
        "architectures": ["XGenMMModelForConditionalGeneration"],
        "model_type": "xgenmm",
        "text_config": dict(
            cfg.text_config.to_diff_dict(), model_type="phi3", initial_tokenizer_len=cfg.initial_tokenizer_len
        ),
        "vision_encoder_config": {
            "model_type": "xgenmm_vision_encoder",
            "anyres_patch_sampling": True,
            "image_aspect_ratio": "anyres",
            "anyres_grids": cfg.anyres_grids,
            "siglip_config": cfg.vision_config.to_dict(),
        },
        "vision_tokenizer_config": {
            "model_type": "xgenmm_vision_tokenizer",
            "vis_feature_dim": 32,
            "lang_embedding_dim": 64,
            "num_vis_tokens": 8,
            "depth": 2,
            "heads": 2,
            "dim_head": 16,
            "ff_mult": 2,
        },
    }
    (directory / "config.json").write_text(json.dumps(config))
    state = {"vlm." + k: v.contiguous() for k, v in model.state_dict().items()}
    keys = list(state)
    half = len(keys) // 2
    weight_map = {}
    for i, part in enumerate((keys[:half], keys[half:])):
        name = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({k: state[k] for k in part}, directory / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )


def test_released_layout_loads_with_same_logits(model, tokenizer, images, tmp_path):
    write_released_by_hand(model, tmp_path / "released")
    loaded = XGenMM.from_pretrained(tmp_path / "released")
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert not any(p.device.type == "meta" for p in loaded.parameters())
    assert not any(p.requires_grad for p in loaded.vision_encoder.parameters())
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(**inputs(loaded, tokenizer, images)).logits,
            model(**inputs(model, tokenizer, images)).logits,
            rtol=0,
            atol=0,
        )


def test_save_pretrained_round_trip_is_identical(model, tokenizer, images, tmp_path):
    out = tmp_path / "ckpt"
    model.save_pretrained(out, tokenizer=tokenizer, max_shard_size=20_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # sharded
    assert (out / "tokenizer.json").is_file() and json.loads((out / "config.json").read_text())[
        "model_type"
    ] == "xgenmm"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    loaded = XGenMM.from_pretrained(out)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(**inputs(loaded, tokenizer, images)).logits,
            model(**inputs(model, tokenizer, images)).logits,
            rtol=0,
            atol=0,
        )
    # saving again into the same directory replaces the shards; stale ones are removed
    model.save_pretrained(out, max_shard_size="1GB")
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    assert not (out / "model.safetensors.index.json").exists()
    bf16 = XGenMM.from_pretrained(out, dtype="bfloat16")
    assert bf16.lang_model.lm_head.weight.dtype == torch.bfloat16


def read_all(directory):
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    out = {}
    for name in set(index["weight_map"].values()):
        with safe_open(directory / name, framework="pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})
    return out


def test_hf_to_xgenmm_to_hf_round_trip_is_byte_identical(model, tokenizer, images, tmp_path):
    model = model.to(torch.bfloat16)
    write_released_by_hand(model, tmp_path / "hf")
    assert convert_main(["hf-to-xgenmm", str(tmp_path / "hf"), str(tmp_path / "ours")]) == 0
    assert convert_main(["xgenmm-to-hf", str(tmp_path / "ours"), str(tmp_path / "hf2")]) == 0
    a, b = read_all(tmp_path / "hf"), read_all(tmp_path / "hf2")
    assert a.keys() == b.keys() and all(k.startswith("vlm.") for k in b)
    for k in a:
        assert a[k].dtype == b[k].dtype == torch.bfloat16
        assert a[k].view(torch.uint8).equal(b[k].view(torch.uint8)), k
    ours = read_all(tmp_path / "ours")
    assert set(ours) == set(model.state_dict())
    config = json.loads((tmp_path / "hf2" / "config.json").read_text())
    assert set(config) >= {"text_config", "vision_encoder_config", "vision_tokenizer_config", "auto_map"}
    assert config["text_config"]["initial_tokenizer_len"] == model.config.initial_tokenizer_len
    assert (tmp_path / "hf2" / "generation_config.json").is_file()
    # both layouts load into the same model
    x = XGenMM.from_pretrained(tmp_path / "ours")
    y = XGenMM.from_pretrained(tmp_path / "hf2")
    with torch.no_grad():
        torch.testing.assert_close(
            x(**inputs(x, tokenizer, images)).logits, y(**inputs(y, tokenizer, images)).logits
        )


def test_lavis_checkpoint_converts(model, tokenizer, images, tmp_path):
    model.save_pretrained(tmp_path / "ref")
    torch.save({"model_state_dict": model.state_dict(), "epoch": 0}, tmp_path / "lavis.pt")
    code = convert_main(
        [
            "lavis-to-xgenmm",
            str(tmp_path / "lavis.pt"),
            str(tmp_path / "out"),
            "--config",
            str(tmp_path / "ref"),
        ]
    )
    assert code == 0
    loaded = XGenMM.from_pretrained(tmp_path / "out")
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(**inputs(loaded, tokenizer, images)).logits,
            model(**inputs(model, tokenizer, images)).logits,
            rtol=0,
            atol=0,
        )
    # a bare state dict missing the LM head is refused with the key named
    bare = {k: v for k, v in model.state_dict().items() if "lm_head" not in k}
    torch.save(bare, tmp_path / "bare.pt")
    assert (
        convert_main(
            [
                "lavis-to-xgenmm",
                str(tmp_path / "bare.pt"),
                str(tmp_path / "bad"),
                "--config",
                str(tmp_path / "ref"),
            ]
        )
        == 1
    )
    assert not (tmp_path / "bad").exists()


def test_missing_files_and_keys_are_clear_errors(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint directory"):
        XGenMM.from_pretrained(tmp_path / "nothing")
    write_released_by_hand(model, tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"names shard file\(s\) that are missing .*model-00002-of-00002"
    ):
        XGenMM.from_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors.index.json").unlink()
    with pytest.raises(FileNotFoundError, match="no weights found"):
        XGenMM.from_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        XGenMM.from_pretrained(tmp_path / "ckpt")
    state = {k: v for k, v in model.state_dict().items() if "additional_fc" not in k}
    (tmp_path / "partial").mkdir()
    model.config.save_pretrained(tmp_path / "partial")
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "partial" / "model.safetensors")
    with pytest.raises(ValueError, match=r"2 missing: \['lang_model.lm_head.additional_fc.bias'"):
        XGenMM.from_pretrained(tmp_path / "partial")
