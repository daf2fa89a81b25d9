#!/usr/bin/env bash
# HarmAug in miniature: the recipe that built models/default/ (see models/default/README.md).
#
#   recipes/default-model.sh [STAGE...]   stages: synth teacher label eda students eval export
#                                          (no stage = all, in that order)
#
# Every stage is resumable: harmaug appends its outputs and skips finished rows/runs, so a
# killed recipe is rerun with the same command. Work files go to $WORK (default
# ~/.cache/harmaug/default-model), never into the repository; only `export` writes to the repo.
# Sizes are set by the environment (defaults = the shipped run, sized for 2 CPU cores):
#   SYNTH_PROMPTS   synthetic harmful prompts to keep           (2500)
#   TRAIN_SAMPLES   rows drawn per epoch, teacher and students   (9600)
#   TEACHER_SAMPLES rows drawn per epoch for the teacher         (12800)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
CACHE=${HARMAUG_CACHE:-$HOME/.cache/harmaug}
WORK=${WORK:-$CACHE/default-model}
DATA=${HARMAUG_DATA:-$REPO/../shared/data}
HARMAUG=${HARMAUG:-$REPO/target/release/harmaug}
MINILM=${MINILM:-$CACHE/assets/all-MiniLM-L6-v2}
GGUF=${GGUF:-$CACHE/assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
LLAMA_SERVER=${LLAMA_SERVER:-$CACHE/bin/llama-server}
SYNTH_PROMPTS=${SYNTH_PROMPTS:-2500}
TRAIN_SAMPLES=${TRAIN_SAMPLES:-9600}
TEACHER_SAMPLES=${TEACHER_SAMPLES:-12800}
PORT=${PORT:-8097}
mkdir -p "$WORK"
log() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

LABELLED=(
    "$DATA/train/prompts_guardreasoner.jsonl"
    "$DATA/train/prompts_toxicchat0124_train.jsonl"
    "$DATA/train/prompts_harmful_seed.jsonl"
    "$DATA/train/prompts_benign_alpaca.jsonl"
    "$DATA/train/pairs_saferlhf.jsonl"
    "$DATA/train/pairs_jailbreakbench_artifacts.jsonl"
    "$DATA/train/pairs_alpacaeval_benign.jsonl"
)
train_args() { for f in "$@"; do printf -- '--train\n%s\n' "$f"; done; }

# Shared training recipe: the paper's (AdamW 3e-5 → linear decay, warm-up, decay 0.1, clip 1,
# class-balanced sampling) at the scale 2 cores allow: batch 32, 1 epoch of N drawn rows,
# max length 256 (BERT's table allows 512; most rows are far shorter).
distill() { # out samples lambda train-files...
    local out=$1 samples=$2 lambda=$3
    shift 3
    local resume=()
    [ -f "$out/trainer_state/latest" ] && resume=(--resume)
    [ -f "$out/model.safetensors" ] && [ ! -f "$out/trainer_state/latest" ] && return 0
    "$HARMAUG" distill --model "$MINILM" --out "$out" "${resume[@]}" \
        --epochs 1 --samples-per-epoch "$samples" --batch-size 32 --micro-batch-size 16 \
        --lr 5e-5 --warmup-steps 30 --max-length 256 --lambda "$lambda" --save-every 25 \
        --val-fraction 0.05 --seed 7 $(train_args "$@")
}

serve() {
    "$LLAMA_SERVER" -m "$GGUF" --host 127.0.0.1 --port "$PORT" -c 8192 -np 4 \
        -t "$(nproc)" --log-disable >"$WORK/llama-server.log" 2>&1 &
    SERVER_PID=$!
    trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
    for _ in $(seq 120); do
        curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && return 0
        sleep 1
    done
    echo "llama-server did not start; see $WORK/llama-server.log" >&2
    exit 1
}

stage_synth() {
    log "synth: $SYNTH_PROMPTS harmful prompts by SmolLM2-135M-Instruct, then a response to each"
    # Exemplars: the seed set plus the harmful rows of the prompt-level training sets.
    cat "$DATA/train/prompts_harmful_seed.jsonl" "$DATA/train/prompts_guardreasoner.jsonl" \
        "$DATA/train/prompts_toxicchat0124_train.jsonl" >"$WORK/seeds.jsonl"
    serve
    local url="http://127.0.0.1:$PORT/v1"
    "$HARMAUG" augment generate --generator "$url" --seeds "$WORK/seeds.jsonl" \
        --num "$SYNTH_PROMPTS" --out "$WORK/synthetic_prompts.jsonl" --shots 3 --seed 1
    "$HARMAUG" augment respond --responder "$url" --input "$WORK/synthetic_prompts.jsonl" \
        --out "$WORK/synthetic_pairs.jsonl" --max-new-tokens 128 --seed 1
    kill "$SERVER_PID"
    trap - EXIT
}

stage_teacher() {
    log "teacher: MiniLM fine-tuned on all labelled training data ($TEACHER_SAMPLES rows drawn)"
    distill "$WORK/teacher" "$TEACHER_SAMPLES" 0.5 "${LABELLED[@]}"
}

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(synth teacher label eda students eval export)
for stage in "${stages[@]}"; do
    "stage_$stage"
done
