#!/usr/bin/env bash
# Fuzzes every reader of untrusted bytes (issue #17) with cargo-fuzz (libFuzzer + AddressSanitizer)
# for a fixed budget per target, and prints one Markdown row per target for docs/FUZZING.md.
#
#   fuzz/run.sh [TARGET...]          FUZZ_SECONDS (per target, default 120), FUZZ_JOBS (default 1)
#
# Needs nightly Rust and cargo-fuzz (`rustup toolchain install nightly`, `cargo install
# cargo-fuzz`). The corpus grows in fuzz/corpus/TARGET (not committed) from fuzz/seeds/TARGET
# (python3 fuzz/make_seeds.py); crashes land in fuzz/artifacts/TARGET. Each one found is
# minimised (`cargo +nightly fuzz tmin TARGET FILE`), fixed, and committed under
# fuzz/regressions/TARGET, which the stable test suite replays (tests/tests/fuzz_regressions.rs).
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${FUZZ_SECONDS:-120}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/harmaug/fuzz-target}
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(checkpoint manifest tokenizer text dataset jsonl data_file gguf chat_template)
mkdir -p logs
cargo +nightly fuzz build --release
echo "| target | seconds | runs | runs/s | corpus | peak RSS MB | findings |"
echo "|---|---|---|---|---|---|---|"
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    # 2 GiB of memory and 10 s per input at most: past either is a finding, like a crash.
    cargo +nightly fuzz run --release "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
        -jobs="${FUZZ_JOBS:-1}" -workers="${FUZZ_JOBS:-1}" -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" >"logs/$t.log" 2>&1 || true
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' | tail -1)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' | tail -1)
    rss=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' | tail -1)
    findings=$(find "artifacts/$t" -type f | wc -l)
    echo "| $t | $SECONDS_EACH | ${runs:-?} | ${rate:-?} | $(find "corpus/$t" -type f | wc -l) | ${rss:-?} | $findings |"
done
