//! The CLI on burn's wgpu backend (`--features wgpu`; scripts/test_wgpu.sh): `score`, `distill`
//! and `eval` give the CPU's results. Without a GPU, Mesa's software Vulkan adapter (lavapipe)
//! runs the same cubecl kernels as a GPU would; a missing adapter fails these tests, it never
//! skips them.
#![cfg(feature = "wgpu")]

mod common;

use std::path::Path;

use common::{fixture, harmaug, json_lines, repo, run_ok, scores, weights};
use serde_json::{Value, json};

/// `harmaug score` of every parity fixture's inputs on `backend`, at the fixture's length.
fn fixture_scores(name: &str, backend: &str) -> Vec<f64> {
    let dir = fixture(name);
    let reference: Value =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let data = tempfile::NamedTempFile::new().unwrap();
    let rows: String = reference["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|input| format!("{input}\n"))
        .collect();
    std::fs::write(data.path(), rows).unwrap();
    let max_length = reference["max_length"].to_string();
    let model = dir.to_str().unwrap();
    let input = data.path().to_str().unwrap();
    let args = ["score", "--model", model, "--input", input];
    let backend = ["--backend", backend, "--max-length", &max_length];
    scores(&json_lines(&run_ok(&[&args[..], &backend].concat()).stdout))
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn scores_every_parity_fixture_as_the_cpu_does() {
    // The logits themselves are checked against transformers on wgpu by the parity tests of
    // harmaug-tests (same script); this is the CLI's whole path: reading, batching, scoring.
    for name in [
        "bert-tiny-f32",
        "bert-tiny-f16",
        "bert-tiny-3label",
        "deberta-tiny-b8",
        "deberta-tiny-b256",
        "deberta-tiny-6label-multi",
    ] {
        let diff = max_abs_diff(&fixture_scores(name, "wgpu"), &fixture_scores(name, "cpu"));
        eprintln!("{name}: max |Δscore| wgpu vs cpu = {diff:e}");
        assert!(diff <= 1e-5, "{name}: wgpu scores differ by {diff:e}");
    }
}

#[test]
fn a_missing_adapter_is_a_clear_error() {
    // No Vulkan driver for the loader to find: what a machine without a GPU driver sees.
    let out = harmaug(&["score", "--backend", "wgpu", "--model"])
        .arg(fixture("bert-tiny-f32"))
        .arg("hello")
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no Vulkan adapter found"), "{stderr}");
    assert!(stderr.contains("mesa-vulkan-drivers"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A copy of fixture `name` with every dropout off, so that training is deterministic and the
/// backends' different random streams do not matter.
fn without_dropout(name: &str, into: &Path) -> String {
    std::fs::create_dir_all(into).unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, into.join(path.file_name().unwrap())).unwrap();
    }
    let config_path = into.join("config.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    for key in ["hidden_dropout_prob", "attention_probs_dropout_prob"] {
        config[key] = json!(0.0);
    }
    std::fs::write(&config_path, config.to_string()).unwrap();
    into.to_str().unwrap().to_string()
}

/// Labelled rows the tiny vocabulary covers: "steal" marks the unsafe ones; every third row
/// carries a teacher score instead of a label.
fn write_rows(path: &Path, n: usize) {
    let words = [
        "write", "story", "people", "plan", "help", "online", "steal",
    ];
    let rows: String = (0..n)
        .map(|i| {
            let prompt: Vec<&str> = (0..3 + i % 5).map(|j| words[(i * 7 + j * 3) % 6]).collect();
            let unsafe_ = i % 3 == 0;
            let prompt = if unsafe_ {
                format!("{} steal", prompt.join(" "))
            } else {
                prompt.join(" ")
            };
            let row = match i % 3 {
                1 => json!({"prompt": prompt, "teacher_score": 0.2}),
                _ => json!({"prompt": prompt, "label": u8::from(unsafe_)}),
            };
            format!("{row}\n")
        })
        .collect();
    std::fs::write(path, rows).unwrap();
}

/// Per-update losses of a distill run.
fn losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).unwrap()["loss"].as_f64())
        .collect()
}

/// Trains `model` for 6 updates on `backend` (extra flags after) into `out`.
fn distill(model: &str, data: &Path, out: &Path, backend: &str, extra: &[&str]) {
    let (data, out) = (data.to_str().unwrap(), out.to_str().unwrap());
    let args = ["distill", "--model", model, "--train", data, "--out", out];
    let tiny = [
        "--backend",
        backend,
        "--batch-size",
        "16",
        "--micro-batch-size",
        "8",
        "--lr",
        "5e-4",
        "--warmup-steps",
        "2",
        "--max-length",
        "32",
        "--max-steps",
        "6",
    ];
    run_ok(&[&args[..], &tiny, extra].concat());
}

