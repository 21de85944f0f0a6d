"""SigLIP vision encoder of xGen-MM (LAVIS `open_flamingo/src/factory.py`, the "google" encoder), on
transformers' native `SiglipVisionModel` (no remote code).

In transformers 5 `SiglipVisionModel` holds `embeddings`, `encoder`, `post_layernorm` and `head` directly, which
are exactly the names of the released checkpoint's `vision_encoder.*` tensors (LAVIS kept the 4.x
`SiglipVisionTransformer`, i.e. `SiglipModel(...).vision_model`). `SiglipVisionEncoder` subclasses it, so those
tensors load strictly into it and `google/siglip-so400m-patch14-384` (a full `SiglipModel` checkpoint whose keys
start with `vision_model.`) loads with `from_pretrained`.
"""

from __future__ import annotations

import os

import torch
from huggingface_hub import try_to_load_from_cache
from transformers import SiglipVisionConfig, SiglipVisionModel

from .freezing import Freezable

SIGLIP_SO400M = "google/siglip-so400m-patch14-384"


def siglip_so400m_config(**overrides) -> SiglipVisionConfig:
    """Vision config of `google/siglip-so400m-patch14-384`, built offline: 27 layers, hidden 1152, MLP 4304,
    16 heads, 384 px, patch 14 (a 27×27 = 729 token grid), attention-pooling head included (428,225,600 params)."""
    values = dict(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=27,
        num_attention_heads=16,
        num_channels=3,
        image_size=384,
        patch_size=14,
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6,
        attention_dropout=0.0,
        vision_use_head=True,
    )
    values.update(overrides)
    return SiglipVisionConfig(**values)


def _hub_offline() -> bool:
    return any(
        os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _check_available(name_or_path: str) -> None:
    """Fail fast, naming what to download, when `name_or_path` is neither a local folder nor in the HF cache
    while the hub is offline."""
    if os.path.isdir(name_or_path):
        if not os.path.isfile(os.path.join(name_or_path, "config.json")):
            raise OSError(f"{name_or_path} is a folder but has no config.json; it is not a SigLIP checkpoint")
        return
    if os.path.exists(name_or_path) or name_or_path.startswith((".", "/", "~")):
        raise OSError(f"{name_or_path} is not a checkpoint folder (expected a folder with config.json)")
    cached = try_to_load_from_cache(name_or_path, "config.json")
    if isinstance(cached, str):
        return
    if _hub_offline():
        raise OSError(
            f"SigLIP weights {name_or_path!r} are not in the local Hugging Face cache and the hub is offline "
            f"(HF_HUB_OFFLINE=1). Download them on a machine with network access, e.g. "
            f"`hf download {name_or_path}` (then copy the cache), or pass a local checkpoint folder."
        )


class SiglipVisionEncoder(Freezable, SiglipVisionModel):
    """SigLIP vision tower returning `last_hidden_state` (after `post_layernorm`): (N, tokens, hidden).

    Parameters: `embeddings.*`, `encoder.layers.*`, `post_layernorm.*`, `head.*` (the pooling head is kept so the
    checkpoint loads strictly; the features do not use it and it is not computed). Frozen by default: while no
    parameter requires grad, `forward` runs under `torch.no_grad()` (as LAVIS does); `unfreeze()` makes it trainable.
    """

    def __init__(self, config: SiglipVisionConfig):
        super().__init__(config)
        self.freeze()

    @classmethod
    def from_config(cls, config: SiglipVisionConfig | None = None, **kwargs) -> SiglipVisionEncoder:
        """Build with random weights (no download); `config` defaults to `siglip_so400m_config()`."""
        return cls._from_config(config if config is not None else siglip_so400m_config(), **kwargs)

    @classmethod
    def from_pretrained(cls, name_or_path: str = SIGLIP_SO400M, *args, **kwargs) -> SiglipVisionEncoder:
        """Load a SigLIP checkpoint: a full `SiglipModel` (hub id or folder; its vision tower is taken) or a saved
        `SiglipVisionModel` / `SiglipVisionEncoder`. Extra keyword arguments go to transformers (`dtype`, ...).
        Raises `OSError` at once when offline and not cached."""
        _check_available(str(name_or_path))
        try:
            model = super().from_pretrained(name_or_path, *args, **kwargs)
        except OSError as err:
            raise OSError(
                f"could not load SigLIP weights {name_or_path!r}: {err}. Download them first "
                f"(`hf download {name_or_path}`) or pass a local checkpoint folder."
            ) from err
        return model.freeze()

    @property
    def hidden_size(self) -> int:
        """Width of a patch token."""
        return self.config.hidden_size

    @property
    def image_size(self) -> int:
        """Side S of a square crop, in pixels."""
        return self.config.image_size

    @property
    def patch_size(self) -> int:
        """Side of a patch, in pixels."""
        return self.config.patch_size

    @property
    def tokens_per_crop(self) -> int:
        """Tokens per S×S crop: (image_size // patch_size)² (729 for so400m-384)."""
        return (self.config.image_size // self.config.patch_size) ** 2

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """pixel_values (N, 3, S, S) → last_hidden_state (N, (S // patch)², hidden)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            hidden = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
            hidden = self.encoder(inputs_embeds=hidden).last_hidden_state
            return self.post_layernorm(hidden)


__all__ = ["SIGLIP_SO400M", "SiglipVisionEncoder", "siglip_so400m_config"]
