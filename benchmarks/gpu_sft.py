"""Real-size xGen-MM SFT steps on one GPU with random weights (no download): tokens/s, MFU, memory, profile.

    uv run python benchmarks/gpu_sft.py                      # 20 steps, micro-batch 4, bf16, checkpointing
    uv run python benchmarks/gpu_sft.py --configs 8:ckpt:pack:prof+sdpa   # one config, A/B against dense SDPA
    uv run python benchmarks/gpu_sft.py --sweep              # the issue-9 sweep, <= --budget-s seconds
    uv run python benchmarks/gpu_sft.py --tiny --steps 2     # the same code path on the CPU (smoke test)
    uv run python benchmarks/gpu_sft.py --shallow 2 --configs 2:ckpt:pack:prof --steps 1 --warmup 1 \
        --text-len 128 --image 384x384                       # real widths, 2 layers: a CPU profile

Each sample: 1 image of 640x480 (anyres 2x2 grid: 5 crops -> 640 LM tokens) + 512 text tokens, a third of
them supervised. Model: XGenMMConfig() (SigLIP so400m-384, perceiver 128 latents, Phi-3-mini), vision encoder
frozen (spec §1.8), DeepSpeed, bf16, AdamW, clip 1.0 - the engine and loss of xgenmm-train.
MFU = 6 · N · tokens / time / peak with N = trainable parameters (perceiver + LM, 3.93 B) and tokens = LM
positions (text + vision); the frozen SigLIP forward and the recompute of checkpointing are not counted.
Peak: H100/H200 SXM dense bf16 989 TFLOP/s.

A configuration is `MICRO:TOKEN:TOKEN...` (tokens in any order, unnamed ones take the defaults below), then
optional `+TOKEN` A/B variants measured in the same process, interleaved step by step with the base:

    ckpt | nockpt        gradient checkpointing (default ckpt)
    ckptN                checkpoint only the first N LM decoder layers (selective: the others keep activations)
    pad | pack           MICRO padded rows, or all samples packed into one row (default pad)
    z0 | z1 | z2         DeepSpeed ZeRO stage (default 2)
    gaN                  N micro-batches (the same batch) per optimizer step (default ga1); --steps and
                         --warmup count micro-batches: max(2, steps // N) and max(1, warmup // N) steps
    offload              optimizer states and step on the CPU (ZeRO-Offload, DeepSpeedCPUAdam; JIT-built)
    onegroup             all trainable parameters in ONE optimizer param group (train.optimizer_group_params=0,
                         the earlier layout; default: groups of <= 250 M parameters)
    adamw | foreach | dsadam   torch AdamW fused (train.optimizer=adamw, default) | torch AdamW multi-tensor
                         (adamw_foreach, the earlier default) | DeepSpeed FusedAdam (JIT-built on first use)
    varlen | sdpa        LM attention sdpa_varlen (default) | transformers sdpa (packed rows: dense mask)   [A/B]
    tokenlogps | fulllogits    SFT loss from the LM head on supervised positions only (default) | the earlier
                         path: full (B, L, V) logits, fp32 CE, plus the model's own unused loss        [A/B]
    ovf | noovf          DeepSpeed bf16 check_grad_overflow on (default) / off                          [A/B]
    compile              torch.compile each LM decoder layer (fuses the RMSNorm/rotary/SiLU elementwise chains,
                         fewer kernel launches; the first steps compile, ~1 min)
    prof                 profile `--profile-steps` steps of the base: top-20 kernels, syncs, GPU busy time

Every configuration runs in its own process (DeepSpeed does not free a finished engine's GPU memory). A sweep
stops starting configurations once `--budget-s` is spent and gives each the budget left as its timeout.
Prints one JSON object per configuration, then the whole report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PEAK_TFLOPS = 989.0

from _common import emit, require_cuda  # noqa: E402  (benchmarks/ is on sys.path)

DEFAULTS = {
    "micro": 4,
    "ckpt": True,
    "ckpt_layers": None,  # None = all LM decoder layers
    "packed": False,
    "zero": 2,
    "optimizer": "adamw",
    "attn": "sdpa_varlen",
    "loss": "token",
    "overflow_check": True,
    "profile": False,
    "grad_accum": 1,
    "group_params": 250_000_000,
    "offload": False,
    "compile": False,
}
# token -> (key, value); the A/B ones can change between two steps of the same engine.
FIXED_TOKENS = {
    "ckpt": ("ckpt", True),
    "nockpt": ("ckpt", False),
    "pad": ("packed", False),
    "pack": ("packed", True),
    "z0": ("zero", 0),
    "z1": ("zero", 1),
    "z2": ("zero", 2),
    "adamw": ("optimizer", "adamw"),
    "foreach": ("optimizer", "adamw_foreach"),
    "dsadam": ("optimizer", "deepspeed_adam"),
    "prof": ("profile", True),
    "onegroup": ("group_params", 0),
    "offload": ("offload", True),
    "compile": ("compile", True),
}
AB_TOKENS = {
    "varlen": ("attn", "sdpa_varlen"),
    "sdpa": ("attn", "sdpa"),
    "tokenlogps": ("loss", "token"),
    "fulllogits": ("loss", "full"),
    "ovf": ("overflow_check", True),
    "noovf": ("overflow_check", False),
}
# The sweep for one GPU session (issue 9), most important first. Estimated on one H100: ~35 s per configuration
# to start (imports, random 4.4 B-parameter model on the GPU, DeepSpeed set-up), then ~0.6 s per micro-batch-8
# step, ~1 s with dense SDPA; the JIT builds (dsadam, offload) and compile add ~1 min. `--budget-s 420` runs
# about the first 6-7 and skips the rest (run those with --configs in a later session).
SWEEP = [
    "8:ckpt:pack:prof+sdpa",  # ~65 s: the target, all fixes, profiled; A/B: dense-mask SDPA on the packed row
    "8:ckpt:pack:ga4+noovf",  # ~55 s: 4 micro-batches per optimizer step; A/B: DeepSpeed bf16 overflow check off
    "8:ckpt:pack:z0",  # ~40 s: ZeRO-0 (DeepSpeed's unfused bf16 optimizer wrapper)
    "4:ckpt:pad:foreach+fulllogits+sdpa",  # ~45 s: the earlier optimizer; A/B: the earlier loss and attention
    "8:ckpt28:pack",  # ~40 s: selective checkpointing, 4 of 32 LM layers not recomputed (~5 GiB more activations)
    "8:ckpt:pack:z1",  # ~40 s: ZeRO-1
    "8:ckpt:pack:dsadam",  # ~90 s: DeepSpeed FusedAdam (JIT-built with nvcc) vs torch fused AdamW above
    "2:nockpt:pack:ga4",  # ~40 s: no recompute (~12 GiB of activations, ~73 GiB estimated), 8 samples per step
    "8:ckpt:pack:compile",  # ~90 s: torch.compile of the decoder layers (elementwise fusion, fewer launches)
    "8:ckpt:pack:onegroup",  # ~40 s: one optimizer param group (earlier): ~82 GiB step peak, OOM on 80 GB
    "8:nockpt:pack:offload:ga8",  # ~120 s: no recompute at micro-batch 8, Adam on the CPU, amortised over 8
]


def parse_spec(spec: str, defaults: dict | None = None) -> tuple[dict, list[tuple[str, dict]]]:
    """`8:ckpt:pack:z1+sdpa+noovf` → (base run, [(variant name, run), ...]) with the base first."""
    base_part, *ab = spec.split("+")
    run = dict(defaults or DEFAULTS)
    fields = base_part.split(":")
    run["micro"] = int(fields[0])
    for token in fields[1:]:
        if token.startswith("ga") and token[2:].isdigit():
            run["grad_accum"] = int(token[2:])
            continue
        if token.startswith("ckpt") and token[4:].isdigit():
            run["ckpt"], run["ckpt_layers"] = True, int(token[4:])
            continue
        table = FIXED_TOKENS if token in FIXED_TOKENS else AB_TOKENS
        if token not in table:
            raise ValueError(
                f"{spec}: unknown token {token!r}; known: {sorted(FIXED_TOKENS) + sorted(AB_TOKENS)}"
            )
        key, value = table[token]
        run[key] = value
    variants = [("base", dict(run))]
    for token in ab:
        if token not in AB_TOKENS:
            raise ValueError(f"{spec}: +{token} is not an A/B token ({sorted(AB_TOKENS)})")
        key, value = AB_TOKENS[token]
        variants.append((token, dict(run, **{key: value})))
    return run, variants


def synthetic_batch(model, micro: int, text_len: int, packed: bool, image_size=(640, 480)):
    import torch

    cfg = model.config
    S = cfg.vision_config.image_size
    n_crops = model.image_processor().num_crops(image_size)
    vocab = cfg.initial_tokenizer_len
    items = []
    for _ in range(micro):
        ids = torch.randint(100, vocab - 100, (text_len,))
        ids[8] = cfg.media_token_id
        labels = ids.clone()
        labels[: 2 * text_len // 3] = -100
        items.append((ids, labels, [torch.randn(n_crops, 3, S, S)], [image_size]))
    if not packed:
        return {
            "input_ids": torch.stack([i[0] for i in items]),
            "attention_mask": torch.ones(micro, text_len, dtype=torch.long),
            "labels": torch.stack([i[1] for i in items]),
            "pixel_values": [i[2] for i in items],
            "image_sizes": [i[3] for i in items],
        }
    # one packed row holding all samples (same tokens, no padding)
    return {
        "input_ids": torch.cat([i[0] for i in items])[None],
        "attention_mask": torch.ones(1, micro * text_len, dtype=torch.long),
        "labels": torch.cat([i[1] for i in items])[None],
        "position_ids": torch.arange(text_len).repeat(micro)[None],
        "segment_ids": torch.arange(micro).repeat_interleave(text_len)[None],
        "pixel_values": [[p for i in items for p in i[2]]],
        "image_sizes": [[s for i in items for s in i[3]]],
    }


def pin(batch):
    """Page-locked copies of the batch's tensors (nested lists too)."""
    if isinstance(batch, dict):
        return {k: pin(v) for k, v in batch.items()}
    if isinstance(batch, list):
        return [pin(v) for v in batch]
    return batch.pin_memory() if hasattr(batch, "pin_memory") else batch


