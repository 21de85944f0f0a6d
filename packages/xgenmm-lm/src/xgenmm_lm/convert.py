"""Command-line entry point (filled in by the package's issue)."""

import sys


def main(argv=None) -> int:
    print("usage: xgenmm-lm convert — not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
