"""DPO reference policy cost on the CPU, tiny config: precomputed log-probs vs a live reference model vs the
LoRA-disabled reference (same model). Prints one JSON object: wall time and peak RSS for each.

    uv run python -m benchmarks.bench_dpo [--quick]

Each mode runs in its own process so peak RSS (ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from benchmarks._common import ROOT, module_command

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def child(mode: str, data_dir: str, run_dir: str, steps: int) -> None:
    import torch

    torch.set_num_threads(1)
    from xgenmm_train.config import load_config
    from xgenmm_train.dpo import run_dpo

    overrides = [
        f"run_dir={run_dir}",
        "model.init=tiny",
        f"data.path={data_dir}/dpo_train.json",
        f"data.image_folder={data_dir}",
        "data.max_length=128",
        "train.micro_batch_size=8",
        "train.precision=fp32",
        f"train.max_steps={steps}",
        "deepspeed.zero_stage=0",
        "checkpoint.save_every=null",
        "logging.progress_bar=false",
        "logging.plot=false",
        f"dpo.reference={mode}",
    ]
    if mode == "lora":
        overrides += ["lora.enabled=true", "lora.r=8", "model.train_lang_model=false"]
    t0 = time.perf_counter()
    run_dpo(load_config(None, overrides, task="dpo"))
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({"wall_s": round(wall, 2), "peak_rss_mb": round(rss, 1)}))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--child", nargs=4)
    args = p.parse_args(argv)
    if args.child:
        mode, data_dir, run_dir, steps = args.child
        child(mode, data_dir, run_dir, int(steps))
        return {}
    from xgenmm_train.demo.sft_data import make_dataset

    steps = 2 if args.quick else 10
    out = {"benchmark": "dpo_reference_cpu_tiny", "steps": steps}
    with tempfile.TemporaryDirectory() as tmp:
        make_dataset(f"{tmp}/data", n_train=8, n_heldout=6, n_dpo=32 if args.quick else 96)
        for mode in ("precompute", "model", "lora"):
            cmd = module_command("bench_dpo", "--child", mode, f"{tmp}/data", f"{tmp}/{mode}", str(steps))
            env = dict(os.environ, OMP_NUM_THREADS="1")
            p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
            lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
            if p.returncode or not lines:
                raise RuntimeError(f"{mode} failed:\n{p.stderr[-2000:]}")
            out[mode] = json.loads(lines[-1][7:])
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
