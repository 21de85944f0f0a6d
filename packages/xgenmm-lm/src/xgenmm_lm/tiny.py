"""Tiny configuration for tests, examples and CPU benchmarks (SigLIP hidden 32, sampler 8 latents)."""

from __future__ import annotations

from transformers import Phi3Config, SiglipVisionConfig

from xgenmm_sampler import PerceiverResamplerConfig

from .configuration import XGenMMConfig
from .tokenization import initial_tokenizer_len, stop_token_ids


def tiny_config(tokenizer=None, initial_len: int | None = None, **overrides) -> XGenMMConfig:
    """An `XGenMMConfig` of the tiny sizes, matching `tokenizer` (from `train_tiny_tokenizer` / `add_special_tokens`).

    SigLIP hidden 32, 2 layers, 2 heads, image 32, patch 8 (16 tokens per crop); sampler 8 latents, depth 2,
    2 heads of 16; Phi-3 hidden 64, 2 layers, 4 heads, intermediate 128, LM table = tokenizer length rounded up to
    a multiple of 64. Without a tokenizer, `initial_len` (default 256) sets the vocabulary.
    """
    if tokenizer is not None:
        n = initial_tokenizer_len(tokenizer)
        pad, eos = tokenizer.pad_token_id, stop_token_ids(tokenizer)
    else:
        n = initial_len or 256
        pad, eos = n - 1, [n - 2]
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    text = Phi3Config(
        vocab_size=-(-(n + 3) // 64) * 64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        sliding_window=2047,
        pad_token_id=pad,
        eos_token_id=eos[0],
        bos_token_id=1,
    )
    sampler = PerceiverResamplerConfig(
        dim=32, dim_inner=64, num_latents=8, depth=2, heads=2, dim_head=16, ff_mult=2
    )
    kwargs = dict(
        vision_config=vision,
        text_config=text,
        sampler_config=sampler,
        initial_tokenizer_len=n,
        pad_token_id=pad,
        eos_token_id=eos,
    )
    kwargs.update(overrides)
    return XGenMMConfig(**kwargs)


__all__ = ["tiny_config"]
