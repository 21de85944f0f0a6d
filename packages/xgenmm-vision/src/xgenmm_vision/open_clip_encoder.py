"""Vision encoder on an open_clip visual tower (extra `open-clip`; LAVIS' non-"google" branch of
`open_flamingo/src/factory.py`).

Same contract as `SiglipVisionEncoder`: pixel_values (N, 3, S, S) → patch-token features (N, tokens, hidden) after
the tower's final norm, prefix (class) tokens dropped. Works for open_clip's own `VisionTransformer` towers and for
timm towers (e.g. `ViT-SO400M-14-SigLIP-384`). Parameter names are open_clip's (`visual.*`), so the released xGen-MM
checkpoint does not load into it; use `SiglipVisionEncoder` for that.

open_clip is imported only when an encoder is built (importing it takes seconds).
"""

from __future__ import annotations

import torch
from torch import nn

from .freezing import Freezable

DEFAULT_OPEN_CLIP_MODEL = "ViT-SO400M-14-SigLIP-384"


def _import_open_clip():
    try:
        import open_clip
    except ImportError as err:
        raise ImportError(
            "OpenClipVisionEncoder needs open_clip: `pip install 'xgenmm-vision[open-clip]'` "
            "(or `uv sync --extra open-clip`)"
        ) from err
    return open_clip


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


class OpenClipVisionEncoder(Freezable, nn.Module):
    """Wraps `open_clip.create_model(name).visual`. Frozen (and run under `torch.no_grad()`) by default."""

    def __init__(self, visual: nn.Module, model_name: str | None = None, config: dict | None = None):
        super().__init__()
        if not hasattr(visual, "forward_intermediates"):
            raise TypeError(
                f"{type(visual).__name__} has no forward_intermediates(); an open_clip visual tower is needed"
            )
        self.visual = visual
        self.model_name = model_name
        self.config = config or {}
        if hasattr(visual, "trunk"):  # timm tower
            trunk = visual.trunk
            if _pair(trunk.patch_embed.img_size) != _pair(visual.image_size):
                # open_clip builds some timm trunks at their default size; make it the configured one
                visual.set_input_size(_pair(visual.image_size))
            self._hidden_size = int(trunk.num_features)
            self._patch_size = _pair(trunk.patch_embed.patch_size)
            self._image_size = _pair(trunk.patch_embed.img_size)
        else:  # open_clip VisionTransformer
            self._hidden_size = int(visual.transformer.width)
            self._patch_size = _pair(visual.patch_size)
            self._image_size = _pair(visual.image_size)
        self.freeze()

    @classmethod
    def from_config(cls, model_name: str = DEFAULT_OPEN_CLIP_MODEL, **create_kwargs) -> OpenClipVisionEncoder:
        """Build the visual tower of open_clip model `model_name` with random weights (no download).
        Tiny test towers can be registered first with `open_clip.add_model_config(folder_or_json)`."""
        return cls._create(model_name, pretrained=None, **create_kwargs)

    @classmethod
    def from_pretrained(
        cls, model_name: str = DEFAULT_OPEN_CLIP_MODEL, pretrained: str = "webli", **create_kwargs
    ) -> OpenClipVisionEncoder:
        """Build the visual tower with weights: `pretrained` is an open_clip tag (downloaded from the hub) or a
        local checkpoint file; `model_name` may also be `hf-hub:org/repo`."""
        try:
            return cls._create(model_name, pretrained=pretrained, **create_kwargs)
        except (OSError, RuntimeError) as err:
            raise OSError(
                f"could not load open_clip weights {model_name!r} / {pretrained!r}: {err}. Download them first "
                f"(they come from the Hugging Face hub) or pass a local checkpoint file as `pretrained`."
            ) from err

    @classmethod
    def _create(cls, model_name: str, pretrained: str | None, **create_kwargs) -> OpenClipVisionEncoder:
        open_clip = _import_open_clip()
        model = open_clip.create_model(model_name, pretrained=pretrained, **create_kwargs)
        config = open_clip.get_model_config(model_name) if not model_name.startswith("hf-hub:") else None
        return cls(model.visual, model_name=model_name, config=config)

    @property
    def hidden_size(self) -> int:
        """Width of a patch token."""
        return self._hidden_size

    @property
    def image_size(self) -> int:
        """Side S of a square crop, in pixels."""
        return self._image_size[0]

    @property
    def patch_size(self) -> int:
        """Side of a patch, in pixels."""
        return self._patch_size[0]

    @property
    def tokens_per_crop(self) -> int:
        """Tokens per S×S crop: (image_size // patch_size)²."""
        return (self._image_size[0] // self._patch_size[0]) * (self._image_size[1] // self._patch_size[1])

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (N, 3, S, S) → patch tokens (N, (S // patch)², hidden), final norm applied."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.visual.forward_intermediates(
                pixel_values,
                indices=1,
                normalize_intermediates=True,
                intermediates_only=True,
                output_fmt="NLC",
            )
            return out["image_intermediates"][-1]


__all__ = ["DEFAULT_OPEN_CLIP_MODEL", "OpenClipVisionEncoder"]
