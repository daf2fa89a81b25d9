#!/usr/bin/env bash
# HarmAug in miniature: the recipe that built models/default/ (see models/default/README.md).
#
#   recipes/default-model.sh [STAGE...]   stages: synth teacher split eda student_a student_b label
#                                          student_c eval export shipped report
#                                          (no stage = all, in that order)
#
# Every stage is resumable: harmaug appends its outputs and skips finished rows/runs, so a
# killed recipe is rerun with the same command. Work files go to $WORK (default
# ~/.cache/harmaug/default-model), never into the repository; only `export` writes to the repo.
# Sizes are set by the environment (defaults = the shipped run, sized for 2 CPU cores):
#   SYNTH_PROMPTS   synthetic harmful prompts to keep           (800)
#   SYNTH_RESPONSES of which get a response (prompt + response)  (400)
#   TRAIN_SAMPLES   rows drawn per epoch, teacher and students   (4800)
#   TEACHER_SAMPLES rows drawn per epoch for the teacher         (6400)
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
SYNTH_PROMPTS=${SYNTH_PROMPTS:-800}
SYNTH_RESPONSES=${SYNTH_RESPONSES:-400}
TRAIN_SAMPLES=${TRAIN_SAMPLES:-4800}
TEACHER_SAMPLES=${TEACHER_SAMPLES:-6400}
PORT=${PORT:-8097}
# llama.cpp threads spin at barriers: give it fewer threads than cores when training runs beside it.
LLM_THREADS=${LLM_THREADS:-$(nproc)}
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

# Shared training recipe: the paper's (AdamW, linear warm-up and decay, weight decay 0.1, clip
# 1, class-balanced sampling) at the scale 2 cores allow: batch 32, 1 epoch of N drawn rows,
# lr 5e-5 with 30 warm-up updates (the paper: 3e-5, 100, for far longer runs), max length 128
# (most rows are shorter; pairs keep their start). A finished run is resumed as a no-op.
distill() { # out samples lambda train-files...
    local out=$1 samples=$2 lambda=$3
    shift 3
    local resume=()
    [ -f "$out/trainer_state/latest" ] && resume=(--resume)
    [ -f "$out/model.safetensors" ] && [ ! -f "$out/trainer_state/latest" ] && return 0
    "$HARMAUG" distill --model "$MINILM" --out "$out" "${resume[@]}" \
        --epochs 1 --samples-per-epoch "$samples" --batch-size 32 --micro-batch-size 16 \
        --lr 5e-5 --warmup-steps 30 --max-length 128 --lambda "$lambda" --save-every 25 \
        --val-fraction 0.05 --seed 7 $(train_args "$@")
}

serve() {
    "$LLAMA_SERVER" -m "$GGUF" --host 127.0.0.1 --port "$PORT" -c 8192 -np 4 \
        -t "$LLM_THREADS" --log-disable >"$WORK/llama-server.log" 2>&1 &
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
    log "synth: $SYNTH_PROMPTS harmful prompts by SmolLM2-135M-Instruct, responses to $SYNTH_RESPONSES"
    # Exemplars: the seed set plus the harmful rows of the prompt-level training sets.
    cat "$DATA/train/prompts_harmful_seed.jsonl" "$DATA/train/prompts_guardreasoner.jsonl" \
        "$DATA/train/prompts_toxicchat0124_train.jsonl" >"$WORK/seeds.jsonl"
    serve
    local url="http://127.0.0.1:$PORT/v1"
    "$HARMAUG" augment generate --generator "$url" --seeds "$WORK/seeds.jsonl" \
        --num "$SYNTH_PROMPTS" --out "$WORK/synthetic_prompts.jsonl" --shots 3 --seed 1
    # A response to the first SYNTH_RESPONSES prompts (responses are the slow part on a CPU).
    head -n "$SYNTH_RESPONSES" "$WORK/synthetic_prompts.jsonl" >"$WORK/respond_input.jsonl"
    "$HARMAUG" augment respond --responder "$url" --input "$WORK/respond_input.jsonl" \
        --out "$WORK/synthetic_pairs.jsonl" --max-new-tokens 96 --seed 1
    kill "$SERVER_PID"
    trap - EXIT
}

stage_teacher() {
    log "teacher: MiniLM fine-tuned on all labelled training data ($TEACHER_SAMPLES rows drawn)"
    distill "$WORK/teacher" "$TEACHER_SAMPLES" 0.5 "${LABELLED[@]}"
}

