"""`XGenMMConfig`: a transformers `PreTrainedConfig` (`model_type = "xgenmm"`) with three sub-configs.

Two on-disk forms of `config.json` are read (`from_dict`, hence `from_pretrained` and `AutoConfig`):

* this package's: `vision_config` (SigLIP), `text_config` (any causal LM, with its `model_type`),
  `sampler_config` (the perceiver), `anyres_grids`, `initial_tokenizer_len`, token ids;
* the released `Salesforce/xgen-mm-phi3-mini-*-r-v1.5` layout (written by the original's
  `modeling_xgenmm.py::XGenMMConfig`): `text_config` (the Phi-3 fields that differ from `Phi3Config`, plus
  `initial_tokenizer_len`), `vision_encoder_config` (naming `google/siglip-so400m-patch14-384`) and
  `vision_tokenizer_config`. SigLIP so400m-384 and Phi-3-mini are built in, so it is read offline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import AutoConfig, PreTrainedConfig, SiglipVisionConfig
from transformers.configuration_utils import SubConfigSpec

from xgenmm_sampler import PerceiverResamplerConfig
from xgenmm_vision import SIGLIP_SO400M, XGENMM_GRID_MULTIPLES, siglip_so400m_config

# The SigLIP hyper-parameters that must match the released vision tower for a config to be written to the released
# layout without an explicit `siglip_config`.
SIGLIP_SO400M_384 = {
    key: getattr(siglip_so400m_config(), key)
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
                "image_size", "patch_size", "hidden_act", "layer_norm_eps", "attention_dropout")
}  # fmt: skip
RELEASED_SAMPLER = {"depth": 6, "heads": 16, "dim_head": 96, "ff_mult": 4}


def phi3_mini_config(**overrides: Any):
    """`microsoft/Phi-3-mini-4k-instruct` as the released model uses it: `Phi3Config` defaults + sliding window 2047."""
    return AutoConfig.for_model("phi3", **{"sliding_window": 2047, **overrides})


def default_grids(base_size: int) -> list[list[int]]:
    """The released anyres candidates in pixels (W, H) for a crop size: 384 → [[384, 768], [768, 384], ...]."""
    return [[cols * base_size, rows * base_size] for cols, rows in XGENMM_GRID_MULTIPLES]


class XGenMMConfig(PreTrainedConfig):
    """Hyper-parameters of `XGenMM`.

    Args:
        vision_config: `SiglipVisionConfig` (or its dict); default SigLIP so400m-384.
        text_config: any transformers causal-LM config (or its dict, with `model_type`); default Phi-3-mini with
            sliding window 2047. Its `vocab_size` is the size of the LM's own tables (32,064 for Phi-3).
        sampler_config: `PerceiverResamplerConfig` (or its dict); default: the released sizes with `dim` = vision
            hidden size and `dim_inner` = LM hidden size.
        anyres_grids: candidate canvases in pixels `[[W, H], ...]` in tie-breaking order; default the released five.
        initial_tokenizer_len: tokenizer length before `<image>`; `<image>`, `<image placeholder>`,
            `<|endofchunk|>` are `initial_tokenizer_len + 0/1/2`, and the LM returns `initial_tokenizer_len + 3` logits.
        pad_token_id: `<pad>`; default `initial_tokenizer_len - 1`.
        eos_token_id: ids that end generation (eos and `<|end|>`); default `[32000, 32007]` (Phi-3).
        regroup_mode: `"reference"` (the released full-width band chunking) or `"crops"`.
        image_mean, image_std: normalisation of the image processor (SigLIP: 0.5).
    """

    model_type = "xgenmm"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(
            SiglipVisionConfig, init_kwargs=SIGLIP_SO400M_384 | {"vision_use_head": True}
        ),
        "text_config": SubConfigSpec(AutoConfig, model_type="phi3", init_kwargs={"sliding_window": 2047}),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    sampler_config: dict | PerceiverResamplerConfig | None = None
    anyres_grids: list | None = None
    initial_tokenizer_len: int = 32012
    pad_token_id: int | None = None
    eos_token_id: int | list | None = None
    bos_token_id: int | None = 1
    regroup_mode: str = "reference"
    image_mean: list | tuple = (0.5, 0.5, 0.5)
    image_std: list | tuple = (0.5, 0.5, 0.5)
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        kwargs.pop("format", None)  # written by xgenmm-lm 0.1's own config writer
        super().__post_init__(**kwargs)  # vision_config / text_config from their dicts, or the defaults above
        vision, text = self.vision_config, self.text_config
        if self.sampler_config is None:
            self.sampler_config = PerceiverResamplerConfig(dim=vision.hidden_size, dim_inner=text.hidden_size)
        elif isinstance(self.sampler_config, dict):
            self.sampler_config = PerceiverResamplerConfig.from_dict(self.sampler_config)
        sampler = self.sampler_config
        if sampler.dim != vision.hidden_size:
            raise ValueError(
                f"sampler_config.dim={sampler.dim} must equal vision_config.hidden_size={vision.hidden_size}"
            )
        if (sampler.dim_inner or sampler.dim) != text.hidden_size:
            raise ValueError(
                f"sampler_config.dim_inner={sampler.dim_inner} must equal text_config.hidden_size={text.hidden_size}"
            )
        if self.initial_tokenizer_len > text.vocab_size:
            raise ValueError(
                f"initial_tokenizer_len={self.initial_tokenizer_len} exceeds the LM table size "
                f"text_config.vocab_size={text.vocab_size}"
            )
        if self.regroup_mode not in ("reference", "crops"):
            raise ValueError(f"regroup_mode must be 'reference' or 'crops', got {self.regroup_mode!r}")
        base = vision.image_size
        grids = default_grids(base) if self.anyres_grids is None else self.anyres_grids
        self.anyres_grids = [[int(w), int(h)] for w, h in grids]
        for w, h in self.anyres_grids:
            if w % base or h % base:
                raise ValueError(f"anyres grid {[w, h]} is not a multiple of the vision image size {base}")
        if self.pad_token_id is None:
            self.pad_token_id = self.initial_tokenizer_len - 1
        eos = [32000, 32007] if self.eos_token_id is None else self.eos_token_id
        self.eos_token_id = [int(eos)] if isinstance(eos, int) else [int(i) for i in eos]
        self.image_mean = [float(x) for x in self.image_mean]
        self.image_std = [float(x) for x in self.image_std]

    # Special ids: `initial_tokenizer_len + 0/1/2` (the original's `modeling_xgenmm.py::XGenMMModelForConditionalGeneration`).
    @property
    def media_token_id(self) -> int:
        """Id of `<image>`."""
        return self.initial_tokenizer_len

    @property
    def image_placeholder_token_id(self) -> int:
        """Id of `<image placeholder>`, added after the `<image>` token: `initial_tokenizer_len + 1`."""
        return self.initial_tokenizer_len + 1

    @property
    def end_of_chunk_token_id(self) -> int:
        """Id of `<|endofchunk|>`: `initial_tokenizer_len + 2`."""
        return self.initial_tokenizer_len + 2

    @property
    def vocab_size(self) -> int:
        """Number of logits: `initial_tokenizer_len + 3`."""
        return self.initial_tokenizer_len + 3

    def to_dict(self) -> dict[str, Any]:
        """transformers' `to_dict`, with `sampler_config` as a plain dict (it is no `PreTrainedConfig`)."""
        out = super().to_dict()
        out["sampler_config"] = self.sampler_config.to_dict()
        return out

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """transformers' `from_pretrained`; a local folder without `config.json` is an error, not the defaults."""
        path = Path(pretrained_model_name_or_path)
        if path.is_dir() and not (path / "config.json").is_file() and not kwargs.get("subfolder"):
            raise FileNotFoundError(
                f"{path / 'config.json'}: missing (expected an xgenmm or released checkpoint)"
            )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs):
        """This package's dict, or the released layout (recognised by `vision_encoder_config`)."""
        if "vision_encoder_config" in config_dict or "vision_tokenizer_config" in config_dict:
            config_dict = released_to_kwargs(config_dict)
        return super().from_dict(dict(config_dict), **kwargs)

    def to_released_dict(self) -> dict[str, Any]:
        """The released `config.json`, loadable by the released remote code (`auto_map`).

        Non-released sizes add `siglip_config` to `vision_encoder_config` and depth/heads/dim_head/ff_mult to
        `vision_tokenizer_config` (extra fields the remote code ignores)."""
        text = {k: v for k, v in self.text_config.to_diff_dict().items() if k != "transformers_version"}
        rope = text.pop("rope_parameters", None)
        if isinstance(rope, dict) and rope.get("rope_type", "default") == "default":
            # transformers 4.x field names, as in the released config (remote code of 2024).
            text["rope_theta"] = rope.get("rope_theta", 10000.0)
            text["rope_scaling"] = None
        elif rope is not None:
            text["rope_parameters"] = rope
        text.update(model_type=self.text_config.model_type, initial_tokenizer_len=self.initial_tokenizer_len)
        if self.text_config.model_type == "phi3":
            text.setdefault("sliding_window", self.text_config.sliding_window)
        venc = {
            "model_type": "xgenmm_vision_encoder",
            "model_name": SIGLIP_SO400M,
            "anyres_grids": self.anyres_grids,
            "anyres_patch_sampling": True,
            "image_aspect_ratio": "anyres",
        }
        mine = self.vision_config.to_dict()
        if any(mine.get(k) != v for k, v in SIGLIP_SO400M_384.items()):
            venc["siglip_config"] = {k: v for k, v in mine.items() if k != "transformers_version"}
        s = self.sampler_config
        vtok = {
            "model_type": "xgenmm_vision_tokenizer",
            "vis_feature_dim": s.dim,
            "lang_embedding_dim": s.dim_inner or s.dim,
            "num_vis_tokens": s.num_latents,
            "image_aspect_ratio": "anyres",
        }
        sizes = {"depth": s.depth, "heads": s.heads, "dim_head": s.dim_head, "ff_mult": s.ff_mult}
        if sizes != RELEASED_SAMPLER:
            vtok.update(sizes)
        out = {
            "architectures": ["XGenMMModelForConditionalGeneration"],
            "auto_map": {
                "AutoConfig": "modeling_xgenmm.XGenMMConfig",
                "AutoModelForVision2Seq": "modeling_xgenmm.XGenMMModelForConditionalGeneration",
            },
            "model_type": "xgenmm",
            "text_config": text,
            "vision_encoder_config": venc,
            "vision_tokenizer_config": vtok,
        }
        if self.dtype is not None:
            out["torch_dtype"] = str(self.dtype).removeprefix("torch.")
        return out