def model_config(tiny: bool, shallow: int):
    from xgenmm_lm import XGenMMConfig, tiny_config

    if tiny:
        return tiny_config()
    cfg = XGenMMConfig()
    if shallow:  # real widths (hidden 3072, 32 heads, vocab 32064; SigLIP 1152; real perceiver), few layers
        cfg.text_config.num_hidden_layers = shallow
        cfg.vision_config.num_hidden_layers = shallow
    return cfg


def legacy_recipe():
    """SFTRecipe with the SFT loss as it was before the token-logps path: full (B, L', V) logits, fp32 CE over all
    of them, and the model's own (unused) loss kept alive through backward. For the `fulllogits` A/B only."""
    from xgenmm_train.losses import sft_loss_sum
    from xgenmm_train.sft import SFTRecipe
    from xgenmm_train.trainer import model_inputs

    class LegacyLoss(SFTRecipe):
        def ce_sum(self, engine, batch):
            out = engine(**model_inputs(batch))
            return out, sft_loss_sum(out.logits, out.labels)[0]

    return LegacyLoss()


def apply_ab(engine, run: dict, toggle_overflow: bool = False) -> None:
    """Set the A/B settings that can change between steps: LM attention, DeepSpeed's overflow check (only
    when `toggle_overflow`: otherwise the DeepSpeed config's value stays)."""
    lm = engine.module.lang_model
    if lm.config._attn_implementation != run["attn"]:
        if hasattr(lm, "set_attn_implementation"):
            lm.set_attn_implementation(run["attn"])
        else:
            lm.config._attn_implementation = run["attn"]
    if not toggle_overflow:
        return
    if not hasattr(engine.optimizer, "check_grad_overflow"):
        raise ValueError(f"{type(engine.optimizer).__name__} has no check_grad_overflow switch")
    engine.optimizer.check_grad_overflow = run["overflow_check"]