# Students are chosen on rows none of them trains on: 5% of every labelled file (by a hash of
# the prompt, so reruns split alike) go to $WORK/split/validation.jsonl.
stage_split() {
    log "split: labelled data → student training files + a shared validation file"
    mkdir -p "$WORK/split"
    python3 - "$WORK/split" "${LABELLED[@]}" <<'PY'
import hashlib, json, pathlib, sys
out = pathlib.Path(sys.argv[1])
with open(out / "validation.jsonl", "w") as validation:
    for path in map(pathlib.Path, sys.argv[2:]):
        with open(path) as rows, open(out / path.name, "w") as train:
            for line in rows:
                row = json.loads(line)
                digest = hashlib.sha256(row["prompt"].encode()).digest()
                (validation if digest[0] < 13 else train).write(line)
PY
    wc -l "$WORK"/split/*.jsonl
}
SPLIT_TRAIN=()
for f in "${LABELLED[@]}"; do SPLIT_TRAIN+=("$WORK/split/$(basename "$f")"); done

# The teacher labels the synthetic rows. (The paper's student also learns the teacher's soft
# labels on the real data; on 2 cores labelling 30k real rows did not fit the time, so the real
# rows keep their hard labels only — see models/default/README.md.)
stage_label() {
    log "label: the teacher's P(unsafe) on the synthetic prompts and pairs"
    mkdir -p "$WORK/labelled"
    for f in "$WORK/synthetic_prompts.jsonl" "$WORK/synthetic_pairs.jsonl"; do
        "$HARMAUG" label --teacher "$WORK/teacher" --input "$f" \
            --out "$WORK/labelled/$(basename "$f")" --batch-size 64 --max-length 128
    done
}

stage_eda() {
    log "eda: one EDA variant of every unsafe training row (the simple baseline)"
    "$HARMAUG" augment eda --only-unsafe --per-row 1 --alpha 0.1 --seed 1 \
        --out "$WORK/eda.jsonl" $(for f in "${SPLIT_TRAIN[@]}"; do printf -- '--input %s ' "$f"; done)
}

# The same budget for each student: TRAIN_SAMPLES balanced draws, one epoch, same seed.
stage_student_a() {
    log "student a: labelled data only (hard labels)"
    distill "$WORK/student-a" "$TRAIN_SAMPLES" 0 "${SPLIT_TRAIN[@]}"
}

stage_student_b() {
    log "student b: labelled data + EDA variants (hard labels)"
    distill "$WORK/student-b" "$TRAIN_SAMPLES" 0 "${SPLIT_TRAIN[@]}" "$WORK/eda.jsonl"
}

stage_student_c() {
    log "student c: HarmAug — labelled + synthetic data, teacher soft labels (λ = 0.5)"
    distill "$WORK/student-c" "$TRAIN_SAMPLES" 0.5 "${SPLIT_TRAIN[@]}" \
        "$WORK/labelled/synthetic_prompts.jsonl" "$WORK/labelled/synthetic_pairs.jsonl"
}

# One report per model (eval-MODEL.json/.md), so models can be evaluated as they finish.
MODELS=(teacher student-a student-b student-c)
# One model (a directory or bundle) on the shared validation rows and the three benchmarks, at
# its own threshold: a Markdown table and the JSON report $WORK/eval-NAME.json.
evaluate() { # name model-dir
    "$HARMAUG" eval --batch-size 64 --model "$2" --report "$WORK/eval-$1.json" \
        --data "$WORK/split/validation.jsonl" --data "$DATA/eval/openai_moderation_1680.json" \
        --data "$DATA/eval/toxicchat0124_test_5083.jsonl" \
        --data "$DATA/eval/beavertails_test_3021.jsonl" | tee "$WORK/eval-$1.md"
}

stage_eval() {
    # EVAL_MODELS="teacher student-a" evaluates some (default: all).
    for model in ${EVAL_MODELS:-${MODELS[*]}}; do
        log "eval: $model on the shared validation rows and the benchmarks"
        evaluate "$model" "$WORK/$model"
    done
}

stage_export() {
    # Chosen by validation AUPRC only (the benchmarks are reported, never used to choose).
    local best
    best=$(python3 - "$WORK" <<'PY'
import json, sys
validation = {}
for model in ("student-a", "student-b", "student-c"):
    results = json.load(open(f"{sys.argv[1]}/eval-{model}.json"))["results"]
    validation[model] = next(r["auprc"] for r in results if r["dataset"] == "validation")
print(max(validation, key=validation.get))
PY
)
    log "export: $best → models/default (int8, threshold = best F1 on validation)"
    "$HARMAUG" export --model "$WORK/$best" --out "$REPO/models/default" --dtype int8 \
        --eval "$DATA/eval/openai_moderation_1680.json" --calibrate "$WORK/split/validation.jsonl"
    echo "$best" >"$WORK/chosen"
}

# The shipped bundle as users get it: int8, at its calibrated threshold.
stage_shipped() {
    log "eval: the shipped bundle at its own threshold"
    evaluate shipped "$REPO/models/default"
}

# The results table for the model card and the README (F1 / AUPRC per data set): every model
# at 0.5, then the shipped bundle at its calibrated threshold.
stage_report() {
    python3 - "$WORK" "${MODELS[@]}" shipped <<'PY' | tee "$WORK/results.md"
import json, sys
work, models = sys.argv[1], sys.argv[2:]
sets = ["validation", "openai_moderation_1680", "toxicchat0124_test_5083", "beavertails_test_3021"]
print("| model (threshold) | " + " | ".join(f"{s} F1 / AUPRC" for s in sets) + " |")
print("|---|" + "---|" * len(sets))
for model in models:
    results = {r["dataset"]: r for r in json.load(open(f"{work}/eval-{model}.json"))["results"]}
    cells = [f'{results[s]["f1"]:.3f} / {results[s]["auprc"]:.3f}' for s in sets]
    print(f'| {model} ({results["validation"]["threshold"]:.3f}) | ' + " | ".join(cells) + " |")
PY
}

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(synth teacher split eda student_a student_b label student_c eval export shipped report)
for stage in "${stages[@]}"; do
    "stage_$stage"
done
