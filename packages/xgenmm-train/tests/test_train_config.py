import os
from pathlib import Path

import pytest

from xgenmm_train.cli import main
from xgenmm_train.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates_and_documents_its_launch(path):
    config = load_config(path)
    assert config.task in ("sft", "dpo", "pretrain")
    header = path.read_text().split("\n\n")[0]
    assert "xgenmm-train" in header  # the launch command is in the header comment


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.lrr"):
        load_config(CONFIGS / "default-sft.yaml", ["train.lrr=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("deepspeed:\n  zero_stag: 2\n")
    with pytest.raises(ConfigError, match=r"deepspeed\.zero_stag") as e:
        load_config(bad, ["data.path=x", "model.init=tiny"])
    assert str(bad) in str(e.value)


def test_wrong_type_and_bad_choice_are_named():
    with pytest.raises(ConfigError, match=r"train\.lr"):
        load_config(CONFIGS / "default-sft.yaml", ["train.lr=fast"])
    with pytest.raises(ConfigError, match=r"deepspeed\.zero_stage"):
        load_config(CONFIGS / "default-sft.yaml", ["deepspeed.zero_stage=4"])
    with pytest.raises(ConfigError, match=r"data\.batching"):
        load_config(CONFIGS / "default-sft.yaml", ["data.batching=random"])
    with pytest.raises(ConfigError, match=r"model\.path"):
        load_config(CONFIGS / "default-sft.yaml", ["model.init=pretrained"])


def test_overrides_and_interpolation():
    c = load_config(
        CONFIGS / "default-sft.yaml", ["run_dir=/tmp/x", "train.lr=1e-4", "lora.target_modules=[o_proj]"]
    )
    assert c.train.lr == 1e-4
    assert c.data.path == "/tmp/x/data/mixture.yaml"
    assert c.lora.target_modules == ["o_proj"]


def test_cli_print_config(capsys):
    assert main(["--print-config", "train.lr=0.5"]) == 0
    assert "lr: 0.5" in capsys.readouterr().out
    assert main(["dpo", "--print-config"]) == 0
    assert "task: dpo" in capsys.readouterr().out
    assert (
        main(["sft", "--config", str(CONFIGS / "xgenmm-phi3-sft.yaml"), "--print-config", "train.bad=1"]) == 2
    )
    assert "train.bad" in capsys.readouterr().err


def test_cli_accepts_the_deepspeed_launchers_local_rank(capsys, monkeypatch):
    """`deepspeed --module xgenmm_train.cli ...` passes --local_rank=N; LOCAL_RANK (set by the launcher too)
    is what the run reads, and is set from the flag when missing."""
    monkeypatch.setenv("LOCAL_RANK", "0")  # recorded, so the test's LOCAL_RANK is undone afterwards
    monkeypatch.delenv("LOCAL_RANK")
    assert main(["sft", "--local_rank=3", "--print-config"]) == 0
    assert "task: sft" in capsys.readouterr().out
    assert os.environ["LOCAL_RANK"] == "3"


def test_optimizer_and_attention_choices(tmp_path, synth, make_config):
    import torch

    from xgenmm_train.distributed import build_optimizer
    from xgenmm_train.modeling import build_model
    from xgenmm_train.sft import SFTRecipe

    with pytest.raises(ConfigError, match=r"train\.optimizer"):
        load_config(CONFIGS / "default-sft.yaml", ["train.optimizer=sgd"])
    config = make_config(tmp_path / "run", synth["mixture"])
    assert config.train.optimizer == "adamw" and config.model.attn_implementation == "sdpa_varlen"
    model, _ = build_model(config, texts=lambda: SFTRecipe().texts(config))
    assert model.lang_model.config._attn_implementation == "sdpa_varlen"
    params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(params, config)
    # CPU parameters: torch's default AdamW (fused=True is chosen only for parameters on a GPU)
    assert isinstance(opt, torch.optim.AdamW) and not opt.defaults["fused"] and not opt.defaults["foreach"]
    config.train.optimizer = "adamw_foreach"
    assert build_optimizer(params, config).defaults["foreach"] is True

    sdpa = make_config(tmp_path / "run2", synth["mixture"], **{"model.attn_implementation": "sdpa"})
    model, _ = build_model(sdpa, texts=lambda: SFTRecipe().texts(sdpa))
    assert model.lang_model.config._attn_implementation == "sdpa"


def test_resize_backend_reaches_the_dataset(tmp_path, synth, make_config):
    from xgenmm_train.data import build_sft_dataset
    from xgenmm_train.modeling import build_model
    from xgenmm_train.sft import SFTRecipe

    with pytest.raises(ConfigError, match=r"data\.resize_backend"):
        load_config(CONFIGS / "default-sft.yaml", ["data.resize_backend=cv2"])
    for backend in ("pil", "torch"):
        config = make_config(tmp_path / backend, synth["mixture"], **{"data.resize_backend": backend})
        model, tokenizer = build_model(config, texts=lambda c=config: SFTRecipe().texts(c))
        dataset = build_sft_dataset(config, tokenizer, model)
        assert dataset.processor.image_processor.resize_backend == backend
        pixels = [p for i in range(len(dataset)) for p in (dataset[i]["pixel_values"] or [])]
        assert pixels and all(p.dtype.is_floating_point and p.dim() == 4 for p in pixels)


@pytest.mark.parametrize(
    "override",
    [
        "train.max_steps=0",
        "train.max_steps=-1",
        "train.lr=-1e-4",
        "train.lr=0",
        "train.lr=nan",
        "train.warmup_steps=-1",
        "train.micro_batch_size=0",
        "train.grad_accum=0",
        "train.betas=[0.9,1.5]",
        "train.clip_grad=-1",
        "checkpoint.save_every=0",
        "checkpoint.keep_last=0",
        "logging.log_every=0",
        "data.max_length=0",
        "dpo.beta=0",
    ],
)
def test_bad_numbers_are_config_errors_naming_the_key(override, capsys):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"config key '{key}': .* is not allowed; it must be"):
        load_config(CONFIGS / "default-sft.yaml", [override])
    assert main(["--print-config", override]) == 2
    assert f"config key '{key}'" in capsys.readouterr().err


def test_null_means_no_limit_and_positive_numbers_pass():
    c = load_config(CONFIGS / "default-sft.yaml", ["train.max_steps=null", "checkpoint.save_every=null"])
    assert c.train.max_steps is None and c.checkpoint.save_every is None
    c = load_config(CONFIGS / "default-sft.yaml", ["train.max_steps=5", "checkpoint.save_every=1"])
    assert c.train.max_steps == 5 and c.checkpoint.save_every == 1
