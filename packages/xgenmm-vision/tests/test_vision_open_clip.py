"""OpenClipVisionEncoder on tiny open_clip towers registered offline (pretrained=None)."""

import json

import pytest
import torch

open_clip = pytest.importorskip("open_clip", reason="needs the open-clip extra (open_clip_torch)")

from xgenmm_vision import OpenClipVisionEncoder  # noqa: E402

TINY_TEXT = {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}
TINY_CONFIGS = {
    # open_clip's own VisionTransformer (class token + 4x4 patch tokens)
    "xgenmm-test-tiny-vit": {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": TINY_TEXT,
    },
    # a tiny timm tower (how ViT-SO400M-14-SigLIP-384 is built) with a class prefix token, built at 160 px
    # by open_clip and resized to the configured 32 px by the encoder
    "xgenmm-test-tiny-timm-siglip": {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 32,
            "timm_model_name": "test_vit",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
        },
        "text_cfg": TINY_TEXT,
    },
}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("open_clip_configs")
    for name, config in TINY_CONFIGS.items():
        (folder / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return list(TINY_CONFIGS)


def test_open_clip_vit_tower_patch_tokens(tiny_models):
    torch.manual_seed(0)
    encoder = OpenClipVisionEncoder.from_config("xgenmm-test-tiny-vit")
    assert (encoder.hidden_size, encoder.image_size, encoder.patch_size, encoder.tokens_per_crop) == (
        32,
        32,
        8,
        16,
    )
    pixels = torch.randn(3, 3, 32, 32)
    out = encoder(pixels)
    assert out.shape == (3, 16, 32)  # class token dropped
    assert encoder.frozen and not out.requires_grad
    # same as running the tower by hand: embeddings -> transformer -> ln_post, minus the class token
    visual = encoder.visual
    expected = visual.ln_post(visual.transformer(visual._embeds(pixels)))[:, 1:]
    torch.testing.assert_close(out, expected)


def test_open_clip_unfreeze(tiny_models):
    encoder = OpenClipVisionEncoder.from_config("xgenmm-test-tiny-vit").unfreeze()
    encoder(torch.randn(2, 3, 32, 32)).square().mean().backward()
    assert encoder.visual.conv1.weight.grad is not None


def test_open_clip_timm_tower(tiny_models):
    encoder = OpenClipVisionEncoder.from_config("xgenmm-test-tiny-timm-siglip")
    trunk = encoder.visual.trunk
    assert encoder.tokens_per_crop == (32 // 16) ** 2
    pixels = torch.randn(2, 3, 32, 32)
    out = encoder(pixels)
    assert out.shape == (2, encoder.tokens_per_crop, encoder.hidden_size)
    # timm's forward_features is post-norm with prefix tokens first
    torch.testing.assert_close(out, trunk.forward_features(pixels)[:, trunk.num_prefix_tokens :])


def test_open_clip_pretrained_fails_clearly_offline(tiny_models):
    with pytest.raises(OSError, match="could not load open_clip weights"):
        OpenClipVisionEncoder.from_pretrained("xgenmm-test-tiny-vit", pretrained="no-such-tag")
