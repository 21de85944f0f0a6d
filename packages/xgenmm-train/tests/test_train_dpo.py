import copy

import pytest
import torch

from xgenmm_train.distributed import build_engine, init_distributed
from xgenmm_train.dpo import DPORecipe, pair_logps, run_dpo
from xgenmm_train.losses import dpo_loss
from xgenmm_train.modeling import build_model
from xgenmm_train.recipe import StepContext, to_device
from xgenmm_train.sft import run_sft


def _dpo_config(make_config, tmp_path, synth, **extra):
    return make_config(
        tmp_path / "run",
        synth["dpo_train"],
        task="dpo",
        **{"data.image_folder": str(synth["dpo_train"].parent), "train.lr": 3e-3, **extra},
    )


@pytest.mark.parametrize("reference", ["precompute", "lora"])
def test_dpo_loss_equals_two_model_computation(tmp_path, synth, make_config, reference):
    extra = {"dpo.reference": reference, "dpo.rpo_alpha": 0.5, "dpo.label_smoothing": 0.1}
    if reference == "lora":
        extra.update({"lora.enabled": "true", "lora.r": 4, "lora.dropout": 0.0})
    config = _dpo_config(make_config, tmp_path, synth, **extra)
    _, world, device = init_distributed()
    recipe = DPORecipe()
    model, tok = build_model(config, texts=lambda: recipe.texts(config))
    # A second, frozen model = the starting weights (with LoRA: adapters still zero, perceiver untouched).
    frozen_start = copy.deepcopy(model).eval()
    dataset, collate = recipe.build_data(config, model, tok)
    engine, _, _ = build_engine(model, config, world, 10)
    recipe.prepare(config, engine, dataset, collate, 0, world, device)

    batch_a = collate([dataset[i] for i in range(4)])
    recipe.train_step(StepContext(engine, device, world, config, 0), [batch_a])  # the policy moves away
    batch = to_device(collate([dataset[i] for i in range(4, 8)]), device)

    with torch.no_grad():
        ref_c, ref_r, _ = pair_logps(frozen_start, batch)
        rc, rr = recipe.reference(StepContext(engine, device, world, config, 1), batch)
        torch.testing.assert_close(rc, ref_c, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(rr, ref_r, rtol=1e-5, atol=1e-4)
        engine.eval()
        pc, pr, n = pair_logps(engine.module, batch)
        engine.train()
    assert not torch.allclose(pc, ref_c)  # the policy did change
    losses, _ = dpo_loss(pc, pr, ref_c, ref_r, beta=0.1, label_smoothing=0.1)
    expected = (losses + 0.5 * (-pc / n)).mean()
    # the recipe's own number for the same batch (before its update)
    sums = recipe.train_step(
        StepContext(engine, device, world, config, 1), [collate([dataset[i] for i in range(4, 8)])]
    )
    assert sums["loss_sum"] / sums["pairs"] == pytest.approx(expected.item(), rel=1e-4)


def test_dpo_precompute_trains_and_is_resumable(tmp_path, synth, make_config):
    config = _dpo_config(make_config, tmp_path, synth, **{"train.max_steps": 4})
    ref_dir = tmp_path / "run" / "reference_logps"
    result = run_dpo(config)
    lines = (ref_dir / "rank-00000.jsonl").read_text().splitlines()
    assert len(lines) == 16
    assert result["final_metrics"]["reward_acc"] >= 0.0 and "rewards/chosen" in result["final_metrics"]
    # a torn last line (killed pass) is dropped and recomputed; complete lines are kept
    (ref_dir / "rank-00000.jsonl").write_text("\n".join(lines[:5]) + "\n" + lines[5][:10])
    run_dpo(config)
    again = (ref_dir / "rank-00000.jsonl").read_text().splitlines()
    assert again[:5] == lines[:5] and len(again) == 16
    assert sorted(again) == sorted(lines)


def test_lora_sft_and_dpo_run_and_save(tmp_path, synth, make_config):
    lora = {"lora.enabled": "true", "lora.r": 4, "model.train_lang_model": "false", "train.max_steps": 2}
    result = run_sft(make_config(tmp_path / "sft", synth["mixture"], **lora))
    adapter = tmp_path / "sft" / "checkpoints" / "step-000002" / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    assert result["steps"] == 2

    config = _dpo_config(
        make_config, tmp_path, synth, **lora, **{"dpo.reference": "lora", "lora.merge_on_save": "true"}
    )
    run_dpo(config)
    merged = tmp_path / "run" / "checkpoints" / "step-000002" / "model"
    from xgenmm_lm import XGenMM

    model = XGenMM.from_pretrained(merged)
    assert not any("lora" in k for k in model.state_dict())
