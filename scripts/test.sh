#!/usr/bin/env bash
# The whole test suite: cargo tests, then the browser tests (scripts/test_web.sh). Needs what
# scripts/setup.sh installs (MiniLM weights, Chromium, wasm-bindgen-test-runner, playwright-core).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
./scripts/test_web.sh
