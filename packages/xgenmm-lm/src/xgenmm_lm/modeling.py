"""The assembled xGen-MM (BLIP-3) model: SigLIP → regroup → perceiver resampler → splice → causal LM.

Sub-module names are the released checkpoint's state-dict prefixes (the original's `modeling_xgenmm.py`): `vision_encoder`,
`vision_tokenizer`, `lang_model`. The LM is transformers' own class for `text_config` (Phi3ForCausalLM for the
released model) with the decoupled vocabulary extension of `vocab.py`.

Reads top to bottom: output class → `XGenMM` (build, helpers for users, vision features, input preparation,
forward, generate). `from_pretrained` / `save_pretrained` are in `persistence.py`, the image inputs' checks and the
vision path in `images.py`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM, GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import CausalLMOutputWithPast

from xgenmm_sampler import PerceiverResampler
from xgenmm_vision import AnyResImageProcessor, SiglipVisionEncoder

from .attention import VARLEN_ATTENTION, varlen_segments
from .attention import register as _register_attention
from .configuration import XGenMMConfig
from .images import encode_images, execution_device, normalise_images
from .losses import shifted_cross_entropy, supervised_token_logps
from .persistence import CheckpointMixin
from .splice import splice_vision_tokens
from .vocab import extend_vocabulary

_register_attention()  # attn_implementation="sdpa_varlen" (see attention.py)


@dataclass
class XGenMMOutput(CausalLMOutputWithPast):
    """`CausalLMOutputWithPast` over the expanded (text + vision) sequence of length L'.

    Adds `labels (B, L')` (-100 on vision positions and padding) and `attention_mask (B, L')`, so trainers can
    compute their own token-level losses; `segment_ids (B, L')` for packed rows; with `forward(token_logps=True)`
    `token_logps (B, L'-1)` fp32 and `token_mask (B, L'-1)` (see `supervised_token_logps`).
    """

    labels: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    segment_ids: torch.Tensor | None = None
    token_logps: torch.Tensor | None = None
    token_mask: torch.Tensor | None = None


class XGenMM(CheckpointMixin, PreTrainedModel, GenerationMixin):
    """xGen-MM: vision encoder + perceiver resampler + causal LM with the decoupled vocabulary extension.

    A transformers `PreTrainedModel`: `from_pretrained` reads this package's folders and the released `vlm.*`
    snapshots (renamed on load), with `device_map`, `max_memory`, `offload_folder`, `dtype`,
    `attn_implementation` ("sdpa" default, "eager", "sdpa_varlen" (packed training rows attended sample by
    sample, see `attention.py`), "flash_attention_2", ...) and `quantization_config`. Build a random model with
    `XGenMM.from_config(config)` (tiny test models, or the real sizes under `torch.device("meta")`).
    """

    config_class = XGenMMConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["PerceiverResampler"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, config: XGenMMConfig):
        super().__init__(config)
        vision_config = config.vision_config
        if vision_config._attn_implementation == VARLEN_ATTENTION:  # packed rows are an LM notion
            vision_config._attn_implementation = "sdpa"
        self.vision_encoder = SiglipVisionEncoder(vision_config)
        self.vision_tokenizer = PerceiverResampler.from_config(config.sampler_config)
        # A copy: `extend_vocabulary` sets the LM config's vocab_size to the logit count, while
        # `config.text_config.vocab_size` stays the size of the LM's own tables (what a checkpoint stores).
        self.lang_model = AutoModelForCausalLM.from_config(copy.deepcopy(config.text_config))
        extend_vocabulary(
            self.lang_model,
            config.initial_tokenizer_len,
            num_additional=3,
            initializer_range=getattr(config.text_config, "initializer_range", 0.02),
        )
        self.generation_config = GenerationConfig(
            bos_token_id=config.bos_token_id,
            eos_token_id=list(config.eos_token_id),
            pad_token_id=config.pad_token_id,
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Nothing: every part initialises itself in its constructor (the perceiver as LAVIS does, SigLIP and the
        LM through their own transformers classes, the decoupled rows in `extend_vocabulary`)."""

    # ----- construction (loading and saving: persistence.CheckpointMixin) --------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls, config: XGenMMConfig, attn_implementation: str | None = "sdpa", dtype=None
    ) -> XGenMM:
        """Randomly initialised model (tiny test models, or the real sizes under `torch.device("meta")`)."""
        kwargs = {"dtype": dtype} if dtype is not None else {}
        if attn_implementation is not None:
            kwargs["attn_implementation"] = attn_implementation
        return cls._from_config(copy.deepcopy(config), **kwargs)

    def get_input_embeddings(self) -> nn.Module:
        """The LM's (decoupled) input embedding."""
        return self.lang_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        """Replace the LM's input embedding."""
        self.lang_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        """The LM's (decoupled) output head."""
        return self.lang_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        """Replace the LM's output head."""
        self.lang_model.set_output_embeddings(value)

    # ----- helpers for users -------------------------------------------------------------------------------------
    def image_processor(self, resize_backend: str = "pil") -> AnyResImageProcessor:
        """The `AnyResImageProcessor` matching this model (base size, grids, normalisation).

        resize_backend: "pil" (bit-exact with the original) or "torch" (> 2× faster, pixels within 2 levels).
        """
        return AnyResImageProcessor(
            base_size=self.config.vision_config.image_size,
            grids=[tuple(g) for g in self.config.anyres_grids],
            mean=self.config.image_mean,
            std=self.config.image_std,
            resize_backend=resize_backend,
        )

    def num_vision_tokens(self, image_size: Sequence[int]) -> int:
        """LM positions taken by one image of original size (w, h): num_latents × (1 + cols·rows)."""
        return self.config.sampler_config.num_latents * self.image_processor().num_crops(image_size)

    def set_trainable(
        self, vision_encoder: bool = False, vision_tokenizer: bool = True, lang_model: bool = True
    ) -> XGenMM:
        """Choose which parts train (reference: all but the vision encoder)."""
        if vision_encoder:
            self.vision_encoder.unfreeze()
        else:
            self.vision_encoder.freeze()
        self.vision_tokenizer.requires_grad_(vision_tokenizer)
        self.lang_model.requires_grad_(lang_model)
        return self

    def gradient_checkpointing_enable(self, lm_layers: int | None = None, **kwargs) -> None:
        """Non-reentrant checkpointing of every perceiver layer and of the first `lm_layers` LM decoder layers
        (None = all). Each layer left out keeps its activations (at the released size ~145 KB per token) and is
        not recomputed in the backward pass: selective checkpointing, for memory left over."""
        self.vision_tokenizer.gradient_checkpointing = True
        self.lang_model.activation_checkpointing_enable({"use_reentrant": False})
        if lm_layers is not None:
            layers = [m for m in self.lang_model.modules() if isinstance(m, GradientCheckpointingLayer)]
            if not 0 <= lm_layers <= len(layers):
                raise ValueError(f"lm_layers={lm_layers}: the LM has {len(layers)} decoder layers")
            for i, layer in enumerate(layers):
                layer.gradient_checkpointing = i < lm_layers

    def gradient_checkpointing_disable(self) -> None:
        """Turn activation checkpointing off in the perceiver and the LM."""
        self.vision_tokenizer.gradient_checkpointing = False
        self.lang_model.activation_checkpointing_disable()

    # ----- vision ----------------------------------------------------------------------------------------------
    def encode_images(
        self, pixel_values: list[list[torch.Tensor]], image_sizes: list[list[Sequence[int]]]
    ) -> list[list[torch.Tensor]]:
        """Vision tokens of every image: per sample, per image `(num_latents · groups, D_lm)` (see
        `images.encode_images`: the encoder runs once over all crops of the batch, the sampler once over all groups).
        pixel_values: per sample, per image `(Np, 3, S, S)`; image_sizes: per sample, per image original (w, h)."""
        return encode_images(self, pixel_values, image_sizes)

    # ----- input preparation -----------------------------------------------------------------------------------
    def prepare_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values=None,
        image_sizes=None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        padding_side: str = "right",
    ):
        """Embed the text, encode the images and splice them in → `SpliceOutput` over the expanded sequence."""
        input_ids = input_ids.to(execution_device(self.lang_model.get_input_embeddings()))
        pixel_values, image_sizes = normalise_images(pixel_values, image_sizes, input_ids.shape[0])
        image_embeds = self.encode_images(pixel_values, image_sizes)
        text_embeds = self.lang_model.get_input_embeddings()(input_ids)
        return splice_vision_tokens(
            text_embeds,
            input_ids,
            self.config.media_token_id,
            image_embeds,
            attention_mask=attention_mask,
            labels=labels,
            position_ids=position_ids,
            segment_ids=segment_ids,
            padding_side=padding_side,
        )

    # ----- forward / generate ----------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values=None,
        image_sizes=None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        token_logps: bool = False,
        **lm_kwargs,
    ) -> XGenMMOutput:
        """Training / scoring forward over right-padded rows.

        Args:
            input_ids: `(B, L)` with one `<image>` id per image.
            attention_mask: `(B, L)` 0/1 (None = all ones).
            pixel_values: per sample a list of per-image `(Np, 3, S, S)` tensors (None or [] = text only).
            image_sizes: per sample a list of original (w, h).
            labels: `(B, L)`, -100 = not supervised.
            position_ids, segment_ids: packed rows (TEXT coordinates); attention then stays inside each sample.
            num_items_in_batch: divide the summed loss by this instead of taking the mean.
            token_logps: (needs `labels`) return `token_logps`/`token_mask` instead of logits: the LM head runs
                only on the positions whose next label is supervised (`supervised_token_logps`); `logits` and
                `loss` are then None (the caller reduces the log-probs itself). For training.
            lm_kwargs: passed to the LM (e.g. `output_hidden_states`).
        Returns:
            `XGenMMOutput`: loss (mean CE over supervised tokens), logits `(B, L', initial_tokenizer_len + 3)`,
            labels / attention_mask / segment_ids `(B, L')`.
        """
        if token_logps and labels is None:
            raise ValueError("token_logps=True needs labels")
        spliced = self.prepare_inputs(
            input_ids, attention_mask, pixel_values, image_sizes, labels, position_ids, segment_ids, "right"
        )
        packed = spliced.segment_ids is not None
        no_cache = not lm_kwargs.get("use_cache") and all(
            lm_kwargs.get(k) is None for k in ("cache", "past_key_values")
        )
        varlen = self.lang_model.config._attn_implementation == VARLEN_ATTENTION and no_cache
        # Right-padded rows on the CPU: one batched SDPA call with the padding mask is faster than a call per row.
        if varlen and (packed or spliced.inputs_embeds.is_cuda):  # the LM still gets the position ids
            lm_kwargs.update(varlen_segments(spliced.attention_mask, spliced.segment_ids))
        lm_inputs = dict(
            inputs_embeds=spliced.inputs_embeds,
            # Packed rows: no 2-D mask, so transformers derives the block-diagonal mask from the restarting
            # position ids (SDPA/eager mask, or varlen flash-attention); "sdpa_varlen" uses the segments above.
            attention_mask=None if packed else spliced.attention_mask,
            position_ids=spliced.position_ids,
            use_cache=lm_kwargs.pop("use_cache", False),
            **lm_kwargs,
        )
        if token_logps:
            # The supervised positions are found (one host sync) before the LM's kernels are queued.
            where = (spliced.labels[:, 1:] != -100).nonzero()
            decoder = getattr(self.lang_model, self.lang_model.base_model_prefix)
            out = decoder(**lm_inputs)
            logps, mask = supervised_token_logps(
                out.last_hidden_state, spliced.labels, self.lang_model.get_output_embeddings(), where
            )
            return XGenMMOutput(
                hidden_states=out.hidden_states,
                attentions=out.attentions,
                labels=spliced.labels,
                attention_mask=spliced.attention_mask,
                segment_ids=spliced.segment_ids,
                token_logps=logps,
                token_mask=mask,
            )
        out = self.lang_model(**lm_inputs)
        loss = None
        if spliced.labels is not None:
            loss = shifted_cross_entropy(out.logits, spliced.labels, spliced.segment_ids, num_items_in_batch)
        return XGenMMOutput(
            loss=loss,
            logits=out.logits,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            labels=spliced.labels,
            attention_mask=spliced.attention_mask,
            segment_ids=spliced.segment_ids,
            cache=out.cache,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values=None,
        image_sizes=None,
        **generation_kwargs,
    ) -> torch.Tensor:
        """Generate with the KV cache; returns only the new token ids `(B, T_new)` (padded with the pad id), as
        transformers does for a generation from embeddings.

        The images are spliced in, the rows re-padded on the LEFT, and the LM's `generate` runs on the embeddings
        with `self.generation_config` (eos and `<|end|>` stop). Any transformers generation argument works:
        `max_new_tokens`, `do_sample`, `num_beams`, `cache_implementation="static"` (a fixed-size cache: with
        `compile_config` or on a GPU the decode step runs under `torch.compile`), ...
        """
        spliced = self.prepare_inputs(
            input_ids, attention_mask, pixel_values, image_sizes, padding_side="left"
        )
        config = copy.deepcopy(generation_kwargs.pop("generation_config", None) or self.generation_config)
        model_kwargs = config.update(
            **generation_kwargs
        )  # generation arguments into the config, the rest to the LM
        return self.lang_model.generate(
            inputs_embeds=spliced.inputs_embeds,
            attention_mask=spliced.attention_mask,
            generation_config=config,
            **model_kwargs,
        )


XGenMMForConditionalGeneration = XGenMM  # the transformers naming of an image-text-to-text model

__all__ = [
    "XGenMM",
    "XGenMMForConditionalGeneration",
    "XGenMMOutput",
    "execution_device",
]
