//! The wasm guard in a real browser (headless Chromium through wasm-bindgen-test-runner; see
//! scripts/test_web.sh): the fixtures' scores on the CPU and WebGPU backends must equal those
//! of PyTorch/transformers recorded in `tests/fixtures/*/reference.json`.
#![cfg(target_arch = "wasm32")]

use harmaug_web::WasmGuard;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

struct Fixture {
    config: &'static str,
    tokenizer: &'static [u8],
    weights: &'static [u8],
    reference: &'static str,
    tokenizer_config: Option<&'static str>,
}

macro_rules! fixture {
    ($dir:literal) => {
        fixture!($dir, None)
    };
    ($dir:literal, $tokenizer_config:expr) => {
        Fixture {
            config: include_str!(concat!("../../tests/fixtures/", $dir, "/config.json")),
            tokenizer: include_bytes!(concat!("../../tests/fixtures/", $dir, "/tokenizer.json")),
            weights: include_bytes!(concat!("../../tests/fixtures/", $dir, "/model.safetensors")),
            reference: include_str!(concat!("../../tests/fixtures/", $dir, "/reference.json")),
            tokenizer_config: $tokenizer_config,
        }
    };
}

const BERT: Fixture = fixture!("bert-tiny-f32");
const DEBERTA: Fixture = fixture!("deberta-tiny-b8");
/// Its tokenizer_config.json says transformers passes no token_type_ids.
const GENERIC_TOKENIZER: Fixture = fixture!(
    "bert-tiny-generic-tokenizer",
    Some(include_str!(
        "../../tests/fixtures/bert-tiny-generic-tokenizer/tokenizer_config.json"
    ))
);

/// Scores the fixture's inputs on `backend` and compares P(unsafe) = softmax(logits)[1] with
/// the reference logits (both fixtures label index 1 "unsafe").
async fn check(fixture: &Fixture, backend: &str) {
    check_weights(
        fixture,
        fixture.config.into(),
        fixture.weights.to_vec(),
        backend,
    )
    .await;
}

async fn check_weights(fixture: &Fixture, config: String, weights: Vec<u8>, backend: &str) {
    let reference: serde_json::Value = serde_json::from_str(fixture.reference).unwrap();
    let max_length = reference["max_length"].as_u64().unwrap() as usize;
    let guard = WasmGuard::load(
        config,
        fixture.tokenizer.to_vec(),
        fixture.tokenizer_config.map(String::from),
        weights,
        backend.to_string(),
        max_length,
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("loading on {backend}: {:?}", wasm_bindgen::JsValue::from(e)));
    assert_eq!(guard.backend(), backend);
    let inputs = reference["inputs"].as_array().unwrap();
    let prompts = inputs
        .iter()
        .map(|i| i["prompt"].as_str().unwrap().to_string())
        .collect();
    let responses = inputs
        .iter()
        .map(|i| i["response"].as_str().unwrap_or("").to_string())
        .collect();
    let (scores, _) = score(&guard, prompts, responses).await;
    let logits = reference["logits_batched"].as_array().unwrap();
    assert_eq!(scores.len(), logits.len());
    for (i, (score, logits)) in scores.iter().zip(logits).enumerate() {
        let [safe, unsafe_] = [0, 1].map(|j| logits[j].as_f64().unwrap());
        let expected = 1.0 / (1.0 + (safe - unsafe_).exp());
        let diff = (f64::from(*score) - expected).abs();
        assert!(
            diff < 1e-5,
            "{backend} input {i}: {score} vs {expected} (Δ {diff:e})"
        );
    }
}

/// `scoreBatch`'s `{scores, labelProbabilities}` as vectors (the second only when reported).
async fn score(
    guard: &WasmGuard,
    prompts: Vec<String>,
    responses: Vec<String>,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let result = JsFuture::from(guard.score_batch(prompts, responses))
        .await
        .unwrap();
    let field = |name: &str| {
        let value = js_sys::Reflect::get(&result, &name.into()).unwrap();
        (!value.is_undefined()).then(|| js_sys::Float32Array::from(value).to_vec())
    };
    (
        field("scores").expect("scores"),
        field("labelProbabilities"),
    )
}

/// `fixture` loaded on `backend` (without its tokenizer_config.json).
async fn load(
    fixture: &Fixture,
    backend: &str,
    max_length: usize,
    long_input: Option<&str>,
) -> Result<WasmGuard, wasm_bindgen::JsError> {
    WasmGuard::load(
        fixture.config.into(),
        fixture.tokenizer.to_vec(),
        None,
        fixture.weights.to_vec(),
        backend.into(),
        max_length,
        long_input.map(String::from),
    )
    .await
}

async fn load_cpu(fixture: &Fixture, max_length: usize, long_input: Option<&str>) -> WasmGuard {
    load(fixture, "cpu", max_length, long_input)
        .await
        .unwrap_or_else(|e| panic!("loading: {:?}", wasm_bindgen::JsValue::from(e)))
}

/// The message of a load that must fail.
fn refusal(loaded: Result<WasmGuard, wasm_bindgen::JsError>) -> String {
    let error = loaded.err().expect("an error");
    js_sys::Error::from(wasm_bindgen::JsValue::from(error))
        .message()
        .into()
}

