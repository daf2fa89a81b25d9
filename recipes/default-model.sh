#!/usr/bin/env bash
# HarmAug on a 2-core CPU: the recipe that builds models/default/ (see models/default/README.md).
#
#   recipes/default-model.sh [STAGE...]   stages: baseline teacher synth label split mix student
#                                          eval export shipped report (no stage = all, in order);
#                                          ablation (four students at one budget) on request
#
# The shipped guard is three stages of training (78–119 minutes each on 2 cores, the third shared
# with builds and tests): the default run, then its student trained further on a new draw, twice:
#   recipes/default-model.sh
#   WORK=~/.cache/harmaug/stage2 INIT=~/.cache/harmaug/default-model/student DRAW_SEED=8 \
#       LR=3e-5 recipes/default-model.sh split mix student eval export shipped
#   WORK=~/.cache/harmaug/stage3 INIT=~/.cache/harmaug/stage2/student DRAW_SEED=9 \
#       LR=3e-5 recipes/default-model.sh split mix student eval export shipped
#
# Every stage is resumable: a killed recipe is rerun with the same command. Work files go to
# $WORK (default ~/.cache/harmaug/default-model). The small, expensive outputs are committed
# so a fresh machine resumes from them: the teacher's labels of every shared training row
# (recipes/default-model/teacher/, by file, line and key — no text) and the synthetic rows
# with the teacher's scores of them by id (recipes/default-model/synthetic/). `export` writes
# models/default.
# Sizes are set by the environment (defaults = the shipped run, sized for 2 CPU cores):
#   SYNTH_PROMPTS   synthetic harmful prompts to keep           (3000)
#   SYNTH_RESPONSES of which get a response (prompt + response)  (1000)
#   DRAWS           rows each student sees (one pass over a drawn mixture, recipes/mix.py) (100000)
#   PAIR_SHARE      fraction of the chat draws from prompt + response rows (unset: as the
#                   files hold them, ~19% of chat draws; recipes/mix.py --pair-share; 0.4 was
#                   measured, see models/default/README.md)
#   SYNTH_SHARE     share of the student's file from the synthetic rows (0: the ablation found
#                   they do not help a student of this teacher; the first shipped student: 0.1)
#   ABLATION_DRAWS  rows each ablation student sees                                        (10000)
#   INIT            the student's starting weights: a model directory, e.g. an earlier
#                   student's, to train it further on a new draw (default: MiniLM, $MINILM)
#   DRAW_SEED       the mixture draw's seed; a further stage needs a new one               (7)
#   LR              the student's peak learning rate                                        (5e-5)
#   TEACHER_MEMBERS the teacher ensemble's members (recipes/teacher.py)
#                   (tfidf-word,tfidf-char,tfidf-word-dropweak,tfidf-char-dropweak)
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
SYNTH_PROMPTS=${SYNTH_PROMPTS:-3000}
SYNTH_RESPONSES=${SYNTH_RESPONSES:-1000}
DRAWS=${DRAWS:-100000}
SYNTH_SHARE=${SYNTH_SHARE:-0}
INIT=${INIT:-$MINILM}
DRAW_SEED=${DRAW_SEED:-7}
LR=${LR:-5e-5}
TEACHER_MEMBERS=${TEACHER_MEMBERS:-tfidf-word,tfidf-char,tfidf-word-dropweak,tfidf-char-dropweak}
SYNTHETIC=$REPO/recipes/default-model/synthetic
PORT=${PORT:-8097}
# llama.cpp threads spin at barriers: give it fewer threads than cores when training runs beside it.
LLM_THREADS=${LLM_THREADS:-$(nproc)}
mkdir -p "$WORK"
log() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

