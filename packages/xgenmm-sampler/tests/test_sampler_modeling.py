import pytest
import torch
from safetensors.torch import load_file, save_file

from xgenmm_sampler import PerceiverResampler, PerceiverResamplerConfig


def make(cfg, seed=0, **kw):
    torch.manual_seed(seed)
    return PerceiverResampler.from_config(cfg) if not kw else PerceiverResampler(**cfg.to_dict(), **kw)


def inputs(cfg, groups=3, tokens=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(groups, tokens, cfg.dim, generator=g)
    mask = torch.rand(groups, tokens, generator=g) > 0.3
    mask[0] = True  # a base group: everything visible
    mask[-1] = False  # a chunk that is all padding
    return x, mask


# --- shapes and the checkpoint layout -------------------------------------------------------------------


def test_shapes_3d_and_5d(tiny_config):
    model = make(tiny_config).eval()
    x, mask = inputs(tiny_config)
    out = model(x, mask)
    assert out.shape == (3, tiny_config.num_latents, tiny_config.dim_inner)
    # The reference's (G, T, F, V, D) form with T = F = 1 gives (G, T, n, D') and the same numbers.
    out5 = model(x[:, None, None], mask)
    assert out5.shape == (3, 1, tiny_config.num_latents, tiny_config.dim_inner)
    torch.testing.assert_close(out5[:, 0], out, rtol=0, atol=1e-6)


def test_5d_with_time_and_frames(tiny_config):
    model = make(tiny_config).eval()
    x = torch.randn(2, 3, 2, 5, tiny_config.dim)  # G=2, T=3, F=2, V=5
    mask = torch.rand(2, 10) > 0.5
    out = model(x, mask)
    assert out.shape == (2, 3, tiny_config.num_latents, tiny_config.dim_inner)
    # Each (g, t) is one independent set of F*V tokens sharing the group's mask.
    for t in range(3):
        torch.testing.assert_close(out[:, t], model(x[:, t].flatten(1, 2), mask), rtol=0, atol=1e-6)
    torch.testing.assert_close(model(x, mask.view(2, 2, 5)), out, rtol=0, atol=0)


def test_preset_parameter_count_on_meta():
    with torch.device("meta"):
        model = PerceiverResampler.from_config(PerceiverResamplerConfig.xgenmm())
    assert sum(p.numel() for p in model.parameters()) == 109_901_568


def expected_xgenmm_shapes() -> dict[str, tuple[int, ...]]:
    """The `vision_tokenizer.*` tensors of the released checkpoint, prefix removed."""
    shapes = {"latents": (128, 1152)}
    for i in range(6):
        p = f"layers.{i}"
        for norm in ("norm_media", "norm_latents"):
            shapes[f"{p}.0.{norm}.weight"] = shapes[f"{p}.0.{norm}.bias"] = (1152,)
        shapes[f"{p}.0.to_q.weight"] = (1536, 1152)
        shapes[f"{p}.0.to_kv.weight"] = (3072, 1152)
        shapes[f"{p}.0.to_out.weight"] = (1152, 1536)
        shapes[f"{p}.1.0.weight"] = shapes[f"{p}.1.0.bias"] = (1152,)
        shapes[f"{p}.1.1.weight"] = (4608, 1152)
        shapes[f"{p}.1.3.weight"] = (1152, 4608)
    shapes["norm.weight"] = shapes["norm.bias"] = (1152,)
    shapes["projection.weight"] = (3072, 1152)
    shapes["projection.bias"] = (3072,)
    return shapes


def test_preset_state_dict_names_and_shapes():
    with torch.device("meta"):
        model = PerceiverResampler.from_config(PerceiverResamplerConfig.xgenmm())
    got = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert got == expected_xgenmm_shapes()
    # A checkpoint with exactly these tensors loads strictly (names as in the released `vision_tokenizer.*`).
    checkpoint = {name: torch.zeros(shape, device="meta") for name, shape in expected_xgenmm_shapes().items()}
    model.load_state_dict(checkpoint, strict=True, assign=True)


def test_safetensors_round_trip_with_checkpoint_prefix(tiny_config, tmp_path):
    model = make(tiny_config, seed=0).eval()
    path = tmp_path / "sampler.safetensors"
    save_file({f"vision_tokenizer.{k}": v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = load_file(str(path))
    other = make(tiny_config, seed=123).eval()
    x, mask = inputs(tiny_config)
    assert not torch.allclose(other(x, mask), model(x, mask))
    prefix = "vision_tokenizer."
    other.load_state_dict({k.removeprefix(prefix): v for k, v in loaded.items()}, strict=True)
    torch.testing.assert_close(other(x, mask), model(x, mask), rtol=0, atol=0)


# --- behaviour: equality with the explicit-math reference ------------------------------------------------


@pytest.mark.parametrize("impl", ["sdpa", "math"])
@pytest.mark.parametrize("with_mask", [True, False])
def test_matches_explicit_reference_fp32(tiny_config, reference, impl, with_mask):
    model = make(tiny_config, attention_impl=impl).eval()
    x, mask = inputs(tiny_config, tokens=33)
    mask = mask if with_mask else None
    with torch.no_grad():
        expected = reference(model.state_dict(), x, mask, tiny_config.heads)
        got = model(x, mask)
    assert (got - expected).abs().max().item() <= 1e-5


def test_bf16_within_stated_tolerance(tiny_config, reference):
    """bf16 weights and inputs: max |SDPA - fp32 reference| <= 3e-2 (outputs are O(2)), mean <= 5e-3,
    and no worse than twice the explicit formulation's own bf16 error."""
    model = make(tiny_config).eval()
    x, mask = inputs(tiny_config, tokens=40)
    with torch.no_grad():
        expected = reference(model.state_dict(), x, mask, tiny_config.heads)
        model.to(torch.bfloat16)
        sdpa = model(x.bfloat16(), mask).float()
        model.attention_impl = "math"
        math = model(x.bfloat16(), mask).float()
    err_sdpa = (sdpa - expected).abs()
    err_math = (math - expected).abs().max().item()
    assert err_sdpa.max().item() <= 3e-2
    assert err_sdpa.mean().item() <= 5e-3
    assert err_sdpa.max().item() <= 2 * err_math + 1e-3


def test_masked_positions_have_no_influence(tiny_config):
    model = make(tiny_config).eval()
    x, mask = inputs(tiny_config)
    changed = torch.where(mask[..., None], x, 100 * torch.randn_like(x))
    assert not torch.equal(changed, x)
    torch.testing.assert_close(model(changed, mask), model(x, mask), rtol=0, atol=1e-6)
    # ...while changing a visible position does change the output of that group.
    visible = x.clone()
    visible[0, 0] += 1.0
    assert not torch.allclose(model(visible, mask)[0], model(x, mask)[0])


def test_fully_masked_group_is_finite_and_ignores_media(tiny_config):
    model = make(tiny_config).eval()
    x, mask = inputs(tiny_config)
    out = model(x, mask)
    assert torch.isfinite(out).all()
    # With no visible media the latents attend only to themselves: the output is the same for any features.
    torch.testing.assert_close(model(torch.randn_like(x), mask)[-1], out[-1], rtol=0, atol=1e-6)


def test_zero_one_mask_equals_bool_mask(tiny_config):
    model = make(tiny_config).eval()
    x, mask = inputs(tiny_config)
    torch.testing.assert_close(model(x, mask.long()), model(x, mask), rtol=0, atol=0)
    torch.testing.assert_close(model(x, mask.float()), model(x, mask), rtol=0, atol=0)


def test_gradients_reach_every_parameter(tiny_config):
    model = make(tiny_config).train()
    x, mask = inputs(tiny_config)
    model(x, mask).square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


# --- an all-True mask is the same as no mask ------------------------------------------------------------


def test_sdpa_without_mask_same_output_and_grads_as_all_true_mask(tiny_config):
    x, _ = inputs(tiny_config, tokens=33)
    # One attention layer: no key mask vs an all-True key mask, through the same SDPA kernel.
    attn = make(tiny_config).layers[0][0]
    latents = torch.randn(x.shape[0], tiny_config.num_latents, tiny_config.dim)
    key_mask = torch.ones(x.shape[0], 1, 1, x.shape[1] + tiny_config.num_latents, dtype=torch.bool)
    results = []
    for km in (None, key_mask):
        xs, lat = x.clone().requires_grad_(True), latents.clone().requires_grad_(True)
        attn.zero_grad(set_to_none=True)
        out = attn(xs, lat, km, "sdpa")
        out.square().sum().backward()
        results.append([out, xs.grad, lat.grad] + [p.grad for p in attn.parameters()])
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # The whole model: SDPA against the explicit-math path, both given the all-True mask.
    all_visible = torch.ones(x.shape[:2], dtype=torch.bool)
    grads = {}
    for impl in ("sdpa", "math"):
        model = make(tiny_config, attention_impl=impl).train()
        xs = x.clone().requires_grad_(True)
        out = model(xs, all_visible)
        out.square().mean().backward()
        grads[impl] = {"out": out, "x": xs.grad} | {n: p.grad for n, p in model.named_parameters()}
    for name, expected in grads["math"].items():
        torch.testing.assert_close(grads["sdpa"][name], expected, rtol=1e-4, atol=1e-5, msg=name)


# --- gradient checkpointing -----------------------------------------------------------------------------


def test_gradient_checkpointing_same_grads_and_recomputes(tiny_config):
    x, mask = inputs(tiny_config)
    x.requires_grad_(True)
    grads = {}
    calls = {}
    for ckpt in (False, True):
        model = make(tiny_config).train()
        model.gradient_checkpointing = ckpt
        seen = calls[ckpt] = []
        model.layers[0][0].register_forward_hook(lambda *_, seen=seen: seen.append(1))
        model(x, mask).square().mean().backward()
        grads[ckpt] = {n: p.grad.clone() for n, p in model.named_parameters()}
        grads[ckpt]["x"] = x.grad.clone()
        x.grad = None
    # Checkpointing re-runs every layer's forward once during backward.
    assert {k: len(v) for k, v in calls.items()} == {False: 1, True: 2}
    for name, grad in grads[False].items():
        torch.testing.assert_close(grads[True][name], grad, rtol=0, atol=1e-6, msg=name)


def test_gradient_checkpointing_off_in_eval(tiny_config):
    model = make(tiny_config).eval()
    model.gradient_checkpointing = True
    calls = []
    model.layers[0][0].register_forward_hook(lambda *_: calls.append(1))
    x, mask = inputs(tiny_config)
    model(x, mask).sum().backward()
    assert len(calls) == 1


# --- bad input --------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors(tiny_config):
    model = make(tiny_config)
    x, mask = inputs(tiny_config)
    with pytest.raises(ValueError, match=r"\(G, V, D\) or \(G, T, F, V, D\)"):
        model(x[0])
    with pytest.raises(ValueError, match="feature width 63, expected dim=64"):
        model(x[..., :63])
    with pytest.raises(ValueError, match=r"mask has shape \(3, 19\), expected \(3, 20\)"):
        model(x, mask[:, :19])
    with pytest.raises(ValueError, match="attention_impl must be one of"):
        model.attention_impl = "flash"