/// A Prompt-Guard-style 3-label head: every label's probability is reported (as the CLI's
/// `scores` object) and P(unsafe) = P(INJECTION) + P(JAILBREAK).
#[wasm_bindgen_test]
async fn three_label_head_reports_every_label() {
    let fixture = fixture!("bert-tiny-3label");
    let reference: serde_json::Value = serde_json::from_str(fixture.reference).unwrap();
    let max_length = reference["max_length"].as_u64().unwrap() as usize;
    let guard = load_cpu(&fixture, max_length, None).await;
    assert_eq!(guard.labels(), ["BENIGN", "INJECTION", "JAILBREAK"]);
    let inputs = reference["inputs"].as_array().unwrap();
    let text = |i: &serde_json::Value, key: &str| i[key].as_str().unwrap_or("").to_string();
    let (scores, probabilities) = score(
        &guard,
        inputs.iter().map(|i| text(i, "prompt")).collect(),
        inputs.iter().map(|i| text(i, "response")).collect(),
    )
    .await;
    let probabilities = probabilities.expect("labelProbabilities");
    for (i, logits) in reference["logits_batched"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let exp: Vec<f64> = logits
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_f64().unwrap().exp())
            .collect();
        let sum: f64 = exp.iter().sum();
        for (j, e) in exp.iter().enumerate() {
            let got = f64::from(probabilities[i * 3 + j]);
            assert!(
                (got - e / sum).abs() < 1e-5,
                "input {i} label {j}: {got} vs {}",
                e / sum
            );
        }
        let expected = (exp[1] + exp[2]) / sum;
        assert!((f64::from(scores[i]) - expected).abs() < 1e-5, "input {i}");
    }
    // A binary guard reports no labels.
    let binary = load_cpu(&BERT, 0, None).await;
    assert!(binary.labels().is_empty());
    let (_, none) = score(&binary, vec!["hi".into()], vec![]).await;
    assert!(none.is_none());
}

/// `longInput: "chunk"` scores a long prompt by its best window, as the CLI does (the windows
/// and their logits are transformers', fixtures/windows.json); unknown modes are refused.
#[wasm_bindgen_test]
async fn chunked_long_inputs_score_the_best_window() {
    let windows: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/fixtures/windows.json")).unwrap();
    let max_length = windows["max_length"].as_u64().unwrap() as usize;
    let guard = load_cpu(&BERT, max_length, Some("chunk")).await;
    let rows = windows["rows"].as_array().unwrap();
    let prompts = rows
        .iter()
        .map(|r| r["prompt"].as_str().unwrap().to_string())
        .collect();
    let (scores, _) = score(&guard, prompts, vec![]).await;
    for (row, got) in rows.iter().zip(scores) {
        let best = row["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let [a, b] = [0, 1].map(|j| l[j].as_f64().unwrap());
                1.0 / (1.0 + (a - b).exp())
            })
            .fold(0.0, f64::max);
        assert!(
            (f64::from(got) - best).abs() < 1e-5,
            "{got} vs the best window's {best}"
        );
    }
    let message = refusal(load(&BERT, "cpu", 0, Some("middle")).await);
    assert!(message.contains("longInput \"middle\""), "{message}");
}

#[wasm_bindgen_test]
async fn bert_fixture_matches_pytorch_on_cpu() {
    check(&BERT, "cpu").await;
}

#[wasm_bindgen_test]
async fn deberta_fixture_matches_pytorch_on_cpu() {
    check(&DEBERTA, "cpu").await;
}

#[wasm_bindgen_test]
async fn generic_tokenizer_fixture_matches_pytorch_on_cpu() {
    check(&GENERIC_TOKENIZER, "cpu").await;
}

/// Needs a WebGPU adapter: the runner starts Chromium with `--enable-unsafe-webgpu`
/// (web/webdriver.json), which gives SwiftShader's.
#[wasm_bindgen_test]
async fn bert_fixture_matches_pytorch_on_webgpu() {
    check(&BERT, "webgpu").await;
}

#[wasm_bindgen_test]
async fn deberta_fixture_matches_pytorch_on_webgpu() {
    check(&DEBERTA, "webgpu").await;
}

/// WebGPU's default storage-binding limit is 128 MiB; a DeBERTa-v3 vocabulary (128k × 1024 f32 =
/// 525 MB) is far past it. The BERT fixture with its word-embedding table grown to 1.2M rows
/// (154 MB, the extra rows zero and never looked up) must load on WebGPU and score exactly as
/// before.
#[wasm_bindgen_test]
async fn embedding_table_past_128_mib_loads_on_webgpu() {
    const ROWS: usize = 1_200_000;
    let file = safetensors::SafeTensors::deserialize(BERT.weights).unwrap();
    let mut tensors = harmaug_core::checkpoint::HostTensors::new();
    for (name, view) in file.tensors() {
        let mut values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let mut shape = view.shape().to_vec();
        if name.ends_with("word_embeddings.weight") {
            values.resize(ROWS * shape[1], 0.0);
            shape[0] = ROWS;
        }
        tensors.insert(name, (shape, values));
    }
    let weights =
        harmaug_core::checkpoint::serialize(tensors, harmaug_core::checkpoint::StoredDtype::F32)
            .unwrap();
    assert!(weights.len() > 150_000_000);
    let mut config: serde_json::Value = serde_json::from_str(BERT.config).unwrap();
    config["vocab_size"] = ROWS.into();
    check_weights(&BERT, config.to_string(), weights, "webgpu").await;
}

#[wasm_bindgen_test]
async fn unknown_backend_is_refused() {
    let message = refusal(load(&BERT, "tpu", 0, None).await);
    assert!(message.contains("unknown backend \"tpu\""), "{message}");
}
