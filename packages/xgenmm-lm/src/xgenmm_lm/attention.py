"""LM attention for packed and right-padded training rows: each sample attends only within itself.

transformers' "sdpa" turns a packed row (several samples, position ids restarting at every sample) into ONE dense
`(L, L)` block-diagonal mask, so SDPA cannot use its flash kernel and computes every `L²` score: at micro-batch 8
packed (one row of ~9 200 tokens) that is ~8× the attention work of the samples alone. "sdpa_varlen" computes
the same attention sample by sample instead: with flash-attention's variable-length kernel
(`torch.nn.attention.varlen.varlen_attn`) on CUDA in bf16/fp16, else one causal SDPA call per sample.

`XGenMM.forward` passes the samples of the flattened `(B·L')` sequence as `segment_lengths` (host ints, summing
to `B·L'`: every sample, and every row's padding tail as one more segment) and `cu_seqlens` (their cumulative
sum, int32 on the device), for packed rows always and for right-padded rows on CUDA (on the CPU one batched
SDPA call with the padding mask is faster than a call per row). Right padding never changes a real token's output under causal attention, and padding
positions are never supervised, so the result equals "sdpa" on every real position. Any call without
`segment_lengths` (generation, scoring, other callers) runs transformers' "sdpa" unchanged, with the same masks.
"""

from __future__ import annotations

import inspect
import itertools
import warnings

import torch
import torch.nn.functional as F
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

try:  # torch >= 2.9: flash-attention's variable-length kernel; older torch runs the per-sample SDPA path
    from torch.nn.attention.varlen import varlen_attn
except ImportError:
    varlen_attn = None

VARLEN_ATTENTION = "sdpa_varlen"


def flat_segment_lengths(attention_mask: torch.Tensor, segment_ids: torch.Tensor | None) -> list[int]:
    """Lengths of the runs of the flattened `(B·L)` sequence: each sample (or unpacked row's real part) and each
    row's padding tail. attention_mask `(B, L)` 0/1 (right padding), segment_ids `(B, L)` (-1 on padding) or
    None. One host sync."""
    batch, length = attention_mask.shape
    seg = segment_ids if segment_ids is not None else attention_mask.long() - 1  # unpacked: 0 real, -1 pad
    row = torch.arange(batch, device=seg.device).unsqueeze(1) * (length + 1)
    _, counts = torch.unique_consecutive((seg + 1 + row).reshape(-1), return_counts=True)
    return counts.tolist()


def varlen_segments(attention_mask: torch.Tensor, segment_ids: torch.Tensor | None) -> dict:
    """The "sdpa_varlen" keyword arguments of the LM call for rows `(B, L)`: `segment_lengths` (host ints, see
    `flat_segment_lengths`; one host sync) and `cu_seqlens` (their cumulative sum, int32 on the mask's device)."""
    lengths = flat_segment_lengths(attention_mask, segment_ids)
    cumulative = torch.tensor(list(itertools.accumulate(lengths, initial=0)), dtype=torch.int32)
    return {"segment_lengths": lengths, "cu_seqlens": cumulative.to(attention_mask.device, non_blocking=True)}


def _causal_window_mask(n: int, window: int, device) -> torch.Tensor:
    """`(n, n)` bool: key j visible from query i when j <= i and i - j < window (transformers' sliding window)."""
    i = torch.arange(n, device=device)
    diff = i[:, None] - i[None, :]
    return (diff >= 0) & (diff < window)


_VARLEN = None  # (function, parameter names) once looked up; False when unavailable or when it failed
# Calls per path since import (benchmarks report them: did the flash varlen kernel run?).
CALLS = {"varlen": 0, "per_segment": 0}


def _varlen_function():
    global _VARLEN
    if _VARLEN is None:
        try:
            _VARLEN = (varlen_attn, set(inspect.signature(varlen_attn).parameters)) if varlen_attn else False
        except (ValueError, TypeError):
            _VARLEN = False
    return _VARLEN


def _varlen_attention(q, k, v, cu_seqlens, max_len: int, scaling: float | None, window: int | None):
    """Flash varlen attention on `(T, H, d)` tensors, or None when this torch cannot express the call."""
    found = _varlen_function()
    if not found:
        return None
    fn, params = found
    kwargs = {}
    if "window_size" in params:  # torch >= 2.10: (left, right); (-1, 0) = causal
        kwargs["window_size"] = (-1 if window is None else window - 1, 0)
    elif "is_causal" in params and window is None:  # torch 2.9
        kwargs["is_causal"] = True
    else:
        return None
    if "scale" in params:
        kwargs["scale"] = scaling
    elif scaling is not None and abs(scaling - q.shape[-1] ** -0.5) > 1e-12:
        return None
    return fn(q, k, v, cu_seqlens, cu_seqlens, max_len, max_len, **kwargs)


def _switch_varlen_off(err: Exception) -> None:
    """Stop using the varlen kernel for the rest of the process, saying why."""
    global _VARLEN
    _VARLEN = False
    warnings.warn(f"sdpa_varlen: flash varlen attention failed ({err}); using SDPA per sample", stacklevel=3)


_PROBED: set = set()  # (device, dtype, heads, dim) on which the kernel ran forward and backward