def write_released_configs(config: XGenMMConfig, directory: str | Path) -> None:
    """The released `config.json`, `generation_config.json` and `preprocessor_config.json` (the latter loadable by
    the original's `image_processing_blip_3.py::Blip3ImageProcessor` remote code) into `directory`."""
    size = config.vision_config.image_size
    preprocessor = {
        "auto_map": {"AutoImageProcessor": "image_processing_blip_3.Blip3ImageProcessor"},
        "image_processor_type": "Blip3ImageProcessor",
        "image_mean": list(config.image_mean),
        "image_std": list(config.image_std),
        "size": [size, size],
        "resize_mode": "squash",
        "interpolation_mode": "bicubic",
        "grids": config.anyres_grids,
    }
    tokens = {
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
    }
    files = {"config.json": config.to_released_dict(), "generation_config.json": tokens}
    for name, d in {**files, "preprocessor_config.json": preprocessor}.items():
        (Path(directory) / name).write_text(json.dumps(d, indent=2) + "\n")


def released_to_kwargs(d: dict[str, Any]) -> dict[str, Any]:
    """`XGenMMConfig` keyword arguments from the released `config.json` dict.

    `vision_encoder_config.model_name` must be `google/siglip-so400m-patch14-384` (built in) unless the dict
    carries an explicit `siglip_config` (written by this package for other sizes). The perceiver's depth, heads,
    dim_head and ff_mult are the released 6/16/96/4 unless present.
    """
    text = {k: v for k, v in (d.get("text_config") or {}).items() if k != "initial_tokenizer_len"}
    text.setdefault("model_type", "phi3")
    initial_tokenizer_len = (d.get("text_config") or {}).get("initial_tokenizer_len", 32012)
    if "torch_dtype" in text:
        text["dtype"] = text.pop("torch_dtype")
    if (
        text["model_type"] == "phi3"
    ):  # the released text_config lists only the fields that differ from Phi3Config
        text = {"sliding_window": 2047, **text}
    text_config = AutoConfig.for_model(text.pop("model_type"), **text)

    venc = dict(d.get("vision_encoder_config") or {})
    if "siglip_config" in venc:
        vision_config = venc["siglip_config"]
    else:
        name = venc.get("model_name", SIGLIP_SO400M)
        if name != SIGLIP_SO400M:
            raise ValueError(
                f"vision_encoder_config.model_name={name!r}: only {SIGLIP_SO400M!r} is built in; add a "
                "'siglip_config' dict with the SigLIP vision hyper-parameters"
            )
        vision_config = siglip_so400m_config()
    if venc.get("image_aspect_ratio", "anyres") != "anyres" or not venc.get("anyres_patch_sampling", True):
        raise ValueError(
            "only image_aspect_ratio='anyres' with anyres_patch_sampling=true (the released models) is supported"
        )
    vision_dim = (
        vision_config["hidden_size"] if isinstance(vision_config, dict) else vision_config.hidden_size
    )
    vtok = dict(d.get("vision_tokenizer_config") or {})
    sampler_config = PerceiverResamplerConfig(
        dim=vtok.get("vis_feature_dim", vision_dim),
        dim_inner=vtok.get("lang_embedding_dim", text_config.hidden_size),
        num_latents=vtok.get("num_vis_tokens", 128),
        **{k: vtok.get(k, v) for k, v in RELEASED_SAMPLER.items()},
    )
    out = dict(
        vision_config=vision_config,
        text_config=text_config,
        sampler_config=sampler_config,
        anyres_grids=venc.get("anyres_grids"),
        initial_tokenizer_len=initial_tokenizer_len,
        pad_token_id=d.get("pad_token_id", initial_tokenizer_len - 1),
        eos_token_id=d.get("eos_token_id"),
    )
    dtype = d.get("dtype", d.get("torch_dtype"))
    if dtype is not None:
        out["dtype"] = dtype
    return out


__all__ = [
    "SIGLIP_SO400M_384",
    "XGenMMConfig",
    "default_grids",
    "phi3_mini_config",
    "released_to_kwargs",
    "write_released_configs",
]
