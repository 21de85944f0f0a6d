"""Configuration of the perceiver resampler (xGen-MM "vision token sampler").

Defaults are the released xGen-MM (BLIP-3) phi3-mini values (LAVIS `open_flamingo/src/factory.py`): SigLIP
so400m features of width 1152 are turned into 128 tokens of the Phi-3 embedding width 3072.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class PerceiverResamplerConfig:
    """Hyper-parameters of `PerceiverResampler`.

    Args:
        dim: width of the input (vision) features and of the latents.
        dim_inner: width of the output tokens (the language model's embedding width); `None` keeps `dim`.
        num_latents: number of output tokens per group.
        depth: number of (cross-attention, feed-forward) layers.
        heads: attention heads.
        dim_head: width of one head (attention inner width = heads * dim_head).
        ff_mult: feed-forward hidden width = ff_mult * dim.
    """

    dim: int = 1152
    dim_inner: int | None = 3072
    num_latents: int = 128
    depth: int = 6
    heads: int = 16
    dim_head: int = 96
    ff_mult: int = 4

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "dim_inner" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"PerceiverResamplerConfig.{field.name} must be a positive int, got {value!r}"
                )

    @classmethod
    def xgenmm(cls) -> PerceiverResamplerConfig:
        """The released xGen-MM phi3-mini sampler: 1152 → 128 × 3072, 6 layers, 16 × 96 heads (109,901,568 params)."""
        return cls(dim=1152, dim_inner=3072, num_latents=128, depth=6, heads=16, dim_head=96, ff_mult=4)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PerceiverResamplerConfig:
        """Build from a dict such as `to_dict()` returns; unknown keys raise a `ValueError` naming them."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"PerceiverResamplerConfig.from_dict: unknown keys {unknown}; expected a subset of {sorted(known)}"
            )
        return cls(**d)


__all__ = ["PerceiverResamplerConfig"]
