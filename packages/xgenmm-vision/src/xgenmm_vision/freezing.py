"""`Freezable`: freeze / unfreeze for the vision encoders. The original keeps the vision encoder frozen
(`set_trainable` of its model class, branch `xgen-mm`; its `--unfreeze_vision_encoder` flag is never read);
here unfreezing is an explicit choice."""

from __future__ import annotations

from typing import Self


class Freezable:
    """Mixin for an `nn.Module`: `freeze()` / `unfreeze()` set `requires_grad` of every parameter."""

    @property
    def frozen(self) -> bool:
        """True when no parameter requires a gradient."""
        return not any(p.requires_grad for p in self.parameters())

    def freeze(self) -> Self:
        """Stop training every parameter (`requires_grad_(False)`); returns the module."""
        self.requires_grad_(False)
        return self

    def unfreeze(self) -> Self:
        """Train every parameter (`requires_grad_(True)`); returns the module."""
        self.requires_grad_(True)
        return self
