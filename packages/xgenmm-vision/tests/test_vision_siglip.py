"""SigLIP vision encoder on transformers' SiglipVisionModel (LAVIS `open_flamingo/src/factory.py`, the
"google" encoder)."""

import pytest
import torch
from transformers import SiglipConfig, SiglipModel, SiglipVisionConfig, SiglipVisionModel

from xgenmm_vision import (
    AnyResImageProcessor,
    SiglipVisionEncoder,
    regroup_anyres_features,
    siglip_so400m_config,
)


def tiny_config():
    return SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )


def test_tiny_encoder_token_counts_and_frozen():
    torch.manual_seed(0)
    encoder = SiglipVisionEncoder.from_config(tiny_config())
    assert (encoder.hidden_size, encoder.image_size, encoder.patch_size, encoder.tokens_per_crop) == (
        32,
        32,
        8,
        16,
    )
    pixels = torch.randn(3, 3, 32, 32, requires_grad=True)
    out = encoder(pixels)
    assert out.shape == (3, 16, 32)
    assert encoder.frozen and not any(p.requires_grad for p in encoder.parameters())
    assert not out.requires_grad  # run under no_grad: nothing flows back, not even to the input
    # equals the transformers model's last_hidden_state (post_layernorm applied)
    reference = SiglipVisionModel.forward(encoder, pixels).last_hidden_state
    torch.testing.assert_close(out, reference)


def test_unfreeze_gives_gradients_and_freeze_removes_them():
    encoder = SiglipVisionEncoder.from_config(tiny_config()).unfreeze()
    encoder(torch.randn(2, 3, 32, 32)).sum().backward()
    assert encoder.embeddings.patch_embedding.weight.grad is not None
    assert encoder.encoder.layers[0].mlp.fc1.weight.grad is not None
    encoder.zero_grad(set_to_none=True)
    encoder.freeze()
    out = encoder(torch.randn(2, 3, 32, 32))
    assert not out.requires_grad
    assert all(p.grad is None for p in encoder.parameters())


def test_processor_to_encoder_to_groups():
    processor = AnyResImageProcessor(base_size=32)
    encoder = SiglipVisionEncoder.from_config(tiny_config())
    from PIL import Image

    images = [Image.new("RGB", (64, 32), (200, 30, 30)), Image.new("RGB", (20, 90), (10, 200, 30))]
    batch = processor.batch(images)
    features = encoder(torch.cat(batch.pixel_values))
    groups, masks, n = regroup_anyres_features(features, batch.image_sizes, base_size=32, patch_size=8)
    assert n == [processor.num_crops(s) for s in batch.image_sizes] == [3, 4]
    assert groups.shape == (7, 16, 32) and masks.shape == (7, 16)


def test_so400m_on_meta_has_released_size_and_names():
    with torch.device("meta"):
        encoder = SiglipVisionEncoder.from_config(siglip_so400m_config())
    assert sum(p.numel() for p in encoder.parameters()) == 428_225_600
    assert encoder.tokens_per_crop == 729 and encoder.hidden_size == 1152
    shapes = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    assert shapes["embeddings.patch_embedding.weight"] == (1152, 3, 14, 14)
    assert shapes["embeddings.position_embedding.weight"] == (729, 1152)
    assert shapes["encoder.layers.26.self_attn.q_proj.weight"] == (1152, 1152)
    assert shapes["encoder.layers.26.mlp.fc1.weight"] == (4304, 1152)
    assert shapes["post_layernorm.weight"] == (1152,)
    assert shapes["head.probe"] == (1, 1, 1152)
    assert shapes["head.attention.in_proj_weight"] == (3456, 1152)
    assert shapes["head.mlp.fc2.weight"] == (1152, 4304)
    assert {k.split(".")[0] for k in shapes} == {"embeddings", "encoder", "post_layernorm", "head"}
    assert len(shapes) == 3 + 27 * 16 + 2 + 11  # no position_ids buffer (non-persistent)


def test_checkpoint_vision_encoder_tensors_load_strictly():
    # a released-style state dict: `vision_encoder.` + names, taken from another encoder
    source = SiglipVisionEncoder.from_config(tiny_config())
    checkpoint = {f"vision_encoder.{k}": v.clone() for k, v in source.state_dict().items()}
    target = SiglipVisionEncoder.from_config(tiny_config())
    prefix = "vision_encoder."
    target.load_state_dict({k[len(prefix) :]: v for k, v in checkpoint.items()}, strict=True)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(target(x), source(x))


def test_from_pretrained_full_siglip_checkpoint_folder(tmp_path):
    # google/siglip-so400m-patch14-384 is a full SiglipModel (text + vision, keys `vision_model.*`)
    config = SiglipConfig(
        vision_config=tiny_config().to_dict(),
        text_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            vocab_size=100,
            max_position_embeddings=16,
        ),
    )
    torch.manual_seed(0)
    full = SiglipModel(config)
    full.save_pretrained(tmp_path)
    encoder = SiglipVisionEncoder.from_pretrained(str(tmp_path))
    assert encoder.frozen
    for name, tensor in full.vision_model.state_dict().items():
        assert torch.equal(encoder.state_dict()[name], tensor), name
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(encoder(x), full.vision_model(x).last_hidden_state)


def test_from_pretrained_fails_fast_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(OSError, match="hf download google/siglip-so400m-patch14-384"):
        SiglipVisionEncoder.from_pretrained("google/siglip-so400m-patch14-384")
    with pytest.raises(OSError, match="no config.json"):
        SiglipVisionEncoder.from_pretrained(str(tmp_path))


def test_from_config_passes_dtype_and_stays_frozen():
    encoder = SiglipVisionEncoder.from_config(tiny_config(), dtype=torch.bfloat16)
    assert encoder.embeddings.patch_embedding.weight.dtype == torch.bfloat16 and encoder.frozen
    assert encoder(torch.randn(1, 3, 32, 32)).dtype == torch.bfloat16
    assert torch.get_default_dtype() == torch.float32
