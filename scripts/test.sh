#!/usr/bin/env bash
# The whole test suite. Needs what scripts/setup.sh installs (the MiniLM weights for the
# real-weights parity test).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
