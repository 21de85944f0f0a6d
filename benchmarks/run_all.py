"""Run the whole benchmark suite and record the results.

    uv run python -m benchmarks.run_all            # full CPU suite
    uv run python -m benchmarks.run_all --quick    # smoke run (fewer repetitions)
    uv run python -m benchmarks.run_all --gpu      # also the GPU scripts (only on a machine with CUDA)
    uv run python -m benchmarks.run_all --gpu --only gpu_sft.py gpu_generate.py   # just these

Each benchmark is a script in this folder that prints one JSON object on its last line of output. This runner
starts each one in its own process (so peak-memory numbers are not polluted by the others), collects the
objects, and writes `benchmarks/results/<host>-<date>[-quick].json` plus `.md` beside it: the machine, the load
average when each script started, the headline numbers with the issue's targets (met / NOT met), and every
number. A later run on the same host and day (e.g. `--only`) updates that file's entries for the scripts it ran.
Exit status 1 when a script failed; scripts not written yet are listed as missing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import operator
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import ROOT, machine_info, module_command

HERE = Path(__file__).resolve().parent

# (script, what it measures) in the order of BENCHMARKS.md.
CPU_SUITE = [
    ("bench_data.py", "data pipeline samples/s and padding efficiency"),
    ("bench_stream.py", "streamed caption shards vs the JSON path, exact-resume cost"),
    ("bench_anyres.py", "anyres image processor vs the original procedure"),
    ("bench_sampler.py", "perceiver forward+backward, SDPA vs explicit math"),
    ("bench_text_only.py", "vision crops encoded per text-only record"),
    ("bench_sft.py", "SFT step throughput, length grouping vs packing"),
    ("bench_generate.py", "generation tokens/s with KV cache"),
    ("bench_dpo.py", "DPO step: precomputed vs live vs LoRA-disabled reference"),
    ("bench_default_run.py", "embedded default run: wall time and held-out accuracy"),
]
GPU_SUITE = [
    ("gpu_sft.py", "real-size SFT on one GPU: tokens/s, MFU, peak memory"),
    ("gpu_generate.py", "real-size generation on one GPU: tokens/s"),
]

# The headline numbers of each script (dotted key into its JSON), with the target where it sets one.
HEADLINES = {
    "bench_data.py": [
        ("samples/s, one worker, 640x480", "per_sample_path_one_worker.640x480.samples_per_s", ">= 10"),
        ("samples/s, one worker, 1920x1080", "per_sample_path_one_worker.1920x1080.samples_per_s", None),
        ("samples/s, one worker, 500x2000", "per_sample_path_one_worker.500x2000.samples_per_s", None),
        ("padding efficiency, plain batches", "padding_efficiency.plain_batches", None),
        ("padding efficiency, length-grouped", "padding_efficiency.length_grouped", None),
        ("padding efficiency, packed", "padding_efficiency.packing", ">= 0.97"),
    ],
    "bench_stream.py": [
        (
            "stream / JSON samples/s, one worker, 640x480",
            "throughput_one_worker.stream_vs_json_samples_per_s",
            ">= 1",
        ),
        ("stream samples/s, one worker", "throughput_one_worker.stream.samples_per_s", None),
        ("JSON path samples/s, one worker", "throughput_one_worker.json.samples_per_s", None),
        ("resume s at sample 7,500 of 10,000", "resume.raw.resume_s", None),
        ("replay s to sample 7,500 (no resume state)", "resume.raw.replay_s", None),
        ("resumed stream yields the same next sample", "resume.raw.same_next_sample", "== True"),
    ],
    "bench_anyres.py": [
        (
            "anyres speed-up vs original, torch resize, 640x480",
            "results.640x480.speedup_torch_backend",
            ">= 2",
        ),
        (
            "anyres speed-up vs original, torch resize, 1920x1080",
            "results.1920x1080.speedup_torch_backend",
            ">= 2",
        ),
        (
            "anyres speed-up vs original, torch resize, 500x2000",
            "results.500x2000.speedup_torch_backend",
            ">= 2",
        ),
        ("torch resize: max levels (of 255) off the exact pixels", "torch_backend_max_levels_off", "<= 2"),
        ("anyres speed-up vs original, exact PIL resize, 640x480", "results.640x480.speedup", None),
        ("anyres speed-up vs original, exact PIL resize, 1920x1080", "results.1920x1080.speedup", None),
        ("anyres speed-up vs original, exact PIL resize, 500x2000", "results.500x2000.speedup", None),
        ("bound for any bit-exact version, 640x480", "results.640x480.max_bit_exact_speedup", None),
        ("exact PIL resize bit-identical to the original", "all_bit_identical", "== True"),
    ],
    "bench_sampler.py": [
        ("fwd+bwd s, SDPA", "sdpa.median_s", None),
        ("fwd+bwd s, explicit math", "math.median_s", None),
        ("speed-up SDPA vs explicit math, wall time", "speedup_sdpa_vs_math", None),
        ("speed-up SDPA vs explicit math, process CPU time", "speedup_sdpa_vs_math_cpu_time", ">= 1"),
        (
            "speed-up SDPA vs explicit math, attention kernels only",
            "attention_only.speedup_sdpa_vs_math",
            None,
        ),
        ("peak memory ratio SDPA / math", "peak_mem_ratio_sdpa_vs_math", None),
    ],
    "bench_text_only.py": [
        (
            "crops per text-only record, text batch",
            "crop_counts.text_only.crops_per_text_only_record",
            "== 0",
        ),
        ("crops per text-only record, mixed batch", "crop_counts.mixed.crops_per_text_only_record", "== 0"),
        ("crops per text-only record, packed", "crop_counts.mixed_packed.crops_per_text_only_record", "== 0"),
        ("image records get Np crops", "image_records_get_np_crops", "== True"),
        ("tiny text-only forward speed-up vs dummy image", "tiny_forward_text_only_batch.speedup", None),
        ("real size: dummy work / LM forward (est.)", "real_size_estimate.dummy_work_vs_lm_forward", None),
    ],
    "bench_sft.py": [
        ("SFT tokens/s, length-grouped (tiny, CPU)", "length_grouped.tokens_per_s", None),
        ("SFT tokens/s, packed (tiny, CPU)", "packed.tokens_per_s", None),
    ],
    "bench_dpo.py": [
        ("DPO wall s, precomputed reference", "precompute.wall_s", None),
        ("DPO wall s, live reference model", "model.wall_s", None),
        ("DPO wall s, LoRA-disabled reference", "lora.wall_s", None),
        ("peak RSS MB, precomputed / live / LoRA", "peak_rss_mb", None),
    ],
    "bench_default_run.py": [
        ("default run wall s", "wall_s", None),
        ("default run steps", "steps", None),
        ("held-out accuracy per question type", "heldout_accuracy", None),
    ],
    "bench_generate.py": [
        ("decode tokens/s, batch 1 (tiny, CPU)", "results.batch_1.decode_tokens_per_s", None),
        ("decode tokens/s, batch 8 (tiny, CPU)", "results.batch_8.decode_tokens_per_s", None),
    ],
    "gpu_generate.py": [
        ("decode tokens/s, batch 1 (real size, bf16)", "results.batch_1.decode_tokens_per_s", None),
        ("decode tokens/s, batch 8 (real size, bf16)", "results.batch_8.decode_tokens_per_s", None),
        ("peak GPU memory GiB", "peak_memory_gib", None),
    ],
}
OPS = {">=": operator.ge, "<=": operator.le, "==": operator.eq, ">": operator.gt}
# Per-repetition lists and the machine record stay in the JSON file, out of the markdown table.
TABLE_SKIP = ("machine", "reps_s", "times_s", "total_reps_s", "reps_samples_per_s")


def last_json_object(text: str) -> dict | None:
    """The last line of `text` that parses as a JSON object."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def run_one(script: str, extra: list[str], timeout: float) -> dict:
    """Run one benchmark script in a fresh process; return its JSON object or the failure."""
    if not (HERE / script).exists():
        return {"missing": f"benchmarks/{script} does not exist yet"}
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            module_command(script.removesuffix(".py"), *extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - start
    result = last_json_object(proc.stdout)
    if proc.returncode != 0 or result is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"error": f"exit {proc.returncode}", "stderr_tail": tail, "wall_s": round(wall, 1)}
    result.setdefault("wall_s", round(wall, 1))
    return result


