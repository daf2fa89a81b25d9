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
}

macro_rules! fixture {
    ($dir:literal) => {
        Fixture {
            config: include_str!(concat!("../../tests/fixtures/", $dir, "/config.json")),
            tokenizer: include_bytes!(concat!("../../tests/fixtures/", $dir, "/tokenizer.json")),
            weights: include_bytes!(concat!("../../tests/fixtures/", $dir, "/model.safetensors")),
            reference: include_str!(concat!("../../tests/fixtures/", $dir, "/reference.json")),
        }
    };
}

const BERT: Fixture = fixture!("bert-tiny-f32");
const DEBERTA: Fixture = fixture!("deberta-tiny-b8");

/// Scores the fixture's inputs on `backend` and compares P(unsafe) = softmax(logits)[1] with
/// the reference logits (both fixtures label index 1 "unsafe").
async fn check(fixture: &Fixture, backend: &str) {
    let reference: serde_json::Value = serde_json::from_str(fixture.reference).unwrap();
    let max_length = reference["max_length"].as_u64().unwrap() as usize;
    let guard = WasmGuard::load(
        fixture.config.to_string(),
        fixture.tokenizer.to_vec(),
        fixture.weights.to_vec(),
        backend.to_string(),
        max_length,
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
    let scores = JsFuture::from(guard.score_batch(prompts, responses))
        .await
        .unwrap();
    let scores = js_sys::Float32Array::from(scores).to_vec();
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

#[wasm_bindgen_test]
async fn bert_fixture_matches_pytorch_on_cpu() {
    check(&BERT, "cpu").await;
}

#[wasm_bindgen_test]
async fn deberta_fixture_matches_pytorch_on_cpu() {
    check(&DEBERTA, "cpu").await;
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

#[wasm_bindgen_test]
async fn unknown_backend_is_refused() {
    let error = WasmGuard::load(
        BERT.config.into(),
        BERT.tokenizer.to_vec(),
        BERT.weights.to_vec(),
        "tpu".into(),
        0,
    )
    .await
    .err()
    .expect("an error");
    let message = js_sys::Error::from(wasm_bindgen::JsValue::from(error)).message();
    assert!(String::from(message).contains("unknown backend \"tpu\""));
}
