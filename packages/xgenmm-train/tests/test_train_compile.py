"""Regional compilation (`model.compile`): each LM decoder layer and each perceiver block is torch.compile'd,
and a step gives the same loss and gradients as eager.

Tolerance, fp32 on the CPU: loss within 1e-5 relative, every parameter's gradient within 1e-5 of that
gradient's largest entry (measured with inductor: loss equal to the last bit or 8e-8, gradients up to ~1.2e-6).
"""

import copy
import json

import pytest
import torch
from torch._dynamo.utils import counters

from xgenmm_lm import XGenMM, tiny_config
from xgenmm_train.modeling import build_model, compile_regions, compiled_regions
from xgenmm_train.sft import run_sft

LOSS_RTOL = 1e-5
GRAD_TOL = 1e-5  # of each gradient's largest absolute entry


def _packed_batch(model, lengths: list[int], seed: int) -> dict:
    """One packed row of len(lengths) samples, each with one image (64x48) and its second half supervised."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    size = cfg.vision_config.image_size
    n_crops = model.image_processor().num_crops((64, 48))
    ids, labels, pixels = [], [], []
    for n in lengths:
        x = torch.randint(5, 200, (n,), generator=g)
        x[2] = cfg.media_token_id
        y = x.clone()
        y[: n // 2] = -100
        ids.append(x)
        labels.append(y)
        pixels.append(torch.randn(n_crops, 3, size, size, generator=g))
    return {
        "input_ids": torch.cat(ids)[None],
        "attention_mask": torch.ones(1, sum(lengths), dtype=torch.long),
        "labels": torch.cat(labels)[None],
        "position_ids": torch.cat([torch.arange(n) for n in lengths])[None],
        "segment_ids": torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])[None],
        "pixel_values": [pixels],
        "image_sizes": [[(64, 48)] * len(lengths)],
    }


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(**batch, token_logps=True)
    loss = -out.token_logps.sum() / out.token_mask.sum()
    loss.backward()
    return float(loss.detach()), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


def _assert_same(compiled, eager, batch):
    loss_c, grads_c = _loss_and_grads(compiled, batch)
    loss_e, grads_e = _loss_and_grads(eager, batch)
    assert loss_c == pytest.approx(loss_e, rel=LOSS_RTOL)
    assert grads_c.keys() == grads_e.keys() and len(grads_e) > 20
    for name, g in grads_e.items():
        err = float((grads_c[name] - g).abs().max())
        assert err <= GRAD_TOL * max(float(g.abs().max()), 1e-12), (name, err)


def _tiny_pair(gradient_checkpointing: bool):
    torch.manual_seed(0)
    eager = XGenMM.from_config(tiny_config(), attn_implementation="sdpa_varlen")
    eager.set_trainable(vision_encoder=False)
    if gradient_checkpointing:
        eager.gradient_checkpointing_enable()
    eager.train()
    return copy.deepcopy(eager), eager


def test_regions_are_every_decoder_layer_and_perceiver_block():
    model = XGenMM.from_config(tiny_config())
    regions = compiled_regions(model)
    lm_layers = model.lang_model.model.layers
    perceiver = model.vision_tokenizer.layers
    assert len(regions) == len(lm_layers) + 2 * len(perceiver)
    assert all(any(r is layer for r in regions) for layer in lm_layers)
    assert all(any(r is block for r in regions) for pair in perceiver for block in pair)
    assert all(r._compiled_call_impl is None for r in regions)
    compile_regions(model, backend="aot_eager")
    assert all(r._compiled_call_impl is not None for r in regions)
    assert model.lang_model._compiled_call_impl is None and model._compiled_call_impl is None  # not whole


def test_compiled_regions_match_eager_and_new_sample_counts_do_not_recompile():
    """dynamo + AOT autograd (no code generation, fast): same numbers, and after one change of row shape the
    graphs are dynamic: a row with another number of samples compiles nothing new."""
    compiled, eager = _tiny_pair(gradient_checkpointing=False)
    compile_regions(compiled, backend="aot_eager")
    torch._dynamo.reset()
    counters.clear()
    _assert_same(compiled, eager, _packed_batch(eager, [20, 30], 0))
    _assert_same(compiled, eager, _packed_batch(eager, [25, 17, 9], 1))
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0, "nothing was compiled"
    _assert_same(compiled, eager, _packed_batch(eager, [13, 13, 13, 13], 2))
    assert counters["stats"]["unique_graphs"] == graphs, "a new number of samples per row recompiled"


@pytest.mark.slow
def test_inductor_regions_with_checkpointing_match_eager():
    """The real backend (inductor: generated C++ kernels on the CPU) under non-reentrant checkpointing."""
    compiled, eager = _tiny_pair(gradient_checkpointing=True)
    compile_regions(compiled)
    torch._dynamo.reset()
    for seed, lengths in enumerate([[20, 30], [25, 17, 9], [13, 13, 13, 13]]):
        _assert_same(compiled, eager, _packed_batch(eager, lengths, seed))


def test_compile_is_off_by_default(tmp_path, synth, make_config):
    config = make_config(tmp_path / "run", synth["mixture"])
    assert config.model.compile is False
    model, _ = build_model(config, texts=lambda: ["a b c d e f g"] * 20)
    assert all(m._compiled_call_impl is None for m in model.modules())


@pytest.mark.slow
def test_sft_run_with_model_compile_gives_the_eager_losses(tmp_path, synth, make_config):
    """The trainer with `model.compile=true` (inductor, DeepSpeed engine, packed rows): the same per-step
    losses as the default run."""
    losses = {}
    for flag in ("false", "true"):
        run_dir = tmp_path / f"compile-{flag}"
        extra = {
            "model.compile": flag,
            "data.batching": "packed",
            "data.pack_tokens": 512,
            "train.max_steps": 2,
        }
        run_sft(make_config(run_dir, synth["mixture"], **extra))
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        losses[flag] = [json.loads(line)["loss"] for line in lines]
    assert len(losses["true"]) == 2
    assert losses["true"] == pytest.approx(losses["false"], rel=1e-4)
