"""Root-level tests: the benchmark scripts (benchmarks/), run as `python -m benchmarks.<name>` from the root, and
the root README (test_readme.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_benchmark():
    """Run `python -m benchmarks.<name> ARGS` from the repository root → its last JSON object."""

    def _run(name: str, *args: str, timeout: float = 900) -> dict:
        proc = subprocess.run(
            [sys.executable, "-m", f"benchmarks.{name}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )
        assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    return _run
