"""Shared pieces of the benchmark suite: the machine record, the repetition policy and the timing helpers.

`benchmarks` is a package: every script runs from the repository root as `python -m benchmarks.<name>` and
imports this module as `benchmarks._common`; a script that starts another one in a fresh process uses
`module_command` (the child runs from `ROOT`). The rules it encodes (issue 9):

* every timed number is the median of >= `REPS` (5) repetitions taken after `WARMUP` (>= 1) untimed ones;
  `--quick` drops to `QUICK_REPS` for a smoke run whose numbers are not for reporting;
* every JSON object carries `machine_info()` (CPU model, cores, load, torch version and threads, device);
* where two implementations are compared, they are timed in the same run, interleaved repetition by
  repetition (`interleaved`), and the ratio is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPS = 5  # timed repetitions of a full run (the median is reported)
QUICK_REPS = 2  # timed repetitions of a --quick smoke run
WARMUP = 1  # untimed repetitions before the timed ones
ROOT = (
    Path(__file__).resolve().parents[1]
)  # the repository root: `python -m benchmarks.<name>` runs from here


def module_command(name: str, *args: str) -> list[str]:
    """The command line of `python -m benchmarks.<name> ARGS` (run it with `cwd=ROOT`)."""
    return [sys.executable, "-m", f"benchmarks.{name}", *args]


def add_standard_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`--quick`, `--reps`, `--warmup`, the same in every script; resolve them with `resolve_reps`."""
    parser.add_argument("--quick", action="store_true", help="smoke run: smaller inputs, fewer repetitions")
    parser.add_argument(
        "--reps",
        type=int,
        default=None,
        help=f"timed repetitions (default {REPS}; {QUICK_REPS} with --quick)",
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help=f"untimed repetitions first (default {WARMUP})"
    )
    return parser


def resolve_reps(args: argparse.Namespace, full: int = REPS, warmup: int = WARMUP) -> argparse.Namespace:
    """Fill `args.reps` / `args.warmup` left unset on the command line (`full` is the non-quick default)."""
    if args.reps is None:
        args.reps = QUICK_REPS if args.quick else full
    if args.warmup is None:
        args.warmup = warmup
    return args


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """Where a number was taken: host, CPU model, cores, load average, python, torch version/threads, device."""
    info = {
        "host": socket.gethostname().split(".")[0],
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["device"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
        else:
            info["device"] = "cpu"
    except ImportError:  # pragma: no cover - torch is a dependency of every package
        info["torch"] = None
        info["device"] = "cpu"
    return info


def summarize(samples: list[float], digits: int = 4) -> dict:
    """`{"median": m, "reps": [...]}` of a list of per-repetition values (seconds or rates)."""
    if not samples:
        raise ValueError("summarize: no repetitions were measured")
    return {
        "median": round(statistics.median(samples), digits),
        "reps": [round(s, digits) for s in samples],
    }


def time_reps(
    fn: Callable[[], object],
    reps: int = REPS,
    warmup: int = WARMUP,
    sync: Callable[[], None] | None = None,
) -> dict:
    """Run `fn` `warmup` times untimed, then `reps` times timed → `{"median_s", "reps_s"}` (seconds).

    `sync` (e.g. `torch.cuda.synchronize`) is called before starting and before stopping each timer.
    """
    return interleaved({"_": fn}, reps=reps, warmup=warmup, sync=sync)["_"]


def interleaved(
    fns: dict[str, Callable[[], object]],
    reps: int = REPS,
    warmup: int = WARMUP,
    sync: Callable[[], None] | None = None,
) -> dict[str, dict]:
    """Time several implementations rep by rep (A, B, A, B, ...) so machine load hits them alike.

    Returns per name `{"median_s": m, "reps_s": [...]}`.
    """
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    out = {}
    for name, samples in times.items():
        s = summarize(samples, digits=6)
        out[name] = {"median_s": s["median"], "reps_s": s["reps"]}
    return out


def warm_up_gpu(seconds: float = 10.0) -> float:
    """Keep the GPU busy with bf16 matmuls for `seconds` so clocks have ramped up before timing; → TFLOP/s seen."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("warm_up_gpu: CUDA is not available")
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
        count += 10
    elapsed = time.perf_counter() - start
    del a, b
    torch.cuda.empty_cache()
    return count * 2 * 8192**3 / elapsed / 1e12


def require_cuda(script: str) -> None:
    """Exit with a clear message (status 2) when no CUDA device is visible."""
    import torch

    if not torch.cuda.is_available():
        print(
            f"{script}: needs a CUDA GPU (torch {torch.__version__}, torch.cuda.is_available() is False). "
            "Run it on a machine with an NVIDIA GPU, or use the CPU benchmarks.",
            file=sys.stderr,
        )
        raise SystemExit(2)


def emit(report: dict) -> dict:
    """Add the machine record and print the report as ONE JSON line (the last line of output).

    Pass `report["machine"] = machine_info()` taken at the start to record the load then; the load average at
    the end is added here.
    """
    report.setdefault("machine", machine_info())
    if hasattr(os, "getloadavg"):
        report["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report))
    return report
