"""One GPU session, prepared: the real-size measurements in order of importance inside a budget, one record.

    bash benchmarks/gpu_all.sh                  # on a bare GPU machine (installs carried wheels, then this)
    uv run python -m benchmarks.gpu_all         # where the environment is already complete
    uv run python -m benchmarks.gpu_all --tiny  # the same plan on the CPU with tiny models (a smoke run)

PLAN, each step in its own process with the budget left (at most its cap) as its timeout:
1. SFT, micro-batch 8 packed (`gpu_sft` sweep): gradient checkpointing (profiled, A/B against dense SDPA: the
   loss before any update must agree and `lm_attention_calls` says whether the flash varlen kernel ran), no
   checkpointing, checkpointing + regional compile;
2. DPO with LoRA: precomputed reference vs a live reference model vs the adapters disabled;
3. generation, batch 1 and 8, 128 new tokens (dynamic KV cache);
4. the same with the static cache and the `torch.compile`'d decode step (`--caches compiled`; with `--tiny`, the
   static cache alone); a failure is recorded with its error.
After every step the record is rewritten: `benchmarks/results/<gpu>-<date>-gpu[-tiny].{json,md}`, and copied
into `$OUT` when that is set (so a run stopped at its limit still returns what it measured). The markdown
holds the headline numbers against issue 15's targets, then every number. Exit status 1 if a step failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path

from benchmarks._common import machine_info
from benchmarks.run_all import HERE, fmt, markdown_table, run_one

# (label, script, arguments, cap in seconds): real size on the GPU. Caps sum to the 420 s default budget.
PLAN = [
    ("sft", "gpu_sft.py", ["--sweep", "--only", "sft-mb8-pack", "sft-mb8-pack-nockpt", "sft-mb8-pack-compile",
                           "--steps", "5", "--warmup", "2"], 230),
    ("dpo", "gpu_sft.py", ["--sweep", "--only", "dpo-lora", "--steps", "4", "--warmup", "1"], 75),
    ("generate", "gpu_generate.py", ["--reps", "3", "--warmup", "1", "--gpu-warmup-s", "10", "--caches", "dynamic"], 75),
    ("generate_static", "gpu_generate.py", ["--reps", "3", "--warmup", "1", "--gpu-warmup-s", "0",
                                            "--caches", "compiled"], 40),
]  # fmt: skip
# --tiny: the same steps on the CPU (tiny models, fp32, fewer steps); generation through bench_generate.
TINY_PLAN = [
    ("sft", "gpu_sft.py", ["--tiny", "--sweep", "--only", "sft-mb8-pack", "sft-mb8-pack-nockpt",
                           "sft-mb8-pack-compile", "--steps", "2", "--warmup", "1"], 600),
    ("dpo", "gpu_sft.py", ["--tiny", "--sweep", "--only", "dpo-lora", "--steps", "2", "--warmup", "1"], 300),
    ("generate", "bench_generate.py", ["--quick", "--batch-sizes", "1", "8", "--caches", "dynamic"], 200),
    ("generate_static", "bench_generate.py", ["--quick", "--batch-sizes", "1", "8", "--caches", "static"], 200),
]  # fmt: skip
TARGETS = {"mfu": 0.45, "peak_memory_gib": 75.0, "dpo_precompute_vs_live": 0.6}


def run_by_name(result: dict, name: str) -> dict:
    for run in result.get("runs", []):
        if run.get("config") == name:
            return run
    return {}


def variant(run: dict, name: str) -> dict:
    return next((v for v in run.get("variants", []) if v["name"] == name), {})


def status(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "NOT met")


def headlines(results: dict) -> list[tuple[str, object, str, str]]:
    """(number, value, target, met / NOT met) rows of issue 15's targets, from the steps' JSON."""
    rows = []
    sft = results.get("sft", {})
    for name in ("sft-mb8-pack", "sft-mb8-pack-nockpt", "sft-mb8-pack-compile"):
        run = run_by_name(sft, name)
        if "error" in run or "skipped" in run:
            rows.append((f"{name}", run.get("error") or run.get("skipped"), "", ""))
            continue
        mfu, peak = run.get("mfu"), run.get("peak_memory_gib")
        rows.append((f"{name}: tokens/s", run.get("tokens_per_s"), "", ""))
        rows.append((f"{name}: MFU", mfu, ">= 0.45", status(None if mfu is None else mfu >= TARGETS["mfu"])))
        ok_peak = None if peak is None else peak <= TARGETS["peak_memory_gib"]
        rows.append((f"{name}: peak GPU memory GiB", peak, "<= 75", status(ok_peak)))
    target = run_by_name(sft, "sft-mb8-pack")
    base, dense = variant(target, "base"), variant(target, "dense-sdpa")
    if base and dense:
        a, b = base["loss_before_update"], dense["loss_before_update"]
        same = abs(a - b) <= 2e-3 * abs(b)  # bf16 forward: two kernels agree to ~1e-3
        rows.append(("loss before update, sdpa_varlen / dense SDPA", f"{a} / {b}", "equal", status(same)))
    calls = target.get("lm_attention_calls")
    if calls is not None:
        rows.append(("lm_attention_calls (varlen = flash varlen kernel)", calls, "varlen > 0", ""))
    dpo = run_by_name(results.get("dpo", {}), "dpo-lora")
    pre, live = variant(dpo, "base"), variant(dpo, "live-reference")
    if pre and live:
        ratio = pre["s_per_step"] / live["s_per_step"]
        rows.append(("DPO s/step, precomputed / live reference model", f"{pre['s_per_step']} / {live['s_per_step']}",
                     "", ""))  # fmt: skip
        ok = ratio <= TARGETS["dpo_precompute_vs_live"]
        rows.append(("DPO step, precomputed / live reference", round(ratio, 3), "<= 0.6", status(ok)))
    elif dpo:
        rows.append(("dpo-lora", dpo.get("error") or dpo.get("skipped"), "", ""))
    for label in ("generate", "generate_static"):
        gen = results.get(label, {})
        cache = gen.get("cache_implementation", "?")
        for batch in ("batch_1", "batch_8"):
            value = gen.get("results", {}).get(batch, {}).get("decode_tokens_per_s")
            rows.append((f"decode tokens/s, {batch.replace('_', ' ')}, {cache} cache", value, "", ""))
        if gen.get("cache_implementation_fallback"):
            rows.append(("static cache", gen["cache_implementation_fallback"], "", ""))
        if "error" in gen:
            rows.append((label, gen["error"], "", ""))
    return rows


def record_markdown(stem: str, record: dict) -> str:
    lines = ["| number | value | target | status |", "| --- | --- | --- | --- |"]
    lines += [f"| {n} | {fmt(v)} | {t} | {s} |" for n, v, t, s in headlines(record["results"])]
    return (
        f"# GPU session {stem}{' (--tiny: CPU smoke run, not a measurement)' if record['tiny'] else ''}\n\n"
        f"Command: `{record['command']}`\n\nMachine: `{json.dumps(record['machine'])}`\n\n"
        f"Steps: `{json.dumps(record['steps'])}`\n\n## Headline numbers (issue 15 targets)\n\n"
        + "\n".join(lines)
        + f"\n\n## All numbers\n\n{markdown_table(record['results'])}"
    )


def versions() -> dict:
    out = {}
    for name in ("torch", "transformers", "deepspeed", "peft", "omegaconf", "pydantic", "webdataset"):
        try:
            out[name] = __import__(name).__version__
        except Exception as e:  # a missing package is what the record must show
            out[name] = f"unavailable: {type(e).__name__}"
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="the plan on the CPU with tiny models (smoke run)")
    p.add_argument("--budget-s", type=float, default=None, help="seconds for all steps (420; --tiny 1300)")
    p.add_argument("--only", nargs="+", help="only these steps (labels: sft dpo generate generate_static)")
    p.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    budget = args.budget_s or (1300.0 if args.tiny else 420.0)
    plan = [step for step in (TINY_PLAN if args.tiny else PLAN) if not args.only or step[0] in args.only]
    info = machine_info()
    info["versions"] = versions()
    device = info.get("device", "cpu")  # e.g. "NVIDIA H200" -> h200
    gpu = device.replace("NVIDIA", "").split()[0].lower() if device != "cpu" else info["host"]
    stem = f"{gpu}-{dt.date.today().isoformat()}-gpu{'-tiny' if args.tiny else ''}"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    record = {"machine": info, "tiny": args.tiny, "budget_s": budget, "results": {}, "steps": {}}
    record["command"] = "python -m benchmarks.gpu_all " + " ".join(argv if argv is not None else sys.argv[1:])
    start = time.perf_counter()
    for label, script, extra, cap in plan:
        left = budget - (time.perf_counter() - start)
        if left < 20:
            record["results"][label] = {"skipped": f"budget of {budget:.0f} s spent"}
        else:
            print(
                f"[gpu_all] {label}: {script} {' '.join(extra)} (timeout {min(cap, left):.0f} s)", flush=True
            )
            t0 = time.perf_counter()
            timeout = min(cap, left)
            if script == "gpu_sft.py":  # the sweep stops itself first, keeping the configurations it measured
                extra = [*extra, "--budget-s", str(round(timeout - 10))]
            record["results"][label] = run_one(script, extra, timeout)
            record["steps"][label] = {
                "script": script,
                "args": extra,
                "wall_s": round(time.perf_counter() - t0, 1),
            }
        print(json.dumps(record["results"][label])[:2000], flush=True)
        record["wall_s"] = round(time.perf_counter() - start, 1)
        write(record, args.out_dir, stem)
    failed = [
        k
        for k, r in record["results"].items()
        if "error" in r or any("error" in x for x in r.get("runs", []))
    ]
    print(
        json.dumps({"results_file": str(args.out_dir / f"{stem}.json"), "failed": failed, **record["steps"]})
    )
    return 1 if failed else 0


def write(record: dict, out_dir: Path, stem: str) -> None:
    """The JSON and markdown record, written atomically; copied into $OUT (device machine) when it is set."""
    paths = []
    for suffix, text in (
        (".json", json.dumps(record, indent=2) + "\n"),
        (".md", record_markdown(stem, record)),
    ):
        path = out_dir / f"{stem}{suffix}"
        tmp = path.with_suffix(suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        paths.append(path)
    if os.environ.get("OUT"):
        for path in paths:
            shutil.copy(path, Path(os.environ["OUT"]) / path.name)


if __name__ == "__main__":
    raise SystemExit(main())
