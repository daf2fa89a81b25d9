#!/usr/bin/env bash
# Fuzzes every reader of untrusted bytes (issue #17) with cargo-fuzz (libFuzzer + AddressSanitizer)
# for a fixed budget per target, and prints one Markdown row per target for docs/FUZZING.md.
#
#   fuzz/run.sh [TARGET...]          FUZZ_SECONDS (per target, default 120), FUZZ_JOBS (default 1)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`, from crates.io). It runs on the project's stable
# toolchain with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes nightly -Z flags; this machine can fetch no
# nightly), building into ~/.cache/harmaug/fuzz-target/<rustc version>. The corpus grows in
# fuzz/corpus/TARGET (not committed) from fuzz/seeds/TARGET (python3 fuzz/make_seeds.py);
# crashes land in fuzz/artifacts/TARGET. Each one found is minimised (`RUSTC_BOOTSTRAP=1 cargo
# fuzz tmin TARGET FILE`), fixed, and committed under fuzz/regressions/TARGET, which the test
# suite replays (tests/tests/fuzz_regressions.rs). Exits non-zero when a target found anything.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${FUZZ_SECONDS:-120}
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/harmaug/fuzz-target/stable-$(rustc -V | cut -d' ' -f2)}
export RUSTC_BOOTSTRAP=1
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(checkpoint manifest tokenizer text dataset jsonl data_file gguf chat_template)
mkdir -p logs
cargo fuzz build --release
found=0
echo "| target | seconds | runs | runs/s | corpus | peak RSS MB | findings |"
echo "|---|---|---|---|---|---|---|"
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    # 2 GiB of memory and 10 s per input at most: past either is a finding, like a crash.
    jobs=()
    [ "${FUZZ_JOBS:-1}" -gt 1 ] && jobs=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS")
    cargo fuzz run --release "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
        "${jobs[@]}" -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"logs/$t.log" 2>&1 || true
    stat() { grep -o "stat::$1: *[0-9]*" "logs/$t.log" | grep -o '[0-9]*$' | tail -1 || true; }
    runs=$(stat number_of_executed_units)
    rate=$(stat average_exec_per_sec)
    rss=$(stat peak_rss_mb)
    findings=$(find "artifacts/$t" -type f | wc -l)
    echo "| $t | $SECONDS_EACH | ${runs:-?} | ${rate:-?} | $(find "corpus/$t" -type f | wc -l) | ${rss:-?} | $findings |"
    if [ "$findings" -gt 0 ] || [ -z "$runs" ]; then
        found=1
        echo "$t: see fuzz/logs/$t.log and fuzz/artifacts/$t/" >&2
    fi
done
exit "$found"
