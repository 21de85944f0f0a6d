"""xgenmm-lm: the assembled xGen-MM (BLIP-3) model — vision tokens into a causal LM, checkpoints in and out.

`XGenMM` = SigLIP vision encoder (xgenmm-vision) → perceiver resampler (xgenmm-sampler) → splice into a
transformers causal LM (Phi-3 for the released models) with the decoupled vocabulary extension. Loads the
released `Salesforce/xgen-mm-phi3-mini-*-r-v1.5` checkpoints without remote code; `xgenmm-convert` converts
between layouts.
"""

from .auto import (
    register as register_auto_classes,  # AutoConfig / AutoModelForImageTextToText / AutoProcessor
)
from .compose import compose_model
from .configuration import SIGLIP_SO400M_384, XGenMMConfig, default_grids, phi3_mini_config
from .losses import shifted_cross_entropy, shifted_token_logps, supervised_token_logps
from .modeling import XGenMM, XGenMMForConditionalGeneration, XGenMMOutput
from .processing import PHI3_CHAT_TEMPLATE, XGenMMImageProcessor, XGenMMProcessor
from .splice import SpliceOutput, splice_vision_tokens
from .tiny import tiny_config
from .tokenization import (
    END_TOKEN,
    MEDIA_TOKEN,
    add_special_tokens,
    build_tokenizer,
    initial_tokenizer_len,
    stop_token_ids,
    train_tiny_tokenizer,
)
from .vocab import DecoupledEmbedding, DecoupledLinear, extend_vocabulary

__version__ = "0.1.0"

__all__ = [
    "END_TOKEN",
    "MEDIA_TOKEN",
    "SIGLIP_SO400M_384",
    "DecoupledEmbedding",
    "DecoupledLinear",
    "SpliceOutput",
    "XGenMM",
    "XGenMMConfig",
    "XGenMMForConditionalGeneration",
    "XGenMMImageProcessor",
    "XGenMMOutput",
    "XGenMMProcessor",
    "PHI3_CHAT_TEMPLATE",
    "register_auto_classes",
    "__version__",
    "add_special_tokens",
    "build_tokenizer",
    "compose_model",
    "default_grids",
    "extend_vocabulary",
    "initial_tokenizer_len",
    "phi3_mini_config",
    "shifted_cross_entropy",
    "shifted_token_logps",
    "supervised_token_logps",
    "splice_vision_tokens",
    "stop_token_ids",
    "tiny_config",
    "train_tiny_tokenizer",
]
