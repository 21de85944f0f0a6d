"""`xgenmm-data`: validate a data mixture (`check`) and write webdataset shards (`shard`).

    xgenmm-data check mix.yaml [--path-map paths.yaml] [--image-root DIR] [--tokenizer DIR]
    xgenmm-data shard --mixture mix.yaml --out shards/ --max-size 1GB
    xgenmm-data shard --interleaved docs.jsonl --out shards/ [--image-root DIR]

Exit status: 0 = clean / written, 1 = problems found (check) or records skipped above the limit (shard),
2 = fatal (missing data file, unreadable JSON, bad arguments).
"""

from __future__ import annotations

import argparse
import logging
import sys

from .check import check_mixture
from .interleaved import write_interleaved_shards
from .shards import write_shards
from .sources import DataError, Mixture


def _load_tokenizer(path):
    if path is None:
        return None
    try:
        from transformers import AutoTokenizer  # extra `tokenizer`: exact token counts for `check`
    except ImportError:
        raise SystemExit("--tokenizer needs transformers: pip install 'xgenmm-data[tokenizer]'") from None
    return AutoTokenizer.from_pretrained(path)


def _mixture(args) -> Mixture:
    return Mixture.from_path(args.mixture, path_map=args.path_map, image_root=args.image_root)


def cmd_check(args) -> int:
    """`xgenmm-data check`: print the mixture's report; exit 0 clean, 1 bad records, 2 fatal."""
    try:
        mix = _mixture(args)
    except DataError as e:
        print("FATAL: the run cannot start:\n" + "\n".join(f"  {p}" for p in e.problems), file=sys.stderr)
        return 2
    report = check_mixture(
        mix,
        tokenizer=_load_tokenizer(args.tokenizer),
        template=args.template,
        max_length=args.max_length,
        max_images=args.max_images,
        decode=not args.no_decode,
    )
    print(report.format(args.max_examples))
    if report.fatal:
        return 2
    return 0 if report.ok else 1


def cmd_shard_interleaved(args) -> int:
    """`xgenmm-data shard --interleaved`: write interleaved image-text documents as webdataset shards."""
    try:
        info = write_interleaved_shards(
            args.interleaved,
            args.out,
            image_root=args.image_root,
            max_size=args.max_size,
            max_count=args.max_count,
            prefix=args.prefix or "docs",
        )
    except OSError as e:
        print(f"FATAL: {args.interleaved}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"wrote {info['written']} documents to {len(info['shards'])} shard(s) in {args.out}")
    for reason, n in info["skipped_by_reason"].items():
        print(f"  skipped {n}: {reason}")
    for line, reason in info["skipped_lines"][: args.max_examples]:
        print(f"    {args.interleaved} line {line}: {reason}")
    total = info["written"] + info["skipped"]
    if not info["written"] or info["skipped"] / total > args.max_bad_fraction:
        print(
            f"FAILED: {info['skipped']} of {total} documents skipped (> {args.max_bad_fraction:.2%})",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_shard(args) -> int:
    """`xgenmm-data shard`: write the mixture as webdataset shards; 1 when more than --max-bad-fraction skipped."""
    if args.interleaved:
        return cmd_shard_interleaved(args)

    try:
        refs = _mixture(args).load()
    except DataError as e:
        print("FATAL:\n" + "\n".join(f"  {p}" for p in e.problems), file=sys.stderr)
        return 2
    info = write_shards(
        refs,
        args.out,
        max_size=args.max_size,
        max_count=args.max_count,
        max_images=args.max_images,
        prefix=args.prefix or "shard",
    )
    print(f"wrote {info['written']} samples to {len(info['shards'])} shard(s) in {args.out}")
    for reason, n in info["skipped_by_reason"].items():
        print(f"  skipped {n}: {reason}")
    total = info["written"] + info["skipped"]
    if total and info["skipped"] / total > args.max_bad_fraction:
        print(
            f"FAILED: {info['skipped']} of {total} records skipped (> {args.max_bad_fraction:.2%})",
            file=sys.stderr,
        )
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `xgenmm-data` argument parser (subcommands `check` and `shard`)."""
    p = argparse.ArgumentParser(prog="xgenmm-data", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument(
            "--path-map",
            help="YAML mapping, or a Python file with a literal IMAGE_FOLDER_DICT (parsed, not run)",
        )
        sp.add_argument("--image-root", help="folder that relative image paths are joined to")
        sp.add_argument("--max-images", type=int, default=4)

    c = sub.add_parser("check", help="validate a mixture YAML / data file / folder and print a problem table")
    c.add_argument("mixture", nargs="?")
    c.add_argument("--mixture", dest="mixture_opt")
    common(c)
    c.add_argument("--tokenizer", help="tokenizer folder for exact lengths (needs transformers)")
    c.add_argument("--template", default="phi_3")
    c.add_argument("--max-length", type=int, default=2048)
    c.add_argument(
        "--no-decode", action="store_true", help="read image headers only (faster, misses truncation)"
    )
    c.add_argument("--max-examples", type=int, default=20)
    c.set_defaults(func=cmd_check)

    s = sub.add_parser("shard", help="write webdataset tar shards of a mixture")
    s.add_argument("mixture", nargs="?")
    s.add_argument("--mixture", dest="mixture_opt")
    s.add_argument(
        "--interleaved",
        help="OBELICS-style JSONL of documents ({texts: [...], images: [...]}) instead of a mixture",
    )
    s.add_argument("--out", required=True)
    s.add_argument("--prefix", help="shard file prefix (shard / docs)")
    s.add_argument("--max-examples", type=int, default=20, help="skipped lines to list (--interleaved)")
    s.add_argument("--max-size", default="1GB")
    s.add_argument("--max-count", type=int, default=100_000)
    s.add_argument("--max-bad-fraction", type=float, default=0.01)
    common(s)
    s.set_defaults(func=cmd_shard)
    return p


def main(argv=None) -> int:
    """Entry point of `xgenmm-data`; returns the exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    args.mixture = args.mixture or args.mixture_opt
    if args.mixture and getattr(args, "interleaved", None):
        parser.error("give either a mixture or --interleaved, not both")
    if not args.mixture and not getattr(args, "interleaved", None):
        parser.error("give a mixture YAML, data file or folder")
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
