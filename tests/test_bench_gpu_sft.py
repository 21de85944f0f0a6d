"""benchmarks/gpu_sft.py: configurations are the trainer's dotted overrides; --tiny runs the code on the CPU."""

import pytest

from benchmarks.gpu_configs import SWEEP, Run, check_run, load_run


def test_every_sweep_configuration_is_a_valid_trainer_config():
    names = [run.name for run in SWEEP]
    assert len(set(names)) == len(names)
    for run in SWEEP:
        check_run(run, tiny=False)  # raises on an unknown key, a wrong value, or a variant changing too much
    config, bench = load_run(
        ["train.micro_batch_size=8", "data.batching=packed", "bench.profile=true"], False
    )
    assert (config.train.micro_batch_size, config.data.batching, bench.profile) == (8, "packed", True)
    dpo, _ = load_run(next(r for r in SWEEP if r.name == "dpo-lora").overrides, False)
    assert dpo.task == "dpo" and dpo.lora.enabled and dpo.dpo.reference == "precompute"


def test_bad_configurations_are_refused():
    from xgenmm_train.config import ConfigError

    with pytest.raises(ConfigError, match="micro_batchsize"):
        load_run(["train.micro_batchsize=8"], False)
    with pytest.raises(ValueError, match="a variant may change only"):
        check_run(Run("x", [], {"bad": ["train.micro_batch_size=2"]}), False)
    with pytest.raises(ValueError, match="bench.loss"):
        load_run(["bench.loss=other"], False)


@pytest.mark.slow
def test_gpu_sft_tiny_configuration_with_ab_variant_and_profile(run_benchmark):
    report = run_benchmark(
        "gpu_sft", "--tiny", "--steps", "2", "--warmup", "1", "train.micro_batch_size=4", "data.batching=packed",
        "bench.profile=true", "--ab", "dense-sdpa", "model.attn_implementation=sdpa",
    )  # fmt: skip
    (run,) = report["runs"]
    assert "error" not in run, run["error"]
    assert run["micro_batch"] == 4 and run["packed"] and run["gradient_checkpointing"]
    base, sdpa = run["variants"]
    assert sdpa["overrides"] == ["model.attn_implementation=sdpa"]
    # the same first loss: the variant changes the attention kernel, not the numbers
    assert base["loss_before_update"] == pytest.approx(sdpa["loss_before_update"], rel=1e-4)
    assert base["tokens_per_s"] > 0 and sdpa["tokens_per_s"] > 0
    assert run["profile"]["top20"], "the profile lists the top operators"
    assert run["lm_attention_calls"]["per_segment"] > 0  # the packed row went through sdpa_varlen (CPU path)
