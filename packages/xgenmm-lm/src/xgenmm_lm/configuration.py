"""Configuration of the assembled xGen-MM model, and the released (HF remote-code) `config.json` layout.

Two on-disk forms are read by `XGenMMConfig.from_pretrained`:

* this package's own `config.json` (`"format": "xgenmm-lm"`): `vision_config`, `text_config`, `sampler_config`,
  `anyres_grids`, `initial_tokenizer_len`, token ids;
* the released layout of the `Salesforce/xgen-mm-phi3-mini-*-r-v1.5` repos (spec §5.2): `text_config` (Phi-3
  fields that differ from `Phi3Config` defaults, plus `initial_tokenizer_len`), `vision_encoder_config` (naming
  `google/siglip-so400m-patch14-384`) and `vision_tokenizer_config`.

The SigLIP so400m-384 and Phi-3-mini-4k hyper-parameters are built in (`SIGLIP_SO400M_384`, `phi3_mini_config`),
so the released config is read offline, without downloading SigLIP as the released remote code does.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

from transformers import AutoConfig, Phi3Config, PretrainedConfig, SiglipVisionConfig

from xgenmm_sampler import PerceiverResamplerConfig
from xgenmm_vision import SIGLIP_SO400M, XGENMM_GRID_MULTIPLES, siglip_so400m_config

CONFIG_NAME = "config.json"
FORMAT_NAME = "xgenmm-lm"
SIGLIP_SO400M_NAME = SIGLIP_SO400M  # "google/siglip-so400m-patch14-384"

# The SigLIP hyper-parameters that must match the released vision tower for a config to be written without an
# explicit `siglip_config` in the released layout.
SIGLIP_SO400M_384 = {
    key: getattr(siglip_so400m_config(), key)
    for key in (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_channels",
        "image_size",
        "patch_size",
        "hidden_act",
        "layer_norm_eps",
        "attention_dropout",
    )
}


def phi3_mini_config(**overrides: Any) -> Phi3Config:
    """Phi-3-mini-4k-instruct as used by the released model (spec §2.1): `Phi3Config` defaults + sliding window 2047."""
    kwargs = dict(sliding_window=2047)
    kwargs.update(overrides)
    return Phi3Config(**kwargs)


def default_grids(base_size: int) -> list[list[int]]:
    """The released anyres candidate list, in pixels (W, H), for a base crop size (384 → (384, 768), ...)."""
    return [[cols * base_size, rows * base_size] for cols, rows in XGENMM_GRID_MULTIPLES]


def _text_config_from_dict(d: dict[str, Any]) -> PretrainedConfig:
    d = dict(d)
    model_type = d.pop("model_type", None)
    if model_type is None:
        raise ValueError("text_config needs a 'model_type' (e.g. 'phi3')")
    for key in (
        "initial_tokenizer_len",
        "_name_or_path",
        "transformers_version",
        "architectures",
        "auto_map",
    ):
        d.pop(key, None)
    if "torch_dtype" in d:
        d["dtype"] = d.pop("torch_dtype")
    return AutoConfig.for_model(model_type, **d)


class XGenMMConfig:
    """Hyper-parameters of `XGenMM`.

    Args:
        vision_config: `SiglipVisionConfig` (or its dict) of the vision encoder; default SigLIP so400m-384.
        text_config: any transformers causal-LM config (or its dict, with `model_type`); default Phi-3-mini with
            sliding window 2047. Its `vocab_size` is the size of the LM's own tables (32,064 for Phi-3), not the
            tokenizer's.
        sampler_config: `PerceiverResamplerConfig` (or its dict); default: released sizes with `dim` = vision
            hidden size and `dim_inner` = LM hidden size.
        anyres_grids: candidate canvases in pixels `[[W, H], ...]`, in tie-breaking order; default the released
            five, as multiples of the vision image size.
        initial_tokenizer_len: tokenizer length before `<image>`; the special ids are `initial_tokenizer_len + 0/1/2`
            for `<image>`, `<image placeholder>`, `<|endofchunk|>`; the LM returns `initial_tokenizer_len + 3` logits.
        pad_token_id: tokenizer pad id (`<pad>`); default `initial_tokenizer_len - 1`.
        eos_token_id: ids that end generation (eos and `<|end|>`); default `[32000, 32007]` (Phi-3).
        bos_token_id: kept for the generation config.
        regroup_mode: `"reference"` (the released full-width band chunking, spec §1.4) or `"crops"`.
        image_mean, image_std: per-channel normalisation of the image processor (SigLIP: 0.5).
    """

    model_type = "xgenmm"

    def __init__(
        self,
        vision_config: SiglipVisionConfig | dict | None = None,
        text_config: PretrainedConfig | dict | None = None,
        sampler_config: PerceiverResamplerConfig | dict | None = None,
        anyres_grids: list | None = None,
        initial_tokenizer_len: int = 32012,
        pad_token_id: int | None = None,
        eos_token_id: int | list[int] | None = None,
        bos_token_id: int | None = 1,
        regroup_mode: str = "reference",
        image_mean: tuple[float, ...] = (0.5, 0.5, 0.5),
        image_std: tuple[float, ...] = (0.5, 0.5, 0.5),
        dtype: str | None = None,
    ):
        if vision_config is None:
            vision_config = siglip_so400m_config()
        elif isinstance(vision_config, dict):
            vision_config = SiglipVisionConfig(
                **{k: v for k, v in vision_config.items() if k != "model_type"}
            )
        if text_config is None:
            text_config = phi3_mini_config()
        elif isinstance(text_config, dict):
            text_config = _text_config_from_dict(text_config)
        if sampler_config is None:
            sampler_config = PerceiverResamplerConfig(
                dim=vision_config.hidden_size, dim_inner=text_config.hidden_size
            )
        elif isinstance(sampler_config, dict):
            sampler_config = PerceiverResamplerConfig.from_dict(sampler_config)
        if sampler_config.dim != vision_config.hidden_size:
            raise ValueError(
                f"sampler_config.dim={sampler_config.dim} must equal vision_config.hidden_size={vision_config.hidden_size}"
            )
        if (sampler_config.dim_inner or sampler_config.dim) != text_config.hidden_size:
            raise ValueError(
                f"sampler_config.dim_inner={sampler_config.dim_inner} must equal text_config.hidden_size="
                f"{text_config.hidden_size}"
            )
        if initial_tokenizer_len > text_config.vocab_size:
            raise ValueError(
                f"initial_tokenizer_len={initial_tokenizer_len} exceeds the LM table size text_config.vocab_size="
                f"{text_config.vocab_size}"
            )
        if regroup_mode not in ("reference", "crops"):
            raise ValueError(f"regroup_mode must be 'reference' or 'crops', got {regroup_mode!r}")
        self.vision_config = vision_config
        self.text_config = text_config
        self.sampler_config = sampler_config
        base = vision_config.image_size
        grids = default_grids(base) if anyres_grids is None else [[int(w), int(h)] for w, h in anyres_grids]
        for w, h in grids:
            if w % base or h % base:
                raise ValueError(f"anyres grid {[w, h]} is not a multiple of the vision image size {base}")
        self.anyres_grids = grids
        self.initial_tokenizer_len = int(initial_tokenizer_len)
        self.pad_token_id = self.initial_tokenizer_len - 1 if pad_token_id is None else int(pad_token_id)
        if eos_token_id is None:
            eos_token_id = [32000, 32007]
        self.eos_token_id = (
            [int(eos_token_id)] if isinstance(eos_token_id, int) else [int(i) for i in eos_token_id]
        )
        self.bos_token_id = bos_token_id
        self.regroup_mode = regroup_mode
        self.image_mean = tuple(float(x) for x in image_mean)
        self.image_std = tuple(float(x) for x in image_std)
        self.dtype = dtype

    # Special ids (spec §1.6).
    @property
    def media_token_id(self) -> int:
        """Id of `<image>`."""
        return self.initial_tokenizer_len

    @property
    def image_placeholder_token_id(self) -> int:
        return self.initial_tokenizer_len + 1

    @property
    def end_of_chunk_token_id(self) -> int:
        return self.initial_tokenizer_len + 2

    @property
    def vocab_size(self) -> int:
        """Number of logits: `initial_tokenizer_len + 3`."""
        return self.initial_tokenizer_len + 3

    # ----- this package's own layout ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "model_type": self.model_type,
            "vision_config": self.vision_config.to_dict(),
            "text_config": self.text_config.to_dict(),
            "sampler_config": self.sampler_config.to_dict(),
            "anyres_grids": self.anyres_grids,
            "initial_tokenizer_len": self.initial_tokenizer_len,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": self.eos_token_id,
            "bos_token_id": self.bos_token_id,
            "regroup_mode": self.regroup_mode,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "dtype": self.dtype,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> XGenMMConfig:
        """Build from this package's dict (`to_dict`) or from a released-layout dict (`from_released_dict`)."""
        if "vision_encoder_config" in d or "vision_tokenizer_config" in d:
            return cls.from_released_dict(d)
        d = {k: v for k, v in d.items() if k not in ("format", "model_type", "transformers_version")}
        return cls(**d)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write `config.json` (this package's layout) into an existing directory."""
        with open(os.path.join(save_directory, CONFIG_NAME), "w") as f:
            f.write(self.to_json_string())

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> XGenMMConfig:
        """Read `config.json` from a directory (or the file itself); either layout, no network."""
        file = os.path.join(path, CONFIG_NAME) if os.path.isdir(path) else str(path)
        if not os.path.isfile(file):
            raise FileNotFoundError(
                f"{file}: no config.json (expected an xgenmm-lm or released xgen-mm checkpoint)"
            )
        with open(file) as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{file}: not valid JSON ({e})") from e
        try:
            return cls.from_dict(d)
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(f"{file}: cannot build an XGenMMConfig: {e}") from e

    # ----- the released layout (spec §5.2) -------------------------------------------------------------------
    @classmethod
    def from_released_dict(cls, d: dict[str, Any]) -> XGenMMConfig:
        """Parse the released `config.json` (model_type "xgenmm").

        `vision_encoder_config.model_name` must be `google/siglip-so400m-patch14-384` (built in) unless the dict
        carries an explicit `siglip_config` (written by this package for non-released sizes).
        `vision_tokenizer_config` gives `vis_feature_dim`, `lang_embedding_dim`, `num_vis_tokens`; depth, heads,
        dim_head, ff_mult are the released 6/16/96/4 unless present.
        """
        text = dict(d.get("text_config") or {})
        text.setdefault("model_type", "phi3")
        initial_tokenizer_len = text.get("initial_tokenizer_len", 32012)
        if text["model_type"] == "phi3":
            base = phi3_mini_config().to_dict()
            base.update(text)
            text = base
        text_config = _text_config_from_dict(text)

        venc = dict(d.get("vision_encoder_config") or {})
        if "siglip_config" in venc:
            vision_config = SiglipVisionConfig(
                **{k: v for k, v in venc["siglip_config"].items() if k != "model_type"}
            )
        else:
            name = venc.get("model_name", SIGLIP_SO400M_NAME)
            if name != SIGLIP_SO400M_NAME:
                raise ValueError(
                    f"vision_encoder_config.model_name={name!r}: only {SIGLIP_SO400M_NAME!r} is built in; add a "
                    "'siglip_config' dict with the SigLIP vision hyper-parameters"
                )
            vision_config = siglip_so400m_config()
        if venc.get("image_aspect_ratio", "anyres") != "anyres" or not venc.get(
            "anyres_patch_sampling", True
        ):
            raise ValueError(
                "only image_aspect_ratio='anyres' with anyres_patch_sampling=true (the released models) is supported"
            )

        vtok = dict(d.get("vision_tokenizer_config") or {})
        sampler_config = PerceiverResamplerConfig(
            dim=vtok.get("vis_feature_dim", vision_config.hidden_size),
            dim_inner=vtok.get("lang_embedding_dim", text_config.hidden_size),
            num_latents=vtok.get("num_vis_tokens", 128),
            depth=vtok.get("depth", 6),
            heads=vtok.get("heads", 16),
            dim_head=vtok.get("dim_head", 96),
            ff_mult=vtok.get("ff_mult", 4),
        )
        pad = d.get("pad_token_id", initial_tokenizer_len - 1)
        return cls(
            vision_config=vision_config,
            text_config=text_config,
            sampler_config=sampler_config,
            anyres_grids=venc.get("anyres_grids"),
            initial_tokenizer_len=initial_tokenizer_len,
            pad_token_id=pad,
            eos_token_id=d.get("eos_token_id"),
            dtype=d.get("torch_dtype", d.get("dtype")),
        )

    def to_released_dict(self) -> dict[str, Any]:
        """The released `config.json` (spec §5.2), loadable by the released remote code (`auto_map`).

        Non-released sizes add `siglip_config` to `vision_encoder_config` and depth/heads/dim_head/ff_mult to
        `vision_tokenizer_config` (extra fields the remote code ignores)."""
        text = self.text_config.to_diff_dict() if hasattr(self.text_config, "to_diff_dict") else {}
        text = {k: v for k, v in text.items() if k not in ("transformers_version",)}
        rope = text.pop("rope_parameters", None)
        if isinstance(rope, dict) and rope.get("rope_type", "default") == "default":
            # transformers 4.x field names, as in the released config (remote code of 2024).
            text["rope_theta"] = rope.get("rope_theta", 10000.0)
            text["rope_scaling"] = None
        elif rope is not None:
            text["rope_parameters"] = rope
        text["model_type"] = self.text_config.model_type
        text["initial_tokenizer_len"] = self.initial_tokenizer_len
        if self.text_config.model_type == "phi3":
            text.setdefault("sliding_window", self.text_config.sliding_window)
        venc = {
            "model_type": "xgenmm_vision_encoder",
            "model_name": SIGLIP_SO400M_NAME,
            "anyres_grids": self.anyres_grids,
            "anyres_patch_sampling": True,
            "image_aspect_ratio": "anyres",
        }
        released_vision = siglip_so400m_config().to_dict()
        mine = self.vision_config.to_dict()
        if any(mine.get(k) != released_vision.get(k) for k in SIGLIP_SO400M_384):
            venc["siglip_config"] = mine
        s = self.sampler_config
        vtok = {
            "model_type": "xgenmm_vision_tokenizer",
            "vis_feature_dim": s.dim,
            "lang_embedding_dim": s.dim_inner or s.dim,
            "num_vis_tokens": s.num_latents,
            "image_aspect_ratio": "anyres",
        }
        if (s.depth, s.heads, s.dim_head, s.ff_mult) != (6, 16, 96, 4):
            vtok.update(depth=s.depth, heads=s.heads, dim_head=s.dim_head, ff_mult=s.ff_mult)
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
            out["torch_dtype"] = self.dtype
        return out

    def copy(self) -> XGenMMConfig:
        return copy.deepcopy(self)

    def __repr__(self) -> str:
        return f"XGenMMConfig({json.dumps(self.to_dict(), indent=2)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, XGenMMConfig) and self.to_dict() == other.to_dict()


__all__ = [
    "CONFIG_NAME",
    "SIGLIP_SO400M_384",
    "SIGLIP_SO400M_NAME",
    "XGenMMConfig",
    "default_grids",
    "phi3_mini_config",
]
