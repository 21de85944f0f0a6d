"""xgenmm-sampler: the perceiver resampler ("vision token sampler") of xGen-MM (BLIP-3).

Turns groups of vision features `(G, V, dim)` (+ a `(G, V)` padding mask) into `(G, num_latents, dim_inner)`
tokens for a language model; parameter names match the released checkpoint's `vision_tokenizer.*` tensors.
Depends on torch and einops only.
"""

from .configuration import PerceiverResamplerConfig
from .modeling import PerceiverAttention, PerceiverResampler, feed_forward, math_attention, sdpa_attention

__version__ = "0.1.0"

__all__ = [
    "PerceiverAttention",
    "PerceiverResampler",
    "PerceiverResamplerConfig",
    "feed_forward",
    "math_attention",
    "sdpa_attention",
    "__version__",
]
