"""Decoupled vocabulary extension (LAVIS `open_flamingo/src/helpers.py`, `DecoupledEmbedding` /
`DecoupledLinear`): new token rows live beside the LM's tables, no resize.

The LM keeps its original input table and output head (32,064 rows for Phi-3). Ids up to
`initial_tokenizer_len - 1` use them; the `num_additional` ids after that (`<image>`, `<image placeholder>`,
`<|endofchunk|>`) use small extra tables. State-dict names (under the LM):

* `<embed>.weight`, `<embed>.additional_embedding.weight`
* `<head>.weight`, `<head>.bias` (a head bias is always present: the released model trains one), `<head>.additional_fc.{weight,bias}`

Works on any transformers causal LM through `get_input_embeddings` / `get_output_embeddings`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class DecoupledEmbedding(nn.Embedding):
    """Embedding whose ids `>= initial_tokenizer_len` read `additional_embedding` (row `id - initial_tokenizer_len`).

    Args:
        num_embeddings, embedding_dim, padding_idx: the original table.
        initial_tokenizer_len: first id served by the additional table.
        num_additional: rows of the additional table.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        initial_tokenizer_len: int,
        num_additional: int = 3,
        padding_idx: int | None = None,
    ):
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx)
        self.initial_tokenizer_len = initial_tokenizer_len
        self.additional_embedding = nn.Embedding(num_additional, embedding_dim)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids `(...)` long → `(..., embedding_dim)`."""
        n = self.initial_tokenizer_len
        extra = input_ids >= n
        base = F.embedding(input_ids.clamp(max=n - 1), self.weight, self.padding_idx)
        added = self.additional_embedding((input_ids - n).clamp(min=0))
        return torch.where(extra.unsqueeze(-1), added, base)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, initial_tokenizer_len={self.initial_tokenizer_len}"


class DecoupledLinear(nn.Linear):
    """Output head: logits = concat((W h + b)[:initial_tokenizer_len], additional_fc(h)).

    Args:
        in_features: hidden size.
        out_features: rows of the original head (only the first `initial_tokenizer_len` are used).
        initial_tokenizer_len: number of original logits kept.
        num_additional: rows of `additional_fc` (with bias).
    Output width: `initial_tokenizer_len + num_additional`.
    """

    def __init__(
        self, in_features: int, out_features: int, initial_tokenizer_len: int, num_additional: int = 3
    ):
        super().__init__(in_features, out_features, bias=True)
        self.initial_tokenizer_len = initial_tokenizer_len
        self.additional_fc = nn.Linear(in_features, num_additional, bias=True)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden `(..., in_features)` → `(..., initial_tokenizer_len + num_additional)`."""
        n = self.initial_tokenizer_len
        base = F.linear(hidden, self.weight[:n], self.bias[:n])
        return torch.cat((base, self.additional_fc(hidden)), dim=-1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, initial_tokenizer_len={self.initial_tokenizer_len}"


def extend_vocabulary(
    lang_model: nn.Module,
    initial_tokenizer_len: int,
    num_additional: int = 3,
    initializer_range: float = 0.02,
) -> nn.Module:
    """Swap a causal LM's input embedding and output head for the decoupled versions, in place.

    The original weight tensors are kept (same `Parameter` objects). The additional rows are drawn from
    N(0, initializer_range); a head without bias gets a fresh `nn.Linear`-style uniform bias (as the reference).
    Sets `lang_model.config.vocab_size = initial_tokenizer_len + num_additional`. Returns `lang_model`.
    """
    emb = lang_model.get_input_embeddings()
    head = lang_model.get_output_embeddings()
    if emb is None or head is None:
        raise ValueError(f"{type(lang_model).__name__} has no input embeddings or output head to extend")
    if isinstance(emb, DecoupledEmbedding):
        raise ValueError("the vocabulary of this LM is already extended")
    if initial_tokenizer_len > emb.num_embeddings:
        raise ValueError(
            f"initial_tokenizer_len={initial_tokenizer_len} exceeds the embedding table ({emb.num_embeddings} rows)"
        )
    device, dtype = emb.weight.device, emb.weight.dtype

    new_emb = DecoupledEmbedding(
        emb.num_embeddings,
        emb.embedding_dim,
        initial_tokenizer_len,
        num_additional,
        padding_idx=emb.padding_idx,
    ).to(device=device, dtype=dtype)
    new_emb.weight = emb.weight
    nn.init.normal_(new_emb.additional_embedding.weight, std=initializer_range)

    new_head = DecoupledLinear(head.in_features, head.out_features, initial_tokenizer_len, num_additional)
    new_head = new_head.to(device=head.weight.device, dtype=head.weight.dtype)
    new_head.weight = head.weight
    if head.bias is not None:
        new_head.bias = head.bias
    else:
        bound = 1.0 / math.sqrt(head.in_features)
        nn.init.uniform_(new_head.bias, -bound, bound)
    nn.init.normal_(new_head.additional_fc.weight, std=initializer_range)
    nn.init.zeros_(new_head.additional_fc.bias)

    for module in (*new_emb.modules(), *new_head.modules()):
        module._is_hf_initialized = True  # transformers' `post_init` must not draw these weights again
    lang_model.set_input_embeddings(new_emb)
    lang_model.set_output_embeddings(new_head)
    lang_model.config.vocab_size = initial_tokenizer_len + num_additional
    return lang_model


__all__ = ["DecoupledEmbedding", "DecoupledLinear", "extend_vocabulary"]