def phase_step(engine, recipe, batch, device, run: dict, cuda: bool) -> dict:
    """One optimizer step (`grad_accum` micro-batches) in its three phases, each summed over the micro-batches
    with its own peak memory: forward (+ loss), backward, engine.step (the optimizer runs in the last one).
    Same calls as `recipe.train_step` without the NaN guard's sync."""
    import torch

    from xgenmm_train.losses import count_supervised_tokens
    from xgenmm_train.trainer import to_device

    def mark():
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return time.perf_counter()

    def peak():
        return round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None

    scale = 1.0 / max(count_supervised_tokens(batch["labels"]) * run["grad_accum"], 1)
    batch = to_device(batch, device)
    ms = {"forward_ms": 0.0, "backward_ms": 0.0, "step_ms": 0.0}
    peaks = {"peak_gib_forward": 0.0, "peak_gib_backward": 0.0, "peak_gib_step": 0.0}
    for _ in range(run["grad_accum"]):
        t0 = mark()
        out, ce = recipe.ce_sum(engine, batch)
        for_peak = peak()
        t1 = mark()
        engine.backward(ce * scale, scale_wrt_gas=False)
        back_peak = peak()
        t2 = mark()
        del out, ce
        engine.step()
        if cuda:
            torch.cuda.synchronize()
        t3 = time.perf_counter()
        for key, dt in (("forward_ms", t1 - t0), ("backward_ms", t2 - t1), ("step_ms", t3 - t2)):
            ms[key] += dt * 1e3
        if cuda:
            for key, value in zip(peaks, (for_peak, back_peak, peak())):
                peaks[key] = max(peaks[key], value)
    out = {k: round(v, 1) for k, v in ms.items()}
    out.update(peaks if cuda else dict.fromkeys(peaks))
    return out


