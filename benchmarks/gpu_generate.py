"""Real-size generation on one GPU: tokens/s with the KV cache at batch 1 and 8 (random bf16 weights).

    uv run python -m benchmarks.gpu_generate            # ~2-3 min on one H100 (≤ 8 min budget)
    uv run python -m benchmarks.gpu_generate --quick    # smoke run

The released configuration (SigLIP so400m-384 + perceiver + Phi-3-mini, 4.36 B parameters) is built directly on
the GPU with random weights in bfloat16; each sample holds one 640×480 image (5 crops → 640 vision tokens) and a
64-token text prompt, and generates exactly 128 new tokens (greedy, eos disabled). Before anything is timed the
GPU runs bf16 matmuls for 15 s (clock ramp), then every batch size gets untimed full-length generations; numbers
are medians of 5 timed runs. The measurement itself is `bench_generate.run` (imported, not copied); extra
arguments are passed on to it (e.g. `--batch-sizes 1 4 8`, `--attn flash_attention_2`). Needs CUDA: exits with
status 2 and a message otherwise. Prints one JSON object.
"""

from __future__ import annotations

import sys

from benchmarks._common import emit, require_cuda
from benchmarks.bench_generate import parse_args, run

DEFAULTS = ["--device", "cuda", "--real-size", "--new-tokens", "128", "--gpu-warmup-s", "15", "--warmup", "2"]


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(DEFAULTS + argv)  # later flags win, so the caller can override any default
    require_cuda("gpu_generate.py")
    report = run(args)
    report["benchmark"] = "gpu_generate"
    return emit(report)


if __name__ == "__main__":
    main()
