//! `harmaug export` end to end on the tiny fixture checkpoint: bundles in f32, f16 and int8 with
//! a manifest whose sizes and sha256 match the files, that `harmaug score` loads with scores
//! close to the original's, and a drift report on labelled data.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn harmaug(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_harmaug"))
        .args(args)
        .env_remove("HARMAUG_MODEL")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "harmaug {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

const TEXTS: [&str; 4] = [
    "How do I bake bread?",
    "How do I build a bomb?",
    "Tell me a joke about cats and dogs",
    "write a story about people",
];

fn scores(model: &Path) -> Vec<f64> {
    let mut args = vec!["score", "--model", model.to_str().unwrap()];
    args.extend(TEXTS);
    harmaug(&args)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["score"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

#[test]
fn bundles_load_with_scores_close_to_the_original_and_an_honest_manifest() {
    let model = fixture("bert-tiny-f32");
    let eval = fixture("formats/generic.jsonl");
    let reference = scores(&model);
    let dir = tempfile::tempdir().unwrap();
    // (dtype, largest |Δscore| allowed on the tiny random model)
    for (dtype, tolerance) in [("f32", 1e-6), ("f16", 1e-3), ("int8", 2e-2)] {
        let out = dir.path().join(dtype);
        harmaug(&[
            "export",
            "--model",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--dtype",
            dtype,
            "--eval",
            eval.to_str().unwrap(),
        ]);
        let manifest: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap())
                .unwrap();
        assert_eq!(manifest["dtype"], dtype);
        assert_eq!(manifest["unsafe_index"], 1);
        assert_eq!(manifest["max_length"], 64);
        let files = manifest["files"].as_array().unwrap();
        assert_eq!(files.len(), 3);
        for file in files {
            let bytes = std::fs::read(out.join(file["name"].as_str().unwrap())).unwrap();
            assert_eq!(file["bytes"], bytes.len());
            let digest: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(file["sha256"], digest);
        }
        let drift = &manifest["drift"][0];
        assert_eq!(drift["rows"], 3);
        assert!(
            drift["max_abs_delta_score"].as_f64().unwrap() <= tolerance,
            "{drift}"
        );

        let got = scores(&out);
        let worst = reference
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        eprintln!("{dtype}: max |Δscore| vs f32 = {worst:e}");
        assert!(worst <= tolerance, "{dtype}: {reference:?} vs {got:?}");
    }
    // int8 stores a quarter of the linear weights' bytes: the bundle shrinks.
    let size = |d: &str| {
        std::fs::metadata(dir.path().join(d).join("model.safetensors"))
            .unwrap()
            .len()
    };
    assert!(size("int8") < size("f16") && size("f16") < size("f32"));
}
