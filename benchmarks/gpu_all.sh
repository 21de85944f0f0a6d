#!/usr/bin/env bash
# The prepared GPU session (issue 15): on a bare GPU machine, install what its image lacks from carried wheels,
# put the workspace packages on the path, then run benchmarks.gpu_all (SFT sweep, DPO, generation; <= 7 min).
#
#   bash benchmarks/gpu_all.sh            # on the GPU machine, from the repository root, .whl/ carried
#   bash benchmarks/gpu_all.sh --tiny     # the same on the CPU with tiny models (here: uv run bash ...)
#
# The wheels: `bash benchmarks/gpu_wheels.sh` fills .whl/ (git-ignored) on a machine with PyPI access.
# Extra arguments go to `python -m benchmarks.gpu_all` (e.g. --budget-s 400, --only sft dpo).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

needed="deepspeed omegaconf pydantic webdataset"
missing=$("$PY" -c "
import importlib.util
print(' '.join(n for n in '$needed'.split() if importlib.util.find_spec(n) is None))")
if [ -n "$missing" ]; then
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        echo "gpu_all.sh: $missing not installed and no .whl/ folder carried (make it: bash benchmarks/gpu_wheels.sh)" >&2
        exit 2
    fi
    echo "gpu_all.sh: installing $(ls .whl/*.whl | wc -l) carried wheels for: $missing" >&2
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# The workspace packages from source (the GPU image has no uv; they are pure Python).
for src in packages/*/src; do PYTHONPATH="$PWD/$src${PYTHONPATH:+:$PYTHONPATH}"; done
export PYTHONPATH
"$PY" -c "import deepspeed, omegaconf, pydantic, webdataset, xgenmm_train"  # fail here, not mid-plan
exec "$PY" -m benchmarks.gpu_all "$@"
