"""Assemble README.md from docs/readme_head.md, the per-capability sections and docs/readme_tail.md.

    uv run python docs/build_readme.py          # rewrite README.md
    uv run python docs/build_readme.py --check  # exit 1 if README.md is out of date (CI)

The sections live next to each other in `docs/sections/` so that each package's tests can run the commands of
its own section exactly as written; the README shows them in the order a newcomer needs them.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
SECTION_ORDER = ["lm", "data", "train", "eval", "vision", "sampler"]


def build() -> str:
    parts = [(DOCS / "readme_head.md").read_text()]
    parts += [(DOCS / "sections" / f"{name}.md").read_text() for name in SECTION_ORDER]
    parts.append((DOCS / "readme_tail.md").read_text())
    return "\n".join(part.rstrip("\n") + "\n" for part in parts)


def main(argv: list[str]) -> int:
    text = build()
    readme = ROOT / "README.md"
    if "--check" in argv:
        if readme.read_text() != text:
            print("README.md is out of date: run `uv run python docs/build_readme.py`", file=sys.stderr)
            return 1
        return 0
    readme.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