def forward_loss(engine, recipe, batch, device) -> float:
    """Mean CE per supervised token of one forward, by the recipe's loss path."""
    from xgenmm_train.losses import IGNORE_INDEX
    from xgenmm_train.trainer import to_device

    out, ce = recipe.ce_sum(engine, to_device(batch, device))
    return float(ce) / max(int((out.labels[:, 1:] != IGNORE_INDEX).sum()), 1)


KERNEL_KINDS = (  # first match wins; names of cuBLAS/CUTLASS/flash/NCCL/torch kernels
    ("gemm", ("gemm", "nvjet", "xmma", "cutlass", "wgmma", "matmul")),
    ("attention", ("flash", "fmha", "attention", "attn", "cudnn")),
    ("optimizer", ("adam", "multi_tensor", "foreach", "fused_adamw")),
    ("nccl", ("nccl",)),
    ("copy", ("memcpy", "memset", "copy", "cat", "index", "gather", "scatter")),
    ("reduce/norm", ("reduce", "norm", "softmax", "cross_entropy", "nll", "log_softmax")),
)
SYNC_OPS = (
    "aten::_local_scalar_dense",
    "aten::nonzero",
    "aten::unique_consecutive",
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaEventSynchronize",
    "cudaMemcpyAsync",
    "Memcpy HtoD (Pageable -> Device)",
    "Memcpy DtoH (Device -> Pageable)",
)


def kernel_kind(name: str) -> str:
    low = name.lower()
    for kind, keys in KERNEL_KINDS:
        if any(k in low for k in keys):
            return kind
    return "elementwise/other"


