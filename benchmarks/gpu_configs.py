"""What `gpu_sft` measures: configurations as the trainer's own dotted config overrides, the sweep, and the
benchmark's two keys of its own (`bench.*`, same syntax)."""

from __future__ import annotations

from dataclasses import dataclass, field

# Every configuration starts from these (then the trainer's schema defaults fill the rest). data.path and
# model.path only satisfy the config's validation: the benchmark builds its own batches and random weights.
BASE = [
    "data.path=(synthetic batches)",
    "model.path=(random weights)",
    "model.gradient_checkpointing=true",
    "train.micro_batch_size=4",
    "train.lr=2e-5",
    "train.precision=bf16",
    "deepspeed.extra.bf16.check_grad_overflow=true",
]
TINY = ["train.precision=fp32"]  # --tiny: the tiny config in fp32 on the CPU
# What a variant may change: settings that can switch between two steps of the same engine.
AB_KEYS = (
    "model.attn_implementation",
    "bench.loss",
    "deepspeed.extra.bf16.check_grad_overflow",
    "dpo.reference",
)


@dataclass
class BenchConfig:
    """The benchmark's own keys (`bench.KEY=VALUE`)."""

    profile: bool = False
    loss: str = "token"  # token: the trainer's loss | full: full logits + fp32 CE (the earlier SFT path)


@dataclass
class Run:
    """One configuration: the trainer's dotted overrides, and A/B variants (name -> overrides on top)."""

    name: str
    overrides: list[str]
    variants: dict[str, list[str]] = field(default_factory=dict)
    note: str = ""


MB8_PACK = ["train.micro_batch_size=8", "data.batching=packed"]
DPO_LORA = [  # as configs/xgenmm-phi3-dpo-lora.yaml: adapters + perceiver train, checkpointing, 4 pairs
    "task=dpo",
    "lora.enabled=true",
    "model.train_lang_model=false",
    "train.lr=5e-6",
    "dpo.reference=precompute",
]
# The sweep for one GPU session (issues 9 and 15), most important first. Estimated on one H100/H200: ~35 s per
# configuration to start (imports, random 4.4 B-parameter model on the GPU, DeepSpeed set-up), then ~0.6 s per
# micro-batch-8 step, ~1 s with dense SDPA; compile and the JIT builds (deepspeed_adam, offload) add ~1 min.
SWEEP = [
    Run("sft-mb8-pack", [*MB8_PACK, "bench.profile=true"], {"dense-sdpa": ["model.attn_implementation=sdpa"]},
        "the target, profiled; A/B: transformers' dense-mask SDPA on the packed row (same first loss)"),
    Run("sft-mb8-pack-nockpt", [*MB8_PACK, "model.gradient_checkpointing=false"], {},
        "no recompute: ~45 GiB more activations (fits an H200, not an 80 GB H100)"),
    Run("sft-mb8-pack-compile", [*MB8_PACK, "model.compile=true"], {},
        "regional torch.compile of the decoder layers and perceiver blocks (the first steps compile)"),
    Run("dpo-lora", DPO_LORA, {"live-reference": ["dpo.reference=model"], "lora-reference": ["dpo.reference=lora"]},
        "DPO step, precomputed reference vs a live reference model vs the adapters disabled"),
    Run("sft-mb8-pack-ga4", [*MB8_PACK, "train.grad_accum=4"],
        {"no-overflow-check": ["deepspeed.extra.bf16.check_grad_overflow=false"]},
        "4 micro-batches per optimizer step; A/B: DeepSpeed's bf16 overflow check off"),
    Run("sft-mb8-pack-ckpt28", [*MB8_PACK, "model.gradient_checkpointing_layers=28"], {},
        "selective checkpointing: 4 of 32 LM layers keep their activations (~5 GiB more)"),
    Run("sft-mb8-pack-z0", [*MB8_PACK, "deepspeed.zero_stage=0"], {}, "ZeRO-0 (DeepSpeed's bf16 optimizer)"),
    Run("sft-mb4-pad-earlier", ["train.optimizer=adamw_foreach"],
        {"full-logits": ["bench.loss=full"], "dense-sdpa": ["model.attn_implementation=sdpa"]},
        "micro-batch 4 padded, the earlier optimizer; A/B: the earlier loss, the earlier attention"),
    Run("sft-mb8-pack-z1", [*MB8_PACK, "deepspeed.zero_stage=1"], {}, "ZeRO-1"),
    Run("sft-mb8-pack-dsadam", [*MB8_PACK, "train.optimizer=deepspeed_adam"], {},
        "DeepSpeed FusedAdam (JIT-built with nvcc) vs torch fused AdamW"),
    Run("sft-mb2-pack-nockpt-ga4", ["train.micro_batch_size=2", "data.batching=packed",
        "model.gradient_checkpointing=false", "train.grad_accum=4"], {}, "no recompute, 8 samples per step"),
    Run("sft-mb8-pack-onegroup", [*MB8_PACK, "train.optimizer_group_params=0"], {},
        "one optimizer param group (earlier): ~82 GiB step peak"),
    Run("sft-mb8-pack-nockpt-offload", [*MB8_PACK, "model.gradient_checkpointing=false",
        "deepspeed.offload_optimizer=true", "train.grad_accum=8"], {}, "Adam on the CPU, amortised over 8"),
]  # fmt: skip


def load_run(overrides: list[str], tiny: bool):
    """Dotted overrides → (the trainer's validated Config, BenchConfig)."""
    from omegaconf import OmegaConf

    from xgenmm_train.config import load_config

    ours = [o for o in overrides if o.startswith("bench.")]
    config = load_config(None, [*BASE, *(TINY if tiny else []), *(o for o in overrides if o not in ours)])
    try:
        bench = OmegaConf.merge(
            OmegaConf.structured(BenchConfig), OmegaConf.from_dotlist([o[6:] for o in ours])
        )
    except Exception as e:
        raise ValueError(f"{ours}: {str(e).splitlines()[0]}") from None
    bench = OmegaConf.to_object(bench)
    if bench.loss not in ("token", "full"):
        raise ValueError(f"bench.loss={bench.loss!r}: token or full")
    return config, bench


def check_run(run: Run, tiny: bool) -> None:
    """Fail before starting anything: every override valid, variants change only AB_KEYS."""
    load_run(run.overrides, tiny)
    for name, extra in run.variants.items():
        bad = [o for o in extra if o.split("=", 1)[0] not in AB_KEYS]
        if bad:
            raise ValueError(f"{run.name}: variant {name} changes {bad}; a variant may change only {AB_KEYS}")
        load_run(run.overrides + extra, tiny)
