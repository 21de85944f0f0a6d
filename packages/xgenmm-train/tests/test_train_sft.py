import json

import pytest
import torch
from safetensors.torch import load_file

from xgenmm_train.data import build_plan, rank_batches
from xgenmm_train.losses import sft_loss_sum
from xgenmm_train.modeling import build_model
from xgenmm_train.recipe import model_inputs
from xgenmm_train.sft import SFTRecipe, run_sft


def _losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _weights(ckpt):
    files = sorted((ckpt / "model").glob("*.safetensors"))
    out = {}
    for f in files:
        out.update(load_file(f))
    return out


def test_sft_steps_reduce_loss_and_save(tmp_path, synth, make_config):
    config = make_config(
        tmp_path / "run",
        synth["mixture"],
        **{"train.max_steps": 12, "train.lr": 3e-3, "logging.plot": "true"},
    )
    result = run_sft(config)
    losses = _losses(tmp_path / "run")
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < losses[0] - 0.5
    ckpt = tmp_path / "run" / "checkpoints" / "step-000012"
    assert result["checkpoint"] == str(ckpt)
    assert (ckpt / "model" / "config.json").is_file() and list((ckpt / "model").glob("*.safetensors"))
    from xgenmm_lm import XGenMM

    XGenMM.from_pretrained(ckpt / "model")  # loadable
    try:  # loss.png needs the optional `plot` extra (the workspace installs it)
        import matplotlib  # noqa: F401
    except ImportError:
        return
    png = tmp_path / "run" / "loss.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _plain_torch_losses(config, steps):
    """The same steps with a plain torch loop: AdamW, token-normalised CE, clip 1.0."""
    recipe = SFTRecipe()
    model, tok = build_model(config, texts=lambda: recipe.texts(config))
    dataset, collate = recipe.build_data(config, model, tok)
    plan = build_plan(config, dataset.lengths, 1, 0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.train.lr, weight_decay=0.0)
    losses = []
    for step in plan[:steps]:
        micro = [collate([dataset[i] for i in b]) for b in rank_batches(step, 0, 1, config.train.grad_accum)]
        n = sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro)
        total = 0.0
        for b in micro:
            out = model(**model_inputs(b))
            ce, _ = sft_loss_sum(out.logits, out.labels)
            (ce / n).backward()
            total += ce.item()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        losses.append(total / n)
    return losses


@pytest.mark.parametrize("stage", [0, 2])
def test_zero_stages_match_plain_torch_loop(tmp_path, synth, make_config, stage):
    config = make_config(
        tmp_path / "run", synth["mixture"], **{"deepspeed.zero_stage": stage, "train.grad_accum": 2}
    )
    run_sft(config)
    ds_losses = _losses(tmp_path / "run")
    ref = _plain_torch_losses(config, 3)
    assert ds_losses == pytest.approx(ref, rel=1e-4)
    assert ref[0] != pytest.approx(ref[2], rel=1e-3)  # the weights really moved


def test_grad_accumulation_equals_one_big_batch(tmp_path, synth, make_config):
    """Two micro-batches of 4 accumulated = one batch of 8 (token-normalised over the step)."""
    from xgenmm_train.distributed import build_engine, init_distributed
    from xgenmm_train.recipe import StepContext

    _, world, device = init_distributed()
    finals = []
    for accum, micro_size in ((2, 4), (1, 8)):
        config = make_config(
            tmp_path / "run",
            synth["mixture"],
            **{"train.grad_accum": accum, "train.micro_batch_size": micro_size},
        )
        recipe = SFTRecipe()
        model, tok = build_model(config, texts=lambda c=config, r=recipe: r.texts(c))
        dataset, collate = recipe.build_data(config, model, tok)
        engine, _, _ = build_engine(model, config, world, 10)
        idx = list(range(8))
        chunks = [idx[:4], idx[4:]] if accum == 2 else [idx]
        micro = [collate([dataset[i] for i in c]) for c in chunks]
        sums = recipe.train_step(StepContext(engine, device, world, config, 0), micro)
        assert engine.global_steps == 1
        finals.append(({k: v.detach().clone() for k, v in engine.module.state_dict().items()}, sums))
    (w_a, s_a), (w_b, s_b) = finals
    assert s_a["loss_sum"] / s_a["supervised"] == pytest.approx(s_b["loss_sum"] / s_b["supervised"], rel=1e-5)
    for k in w_a:
        # Adam's first step is ~lr·sign(g): a gradient near 0 turns float noise into ~1e-6 differences
        torch.testing.assert_close(w_a[k], w_b[k], rtol=1e-5, atol=1e-5)


def test_packing_gives_the_same_loss(tmp_path, synth, make_config):
    config = make_config(tmp_path / "run", synth["mixture"])
    recipe = SFTRecipe()
    model, tok = build_model(config, texts=lambda: recipe.texts(config))
    dataset, collate = recipe.build_data(config, model, tok)
    items = [dataset[i] for i in range(6)]
    plain = collate(items)
    packed = collate([items[:3], items[3:]])  # two rows of three samples
    assert "segment_ids" in packed and packed["input_ids"].shape[0] == 2
    losses = []
    for batch in (plain, packed):
        out = model(**model_inputs(batch))
        ce, n = sft_loss_sum(out.logits, out.labels)
        losses.append((ce.item(), n))
    assert losses[0][1] == losses[1][1]
    assert losses[0][0] == pytest.approx(losses[1][0], rel=1e-4)


def test_packed_batching_trains(tmp_path, synth, make_config):
    config = make_config(
        tmp_path / "run",
        synth["mixture"],
        **{"data.batching": "packed", "data.pack_tokens": 256, "train.max_steps": 2},
    )
    result = run_sft(config)
    assert result["steps"] == 2 and result["samples"] > 2 * 4  # rows hold several samples


def test_optimizer_param_groups_give_the_same_training(tmp_path, synth, make_config):
    """Cutting the trainable parameters into several optimizer param groups (same hyper-parameters) changes
    only DeepSpeed's memory layout: ZeRO-2 trains to the same weights as with one group."""
    from xgenmm_train.distributed import build_optimizer, param_groups

    params = [torch.zeros(n) for n in (5, 7, 20, 3, 3)]
    sizes = [[p.numel() for p in g["params"]] for g in param_groups(params, 10)]
    assert sizes == [[5], [7], [20], [3, 3]]
    assert len(param_groups(params, 0)) == 1
    finals = []
    for group_params in (0, 20_000):
        config = make_config(
            tmp_path / f"run{group_params}",
            synth["mixture"],
            **{"deepspeed.zero_stage": 2, "train.optimizer_group_params": group_params},
        )
        if group_params:  # the tiny model's ~1e5 trainable parameters really are cut into several groups
            model, _ = build_model(config, texts=lambda c=config: SFTRecipe().texts(c))
            trainable = [p for p in model.parameters() if p.requires_grad]
            assert len(build_optimizer(trainable, config).param_groups) >= 4
        run_sft(config)
        run_dir = tmp_path / f"run{group_params}"
        finals.append((_weights(run_dir / "checkpoints" / "step-000003"), _losses(run_dir)))
    (w_one, l_one), (w_many, l_many) = finals
    assert l_many == pytest.approx(l_one, rel=1e-5)
    for k in w_one:
        torch.testing.assert_close(w_many[k], w_one[k], rtol=1e-5, atol=1e-6)
