import json

import pytest

from xgenmm_sampler import PerceiverResampler, PerceiverResamplerConfig


def test_xgenmm_preset_values():
    cfg = PerceiverResamplerConfig.xgenmm()
    assert cfg.to_dict() == dict(
        dim=1152, dim_inner=3072, num_latents=128, depth=6, heads=16, dim_head=96, ff_mult=4
    )
    # The dataclass defaults are the released model as well (docs/interfaces.md).
    assert PerceiverResamplerConfig() == cfg


def test_dict_round_trip_through_json(tiny_config):
    d = json.loads(json.dumps(tiny_config.to_dict()))
    assert PerceiverResamplerConfig.from_dict(d) == tiny_config
    none_inner = PerceiverResamplerConfig(dim=8, dim_inner=None)
    assert PerceiverResamplerConfig.from_dict(none_inner.to_dict()).dim_inner is None


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown keys \['vis_feature_dim'\]"):
        PerceiverResamplerConfig.from_dict({"dim": 8, "vis_feature_dim": 8})


@pytest.mark.parametrize("field,value", [("dim", 0), ("heads", -1), ("depth", 2.0), ("dim_inner", True)])
def test_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        PerceiverResamplerConfig(**{field: value})


def test_module_config_and_from_config(tiny_config):
    model = PerceiverResampler.from_config(tiny_config)
    assert model.config == tiny_config
    from_dict = PerceiverResampler.from_config(tiny_config.to_dict())
    assert from_dict.config == tiny_config
    assert from_dict.projection.out_features == tiny_config.dim_inner
    assert len(from_dict.layers) == tiny_config.depth
    # dim_inner=None keeps the input width.
    assert PerceiverResampler(16, num_latents=4, depth=1, heads=2, dim_head=8).projection.out_features == 16
