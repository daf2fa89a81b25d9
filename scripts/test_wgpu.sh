#!/usr/bin/env bash
# The GPU code path without a GPU: the model tests (parity with transformers) and the CLI's
# wgpu tests on burn's wgpu backend, on the first Vulkan adapter — Mesa's software lavapipe
# where there is no GPU (scripts/setup.sh installs it). No adapter: the tests fail.
set -euo pipefail
cd "$(dirname "$0")/.."
# One build of harmaug with wgpu for both packages (features unify within one cargo call).
cargo test --locked -p harmaug -p harmaug-tests --features harmaug/wgpu,harmaug-tests/wgpu \
    --test cli_wgpu --test parity_fixtures --test deberta_v3 --test backend_ops "$@"