/// Same per-step losses and final weights (≤ 1e-4). Adam divides each gradient by its own
/// running size, so float noise in a small gradient moves a weight by up to a fraction of the
/// learning rate whatever the noise's size. At 5e-4 for 6 updates (weights move up to 2e-3;
/// measured: one element of bert-tiny's 1,184 drifted 1.2e-4 at 1e-3, none past 6.5e-5 at 5e-4)
/// the tolerance holds, while a wrong gradient would move weights by ~5e-4 per update.
/// Attention key biases are skipped: their exact gradient is zero (softmax ignores a shift
/// shared by all keys), so their updates are all noise and never change an output.
fn assert_same_training(name: &str, a: &Path, b: &Path) {
    let diff = max_abs_diff(&losses(a), &losses(b));
    eprintln!("{name}: max |Δloss| per step = {diff:e}");
    assert!(diff <= 1e-4, "{name}: losses differ by {diff:e}");
    let (a, b) = (weights(a), weights(b));
    assert_eq!(a.len(), b.len());
    let mut worst = 0.0f32;
    for ((tensor, x), (_, y)) in a.iter().zip(&b) {
        if tensor.contains("key.bias") || tensor.contains("key_proj.bias") {
            continue;
        }
        let diff = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max);
        assert!(diff <= 1e-4, "{name}: {tensor} differs by {diff:e}");
        worst = worst.max(diff);
    }
    eprintln!("{name}: max |Δweight| = {worst:e}");
}

#[test]
fn distill_trains_as_on_the_cpu_and_on_two_device_handles() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.jsonl");
    write_rows(&data, 120);
    for name in ["bert-tiny-f32", "deberta-tiny-b8"] {
        let model = without_dropout(name, &dir.path().join(name));
        let run = |label: &str, backend: &str, extra: &[&str]| {
            let out = dir.path().join(format!("{name}-{label}"));
            distill(&model, &data, &out, backend, extra);
            out
        };
        let cpu = run("cpu", "cpu", &[]);
        let wgpu = run("wgpu", "wgpu", &[]);
        assert_same_training(name, &cpu, &wgpu);
        // Two copies of the model on the adapter, gradients summed across them.
        let two = run("wgpu-two", "wgpu", &["--devices", "0,0"]);
        assert_same_training(&format!("{name} on two handles"), &wgpu, &two);
        // The student scores the same on either backend.
        let text = "write a plan to steal";
        let on = |backend: &str| {
            let model = wgpu.to_str().unwrap();
            let args = ["score", "--model", model, "--backend", backend, text];
            scores(&json_lines(&run_ok(&args).stdout))
        };
        let diff = max_abs_diff(&on("wgpu"), &on("cpu"));
        assert!(diff <= 1e-5, "{name}: student scores differ by {diff:e}");
    }
}

#[test]
fn eval_gives_the_cpus_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("bert-tiny-f32");
    let data = repo("tests/fixtures/formats/harmbench_classifier.json");
    let moderation = repo("../shared/data/eval/openai_moderation_1680.json");
    let report = |backend: &str| {
        let path = dir.path().join(format!("{backend}.json"));
        let (model, data) = (model.to_str().unwrap(), data.to_str().unwrap());
        let args = ["eval", "--model", model, "--data", data, "--data"];
        let rest = [
            moderation.to_str().unwrap(),
            "--backend",
            backend,
            "--report",
        ];
        run_ok(&[&args[..], &rest, &[path.to_str().unwrap()]].concat());
        let report: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        report["results"].as_array().unwrap().clone()
    };
    // Scores agree to ~1e-7, which can reorder near-ties: ranking metrics may move by ~1e-6.
    let (cpu, wgpu) = (report("cpu"), report("wgpu"));
    assert_eq!(cpu.len(), 2);
    for (c, w) in cpu.iter().zip(&wgpu) {
        assert_eq!(c["n"], w["n"]);
        for metric in ["f1", "precision", "recall", "accuracy", "auprc", "roc_auc"] {
            let (x, y) = (c[metric].as_f64().unwrap(), w[metric].as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-5,
                "{}: {metric} {x} vs {y}",
                c["dataset"]
            );
        }
    }
}
