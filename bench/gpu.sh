#!/usr/bin/env bash
# One prepared GPU run (issue #16): build harmaug with CUDA, check parity on the fixtures, then
# measure scoring and a distill step side by side with PyTorch on the same GPU; prints one
# Markdown table and the time of each part. Meant to finish in under 8 minutes with a warm
# cargo cache.
#
#   bench/gpu.sh            on a machine with an NVIDIA GPU, the CUDA toolkit and torch
#   bench/gpu.sh --dry-run  the same script on `--backend wgpu` (Mesa's software adapter where
#                           there is no GPU), PyTorch on the CPU, tiny shapes: CI runs it so the
#                           script cannot rot; its numbers mean nothing
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--dry-run" ]; then
    # The dev-profile build that scripts/test_wgpu.sh already made (dependencies optimised):
    # no second build of burn in CI.
    MODE=dry-run BUILD=(--features wgpu) BINARY=debug/harmaug
else
    # No in-process LLM, no built-in guard: neither is measured, and llama.cpp's build is long.
    MODE=cuda BUILD=(--release --no-default-features --features flex,cuda) BINARY=release/harmaug
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/harmaug/target/$(rustc -V | cut -d' ' -f2)}

start=$(date +%s)
echo "== build: harmaug ${BUILD[*]} ($(date +%T))"
cargo build --locked -p harmaug "${BUILD[@]}"
build_s=$(($(date +%s) - start))

# PyTorch and transformers: the system Python's when it has them, else a cached venv.
PYTHON=python3
if ! python3 -c "import torch, transformers" 2>/dev/null; then
    VENV=$HOME/.cache/harmaug/tools/bench-venv
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check torch transformers
    PYTHON=$VENV/bin/python
fi
exec "$PYTHON" bench/gpu.py --mode "$MODE" --binary "$CARGO_TARGET_DIR/$BINARY" \
    --build-seconds "$build_s"
