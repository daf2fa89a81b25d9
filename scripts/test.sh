#!/usr/bin/env bash
# The whole test suite: cargo tests, the model and CLI tests again on burn's wgpu backend
# (scripts/test_wgpu.sh), then the browser tests (scripts/test_web.sh). Needs what
# scripts/setup.sh installs (MiniLM weights, Mesa's software Vulkan adapter, Chromium,
# wasm-bindgen-test-runner, playwright-core).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
./scripts/test_wgpu.sh
./scripts/test_web.sh
