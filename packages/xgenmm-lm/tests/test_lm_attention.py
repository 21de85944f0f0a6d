"""The training fast paths: "sdpa_varlen" attention (packed rows sample by sample) and `token_logps=True`
(the LM head only on supervised positions) give the numbers of the plain "sdpa" / full-logits path."""

import pytest
import torch
import torch.nn.functional as F

from xgenmm_lm import XGenMM, tiny_config
from xgenmm_lm.attention import flat_segment_lengths, varlen_sdpa_attention


def _sample(cfg, length, n_images=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, cfg.initial_tokenizer_len - 10, (length,), generator=g)
    for k in range(n_images):
        ids[2 + 5 * k] = cfg.media_token_id
    labels = ids.clone()
    labels[: length // 2] = -100
    labels[ids == cfg.media_token_id] = -100
    S = cfg.vision_config.image_size
    return ids, labels, [torch.randn(5, 3, S, S, generator=g) for _ in range(n_images)], [(64, 48)] * n_images


def _packed(items):
    """All samples in one row (text coordinates: position ids restart, segment ids count samples)."""
    return {
        "input_ids": torch.cat([i[0] for i in items])[None],
        "labels": torch.cat([i[1] for i in items])[None],
        "attention_mask": torch.ones(1, sum(len(i[0]) for i in items), dtype=torch.long),
        "position_ids": torch.cat([torch.arange(len(i[0])) for i in items])[None],
        "segment_ids": torch.cat([torch.full((len(i[0]),), k) for k, i in enumerate(items)])[None],
        "pixel_values": [[p for i in items for p in i[2]]],
        "image_sizes": [[s for i in items for s in i[3]]],
    }


def _padded(items, pad_id):
    length = max(len(i[0]) for i in items)
    ids = torch.full((len(items), length), pad_id)
    labels = torch.full((len(items), length), -100)
    mask = torch.zeros(len(items), length, dtype=torch.long)
    for b, (i, lab, _, _) in enumerate(items):
        ids[b, : len(i)], labels[b, : len(i)], mask[b, : len(i)] = i, lab, 1
    return {
        "input_ids": ids,
        "labels": labels,
        "attention_mask": mask,
        "pixel_values": [i[2] for i in items],
        "image_sizes": [i[3] for i in items],
    }


def _pair(cfg):
    torch.manual_seed(0)
    plain = XGenMM.from_config(cfg, attn_implementation="sdpa")
    varlen = XGenMM.from_config(cfg, attn_implementation="sdpa_varlen")
    varlen.load_state_dict(plain.state_dict())
    return plain.train(), varlen.train()


def _reference_logps(model, batch):
    """log p(label[t+1]) from the full logits of the default forward, 0 where not supervised."""
    out = model(**batch)
    logps = F.log_softmax(out.logits[:, :-1].float(), -1)
    target = out.labels[:, 1:]
    mask = target != -100
    picked = logps.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked.masked_fill(~mask, 0.0), mask


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_varlen_and_token_logps_match_sdpa_full_logits(layout):
    cfg = tiny_config(initial_len=256)
    plain, varlen = _pair(cfg)
    items = [_sample(cfg, n, seed=n) for n in (21, 34, 17)]
    batch = _packed(items) if layout == "packed" else _padded(items, cfg.pad_token_id)

    ref, ref_mask = _reference_logps(plain, batch)
    (-ref.sum()).backward()
    out = varlen(**batch, token_logps=True)
    (-out.token_logps.sum()).backward()

    assert out.logits is None and out.loss is None
    assert torch.equal(out.token_mask, ref_mask) and int(ref_mask.sum()) > 20
    torch.testing.assert_close(out.token_logps, ref, rtol=1e-5, atol=1e-5)
    g_ref, g_new = _grads(plain), _grads(varlen)
    assert set(g_ref) == set(g_new) and any(k.startswith("lang_model.") for k in g_new)
    for name in g_ref:
        torch.testing.assert_close(g_new[name], g_ref[name], rtol=1e-4, atol=1e-6, msg=name)


def test_varlen_without_segments_is_sdpa_and_mean_loss_unchanged():
    """A plain forward (and generate) of a "sdpa_varlen" model gives the "sdpa" numbers on real positions."""
    cfg = tiny_config(initial_len=256)
    plain, varlen = _pair(cfg)
    plain.eval(), varlen.eval()
    batch = _padded([_sample(cfg, n, seed=n) for n in (15, 26)], cfg.pad_token_id)
    a, b = plain(**batch), varlen(**batch)
    real = a.attention_mask.bool()  # padding positions differ (never supervised, never attended to)
    assert (~real).any()
    torch.testing.assert_close(b.logits[real], a.logits[real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-5, atol=1e-6)
    gen = {k: v for k, v in batch.items() if k != "labels"}
    assert torch.equal(
        plain.generate(**gen, max_new_tokens=4, do_sample=False),
        varlen.generate(**gen, max_new_tokens=4, do_sample=False),
    )


def test_varlen_sliding_window_and_grouped_kv_heads():
    """Samples longer than the LM's sliding window, and fewer key/value heads than query heads."""
    cfg = tiny_config(initial_len=256)
    cfg.text_config.sliding_window = 6
    cfg.text_config.num_key_value_heads = 2
    plain, varlen = _pair(cfg)
    batch = _packed([_sample(cfg, n, seed=n) for n in (19, 12)])
    ref, _ = _reference_logps(plain, batch)
    out = varlen(**batch, token_logps=True)
    torch.testing.assert_close(out.token_logps, ref, rtol=1e-5, atol=1e-5)


def test_flat_segment_lengths():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    assert flat_segment_lengths(mask, None) == [3, 1, 4]
    segments = torch.tensor([[0, 0, 1, 1, 1, -1], [0, 1, 1, 2, -1, -1]])
    assert flat_segment_lengths(torch.ones_like(segments), segments) == [2, 3, 1, 1, 2, 1, 2]


def test_varlen_attention_function_is_block_diagonal_causal():
    """Directly: each segment sees only itself, causally (the dense-mask SDPA result)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 7, 4) for _ in range(3))
    module = torch.nn.Module()
    out, _ = varlen_sdpa_attention(module, q, k, v, None, scaling=0.5, segment_lengths=[3, 4])
    seg = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    i = torch.arange(7)
    mask = (seg[:, None] == seg[None, :]) & (i[None, :] <= i[:, None])
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.5).transpose(1, 2)
    torch.testing.assert_close(out, ref)
    with pytest.raises(ValueError, match="segment_lengths"):
        varlen_sdpa_attention(module, q, k, v, None, segment_lengths=[3, 3])


def test_token_logps_needs_labels():
    cfg = tiny_config(initial_len=256)
    model = XGenMM.from_config(cfg)
    batch = _padded([_sample(cfg, 12)], cfg.pad_token_id)
    batch.pop("labels")
    with pytest.raises(ValueError, match="labels"):
        model(**batch, token_logps=True)


def _fake_varlen(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, window_size=(-1, -1)):
    """torch's documented varlen_attn semantics (window (left, right) around the diagonal), on the CPU."""
    outs = []
    bounds = cu_seq_q.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        n = end - start
        i = torch.arange(n)
        diff = i[:, None] - i[None, :]
        left, right = window_size
        mask = (diff >= -right if right >= 0 else torch.ones(n, n, dtype=torch.bool)) & (
            diff <= left if left >= 0 else torch.ones(n, n, dtype=torch.bool)
        )
        q, k, v = (t[start:end].transpose(0, 1) for t in (query, key, value))
        outs.append(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale).transpose(0, 1))
    return torch.cat(outs)


@pytest.mark.parametrize("window", [None, 3])
def test_varlen_kernel_call_matches_per_segment(monkeypatch, window):
    """The arguments handed to torch's varlen kernel (cu_seqlens, causal window) mean the per-sample SDPA."""
    import inspect

    from xgenmm_lm import attention

    monkeypatch.setattr(attention, "_VARLEN", (_fake_varlen, set(inspect.signature(_fake_varlen).parameters)))
    torch.manual_seed(0)
    lengths = [4, 6, 2]
    q, k, v = (torch.randn(12, 2, 8) for _ in range(3))
    cu = torch.tensor([0, 4, 10, 12], dtype=torch.int32)
    got = attention._varlen_attention(q, k, v, cu, 6, 0.3, window)
    want = attention._per_segment_attention(q, k, v, lengths, 0.3, window, 0.0)
    torch.testing.assert_close(got, want)


class _BackwardFails(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("no backward kernel for this build")


def _fake_varlen_without_backward(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, **kwargs):
    return _BackwardFails.apply(_fake_varlen(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, **kwargs))


def test_varlen_probe_switches_the_kernel_off_when_its_backward_fails(monkeypatch):
    """A kernel that runs forward but not backward is found before a training step depends on it."""
    import inspect

    from xgenmm_lm import attention

    monkeypatch.setattr(attention, "_PROBED", set())
    monkeypatch.setattr(attention, "_VARLEN", (_fake_varlen, set(inspect.signature(_fake_varlen).parameters)))
    assert attention._varlen_probe("cpu", torch.float32, 2, 8)
    assert ("cpu", torch.float32, 2, 8) in attention._PROBED and attention._VARLEN

    params = set(inspect.signature(_fake_varlen).parameters)
    monkeypatch.setattr(attention, "_VARLEN", (_fake_varlen_without_backward, params))
    with pytest.warns(UserWarning, match="per sample"):
        assert not attention._varlen_probe("cpu", torch.float32, 4, 8)
    assert attention._VARLEN is False  # switched off for the rest of the process