def flatten(prefix: str, value, out: dict) -> None:
    """Flatten nested dicts into dotted keys for the markdown table."""
    if isinstance(value, dict):
        for key, sub in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), sub, out)
    else:
        out[prefix] = value


def lookup(result: dict, dotted: str):
    if dotted == "peak_rss_mb":  # bench_dpo: one value per reference mode
        values = [lookup(result, f"{mode}.peak_rss_mb") for mode in ("precompute", "model", "lora")]
        return None if None in values else " / ".join(f"{v:.0f}" for v in values)
    value = result
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def target_status(value, target: str | None) -> str:
    """ "met" / "NOT met" for a target such as ">= 0.97" ("" without a target or a value)."""
    if target is None or value is None:
        return ""
    op, ref = target.split()
    ref = {"True": True, "False": False}.get(ref, ref)
    ref = float(ref) if isinstance(ref, str) else ref
    return "met" if OPS[op](value, ref) else "NOT met"


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def headline_table(results: dict) -> str:
    lines = ["| benchmark | number | value | target | status |", "| --- | --- | --- | --- | --- |"]
    for script, result in results.items():
        if "error" in result or "missing" in result:
            lines.append(f"| {script} | {result.get('error') or result['missing']} | | | |")
            continue
        for label, key, target in HEADLINES.get(script, []):
            value = lookup(result, key)
            status = target_status(value, target)
            lines.append(f"| {script} | {label} | {fmt(value)} | {target or ''} | {status} |")
    return "\n".join(lines) + "\n"


