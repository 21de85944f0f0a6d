"""Register xGen-MM with the transformers Auto classes (run by `import xgenmm_lm`).

After it, with no `trust_remote_code`, on a folder of either layout: `AutoConfig.from_pretrained(dir)`,
`AutoModelForImageTextToText.from_pretrained(dir)` (and `AutoModelForVision2Seq` where transformers still has
it), `AutoImageProcessor.from_pretrained(dir)` and `AutoProcessor.from_pretrained(dir)`.
"""

from __future__ import annotations

import transformers
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor

from .configuration import XGenMMConfig
from .modeling import XGenMM
from .processing import XGenMMImageProcessor, XGenMMProcessor


def register() -> None:
    """Idempotent."""
    AutoConfig.register(XGenMMConfig.model_type, XGenMMConfig, exist_ok=True)
    AutoModelForImageTextToText.register(XGenMMConfig, XGenMM, exist_ok=True)
    if hasattr(transformers, "AutoModelForVision2Seq"):
        transformers.AutoModelForVision2Seq.register(XGenMMConfig, XGenMM, exist_ok=True)
    AutoImageProcessor.register(XGenMMConfig, slow_image_processor_class=XGenMMImageProcessor, exist_ok=True)
    AutoProcessor.register(XGenMMConfig, XGenMMProcessor, exist_ok=True)


register()

__all__ = ["register"]
