#!/usr/bin/env bash
# Builds the npm package of the browser guard into web/pkg (wasm-bindgen --target web output +
# harmguard.js + worker.js + types + README + package.json). Needs what scripts/setup.sh
# installs (the wasm32 target and the matching wasm-bindgen-cli).
#
#   scripts/build_web.sh          release build → web/pkg   (then: cd web/pkg && npm pack)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${HARMAUG_CACHE:-$HOME/.cache/harmaug}
PATH="$CACHE/bin:$PATH"
cargo build --locked --release -p harmaug-web --target wasm32-unknown-unknown
rm -rf web/pkg
# The same file names as trunk's worker build of the demo (worker.js imports harmaug-web.js).
wasm-bindgen --target web --out-name harmaug-web --out-dir web/pkg \
    "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/release/harmaug_web.wasm"
# npm's binaryen, when set-up installed it, shrinks the wasm (Debian's wasm-opt 108 breaks it).
if [ -x "$CACHE/tools/binaryen/node_modules/.bin/wasm-opt" ]; then
    "$CACHE/tools/binaryen/node_modules/.bin/wasm-opt" -O3 --enable-bulk-memory --enable-nontrapping-float-to-int \
        web/pkg/harmaug-web_bg.wasm -o web/pkg/harmaug-web_bg.wasm
fi
cp web/js/harmguard.js web/js/worker.js web/js/harmguard.d.ts web/package.json web/README.md web/pkg/
ls -l web/pkg
