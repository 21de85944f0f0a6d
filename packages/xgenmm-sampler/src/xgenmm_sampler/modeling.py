"""Perceiver resampler of xGen-MM (BLIP-3): a variable set of vision features → a fixed set of tokens.

Behaviour and parameter names follow the released checkpoint (LAVIS
`open_flamingo/src/helpers.py`, branch xgen-mm): the `vision_tokenizer.*` tensors load with `strict=True`.

Parts before whole: attention kernels → `PerceiverAttention` → `feed_forward` → `PerceiverResampler`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn
from torch.utils.checkpoint import checkpoint

from .configuration import PerceiverResamplerConfig

ATTENTION_IMPLS = ("sdpa", "math")


def sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None
) -> torch.Tensor:
    """Fused attention. q `(B, H, n, d)`, k/v `(B, H, S, d)`, key_mask `(B, 1, 1, S)` bool (True = attend) or None.

    Scale d^-0.5 (SDPA's default). Returns `(B, H, n, d)`.
    """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)


def math_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None
) -> torch.Tensor:
    """The original's explicit formulation: same arguments and result as `sdpa_attention`.

    Materialises the `(B, H, n, S)` score matrix: q scaled by d^-0.5, masked keys set to -inf, the detached row
    max subtracted, softmax, weighted sum of v.
    """
    q = q * q.shape[-1] ** -0.5
    scores = q @ k.transpose(-1, -2)  # (B, H, n, S)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask, float("-inf"))
    scores = scores - scores.amax(dim=-1, keepdim=True).detach()
    return scores.softmax(dim=-1) @ v


_ATTENTION = {"sdpa": sdpa_attention, "math": math_attention}


class PerceiverAttention(nn.Module):
    """Latents attend to [media ; latents]. State-dict names: norm_media, norm_latents, to_q, to_kv, to_out."""

    def __init__(self, dim: int, dim_head: int = 96, heads: int = 16):
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)  # first half K, second half V
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        latents: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        attention_impl: str = "sdpa",
    ) -> torch.Tensor:
        """
        Axes: b = groups, v = media tokens, n = latents, s = v + n keys, h = heads, d = dim_head, D = dim.

        x `(b, v, D)`, latents `(b, n, D)`, key_mask `(b, 1, 1, s)` bool or None → `(b, n, D)`.
        """
        x = self.norm_media(x)
        latents = self.norm_latents(latents)
        q = self.to_q(latents)
        # Unlike plain cross-attention, the latents also supply keys and values.
        k, v = self.to_kv(torch.cat((x, latents), dim=-2)).chunk(2, dim=-1)
        q, k, v = (rearrange(t, "b s (h d) -> b h s d", h=self.heads) for t in (q, k, v))
        out = _ATTENTION[attention_impl](q, k, v, key_mask)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


def feed_forward(dim: int, mult: int = 4) -> nn.Sequential:
    """LayerNorm → Linear (no bias) → exact GELU → Linear (no bias); indices 0, 1, 3 hold the weights."""
    inner = dim * mult
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, inner, bias=False),
        nn.GELU(),
        nn.Linear(inner, dim, bias=False),
    )


class PerceiverResampler(nn.Module):
    """Maps each group of `V` vision features to `num_latents` tokens of width `dim_inner or dim`.

    Args:
        dim: width of the input features and of the latents (1152 for SigLIP so400m).
        dim_inner: output width (3072 for Phi-3-mini); `None` keeps `dim`.
        num_latents, depth, heads, dim_head, ff_mult: see `PerceiverResamplerConfig`.
        attention_impl: `"sdpa"` (default, `F.scaled_dot_product_attention`) or `"math"` (the original's explicit
            softmax, kept for comparison and debugging). Not part of the config; settable as an attribute.

    Attributes:
        gradient_checkpointing: when True and in training mode, every layer is recomputed in the backward pass
            (non-reentrant `torch.utils.checkpoint`).
    """

    def __init__(
        self,
        dim: int,
        dim_inner: int | None = None,
        num_latents: int = 128,
        depth: int = 6,
        heads: int = 16,
        dim_head: int = 96,
        ff_mult: int = 4,
        attention_impl: str = "sdpa",
    ):
        super().__init__()
        self.config = PerceiverResamplerConfig(
            dim=dim,
            dim_inner=dim_inner,
            num_latents=num_latents,
            depth=depth,
            heads=heads,
            dim_head=dim_head,
            ff_mult=ff_mult,
        )
        self.dim = dim
        self.num_latents = num_latents
        self.attention_impl = attention_impl
        self.gradient_checkpointing = False

        self.latents = nn.Parameter(torch.randn(num_latents, dim))
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [PerceiverAttention(dim, dim_head=dim_head, heads=heads), feed_forward(dim, ff_mult)]
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.projection = nn.Linear(dim, dim_inner if dim_inner is not None else dim)

    @classmethod
    def from_config(cls, config: PerceiverResamplerConfig | dict) -> PerceiverResampler:
        """Build from a `PerceiverResamplerConfig` or its dict form."""
        if isinstance(config, dict):
            config = PerceiverResamplerConfig.from_dict(config)
        return cls(**config.to_dict())

    @property
    def attention_impl(self) -> str:
        """ "sdpa" (fused kernel) or "math" (explicit softmax): how the cross-attention is computed; settable."""
        return self._attention_impl

    @attention_impl.setter
    def attention_impl(self, value: str) -> None:
        if value not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {value!r}")
        self._attention_impl = value

    def _layer(
        self, index: int, x: torch.Tensor, latents: torch.Tensor, key_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """One residual (attention, feed-forward) layer. latents `(b, n, D)` → `(b, n, D)`."""
        attn, ff = self.layers[index]
        latents = attn(x, latents, key_mask, self.attention_impl) + latents
        return ff(latents) + latents

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Axes: G = groups (image crops/chunks), V = tokens per group, D = dim, n = num_latents, D' = dim_inner or dim.

        Args:
            x: `(G, V, D)`, or the reference's `(G, T, F, V, D)` whose `F·V` tokens form one set per (G, T).
            mask: `(G, V)` (or `(G, F·V)` for the 5-D form) bool or 0/1, 1 = attend; None = attend to all.
                The latent keys are always attendable, so a fully masked group still gives finite output.

        Returns:
            `(G, n, D')` for 3-D input, `(G, T, n, D')` for 5-D input (as the reference).
        """
        if x.ndim not in (3, 5):
            raise ValueError(
                f"PerceiverResampler expects x of shape (G, V, D) or (G, T, F, V, D), got {tuple(x.shape)}"
            )
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"PerceiverResampler: x has feature width {x.shape[-1]}, expected dim={self.dim}"
            )
        five_d = x.ndim == 5
        num_groups, num_times = x.shape[0], (x.shape[1] if five_d else 1)
        if five_d:
            x = rearrange(x, "g t f v d -> (g t) (f v) d")

        key_mask = None
        if mask is not None:
            if mask.ndim == 3:  # (G, F, V)
                mask = rearrange(mask, "g f v -> g (f v)")
            if tuple(mask.shape) != (num_groups, x.shape[1]):
                raise ValueError(
                    f"PerceiverResampler: mask has shape {tuple(mask.shape)}, expected {(num_groups, x.shape[1])} "
                    "(groups, tokens per group)"
                )
            mask = mask.to(device=x.device, dtype=torch.bool)
            if num_times > 1:
                mask = repeat(mask, "g s -> (g t) s", t=num_times)
            latent_keys = mask.new_ones(mask.shape[0], self.num_latents)
            key_mask = rearrange(torch.cat((mask, latent_keys), dim=1), "b s -> b 1 1 s")

        latents = repeat(self.latents, "n d -> b n d", b=x.shape[0])
        use_checkpoint = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for index in range(len(self.layers)):
            if use_checkpoint:
                latents = checkpoint(self._layer, index, x, latents, key_mask, use_reentrant=False)
            else:
                latents = self._layer(index, x, latents, key_mask)

        out = self.projection(self.norm(latents))  # (b, n, D')
        if five_d:
            out = rearrange(out, "(g t) n d -> g t n d", g=num_groups)
        return out


__all__ = ["PerceiverAttention", "PerceiverResampler", "feed_forward", "math_attention", "sdpa_attention"]