# One student run: one pass over a drawn mixture (recipes/mix.py deals the class and source
# shares, so distill only shuffles), from $INIT. The paper's schedule shape — AdamW, 100 warm-up
# updates, linear decay, weight decay 0.1, clip 1.0 — at batch 32 and lr $LR (the paper: 256 and
# 3e-5, for far more compute), max length 256 (pairs keep most of their response), batches grouped by
# length (2.7× → 1.02× the real tokens on this mixture). A finished run is resumed as a no-op.
distill() { # out lambda train-file
    local out=$1 lambda=$2 train=$3
    local resume=()
    [ -f "$out/trainer_state/latest" ] && resume=(--resume)
    [ -f "$out/model.safetensors" ] && [ ! -f "$out/trainer_state/latest" ] && return 0
    "$HARMAUG" distill --model "$INIT" --out "$out" "${resume[@]}" --train "$train" \
        --sampling shuffle --group-by-length --epochs 1 --batch-size 32 --micro-batch-size 16 \
        --lr "$LR" --warmup-steps 100 --max-length 256 --lambda "$lambda" --save-every 100 \
        --val-fraction 0.02 --seed 7
}

# The TF-IDF + logistic-regression baseline every shipped guard must beat (same training files).
stage_baseline() {
    log "baseline: TF-IDF + LR on the same training files"
    python3 bench/baseline_tfidf.py --json "$WORK/baseline.json" | tee "$WORK/baseline.md"
}

