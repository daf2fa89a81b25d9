#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` from the sources vendored in the PyPI sdist of
# llama-cpp-python (no other network than PyPI), once, into ~/.cache/harmaug/tools, and links it
# as ~/.cache/harmaug/bin/llama-server. The tests start it as a real OpenAI-compatible server.
# About 15 CPU-minutes on first run; a no-op afterwards.
set -euo pipefail

VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
CACHE=${HARMAUG_CACHE:-$HOME/.cache/harmaug}
TOOL=$CACHE/tools/llama-server-$VERSION
if [ -x "$TOOL/llama-server" ]; then
    ln -sf "$TOOL/llama-server" "$CACHE/bin/llama-server"
    exit 0
fi

# cmake and scikit-build-core in a private venv: pip needs the latter to read the sdist's
# metadata, and the build needs the former.
VENV=$CACHE/tools/pybuild-venv
if [ ! -x "$VENV/bin/cmake" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q cmake scikit-build-core
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$VENV/bin/pip" download -q --no-deps --no-build-isolation --no-binary :all: \
    "llama-cpp-python==$VERSION" -d "$WORK"
tar -xzf "$WORK/llama_cpp_python-$VERSION.tar.gz" -C "$WORK"
SRC=$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp
# x86-64-v3 (AVX2, FMA, F16C) rather than -march=native: the cached binary must also run on
# other machines of the same kind.
"$VENV/bin/cmake" -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
    -DGGML_F16C=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >"$WORK/configure.log"
"$VENV/bin/cmake" --build "$WORK/build" --target llama-server -j "$(nproc)" >"$WORK/build.log"
mkdir -p "$TOOL" "$CACHE/bin"
cp "$WORK/build/bin/llama-server" "$TOOL/llama-server"
ln -sf "$TOOL/llama-server" "$CACHE/bin/llama-server"
echo "llama-server $VERSION built into $TOOL"