def profile_steps(step_fn, n_steps: int, cuda: bool) -> dict:
    """Run `n_steps` steps under torch.profiler → top-20 kernels (CUDA; top-20 CPU ops on the CPU) by total
    time with count, ms per step and % of the step's wall time; kernel time by kind; sync-ish ops per step."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(n_steps):
            step_fn()
        sync()
        wall = time.perf_counter() - t0
    step_ms = wall * 1e3 / n_steps
    totals: dict[str, list] = {}
    if cuda:
        for evt in prof.events():
            if evt.device_type == DeviceType.CUDA:
                entry = totals.setdefault(evt.name, [0, 0.0])
                entry[0] += 1
                entry[1] += evt.time_range.elapsed_us() / 1e3
    else:
        for avg in prof.key_averages():
            totals[avg.key] = [avg.count, avg.self_cpu_time_total / 1e3]
    busy = sum(ms for _, ms in totals.values())
    top = sorted(totals.items(), key=lambda kv: -kv[1][1])[:20]
    kinds: dict[str, float] = {}
    if cuda:
        for name, (_, ms) in totals.items():
            kinds[kernel_kind(name)] = kinds.get(kernel_kind(name), 0.0) + ms / n_steps
    counts = {}
    for avg in prof.key_averages():
        if avg.key in SYNC_OPS:
            counts[avg.key] = round(avg.count / n_steps, 1)
    return {
        "steps": n_steps,
        "step_ms_under_profiler": round(step_ms, 1),
        "what": "CUDA kernels" if cuda else "CPU ops (self time)",
        "busy_ms_per_step": round(busy / n_steps, 1),
        "busy_fraction_of_step": round(busy / n_steps / step_ms, 3),
        "by_kind_ms_per_step": {k: round(v, 1) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
        "top20": [
            {
                "name": name[:160],
                "count_per_step": round(count / n_steps, 1),
                "ms_per_step": round(ms / n_steps, 2),
                "pct_of_step": round(100 * ms / n_steps / step_ms, 1),
            }
            for name, (count, ms) in top
        ],
        "sync_ops_per_step": counts,
    }


def bench(spec: str, args) -> dict:
    import torch

    from xgenmm_lm import XGenMM
    from xgenmm_train.config import Config
    from xgenmm_train.distributed import build_engine, free_port, init_distributed
    from xgenmm_train.sft import SFTRecipe
    from xgenmm_train.trainer import StepContext

    wall0 = time.perf_counter()
    run, variants = parse_spec(spec)
    # One process of its own, whatever launcher variables it inherited (a port in use would stop the init).
    os.environ.update(
        RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port())
    )
    _, world, device = init_distributed()
    cuda = torch.cuda.is_available()
    cfg = model_config(args.tiny, args.shallow)
    low_precision = not args.tiny  # bf16 (the shallow real-width model too, also on the CPU)
    dtype = torch.bfloat16 if low_precision else torch.float32
    torch.manual_seed(0)
    # Build the random weights directly on the GPU: initialising 4.3 B parameters on the host takes minutes.
    with torch.device(device if cuda else "cpu"):
        model = XGenMM.from_config(cfg, dtype=dtype, attn_implementation=run["attn"])
    model.set_trainable(vision_encoder=False, vision_tokenizer=True, lang_model=True)
    if run["ckpt"]:
        model.gradient_checkpointing_enable(lm_layers=run["ckpt_layers"])
    if run["compile"]:
        decoder = getattr(model.lang_model, model.lang_model.base_model_prefix)
        for layer in decoder.layers:
            layer.compile()
    config = Config()
    config.train.micro_batch_size = run["micro"]
    config.train.precision = "bf16" if low_precision else "fp32"
    config.train.lr = 2e-5
    config.train.optimizer = run["optimizer"]
    config.train.grad_accum = run["grad_accum"]
    config.train.optimizer_group_params = run["group_params"]
    config.deepspeed.zero_stage = run["zero"]
    config.deepspeed.offload_optimizer = run["offload"]
    config.deepspeed.extra = {"bf16": {"check_grad_overflow": run["overflow_check"]}} if low_precision else {}
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    engine, _, _ = build_engine(model, config, world, 10_000)
    setup_s = time.perf_counter() - wall0  # imports not counted: process start to engine ready
    torch.manual_seed(1)
    image = tuple(int(x) for x in args.image.split("x"))
    batch = synthetic_batch(model, run["micro"], args.text_len, run["packed"], image)
    if cuda:  # as the trainer's DataLoader (pin_memory on CUDA): asynchronous host-to-device copies
        batch = pin(batch)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    recipes = {"token": SFTRecipe(), "full": legacy_recipe()}
    step_no = [0]
    toggle = len({v["overflow_check"] for _, v in variants}) > 1

    def step(v_run):
        apply_ab(engine, v_run, toggle)
        ctx = StepContext(engine, device, world, config, step_no[0])
        step_no[0] += 1
        return recipes[v_run["loss"]].train_step(ctx, [batch] * run["grad_accum"])

    first_loss = {}  # every variant's loss on the starting weights (forward only): the A/B agree numerically?
    with torch.no_grad():
        for name, v_run in variants:
            apply_ab(engine, v_run, toggle)
            first_loss[name] = forward_loss(engine, recipes[v_run["loss"]], batch, device)
    warmup = max(1, args.warmup // run["grad_accum"])
    timed = max(2, args.steps // run["grad_accum"])
    for _, v_run in variants:  # warm-up
        for _ in range(warmup):
            step(v_run)
    sync()
    steady = torch.cuda.memory_allocated() / 2**30 if cuda else None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = {name: [] for name, _ in variants}
    tokens = {}
    for _ in range(timed):  # interleaved: base, variant 1, ..., base, variant 1, ...
        for name, v_run in variants:
            sync()
            t0 = time.perf_counter()
            sums = step(v_run)
            sync()
            times[name].append(time.perf_counter() - t0)
            tokens[name] = sums["tokens"]
    peak = round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None
    out = {
        "config": spec,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "model": "tiny" if args.tiny else (f"shallow-{args.shallow}" if args.shallow else "real"),
        "micro_batch": run["micro"],
        "packed": run["packed"],
        "gradient_checkpointing": run["ckpt"],
        "checkpointed_lm_layers": (run["ckpt_layers"] if run["ckpt_layers"] is not None else "all")
        if run["ckpt"]
        else 0,
        "zero_stage": run["zero"],
        "optimizer": "DeepSpeedCPUAdam" if run["offload"] else run["optimizer"],
        "optimizer_param_groups": len(getattr(engine.optimizer, "param_groups", [])),
        "grad_accum": run["grad_accum"],
        "steps": timed,
        "setup_s": round(setup_s, 1),
        "tokens_per_step": tokens["base"],
        "trainable_params": n_trainable,
        "mfu_peak": f"{PEAK_TFLOPS} TFLOP/s bf16 dense (H100/H200 SXM)",
        "steady_memory_gib": round(steady, 2) if steady is not None else None,
        "peak_memory_gib": peak,
        "variants": [],
    }
    for name, v_run in variants:
        ts = sorted(times[name])
        median = ts[len(ts) // 2]
        tok_s = tokens[name] / median
        out["variants"].append(
            {
                "name": name,
                "attn": v_run["attn"],
                "loss": v_run["loss"],
                "overflow_check": v_run["overflow_check"],
                "s_per_step": round(median, 4),
                "s_per_step_all": [round(t, 4) for t in times[name]],
                "tokens_per_s": round(tok_s, 1),
                "mfu": round(6 * n_trainable * tok_s / (PEAK_TFLOPS * 1e12), 4),
                "loss_before_update": round(first_loss[name], 5),
            }
        )
    base = out["variants"][0]
    out.update(s_per_step=base["s_per_step"], tokens_per_s=base["tokens_per_s"], mfu=base["mfu"])
    try:  # extras: an out-of-memory here keeps the timings above
        for row, (_, v_run) in zip(out["variants"], variants):
            apply_ab(engine, v_run, toggle)
            row["phases"] = phase_step(engine, recipes[v_run["loss"]], batch, device, v_run, cuda)
        if run["profile"]:
            apply_ab(engine, run, toggle)
            out["profile"] = profile_steps(lambda: step(run), args.profile_steps, cuda)
    except RuntimeError as e:
        out["extras_error"] = str(e)[:400]
    from xgenmm_lm.attention import CALLS

    out["lm_attention_calls"] = dict(CALLS)  # sdpa_varlen: flash varlen kernel or SDPA per sample
    out["wall_s"] = round(time.perf_counter() - wall0, 1)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--micro", type=int, default=4)
    p.add_argument("--text-len", type=int, default=512)
    p.add_argument(
        "--image", default="640x480", help="original image size WxH (640x480: 5 crops, 640 tokens)"
    )
    p.add_argument("--no-checkpointing", action="store_true")
    p.add_argument("--packed", action="store_true")
    p.add_argument(
        "--sweep", action="store_true", help="the issue-9 GPU sweep (see SWEEP), within --budget-s"
    )
    p.add_argument("--configs", nargs="*", help="configurations, e.g. 4:ckpt:pad 8:ckpt:pack:z1:prof+sdpa")
    p.add_argument("--budget-s", type=float, default=450.0, help="a sweep starts no configuration after this")
    p.add_argument("--profile-steps", type=int, default=2)
    p.add_argument("--tiny", action="store_true", help="tiny config (CPU smoke run of the same code path)")
    p.add_argument("--shallow", type=int, default=0, help="real widths with this many LM/SigLIP layers")
    p.add_argument("--quick", action="store_true", help="= --tiny --steps 2")
    args = p.parse_args(argv)
    if not (args.quick or args.tiny or args.shallow):
        require_cuda("gpu_sft.py")
    if args.quick:
        args.tiny, args.steps, args.text_len = True, 2, 64
    specs = [
        f"{args.micro}:{'nockpt' if args.no_checkpointing else 'ckpt'}:{'pack' if args.packed else 'pad'}"
    ]
    if args.sweep:
        specs = list(SWEEP)
    if args.configs:
        specs = list(args.configs)
    for spec in specs:
        parse_spec(spec)  # fail before starting anything
    if len(specs) == 1:
        try:
            r = bench(specs[0], args)
        except RuntimeError as e:  # e.g. CUDA out of memory
            r = {"config": specs[0], "error": str(e)[:400]}
            import torch

            if torch.cuda.is_available():
                r["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        print(json.dumps(r), flush=True)
        if not os.environ.get("GPU_SFT_CHILD"):
            emit({"benchmark": "gpu_sft", "runs": [r]})
        return [r]
    # One process per configuration: DeepSpeed's optimizer state of a finished run is not reliably freed
    # inside a process, which made later configurations of a sweep run out of GPU memory.
    base = [
        sys.executable,
        os.path.abspath(__file__),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    base += [
        "--text-len",
        str(args.text_len),
        "--image",
        args.image,
        "--profile-steps",
        str(args.profile_steps),
    ]
    base += ["--tiny"] if args.tiny else []
    base += ["--shallow", str(args.shallow)] if args.shallow else []
    env = dict(os.environ, GPU_SFT_CHILD="1")
    results, start = [], time.perf_counter()
    for spec in specs:
        left = args.budget_s - (time.perf_counter() - start)
        if left < 30:
            r = {"config": spec, "skipped": f"budget of {args.budget_s:.0f} s spent"}
        else:
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(
                    [*base, "--configs", spec], capture_output=True, text=True, env=env, timeout=left
                )
                lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
                r = json.loads(lines[-1]) if lines else {"config": spec, "error": proc.stderr.strip()[-600:]}
            except subprocess.TimeoutExpired:
                r = {"config": spec, "error": f"timed out after {left:.0f} s (the budget left)"}
            r["process_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(r), flush=True)
        results.append(r)
    emit({"benchmark": "gpu_sft", "budget_s": args.budget_s, "runs": results})
    return results


if __name__ == "__main__":
    main()
