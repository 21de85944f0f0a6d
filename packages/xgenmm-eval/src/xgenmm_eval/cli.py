"""`xgenmm-eval`: evaluate a checkpoint locally or through VLMEvalKit.

    xgenmm-eval run --model CKPT --data eval.json --metric vqa --batch-size 8 --output-dir eval-out
    xgenmm-eval vlmevalkit --model CKPT --data MMBench_DEV_EN --work-dir vlmeval-outputs

`run` writes `predictions.jsonl` and `report.json` into `--output-dir` and prints the report. `vlmevalkit` needs
VLMEvalKit installed (it says how when it is missing) and runs its inference and scoring on our model instance.
lmms-eval needs no command here: install `xgenmm-eval[lmms]` and use `lmms-eval --model xgenmm ...`.
"""

from __future__ import annotations

import argparse
import json
import sys

from .evaluator import METRICS, evaluate, write_results
from .loading import load_model
from .records import load_eval_records
from .vlmevalkit import VLMEvalKitMissing, require_vlmeval, run_vlmevalkit


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint folder (ours or a released snapshot)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    p.add_argument("--dtype", default=None, help="bf16, fp16, fp32 (default: bf16 on cuda, fp32 on cpu)")


def build_parser() -> argparse.ArgumentParser:
    """The `xgenmm-eval` command line (subcommands run and vlmevalkit)."""
    parser = argparse.ArgumentParser(prog="xgenmm-eval", description="Evaluate xGen-MM checkpoints.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="local evaluator on a LLaVA-format file with reference answers")
    _add_model_args(run)
    run.add_argument("--data", required=True, help="eval records (.json list or .jsonl)")
    run.add_argument(
        "--image-folder", default=None, help="root of relative image paths (default: data file dir)"
    )
    run.add_argument("--metric", choices=METRICS, default="vqa")
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--max-new-tokens", type=int, default=128)
    run.add_argument("--template", default="phi_3", help="chat template of xgenmm_data (default phi_3)")
    run.add_argument("--limit", type=int, default=None, help="evaluate only the first N records")
    run.add_argument("--output-dir", default="eval-out", help="where predictions.jsonl and report.json go")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    vk = sub.add_parser("vlmevalkit", help="VLMEvalKit inference + scoring with this model")
    _add_model_args(vk)
    vk.add_argument("--data", nargs="+", required=True, help="VLMEvalKit dataset names, e.g. MMBench_DEV_EN")
    vk.add_argument("--work-dir", default="vlmeval-outputs")
    vk.add_argument("--model-name", default=None, help="name in VLMEvalKit's files (default xgenmm-<folder>)")
    vk.add_argument(
        "--judge", default="exact_matching", help="VLMEvalKit judge (default exact_matching, offline)"
    )
    vk.add_argument("--nproc", type=int, default=4, help="judge API processes")
    vk.add_argument("--mode", choices=("all", "infer"), default="all")
    vk.add_argument("--max-new-tokens", type=int, default=1024)
    vk.add_argument("--verbose", action="store_true")
    return parser


def cmd_run(args) -> int:
    """`xgenmm-eval run`: the local evaluator on a LLaVA-format JSON; prints and writes the scores."""
    records = load_eval_records(args.data, args.image_folder)
    if args.limit is not None:
        records = records[: args.limit]
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    result = evaluate(
        model,
        tokenizer,
        records,
        metric=args.metric,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        template=args.template,
        progress=not args.no_progress,
    )
    result.report.update(model=str(args.model), data=str(args.data))
    pred_path, report_path = write_results(result, args.output_dir)
    print(json.dumps(result.report, indent=2))
    print(f"wrote {pred_path} and {report_path}", file=sys.stderr)
    return 0


def cmd_vlmevalkit(args) -> int:
    """`xgenmm-eval vlmevalkit`: a VLMEvalKit benchmark through the bridge."""
    require_vlmeval()  # fail before loading anything
    results = run_vlmevalkit(
        args.model,
        args.data,
        work_dir=args.work_dir,
        model_name=args.model_name,
        judge=args.judge,
        nproc=args.nproc,
        mode=args.mode,
        verbose=args.verbose,
        device=args.device,
        dtype=args.dtype,
        max_new_tokens=args.max_new_tokens,
    )
    for name, res in results.items():
        print(f"== {name} ==")
        print(res.to_string() if hasattr(res, "to_string") else json.dumps(res, indent=2, default=str))
    return 0


def main(argv=None) -> int:
    """`xgenmm-eval`: dispatch to the subcommand; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
        return cmd_vlmevalkit(args)
    except VLMEvalKitMissing as err:
        print(f"xgenmm-eval: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        print(f"xgenmm-eval: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
