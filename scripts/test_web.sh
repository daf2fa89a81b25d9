#!/usr/bin/env bash
# The browser half of the test suite (scripts/test.sh runs it): the web crate's tests in headless
# Chromium (both backends against the PyTorch fixtures), then the demo built with trunk and
# driven end to end, its scores compared with native `harmaug score` on the same bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${HARMAUG_CACHE:-$HOME/.cache/harmaug}
export PATH="$CACHE/bin:$PATH" CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver}
BUNDLE=${HARMAUG_WEB_BUNDLE:-models/default}

echo "== web crate tests in headless Chromium"
# No debug info: with it the test wasm is ~700 MB (see ../shared/FACTS.md).
(cd web && CARGO_PROFILE_DEV_DEBUG=0 WASM_BINDGEN_TEST_TIMEOUT=600 \
    cargo test --locked --target wasm32-unknown-unknown)

echo "== demo: trunk build --release --offline"
trunk build --release --offline

echo "== demo end to end: browser vs native scores on $BUNDLE"
EXPECTED=$(mktemp --suffix=.jsonl)
trap 'rm -f "$EXPECTED"' EXIT
# The demo truncates long inputs (the web package's default longInput): compare like with like.
cargo run --locked --quiet -p harmaug -- score --model "$BUNDLE" --long-input truncate \
    --input tests/browser/rows.jsonl >"$EXPECTED"
node tests/browser/e2e.mjs --dist dist --bundle "$(basename "$BUNDLE")/" --expected "$EXPECTED"
