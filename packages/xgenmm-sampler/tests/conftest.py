"""Shared fixtures and the explicit-math reference of the perceiver resampler (LAVIS
`open_flamingo/src/helpers.py`, `PerceiverResampler`).

The reference is written from the original's description, independently of `xgenmm_sampler.modeling`: it runs
on a plain state dict with `F.layer_norm`/matmuls, masks keys with -inf, subtracts the detached row max and
applies softmax, as the original does.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xgenmm_sampler import PerceiverResamplerConfig

TINY = dict(dim=64, dim_inner=48, num_latents=8, depth=2, heads=4, dim_head=16, ff_mult=4)


@pytest.fixture
def tiny_config() -> PerceiverResamplerConfig:
    return PerceiverResamplerConfig(**TINY)


def reference_perceiver(
    sd: dict[str, torch.Tensor], x: torch.Tensor, mask: torch.Tensor | None, heads: int
) -> torch.Tensor:
    """Explicit-math perceiver. sd: `PerceiverResampler.state_dict()`; x `(G, V, D)`; mask `(G, V)` → `(G, n, D')`."""
    dim = x.shape[-1]
    depth = len({key.split(".")[1] for key in sd if key.startswith("layers.")})

    def ln(t, name):
        return F.layer_norm(t, (dim,), sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-5)

    def split_heads(t):  # (G, S, H*d) -> (G, H, S, d)
        return t.reshape(t.shape[0], t.shape[1], heads, -1).permute(0, 2, 1, 3)

    groups = x.shape[0]
    latents = sd["latents"].unsqueeze(0).expand(groups, -1, -1)
    num_latents = latents.shape[1]
    for i in range(depth):
        p = f"layers.{i}"
        media_n = ln(x, f"{p}.0.norm_media")
        lat_n = ln(latents, f"{p}.0.norm_latents")
        q = split_heads(lat_n @ sd[f"{p}.0.to_q.weight"].T)
        kv = torch.cat([media_n, lat_n], dim=1) @ sd[f"{p}.0.to_kv.weight"].T
        k, v = (split_heads(t) for t in kv.chunk(2, dim=-1))
        q = q * q.shape[-1] ** -0.5
        sim = torch.einsum("ghid,ghjd->ghij", q, k)
        if mask is not None:
            keys = torch.cat([mask.bool(), torch.ones(groups, num_latents, dtype=torch.bool)], dim=1)
            sim = sim.masked_fill(~keys[:, None, None, :], float("-inf"))
        sim = sim - sim.amax(dim=-1, keepdim=True).detach()
        attn = sim.softmax(dim=-1)
        out = torch.einsum("ghij,ghjd->ghid", attn, v)
        out = out.permute(0, 2, 1, 3).reshape(groups, num_latents, -1)
        latents = out @ sd[f"{p}.0.to_out.weight"].T + latents
        hidden = F.gelu(ln(latents, f"{p}.1.0") @ sd[f"{p}.1.1.weight"].T, approximate="none")
        latents = hidden @ sd[f"{p}.1.3.weight"].T + latents
    return F.linear(ln(latents, "norm"), sd["projection.weight"], sd["projection.bias"])


@pytest.fixture
def reference():
    return reference_perceiver