def _varlen_probe(device, dtype, heads: int, dim: int) -> bool:
    """Run the varlen kernel once, forward AND backward, on a tiny input of this device/dtype/shape.

    An error in the backward pass could not be caught later (it would stop a training step), so a kernel that
    fails here is switched off (with a warning) and the per-sample SDPA path is used instead.
    """
    key = (str(device), dtype, heads, dim)
    if key in _PROBED or torch.compiler.is_compiling():
        return True
    q, k, v = (torch.randn(8, heads, dim, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    cu_seqlens = torch.tensor([0, 3, 8], dtype=torch.int32, device=device)
    try:
        with torch.enable_grad():
            out = _varlen_attention(q, k, v, cu_seqlens, 5, None, None)
            if out is None:
                return False
            out.float().sum().backward()
    except (RuntimeError, TypeError, ValueError, NotImplementedError) as err:
        _switch_varlen_off(err)
        return False
    _PROBED.add(key)
    return True


def _per_segment_attention(q, k, v, lengths, scaling, window, dropout):
    """Causal SDPA sample by sample on `(T, H, d)` tensors → `(T, H, d)`."""
    outs, start = [], 0
    for n in lengths:
        qs, ks, vs = (t[start : start + n].transpose(0, 1).unsqueeze(0) for t in (q, k, v))
        mask = _causal_window_mask(n, window, q.device) if window is not None and n > window else None
        out = F.scaled_dot_product_attention(
            qs, ks, vs, attn_mask=mask, dropout_p=dropout, is_causal=mask is None, scale=scaling
        )
        outs.append(out[0].transpose(0, 1))
        start += n
    return torch.cat(outs)


@torch.compiler.disable
@torch.compiler.disable
def varlen_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    segment_lengths: list[int] | torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    **kwargs,
):
    """A transformers attention function. query `(B, H, L, d)`, key/value `(B, Hkv, L, d)` →
    (`(B, L, H, d)`, None). With `segment_lengths` (and `cu_seqlens`) from `XGenMM.forward`: causal attention
    inside each segment of the flattened sequence (plus the sliding window, if a segment is longer than it);
    without: transformers' "sdpa" with `attention_mask`.

    Runs outside `torch.compile` graphs (regional compilation of the decoder layers): traced, the per-sample
    lengths would be baked into the graph. `segment_lengths` may also come as a CPU int tensor, which is how
    compiled layers receive them (`segment_lengths_as_tensor`: a list's length would be a recompile guard)."""
    if isinstance(segment_lengths, torch.Tensor):
        segment_lengths = segment_lengths.tolist()  # a CPU tensor: no device sync

    if segment_lengths is None:
        sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
        return sdpa(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            sliding_window=sliding_window,
            **kwargs,
        )
    batch, heads, length, dim = query.shape
    if sum(segment_lengths) != batch * length:
        raise ValueError(
            f"segment_lengths sum to {sum(segment_lengths)}, the rows hold {batch * length} tokens"
        )
    if key.shape[1] != heads:  # grouped-query attention: one key/value head per group of query heads
        key = key.repeat_interleave(heads // key.shape[1], dim=1)
        value = value.repeat_interleave(heads // value.shape[1], dim=1)
    q, k, v = (t.transpose(1, 2).reshape(batch * length, heads, dim) for t in (query, key, value))
    max_len = max(segment_lengths)
    window = sliding_window if sliding_window is not None and max_len > sliding_window else None
    dropout = dropout if module.training else 0.0
    out = None
    usable = (
        q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and dropout == 0.0 and cu_seqlens is not None
    )
    if usable and _varlen_function() and _varlen_probe(q.device, q.dtype, heads, dim):
        try:
            out = _varlen_attention(q, k, v, cu_seqlens, max_len, scaling, window)
        except (RuntimeError, TypeError, ValueError) as err:  # e.g. a torch build without the kernel
            _switch_varlen_off(err)
    if out is None:
        out = _per_segment_attention(q, k, v, segment_lengths, scaling, window, dropout)
        CALLS["per_segment"] += 1
    else:
        CALLS["varlen"] += 1
    return out.reshape(batch, length, heads, dim), None


def segment_lengths_as_tensor(module, args, kwargs):
    """Forward pre-hook (``with_kwargs=True``) for a decoder whose layers are compiled: `segment_lengths`
    (host ints) → a CPU int64 tensor. Dynamo guards a list on its length, which would recompile the layers for
    every new number of samples in a row; a tensor's length becomes a dynamic size after the first change."""
    lengths = kwargs.get("segment_lengths")
    if isinstance(lengths, list):
        kwargs = dict(kwargs, segment_lengths=torch.tensor(lengths, dtype=torch.int64))
    return args, kwargs


def register() -> None:
    """Make "sdpa_varlen" a transformers attention implementation (its masks are "sdpa"'s). Idempotent."""
    if VARLEN_ATTENTION not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(VARLEN_ATTENTION, varlen_sdpa_attention)
    if VARLEN_ATTENTION not in ALL_MASK_ATTENTION_FUNCTIONS:
        type(ALL_MASK_ATTENTION_FUNCTIONS).register(VARLEN_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


__all__ = [
    "CALLS",
    "VARLEN_ATTENTION",
    "flat_segment_lengths",
    "register",
    "segment_lengths_as_tensor",
    "varlen_segments",
    "varlen_sdpa_attention",
]
