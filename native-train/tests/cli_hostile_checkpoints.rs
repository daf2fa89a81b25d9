//! Checkpoints crafted to hurt (issue #17): lying safetensors headers and absurd configs. Each
//! is refused with the file and the field named, a non-zero exit and no panic, in bounded
//! memory (measured: the declared sizes are never allocated).

mod common;

use std::path::Path;

use common::fixture;
use serde_json::{Value, json};

const EMBEDDINGS: &str = "bert.embeddings.word_embeddings.weight";

/// The fixture's safetensors file as (header, data): crafted variants edit either.
fn fixture_weights() -> (serde_json::Map<String, Value>, Vec<u8>) {
    let bytes = std::fs::read(fixture("bert-tiny-f32/model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    (header, bytes[8 + header_len..].to_vec())
}

fn safetensors(header: &serde_json::Map<String, Value>, data: &[u8]) -> Vec<u8> {
    let header = serde_json::to_vec(header).unwrap();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(data);
    bytes
}

/// A model folder: the fixture's tokenizer, its config with `config_patch` merged in, and
/// `weights` as model.safetensors.
fn model_dir(root: &Path, name: &str, config_patch: Value, weights: &[u8]) -> String {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let source = fixture("bert-tiny-f32");
    std::fs::copy(source.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(source.join("config.json")).unwrap()).unwrap();
    for (key, value) in config_patch.as_object().unwrap() {
        config[key] = value.clone();
    }
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.join("model.safetensors"), weights).unwrap();
    dir.display().to_string()
}

/// The peak memory of `harmaug score` on the intact fixture (~20 MB in a release build).
fn intact_peak_mb() -> f64 {
    let model = fixture("bert-tiny-f32").display().to_string();
    let run = common::run_measured(&["score", "--model", &model, "hello"], &[]);
    assert!(run.success, "{}", run.stderr);
    run.peak_rss_mb
}

/// `harmaug score` on the folder fails cleanly, in bounded memory, with every `expected`
/// fragment in its message.
fn refused(case: &str, model: &str, expected: &[&str]) {
    let intact = intact_peak_mb();
    // Symbolising a backtrace (RUST_BACKTRACE=1 in a developer's shell) would cost ~90 MB here.
    let no_backtrace = [("RUST_BACKTRACE", "0")];
    let run = common::run_measured(&["score", "--model", model, "hello"], &no_backtrace);
    assert!(!run.success, "{case}: scored anyway");
    assert!(!run.stderr.contains("panicked"), "{case}: {}", run.stderr);
    for fragment in expected {
        assert!(
            run.stderr.contains(fragment),
            "{case}: no {fragment:?} in {}",
            run.stderr
        );
    }
    eprintln!(
        "{case}: peak RSS {:.0} MB ({intact:.0} MB intact)",
        run.peak_rss_mb
    );
    // Nothing the header or config declares is allocated: no more than the intact model needs.
    assert!(
        run.peak_rss_mb < intact + 20.0,
        "{case}: {:.0} MB",
        run.peak_rss_mb
    );
}

fn with_tensor(edit: impl Fn(&mut serde_json::Map<String, Value>)) -> Vec<u8> {
    let (mut header, data) = fixture_weights();
    edit(&mut header);
    safetensors(&header, &data)
}

#[test]
fn lying_safetensors_headers_are_refused_by_tensor() {
    let root = tempfile::tempdir().unwrap();
    let dir = |name: &str, weights: &[u8]| model_dir(root.path(), name, json!({}), weights);

    // 4 GiB declared in a 1 KB file.
    let (mut header, data) = fixture_weights();
    header[EMBEDDINGS]["shape"] = json!([1 << 20, 1024]);
    header[EMBEDDINGS]["data_offsets"] = json!([0u64, 4u64 << 30]);
    let model = dir("huge-tensor", &safetensors(&header, &data[..1024]));
    refused(
        "4 GiB tensor in 1 KB",
        &model,
        &["model.safetensors", "offset"],
    );

    let overlapping = with_tensor(|header| {
        let first = header["bert.embeddings.LayerNorm.bias"]["data_offsets"].clone();
        header["bert.embeddings.LayerNorm.weight"]["data_offsets"] = first;
    });
    let model = dir("overlap", &overlapping);
    refused(
        "overlapping offsets",
        &model,
        &["model.safetensors", "offset for tensor"],
    );

    let (_, data) = fixture_weights();
    let past_the_end = with_tensor(|header| {
        let last = header
            .iter()
            .max_by_key(|(_, info)| info["data_offsets"][1].as_u64().unwrap_or(0))
            .map(|(name, _)| name.clone())
            .unwrap();
        let start = header[&last]["data_offsets"][0].clone();
        header[&last]["data_offsets"] = json!([start, data.len() + 4096]);
    });
    refused(
        "offsets past the end",
        &dir("past-end", &past_the_end),
        &["model.safetensors"],
    );

    let mut too_long = (1u64 << 40).to_le_bytes().to_vec();
    too_long.extend_from_slice(b"{}");
    refused(
        "1 TB header length",
        &dir("header-length", &too_long),
        &["model.safetensors", "header too large"],
    );

    let wrong_dtype = with_tensor(|header| header[EMBEDDINGS]["dtype"] = json!("F16"));
    refused(
        "dtype that does not fit the bytes",
        &dir("dtype", &wrong_dtype),
        &["model.safetensors", EMBEDDINGS, "dtype F16"],
    );
    let wrong_shape = with_tensor(|header| header[EMBEDDINGS]["shape"] = json!([601, 32]));
    refused(
        "shape that does not fit the bytes",
        &dir("shape", &wrong_shape),
        &["model.safetensors", EMBEDDINGS, "[601, 32]"],
    );
    // Bytes that fit, a shape that config.json contradicts.
    let reshaped = with_tensor(|header| header[EMBEDDINGS]["shape"] = json!([300, 64]));
    refused(
        "shape unlike config.json's",
        &dir("reshaped", &reshaped),
        &[EMBEDDINGS, "[300, 64]", "config.json implies [600, 32]"],
    );
}

#[test]
fn absurd_configs_are_refused_before_allocating() {
    let root = tempfile::tempdir().unwrap();
    let (header, data) = fixture_weights();
    let weights = safetensors(&header, &data);
    let cases: [(&str, Value, &[&str]); 7] = [
        (
            "hidden_size 10^9",
            json!({"hidden_size": 1_000_000_000}),
            &["config.json implies [1000000000]"],
        ),
        (
            "intermediate_size 10^12",
            json!({"intermediate_size": 1_000_000_000_000u64}),
            &["intermediate.dense", "config.json implies [1000000000000]"],
        ),
        (
            "10^6 layers",
            json!({"num_hidden_layers": 1_000_000}),
            &["missing tensor `bert.encoder.layer.2."],
        ),
        (
            "vocab 0",
            json!({"vocab_size": 0}),
            &[EMBEDDINGS, "config.json implies [0, 32]"],
        ),
        (
            "heads not dividing hidden",
            json!({"num_attention_heads": 3}),
            &["config.json", "num_attention_heads 3"],
        ),
        (
            "zero heads",
            json!({"num_attention_heads": 0}),
            &["config.json", "num_attention_heads 0"],
        ),
        (
            "negative size",
            json!({"hidden_size": -5}),
            &["config.json: hidden_size: invalid value: integer `-5`"],
        ),
    ];
    for (case, patch, expected) in cases {
        let model = model_dir(root.path(), &case.replace(' ', "-"), patch, &weights);
        refused(case, &model, expected);
    }
}