# The teacher ensemble (recipes/teacher.py): cross-fitted members, averaged; its labels of every
# shared training row are committed under recipes/default-model/teacher/.
stage_teacher() {
    # Committed labels are the resume point: a fresh machine reuses them (TEACHER=rerun redoes).
    local committed
    committed=$(ls recipes/default-model/teacher/*.labels.jsonl 2>/dev/null | wc -l)
    if [ "$committed" -gt 0 ] && [ "${TEACHER:-}" != rerun ]; then
        log "teacher: labels committed in recipes/default-model/teacher (TEACHER=rerun redoes them)"
        return 0
    fi
    log "teacher: members $TEACHER_MEMBERS, then their mean"
    for member in ${TEACHER_MEMBERS//,/ }; do
        python3 recipes/teacher.py member "$member"
    done
    python3 recipes/teacher.py combine --members "$TEACHER_MEMBERS" | tee "$WORK/teacher.md"
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
    mkdir -p "$SYNTHETIC"
    serve
    local url="http://127.0.0.1:$PORT/v1"
    "$HARMAUG" augment generate --generator "$url" --seeds "$WORK/seeds.jsonl" \
        --num "$SYNTH_PROMPTS" --out "$SYNTHETIC/prompts.jsonl" --shots 3 --seed 1
    # A response to the first SYNTH_RESPONSES prompts (responses are the slow part on a CPU).
    head -n "$SYNTH_RESPONSES" "$SYNTHETIC/prompts.jsonl" >"$WORK/respond_input.jsonl"
    "$HARMAUG" augment respond --responder "$url" --input "$WORK/respond_input.jsonl" \
        --out "$SYNTHETIC/pairs.jsonl" --max-new-tokens 96 --seed 1
    kill "$SERVER_PID"
    trap - EXIT
}

# The teacher labels the synthetic rows (no fold saw them: the mean of every fold model),
# committed beside them by id (FILE.labels.jsonl) so a fresh machine skips this stage.
stage_label() {
    log "label: the teacher's P(unsafe) on the synthetic prompts and pairs"
    for f in "$SYNTHETIC/prompts.jsonl" "$SYNTHETIC/pairs.jsonl"; do
        [ -s "$f" ] || continue
        local labels=${f%.jsonl}.labels.jsonl
        if [ -s "$labels" ] && [ "$(wc -l <"$labels")" -eq "$(wc -l <"$f")" ]; then
            log "label: $labels is complete"
            continue
        fi
        python3 recipes/teacher.py label --members "$TEACHER_MEMBERS" --input "$f" \
            --out "$labels.part"
        mv "$labels.part" "$labels"
    done
}

# Models are chosen on held-out rows none of them trains on: 5% of every shared training file
# (by a hash of the prompt), as two files — chat requests/responses, and toxicity rows with a
# reliable label.
stage_split() {
    log "split: held-out validation rows"
    python3 recipes/mix.py validation --out "$WORK/split"
    wc -l "$WORK"/split/*.jsonl
}

# The student's training file: DRAWS rows dealt by recipes/mix.py's shares, joined with the
# teacher's committed labels, plus the labelled synthetic rows (SYNTH_SHARE of the file).
stage_mix() {
    log "mix: $DRAWS draws → the student's training file"
    python3 recipes/mix.py draw --draws "$DRAWS" --seed "$DRAW_SEED" --out "$WORK/draw.json" \
        ${PAIR_SHARE:+--pair-share "$PAIR_SHARE"}
    local synthetic=()
    for f in "$SYNTHETIC/prompts.jsonl" "$SYNTHETIC/pairs.jsonl"; do
        [ -s "$f" ] && synthetic+=(--synthetic "$f")
    done
    python3 recipes/mix.py write --draw "$WORK/draw.json" --out "$WORK/student-train.jsonl" \
        --synth-share "$SYNTH_SHARE" "${synthetic[@]}"
}

stage_student() {
    log "student: MiniLM on the mixture, teacher soft labels (λ = 0.5)"
    distill "$WORK/student" 0.5 "$WORK/student-train.jsonl"
}

# One model (a directory or bundle) on the validation rows and the three benchmarks, at its own
# threshold: a Markdown table, the JSON report $WORK/eval-NAME.json and every row's score
# $WORK/scores-NAME.jsonl (for recipes/error_analysis.py).
evaluate() { # name model-dir
    "$HARMAUG" eval --batch-size 64 --model "$2" --report "$WORK/eval-$1.json" \
        --scores "$WORK/scores-$1.jsonl" \
        --data "$WORK/split/validation-chat.jsonl" --data "$WORK/split/validation-toxicity.jsonl" \
        --data "$DATA/eval/openai_moderation_1680.json" \
        --data "$DATA/eval/toxicchat0124_test_5083.jsonl" \
        --data "$DATA/eval/beavertails_test_3021.jsonl" | tee "$WORK/eval-$1.md"
}

stage_eval() {
    log "eval: the student on the validation rows and the benchmarks"
    evaluate student "$WORK/student"
}

# int8, threshold = best F1 on the chat validation rows (the guard's main use: chat requests).
stage_export() {
    log "export: student → models/default (int8, calibrated on validation-chat)"
    "$HARMAUG" export --model "$WORK/student" --out "$REPO/models/default" --dtype int8 \
        --eval "$DATA/eval/openai_moderation_1680.json" \
        --calibrate "$WORK/split/validation-chat.jsonl"
}

# The shipped bundle as users get it: int8, at its calibrated threshold.
stage_shipped() {
    log "eval: the shipped bundle at its own threshold"
    evaluate shipped "$REPO/models/default"
}

# HarmAug's ablation (issue #13): five students at one budget — ABLATION_DRAWS training rows
# each, one pass (~25 min each at 10,000 on 2 cores) — compared on the validation rows (the
# benchmarks only reported). Each finished student's eval report is committed in
# recipes/default-model/ablation/ and a rerun skips it (ABLATION=rerun redoes them all):
#   labelled  the 7 chat files alone
#   eda       the same plus EDA variants of their unsafe rows (10% of the rows), teacher-labelled
#   harmaug   the same plus HarmAug's synthetic prompts and pairs instead (10%)
#   toxicity  harmaug's mixture with the 12 toxicity sets drawn too (the shipped recipe's)
#   pairs     labelled, with 40% of the chat draws from prompt + response rows (--pair-share)
stage_ablation() {
    local budget=${ABLATION_DRAWS:-10000} variant committed=$REPO/recipes/default-model/ablation
    local synthetic=()
    for f in "$SYNTHETIC/prompts.jsonl" "$SYNTHETIC/pairs.jsonl"; do
        [ -s "$f" ] && synthetic+=(--synthetic "$f")
    done
    for variant in labelled eda harmaug toxicity pairs; do
        # Checked first: a committed student needs none of its inputs (EDA's retrains the teacher).
        if [ -s "$committed/$variant.eval.json" ] && [ "${ABLATION:-}" != rerun ]; then
            log "ablation $variant: committed in $committed/$variant.eval.json"
            cp "$committed/$variant.eval.json" "$WORK/eval-ablation-$variant.json"
            continue
        fi
        local dir=$WORK/ablation/$variant groups=chat draws=$((budget * 9 / 10)) extra=() shares=()
        case $variant in
            labelled) draws=$budget ;;
            eda) eda_rows && extra=(--synthetic "$WORK/eda/rows.jsonl") ;;
            harmaug) extra=("${synthetic[@]}") ;;
            toxicity) groups=chat,toxicity && extra=("${synthetic[@]}") ;;
            pairs) draws=$budget && shares=(--pair-share 0.4) ;;
        esac
        log "ablation $variant: $draws drawn rows of $groups + ${#extra[@]} augmentation args"
        mkdir -p "$dir" "$committed"
        if [ ! -s "$dir/train.jsonl" ]; then
            python3 recipes/mix.py draw --draws "$draws" --seed 7 --groups "$groups" \
                --out "$dir/draw.json" "${shares[@]}"
            python3 recipes/mix.py write --draw "$dir/draw.json" --out "$dir/train.jsonl" \
                "${extra[@]}"
        fi
        distill "$dir/student" 0.5 "$dir/train.jsonl"
        evaluate "ablation-$variant" "$dir/student"
        cp "$WORK/eval-ablation-$variant.json" "$committed/$variant.eval.json"
    done
    report ablation-labelled ablation-eda ablation-harmaug ablation-toxicity ablation-pairs \
        | tee "$WORK/ablation.md"
    # Each variant against `labelled` on the validation rows, with a paired-bootstrap interval
    # (needs the per-row scores, which only a student trained on this machine has).
    for variant in eda harmaug toxicity pairs; do
        for part in validation-chat validation-toxicity; do
            local base=$WORK/scores-ablation-labelled.jsonl other=$WORK/scores-ablation-$variant.jsonl
            [ -s "$base" ] && [ -s "$other" ] || continue
            printf '%s vs labelled, ' "$variant"
            python3 recipes/compare.py --base "$base" --other "$other" --dataset "$part"
        done
    done | tee -a "$WORK/ablation.md"
}

# EDA variants (harmaug augment eda) of the chat files' unsafe rows, labelled by the teacher.
eda_rows() {
    mkdir -p "$WORK/eda"
    [ -s "$WORK/eda/rows.labels.jsonl" ] && return 0
    python3 recipes/mix.py rows --groups chat --out "$WORK/eda/source.jsonl"
    "$HARMAUG" augment eda --input "$WORK/eda/source.jsonl" --out "$WORK/eda/rows.jsonl" \
        --only-unsafe --seed 7
    python3 recipes/teacher.py label --members "$TEACHER_MEMBERS" --input "$WORK/eda/rows.jsonl" \
        --out "$WORK/eda/rows.labels.jsonl.part"
    mv "$WORK/eda/rows.labels.jsonl.part" "$WORK/eda/rows.labels.jsonl"
}

# The results table for the model card and the README (F1 / AUPRC per data set).
stage_report() {
    report student shipped | tee "$WORK/results.md"
}

report() { # eval names…
    python3 - "$WORK" "$@" <<'PY'
import json, sys
work, models = sys.argv[1], sys.argv[2:]
sets = ["validation-chat", "validation-toxicity", "openai_moderation_1680",
        "toxicchat0124_test_5083", "beavertails_test_3021"]
print("| model (threshold) | " + " | ".join(f"{s} F1 / AUPRC" for s in sets) + " |")
print("|---|" + "---|" * len(sets))
for model in models:
    results = {r["dataset"]: r for r in json.load(open(f"{work}/eval-{model}.json"))["results"]}
    cells = [f'{results[s]["f1"]:.3f} / {results[s]["auprc"]:.3f}' for s in sets]
    print(f'| {model} ({results[sets[0]]["threshold"]:.3f}) | ' + " | ".join(cells) + " |")
PY
}

stages=("$@")
[ ${#stages[@]} -eq 0 ] &&
    stages=(baseline teacher synth label split mix student eval export shipped report)
for stage in "${stages[@]}"; do
    "stage_$stage"
done
