"""lmms-eval entry point: registers the model name `xgenmm` (group `lmms_eval.models`).

lmms-eval (>= 0.7) loads every entry point of the group `lmms_eval.models` and accepts a callable returning a
`ModelManifest`. This module stays light (it imports lmms-eval only when called), the model class itself is
`xgenmm_eval.lmms_model.XGenMMLmms`. Once `xgenmm-eval[lmms]` is installed:

    lmms-eval --model xgenmm --model_args pretrained=CKPT --tasks mme --batch_size 8
"""

from __future__ import annotations

MODEL_ID = "xgenmm"
CLASS_PATH = "xgenmm_eval.lmms_model.XGenMMLmms"


def manifest():
    """The `ModelManifest` lmms-eval registers for this package."""
    try:
        from lmms_eval.models.registry_v2 import ModelManifest
    except ImportError as err:
        raise ImportError(
            f"the xgenmm lmms-eval plugin needs lmms-eval: pip install 'xgenmm-eval[lmms]' ({err})"
        ) from err

    return ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH, aliases=("xgen_mm",))


__all__ = ["MODEL_ID", "CLASS_PATH", "manifest"]
