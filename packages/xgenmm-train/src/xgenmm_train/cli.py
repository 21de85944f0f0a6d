"""``xgenmm-train``: pre-training, SFT and DPO from a YAML config plus dotted overrides, or the embedded default runs.

xgenmm-train                                   embedded default SFT (tiny model, synthetic data, CPU)
xgenmm-train dpo                               embedded default DPO (from the default SFT weights)
xgenmm-train pretrain                          embedded default pre-training (composed tiny model, synthetic shards)
xgenmm-train pretrain --config X.yaml key=v    a real pre-training job on webdataset shards
xgenmm-train sft --config X.yaml key.sub=v     a real SFT job (launch under torchrun/deepspeed for GPUs)
xgenmm-train dpo --config X.yaml key.sub=v     a real DPO job
xgenmm-train [sft|dpo|pretrain] [--config X.yaml] --print-config [overrides]   show the merged config and exit

Exit status: 0 done; 2 an error you can fix, printed as one line (config, data, model or checkpoint files, a
failed checkpoint write, a non-finite loss; --debug or XGENMM_DEBUG=1 shows the traceback); 75 stopped by
SIGTERM/SIGUSR1 after writing a checkpoint (rerun with checkpoint.resume=auto); 1 an unexpected error.
"""

from __future__ import annotations

import argparse
import os
import sys

from xgenmm_data import DataError

from .config import ConfigError, load_config, to_yaml
from .demo import (
    default_dpo_config,
    default_pretrain_config,
    default_sft_config,
    run_default_dpo,
    run_default_pretrain,
    run_default_sft,
)
from .dpo import run_dpo
from .errors import EXIT_ERROR, EXIT_PREEMPTED, NonFiniteLoss, Preempted, TrainError
from .pretrain import run_pretrain
from .sft import run_sft

# Exceptions shown as one line (exit 2): ours, the data package's, a non-finite loss.
USER_ERRORS = (TrainError, ConfigError, DataError, NonFiniteLoss)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xgenmm-train",
        description="Train xGen-MM models (pre-training / SFT / DPO) on DeepSpeed. Without a command: the embedded default run.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument(
        "--config", help="YAML config (see packages/xgenmm-train/configs); omit for the embedded default"
    )
    p.add_argument("--print-config", action="store_true", help="print the merged config and exit")
    p.add_argument("--debug", action="store_true", help="show the traceback of errors (also XGENMM_DEBUG=1)")
    # The `deepspeed` launcher passes --local_rank=N to each process (and sets LOCAL_RANK, which is what
    # distributed.init_distributed reads); accepted so that `deepspeed --module xgenmm_train.cli ...` works.
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "args",
        nargs="*",
        metavar="[sft|dpo|pretrain] [key.sub=value ...]",
        help="the task (default: the embedded SFT demo), then dotted overrides, e.g. train.lr=1e-4",
    )
    return p


def main(argv=None) -> int:
    """``xgenmm-train`` (see the module docstring) → the exit status."""
    args = _parser().parse_intermixed_args(argv)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    rest = list(args.args)
    args.task = rest.pop(0) if rest and rest[0] in ("sft", "dpo", "pretrain") else None
    args.overrides = rest
    task = args.task or "sft"
    try:
        if args.config is None and task == "pretrain":
            config = default_pretrain_config(args.overrides)
        elif args.config is None:
            config = (default_dpo_config if task == "dpo" else default_sft_config)(args.overrides)
        else:
            config = load_config(args.config, args.overrides, task=args.task)
    except ConfigError as e:
        print(f"xgenmm-train: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(to_yaml(config), end="")
        return 0
    try:
        _run(args, config, task)
    except Preempted as e:
        print(f"xgenmm-train: {e}", file=sys.stderr)
        return EXIT_PREEMPTED
    except USER_ERRORS as e:
        if args.debug or os.environ.get("XGENMM_DEBUG") == "1":
            raise
        print(f"xgenmm-train: error: {one_line(e)}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _run(args, config, task: str) -> None:
    if args.config is None and task == "pretrain":
        run_default_pretrain(args.overrides)
    elif args.config is None:
        (run_default_dpo if task == "dpo" else run_default_sft)(args.overrides)
    elif config.task == "pretrain":
        run_pretrain(config)
    elif config.task == "dpo":
        run_dpo(config)
    else:
        run_sft(config)


def one_line(e: Exception) -> str:
    """The error on one line; data errors get a pointer to ``xgenmm-data check``."""
    if isinstance(e, DataError):
        bad = any("records are bad" in p for p in e.problems)
        hint = (
            "fix or drop the bad records (uv run xgenmm-data check <data.path> lists each one)"
            if bad
            else "check data.path and the files it names"
        )
        return "data: " + "; ".join(e.problems) + f"; {hint}"
    return " ".join(str(e).split())


if __name__ == "__main__":
    raise SystemExit(main())
