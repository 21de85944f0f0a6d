import json

import pytest
import torch

from xgenmm_lm import XGenMM, XGenMMConfig, phi3_mini_config, tiny_config


def count(module, trainable=False):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def test_released_sizes_on_meta_device():
    with torch.device("meta"):
        model = XGenMM.from_config(XGenMMConfig())
    assert count(model.vision_encoder) == 428_225_600
    assert count(model.vision_tokenizer) == 109_901_568
    assert count(model.lang_model) == 3_821_130_051
    assert count(model) == 4_359_257_219
    assert count(model, trainable=True) == 3_931_031_619
    hidden = torch.empty(1, 2, 3072, device="meta")
    assert model.lang_model.lm_head(hidden).shape[-1] == 32012 + 3
    assert model.lang_model.config.vocab_size == 32015
    assert model.lang_model.config.sliding_window == 2047
    assert model.lang_model.config._attn_implementation == "sdpa"
    cfg = model.config
    assert (cfg.media_token_id, cfg.image_placeholder_token_id, cfg.end_of_chunk_token_id) == (
        32012,
        32013,
        32014,
    )
    assert cfg.pad_token_id == 32011 and cfg.eos_token_id == [32000, 32007]
    assert model.num_vision_tokens((640, 480)) == 640
    assert model.num_vision_tokens((384, 384)) == 384
    assert model.num_vision_tokens((2000, 500)) == 512


def test_released_config_json_parses_offline(tmp_path):
    # The released instruct-interleave-r-v1.5 config.json
    # (Salesforce/xgen-mm-phi3-mini-instruct-interleave-r-v1.5): only the non-default fields.
    released = {
        "architectures": ["XGenMMModelForConditionalGeneration"],
        "model_type": "xgenmm",
        "text_config": {
            "initial_tokenizer_len": 32012,
            "model_type": "phi3",
            "sliding_window": 2047,
            "torch_dtype": "bfloat16",
        },
        "vision_encoder_config": {
            "anyres_patch_sampling": True,
            "image_aspect_ratio": "anyres",
            "model_type": "xgenmm_vision_encoder",
        },
        "vision_tokenizer_config": {"model_type": "xgenmm_vision_tokenizer"},
        "torch_dtype": "bfloat16",
    }
    (tmp_path / "config.json").write_text(json.dumps(released))
    cfg = XGenMMConfig.from_pretrained(tmp_path)
    assert cfg.vision_config.hidden_size == 1152 and cfg.vision_config.num_hidden_layers == 27
    assert cfg.vision_config.patch_size == 14 and cfg.vision_config.image_size == 384
    assert cfg.text_config.hidden_size == 3072 and cfg.text_config.vocab_size == 32064
    assert cfg.text_config.sliding_window == 2047
    assert cfg.sampler_config.num_latents == 128 and cfg.sampler_config.dim_inner == 3072
    assert cfg.anyres_grids == [[384, 768], [768, 384], [768, 768], [1152, 384], [384, 1152]]
    assert cfg.initial_tokenizer_len == 32012 and cfg.dtype == torch.bfloat16
    assert cfg == XGenMMConfig(dtype="bfloat16", text_config=phi3_mini_config(dtype="bfloat16"))


def test_config_round_trips_both_layouts(config):
    assert XGenMMConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()
    released = config.to_released_dict()
    assert released["vision_encoder_config"]["siglip_config"]["hidden_size"] == 32
    assert released["vision_tokenizer_config"]["depth"] == 2
    assert released["text_config"]["initial_tokenizer_len"] == config.initial_tokenizer_len
    back = XGenMMConfig.from_dict(released)
    assert back.to_dict()["vision_config"] == config.to_dict()["vision_config"]
    assert back.sampler_config == config.sampler_config
    assert back.text_config.hidden_size == 64 and back.text_config.vocab_size == config.text_config.vocab_size


def test_config_errors(tmp_path):
    with pytest.raises(OSError, match="config.json"):
        XGenMMConfig.from_pretrained(tmp_path)
    bad = {
        "vision_encoder_config": {"model_name": "openai/clip-vit-large"},
        "text_config": {"model_type": "phi3"},
    }
    (tmp_path / "config.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="only 'google/siglip-so400m-patch14-384' is built in"):
        XGenMMConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="dim_inner"):
        tiny_config(initial_len=100, sampler_config={"dim": 32, "dim_inner": 48})
