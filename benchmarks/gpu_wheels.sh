#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the wheels that the GPU machine's image lacks, at the versions of uv.lock, for
# CPython 3.12 on x86-64 (that image's python3). Run once on a machine with PyPI access, from anywhere:
#
#   bash benchmarks/gpu_wheels.sh          # then carry .whl to the GPU machine (bash benchmarks/gpu_all.sh)
#
# Pure-Python packages published only as source (deepspeed's ops are JIT-built, none at install) are built
# into py3-none-any wheels here.
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS="deepspeed hjson omegaconf antlr4-python3-runtime pydantic pydantic-core annotated-types typing-inspection
webdataset braceexpand"
mkdir -p .whl
for name in $PKGS; do
    version=$(awk -v n="$name" '$0 == "name = \"" n "\"" {getline; gsub(/version = |"/, ""); print; exit}' uv.lock)
    [ -n "$version" ] || { echo "gpu_wheels.sh: $name is not in uv.lock" >&2; exit 1; }
    if ls .whl/ | grep -qi "^$(echo "$name" | tr - _)-$version-"; then continue; fi
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "$name==$version" 2>/dev/null \
        || python3 -m pip wheel -q --no-deps -w .whl "$name==$version"
done
ls -la .whl/ && du -sh .whl/
