"""xgenmm-eval: evaluate xGen-MM checkpoints (local evaluator, VLMEvalKit bridge, lmms-eval plugin, chat CLI).

VLMEvalKit and lmms-eval are optional: `xgenmm_eval.vlmevalkit.vlm_class()` and `xgenmm_eval.lmms_model` import
them only when used.
"""

from .evaluator import METRICS, EvalResult, evaluate, score_prediction, summarize, write_results
from .loading import load_model, pick_device, pick_dtype
from .prompting import IMAGE_TOKEN, interleave_message, load_image, place_images
from .records import EvalRecord, load_eval_records
from .vlmevalkit import VLMEvalKitMissing, XGenMMVLMMixin, run_vlmevalkit, vlm_class

__version__ = "0.1.0"

__all__ = [
    "IMAGE_TOKEN",
    "METRICS",
    "EvalRecord",
    "EvalResult",
    "VLMEvalKitMissing",
    "XGenMMVLMMixin",
    "evaluate",
    "interleave_message",
    "load_eval_records",
    "load_image",
    "load_model",
    "pick_device",
    "pick_dtype",
    "place_images",
    "run_vlmevalkit",
    "score_prediction",
    "summarize",
    "vlm_class",
    "write_results",
]
