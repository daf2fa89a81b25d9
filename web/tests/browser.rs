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
    let error = WasmGuard::load(
        BERT.config.into(),
        BERT.tokenizer.to_vec(),
        None,
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
