"""Real-size xGen-MM SFT and DPO steps on one GPU with random weights (no download): tokens/s, MFU, memory, profile.

    uv run python -m benchmarks.gpu_sft                                  # the trainer's defaults, micro-batch 4
    uv run python -m benchmarks.gpu_sft train.micro_batch_size=8 data.batching=packed \
        --ab dense-sdpa model.attn_implementation=sdpa                   # one configuration, A/B in one process
    uv run python -m benchmarks.gpu_sft --sweep --budget-s 420           # SWEEP, most important first
    uv run python -m benchmarks.gpu_sft --sweep --only sft-mb8-pack dpo-lora   # some of it
    uv run python -m benchmarks.gpu_sft --tiny --sweep --only sft-mb8-pack     # the same code path on the CPU
    uv run python -m benchmarks.gpu_sft --shallow 2 --text-len 128 --image 384x384 --steps 1 --warmup 1 \
        train.micro_batch_size=2 data.batching=packed bench.profile=true  # real widths, 2 layers: a CPU profile

A configuration is a list of the trainer's own dotted config overrides (`xgenmm-train sft key.sub=value`, the
keys of `xgenmm_train.config`), applied to BASE, plus two keys of the benchmark's own in the same syntax:
`bench.profile=true` (profile `--profile-steps` steps: top-20 kernels, syncs, GPU busy time) and
`bench.loss=full` (the SFT loss as it was before `token_logps`: full (B, L, V) logits and fp32 CE).
`--ab NAME KEY=VALUE ...` adds a variant measured in the same process, interleaved step by step with the base;
a variant may change only AB_KEYS (what can change between two steps of one engine).

The data: each sample 1 image of 640x480 (anyres 2x2 grid: 5 crops -> 640 LM tokens) + 512 text tokens, a third
of them supervised, batched by the trainer's collators: `data.batching=packed` puts the micro-batch's samples in
ONE row (data.pack_tokens is not used), else padded rows. `task=dpo`: micro-batch = pairs (2 rows each; the
rejected reply differs in its supervised tokens), the DPO recipe's reference policy (`dpo.reference`: the
precomputed pass runs on the starting weights first, `model` copies them, `lora` disables the adapters).
Model: XGenMMConfig() (SigLIP so400m-384, perceiver 128 latents, Phi-3-mini) with random weights built on the
GPU, prepared by `xgenmm_train.modeling.prepare_model` (trainable parts, checkpointing, LoRA, `model.compile`),
DeepSpeed engine and optimizer by `build_engine`, steps by the recipe's own `train_step`.
MFU = 6 · N · tokens / time / 989 TFLOP/s (H100/H200 SXM dense bf16) with N = trainable parameters (perceiver
+ LM, 3.93 B) and tokens = LM positions (text + vision); the frozen SigLIP forward and the recompute of
checkpointing are not counted. With LoRA the MFU is meaningless (N is the adapters): compare s/step.

Every configuration of a sweep runs in its own process (DeepSpeed does not free a finished engine's GPU
memory); a sweep starts no configuration once `--budget-s` is spent and gives each the budget left as its
timeout. Prints one JSON object per configuration, then the whole report.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import tempfile
import time

from benchmarks._common import ROOT, emit, module_command, require_cuda
from benchmarks.gpu_configs import SWEEP, Run, check_run, load_run
from benchmarks.gpu_profile import profile_steps
from benchmarks.gpu_steps import Pairs, apply_ab, legacy_recipe, loss_before_update, phase_step, pin, sample

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PEAK_TFLOPS = 989.0


def model_config(tiny: bool, shallow: int):
    from xgenmm_lm import XGenMMConfig, tiny_config

    if tiny:
        return tiny_config()
    cfg = XGenMMConfig()
    if shallow:  # real widths (hidden 3072, 32 heads, vocab 32064; SigLIP 1152; real perceiver), few layers
        cfg.text_config.num_hidden_layers = shallow
        cfg.vision_config.num_hidden_layers = shallow
    return cfg


def bench(run: Run, args) -> dict:
    """Measure one configuration and its variants in this process → its JSON record."""
    import torch

    from xgenmm_data.collate import DataCollator
    from xgenmm_lm import XGenMM
    from xgenmm_train.distributed import build_engine, free_port, init_distributed
    from xgenmm_train.dpo import DPORecipe
    from xgenmm_train.modeling import prepare_model
    from xgenmm_train.recipe import StepContext
    from xgenmm_train.sft import SFTRecipe

    wall0 = time.perf_counter()
    config, bench_cfg = load_run(run.overrides, args.tiny)
    variants = [("base", config, bench_cfg)]
    variants += [(name, *load_run(run.overrides + extra, args.tiny)) for name, extra in run.variants.items()]
    # One process of its own, whatever launcher variables it inherited (a port in use would stop the init).
    os.environ.update(
        RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port())
    )
    _, world, device = init_distributed()
    cuda = torch.cuda.is_available()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[config.train.precision]
    torch.manual_seed(0)
    # Build the random weights directly on the GPU: initialising 4.3 B parameters on the host takes minutes.
    with torch.device(device if cuda else "cpu"):
        model = XGenMM.from_config(
            model_config(args.tiny, args.shallow),
            dtype=dtype,
            attn_implementation=config.model.attn_implementation,
        )
    model = prepare_model(model, config)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    engine, _, _ = build_engine(model, config, world, 10_000)
    setup_s = time.perf_counter() - wall0  # imports not counted: process start to engine ready
    torch.manual_seed(1)
    t = config.train
    image = tuple(int(x) for x in args.image.split("x"))
    xgenmm = engine.module.get_base_model() if hasattr(engine.module, "get_base_model") else engine.module
    pad_id = xgenmm.config.pad_token_id
    dpo = config.task == "dpo"
    if dpo:
        pairs = Pairs(xgenmm, t.micro_batch_size, args.text_len, image)
        from xgenmm_train.data import PreferenceCollator

        collate = PreferenceCollator(pad_id)
        batch = collate(list(pairs))
        recipe = DPORecipe()
        run_dir = tempfile.mkdtemp(prefix="gpu_sft-")
        for reference in dict.fromkeys(v.dpo.reference for _, v, _ in variants):  # on the starting weights
            v_config = copy.deepcopy(config)
            v_config.run_dir, v_config.dpo.reference = run_dir, reference
            recipe.prepare(v_config, engine, pairs, collate, 0, world, device)
        recipes = dict.fromkeys(("token", "full"), recipe)
    else:
        items = [sample(xgenmm, args.text_len, image) for _ in range(t.micro_batch_size)]
        batch = DataCollator(pad_id)([items] if config.data.batching == "packed" else items)
        recipes = {"token": SFTRecipe(), "full": legacy_recipe()}
    if cuda:  # as the trainer's DataLoader (pin_memory on CUDA): asynchronous host-to-device copies
        batch = pin(batch)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    step_no = [0]
    toggle = len({str(v.deepspeed.extra.get("bf16")) for _, v, _ in variants}) > 1

    def ctx_for(v_config):
        return StepContext(engine, device, world, v_config, step_no[0])

    def step(v_config, v_bench):
        apply_ab(engine, v_config, toggle)
        ctx = ctx_for(v_config)
        step_no[0] += 1
        return recipes[v_bench.loss].train_step(ctx, [batch] * t.grad_accum)

    first_loss = {}  # every variant's loss on the starting weights: the A/B agree numerically?
    for name, v_config, v_bench in variants:
        apply_ab(engine, v_config, toggle)
        first_loss[name] = loss_before_update(recipes[v_bench.loss], ctx_for(v_config), batch)
    warmup = max(1, args.warmup // t.grad_accum)
    timed = max(2, args.steps // t.grad_accum)
    for _, v_config, v_bench in variants:
        for _ in range(warmup):
            step(v_config, v_bench)
    sync()
    steady = torch.cuda.memory_allocated() / 2**30 if cuda else None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = {name: [] for name, _, _ in variants}
    tokens = {}
    for _ in range(timed):  # interleaved: base, variant 1, ..., base, variant 1, ...
        for name, v_config, v_bench in variants:
            sync()
            t0 = time.perf_counter()
            sums = step(v_config, v_bench)
            sync()
            times[name].append(time.perf_counter() - t0)
            tokens[name] = sums["tokens"]
    out = {
        "config": run.name,
        "overrides": run.overrides,
        "note": run.note,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "model": "tiny" if args.tiny else (f"shallow-{args.shallow}" if args.shallow else "real"),
        "task": config.task,
        "micro_batch": t.micro_batch_size,
        "packed": config.data.batching == "packed" and not dpo,
        "gradient_checkpointing": config.model.gradient_checkpointing,
        "compile": config.model.compile,
        "lora": config.lora.enabled,
        "zero_stage": config.deepspeed.zero_stage,
        "optimizer": "DeepSpeedCPUAdam" if config.deepspeed.offload_optimizer else t.optimizer,
        "optimizer_param_groups": len(getattr(engine.optimizer, "param_groups", [])),
        "grad_accum": t.grad_accum,
        "steps": timed,
        "setup_s": round(setup_s, 1),
        "tokens_per_step": tokens["base"],
        "trainable_params": n_trainable,
        "mfu_peak": f"{PEAK_TFLOPS} TFLOP/s bf16 dense (H100/H200 SXM)",
        "steady_memory_gib": round(steady, 2) if steady is not None else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "variants": [],
    }
    for name, _, _ in variants:
        median = sorted(times[name])[len(times[name]) // 2]
        tok_s = tokens[name] / median
        row = {"name": name, "overrides": run.variants.get(name, []), "s_per_step": round(median, 4)}
        row.update(
            s_per_step_all=[round(x, 4) for x in times[name]],
            tokens_per_s=round(tok_s, 1),
            mfu=round(6 * n_trainable * tok_s / (PEAK_TFLOPS * 1e12), 4),
            loss_before_update=round(first_loss[name], 5),
            s_per_step_vs_base=round(median / sorted(times["base"])[len(times["base"]) // 2], 3),
        )
        out["variants"].append(row)
    base = out["variants"][0]
    out.update(s_per_step=base["s_per_step"], tokens_per_s=base["tokens_per_s"], mfu=base["mfu"])
    try:  # extras: an out-of-memory here keeps the timings above
        if not dpo:
            for row, (_, v_config, v_bench) in zip(out["variants"], variants):
                apply_ab(engine, v_config, toggle)
                row["phases"] = phase_step(engine, recipes[v_bench.loss], batch, device, t.grad_accum, cuda)
        if bench_cfg.profile:
            out["profile"] = profile_steps(lambda: step(config, bench_cfg), args.profile_steps, cuda)
    except RuntimeError as e:
        out["extras_error"] = str(e)[:400]
    from xgenmm_lm.attention import CALLS

    out["lm_attention_calls"] = dict(CALLS)  # sdpa_varlen: flash varlen kernel or SDPA per sample
    out["wall_s"] = round(time.perf_counter() - wall0, 1)
    return out


def bench_or_error(run: Run, args) -> dict:
    try:
        return bench(run, args)
    except RuntimeError as e:  # e.g. CUDA out of memory
        import torch

        r = {"config": run.name, "overrides": run.overrides, "error": str(e)[:400]}
        if torch.cuda.is_available():
            r["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        return r


def in_own_process(run: Run, args, timeout: float) -> dict:
    """`bench(run)` in a fresh process (`--sweep --only NAME`, or the overrides for an ad-hoc run)."""
    cmd = module_command("gpu_sft", "--steps", str(args.steps), "--warmup", str(args.warmup))
    cmd += [
        "--text-len",
        str(args.text_len),
        "--image",
        args.image,
        "--profile-steps",
        str(args.profile_steps),
    ]
    cmd += ["--tiny"] if args.tiny else []
    cmd += ["--shallow", str(args.shallow)] if args.shallow else []
    cmd += ["--sweep", "--only", run.name]
    env = dict(os.environ, GPU_SFT_CHILD="1")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"config": run.name, "error": f"timed out after {timeout:.0f} s (the budget left)"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if lines:
        return json.loads(lines[-1])
    return {"config": run.name, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-600:]}"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="the trainer's dotted overrides (and bench.*) of one run")
    p.add_argument("--ab", nargs="+", action="append", default=[], metavar=("NAME", "KEY=VALUE"),
                   help="a variant of that run, measured in the same process (repeatable)")  # fmt: skip
    p.add_argument("--sweep", action="store_true", help="the SWEEP configurations, each in its own process")
    p.add_argument("--only", nargs="+", help="with --sweep: only these configurations (names)")
    p.add_argument("--list", action="store_true", help="print the sweep's configurations and exit")
    p.add_argument("--budget-s", type=float, default=450.0, help="a sweep starts no configuration after this")
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--text-len", type=int, default=None, help="text tokens per sample (512; --tiny 64)")
    p.add_argument(
        "--image", default="640x480", help="original image size WxH (640x480: 5 crops, 640 tokens)"
    )
    p.add_argument("--profile-steps", type=int, default=2)
    p.add_argument("--tiny", action="store_true", help="tiny config in fp32 (CPU smoke run of the same code)")
    p.add_argument("--shallow", type=int, default=0, help="real widths with this many LM/SigLIP layers")
    args = p.parse_args(argv)
    if args.text_len is None:
        args.text_len = 64 if args.tiny else 512
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.list:
        for run in SWEEP:
            print(f"{run.name}: {' '.join(run.overrides)}  {run.variants or ''}  # {run.note}")
        return []
    if args.sweep:
        by_name = {run.name: run for run in SWEEP}
        unknown = [n for n in args.only or [] if n not in by_name]
        if unknown:
            raise SystemExit(f"gpu_sft: unknown configuration(s) {unknown}; --list shows them")
        runs = [by_name[n] for n in args.only] if args.only else list(SWEEP)
    else:
        runs = [Run("command-line", list(args.overrides), {v[0]: v[1:] for v in args.ab})]
    for run in runs:
        check_run(run, args.tiny)
    if not (args.tiny or args.shallow):
        require_cuda("gpu_sft")
    if len(runs) == 1 and (os.environ.get("GPU_SFT_CHILD") or not args.sweep):
        r = bench_or_error(runs[0], args)
        print(json.dumps(r), flush=True)
        if not os.environ.get("GPU_SFT_CHILD"):
            emit({"benchmark": "gpu_sft", "runs": [r]})
        return [r]
    # One process per configuration: DeepSpeed's optimizer state of a finished run is not reliably freed
    # inside a process, which made later configurations of a sweep run out of GPU memory.
    results, start = [], time.perf_counter()
    for run in runs:
        left = args.budget_s - (time.perf_counter() - start)
        if left < 30:
            r = {"config": run.name, "skipped": f"budget of {args.budget_s:.0f} s spent"}
        else:
            t0 = time.perf_counter()
            r = in_own_process(run, args, left)
            r["process_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(r), flush=True)
        results.append(r)
    emit({"benchmark": "gpu_sft", "budget_s": args.budget_s, "runs": results})
    return results


if __name__ == "__main__":
    main()
