"""xgenmm-vision: anyres image tiling, crop-feature regrouping and SigLIP / open_clip vision encoders for xGen-MM.

Sizes are (width, height) throughout.
"""

from .anyres import (
    RESIZE_BACKENDS,
    XGENMM_GRID_MULTIPLES,
    XGENMM_GRIDS,
    AnyResBatch,
    AnyResImage,
    AnyResImageProcessor,
    grid_shape,
    normalize_grids,
    pil_resize,
    resized_size,
    select_best_resolution,
    torch_resize,
)
from .open_clip_encoder import OpenClipVisionEncoder  # open_clip itself is imported when one is built
from .regroup import regroup_anyres_features, unpad_mask
from .siglip import SIGLIP_SO400M, SiglipVisionEncoder, siglip_so400m_config

__version__ = "0.1.0"


__all__ = [
    "SIGLIP_SO400M",
    "XGENMM_GRIDS",
    "XGENMM_GRID_MULTIPLES",
    "AnyResBatch",
    "AnyResImage",
    "AnyResImageProcessor",
    "OpenClipVisionEncoder",
    "RESIZE_BACKENDS",
    "SiglipVisionEncoder",
    "grid_shape",
    "normalize_grids",
    "pil_resize",
    "regroup_anyres_features",
    "resized_size",
    "select_best_resolution",
    "siglip_so400m_config",
    "torch_resize",
    "unpad_mask",
]