def markdown_table(results: dict) -> str:
    lines = ["| benchmark | metric | value |", "| --- | --- | --- |"]
    for script, result in results.items():
        flat: dict = {}
        flatten("", {k: v for k, v in result.items() if k not in TABLE_SKIP}, flat)
        for key, value in flat.items():
            if key.split(".")[-1] in TABLE_SKIP:
                continue
            lines.append(f"| {script} | {key} | {fmt(value)} |")
    return "\n".join(lines) + "\n"


def results_markdown(stem: str, info: dict, results: dict, quick: bool) -> str:
    loads = {
        s: r["machine"].get("loadavg_1m") for s, r in results.items() if isinstance(r.get("machine"), dict)
    }
    return (
        f"# Benchmarks on {stem}{' (--quick: smoke run, not for reporting)' if quick else ''}\n\n"
        f"Machine: `{json.dumps(info)}`\n\n"
        f"Load average (1 min) when each script started: `{json.dumps(loads)}`\n\n"
        f"## Headline numbers\n\n{headline_table(results)}\n## All numbers\n\n{markdown_table(results)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--gpu", action="store_true", help="also run the GPU scripts")
    parser.add_argument("--only", nargs="*", help="run only these scripts (file names)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per benchmark")
    parser.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)

    suite = CPU_SUITE + (GPU_SUITE if args.gpu else [])
    if args.only:
        suite = [item for item in suite if item[0] in args.only]
    extra = ["--quick"] if args.quick else []

    info = machine_info()
    gpu_scripts = {name for name, _ in GPU_SUITE}
    results: dict = {}
    for script, what in suite:
        print(f"[run_all] {script}: {what} ...", file=sys.stderr, flush=True)
        if script in gpu_scripts and info["device"] == "cpu":
            results[script] = {"error": "needs a CUDA GPU (torch.cuda.is_available() is False): not run"}
        else:
            results[script] = run_one(script, extra, args.timeout)
        print(json.dumps(results[script]), file=sys.stderr, flush=True)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{info['host']}-{dt.date.today().isoformat()}{'-quick' if args.quick else ''}"
    json_path = args.out_dir / f"{stem}.json"
    if json_path.exists():  # a partial run (--only) of the same day and machine updates the file
        previous = json.loads(json_path.read_text()).get("results", {})
        results = {**previous, **results}
    record = {"machine": info, "quick": args.quick, "results": results}
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    (args.out_dir / f"{stem}.md").write_text(results_markdown(stem, info, results, args.quick))
    print(
        json.dumps(
            {
                "results_file": str(json_path),
                "failed": [s for s, r in results.items() if "error" in r],
                "missing": [s for s, r in results.items() if "missing" in r],
            }
        )
    )
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
