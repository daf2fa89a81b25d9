//! `harmaug export` end to end on the tiny fixture checkpoint: bundles in f32, f16 and int8 with
//! a manifest whose sizes and sha256 match the files, that `harmaug score` loads with scores
//! close to the original's, and a drift report on labelled data; a calibrated or given
//! operating threshold in the manifest that `score` and `eval` use.

mod common;

use std::path::Path;

use common::{fixture, run, run_ok, score, scores};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Runs harmaug, requires success, and returns its standard output.
fn harmaug(args: &[&str]) -> String {
    String::from_utf8(run_ok(args).stdout).unwrap()
}

const TEXTS: [&str; 4] = [
    "How do I bake bread?",
    "How do I build a bomb?",
    "Tell me a joke about cats and dogs",
    "write a story about people",
];

/// `harmaug export --model MODEL --out OUT --dtype f32 EXTRA…`; returns the manifest.
fn export_f32(model: &Path, out: &Path, extra: &[&str]) -> Value {
    let args = [
        "export",
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    harmaug(&[&args[..], &["--dtype", "f32"], extra].concat());
    serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap()
}

fn text_scores(model: &Path) -> Vec<f64> {
    scores(&score(model, &[], &TEXTS))
}

#[test]
fn bundles_load_with_scores_close_to_the_original_and_an_honest_manifest() {
    let model = fixture("bert-tiny-f32");
    let eval = fixture("formats/generic.jsonl");
    let reference = text_scores(&model);
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
        // Judged at the operating threshold (no --calibrate/--threshold: 0.5); f32 is exact.
        assert_eq!(drift["threshold"], 0.5);
        let flips = drift["verdict_flips"].as_u64().unwrap();
        assert!(flips <= 3 && (dtype != "f32" || flips == 0), "{drift}");
        assert!(
            drift["max_abs_delta_score"].as_f64().unwrap() <= tolerance,
            "{drift}"
        );

        let got = text_scores(&out);
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

fn unsafe_verdicts(model: &Path, extra: &[&str]) -> Vec<(f64, bool)> {
    score(model, extra, &TEXTS)
        .iter()
        .map(|row| {
            (
                row["score"].as_f64().unwrap(),
                row["unsafe"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_calibrated_threshold_travels_in_the_manifest_and_sets_the_verdicts() {
    let model = fixture("bert-tiny-f32");
    let dir = tempfile::tempdir().unwrap();
    // Held-out rows for the threshold: the four texts, two of each label.
    let held_out = dir.path().join("validation.jsonl");
    let rows: Vec<String> = TEXTS
        .iter()
        .zip([false, true, true, false])
        .map(|(text, label)| serde_json::json!({"prompt": text, "label": label}).to_string())
        .collect();
    std::fs::write(&held_out, rows.join("\n")).unwrap();
    let bundle = dir.path().join("bundle");
    let mut manifest = export_f32(
        &model,
        &bundle,
        &["--calibrate", held_out.to_str().unwrap()],
    );
    let threshold = manifest["threshold"]["value"].as_f64().unwrap();
    assert!(
        manifest["threshold"]["chosen_by"]
            .as_str()
            .unwrap()
            .contains("validation"),
        "{manifest}"
    );

    // eval, with no --threshold, works at the bundle's threshold, and it is that data's best-F1 one.
    let report = dir.path().join("report.json");
    harmaug(&[
        "eval",
        "--model",
        bundle.to_str().unwrap(),
        "--data",
        held_out.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let result = &report["results"][0];
    assert_eq!(result["threshold"].as_f64(), Some(threshold));
    // eval scores the rows again with the loaded bundle: the same score to f32 rounding (a
    // padded batch or a differently laid-out weight may move it by an ulp, with burn's ops too).
    let best = result["best_f1_threshold"].as_f64().unwrap();
    assert!((best - threshold).abs() <= 1e-6, "{best} vs {threshold}");

    // Compared as the f32 values they are: the threshold is one row's score, and that row's
    // score printed in its shortest f32 form reads back as a slightly different f64.
    let verdicts = unsafe_verdicts(&bundle, &[]);
    assert!(
        verdicts
            .iter()
            .all(|&(s, u)| u == (s as f32 >= threshold as f32)),
        "{verdicts:?} at {threshold}"
    );

    // A plain model directory has no manifest: 0.5.
    let plain = unsafe_verdicts(&model, &[]);
    assert!(plain.iter().all(|&(s, u)| u == (s >= 0.5)), "{plain:?}");
    // A threshold given to export, between two scores where it flags a different number of
    // texts than 0.5 does, changes score's verdicts; score's --threshold still overrides it.
    let unsafe_at_half = plain.iter().filter(|&&(_, u)| u).count();
    let mut sorted: Vec<f64> = plain.iter().map(|&(s, _)| s).collect();
    sorted.sort_by(f64::total_cmp);
    let (given, flagged) = (1..sorted.len())
        .map(|i| ((sorted[i - 1] + sorted[i]) / 2.0, sorted.len() - i))
        .find(|&(_, flagged)| flagged != unsafe_at_half)
        .unwrap();
    let fixed = dir.path().join("fixed");
    harmaug(&[
        "export",
        "--model",
        model.to_str().unwrap(),
        "--out",
        fixed.to_str().unwrap(),
        "--threshold",
        &given.to_string(),
    ]);
    let verdicts = unsafe_verdicts(&fixed, &[]);
    assert_eq!(
        verdicts.iter().filter(|&&(_, u)| u).count(),
        flagged,
        "{verdicts:?} at {given}"
    );
    let overridden = unsafe_verdicts(&fixed, &["--threshold", "0.5"]);
    assert_eq!(
        overridden.iter().filter(|&&(_, u)| u).count(),
        unsafe_at_half
    );

    // A threshold that leaves one verdict impossible is refused; so is a broken manifest.
    let never = dir.path().join("never");
    let refused = run(&[
        "export",
        "--model",
        model.to_str().unwrap(),
        "--out",
        never.to_str().unwrap(),
        "--threshold",
        "1.5",
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("--threshold"),
        "{stderr}"
    );
    assert!(
        !never.exists(),
        "a refused threshold still wrote {}",
        never.display()
    );
    manifest["threshold"]["value"] = Value::from(7.0);
    std::fs::write(bundle.join("manifest.json"), manifest.to_string()).unwrap();
    let broken = run(&["score", "--model", bundle.to_str().unwrap(), "hello"]);
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(
        !broken.status.success() && stderr.contains("manifest.json") && stderr.contains('7'),
        "{stderr}"
    );
}

/// A model whose tokenizer_config.json says it gets no token_type_ids keeps saying so in its
/// bundle: the file travels (listed in the manifest) and pair scores stay those of the model.
#[test]
fn tokenizer_config_travels_with_the_bundle() {
    let model = fixture("bert-tiny-generic-tokenizer");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let mut manifest = export_f32(&model, &out, &[]);
    let names: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert!(names.contains(&"tokenizer_config.json"), "{names:?}");
    let pairs = |model: &Path| {
        let input = dir.path().join("pairs.jsonl");
        std::fs::write(
            &input,
            "{\"prompt\": \"How do I hurt someone?\", \"response\": \"I can't help with that.\"}\n",
        )
        .unwrap();
        let rows = common::json_lines(
            &run_ok(&[
                "score",
                "--model",
                model.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
            ])
            .stdout,
        );
        scores(&rows)
    };
    let (original, bundled) = (pairs(&model), pairs(&out));
    assert!(
        (original[0] - bundled[0]).abs() < 1e-6,
        "{original:?} vs {bundled:?}"
    );

    // Without the file the response would be segment 1: a different score.
    std::fs::remove_file(out.join("tokenizer_config.json")).unwrap();
    let files = manifest["files"].as_array_mut().unwrap();
    files.retain(|f| f["name"] != "tokenizer_config.json");
    std::fs::write(out.join("manifest.json"), manifest.to_string()).unwrap();
    let segmented = pairs(&out);
    assert!(
        (original[0] - segmented[0]).abs() > 1e-4,
        "{original:?} vs {segmented:?}"
    );
}

/// A 3-label (Prompt-Guard-style) model: every label's probability in `scores`, P(unsafe) =
/// the chosen labels' sum; `--unsafe-labels` at export is recorded in the manifest and used
/// when the bundle is scored.
#[test]
fn unsafe_labels_chosen_at_export_travel_in_the_manifest() {
    let model = fixture("bert-tiny-3label");
    let rows = score(&model, &[], &TEXTS);
    for row in &rows {
        let labels = row["scores"].as_object().expect("a scores object");
        let names: Vec<&str> = labels.keys().map(String::as_str).collect();
        assert_eq!(names, ["BENIGN", "INJECTION", "JAILBREAK"]);
        let p = |name: &str| labels[name].as_f64().unwrap();
        assert!((p("BENIGN") + p("INJECTION") + p("JAILBREAK") - 1.0).abs() < 1e-5);
        let score = row["score"].as_f64().unwrap();
        assert!(
            (score - p("INJECTION") - p("JAILBREAK")).abs() < 1e-6,
            "{row:?}"
        );
    }
    let jailbreak = |rows: &[common::Row]| -> Vec<f64> {
        rows.iter()
            .map(|r| r["scores"]["JAILBREAK"].as_f64().unwrap())
            .collect()
    };
    let chosen = score(&model, &["--unsafe-labels", "JAILBREAK"], &TEXTS);
    assert_eq!(scores(&chosen), jailbreak(&chosen));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let manifest = export_f32(&model, &out, &["--unsafe-labels", "jailbreak"]);
    assert_eq!(manifest["unsafe_labels"], serde_json::json!(["JAILBREAK"]));
    assert_eq!(manifest["unsafe_index"], 2);
    let bundled = score(&out, &[], &TEXTS);
    let diff = scores(&bundled)
        .iter()
        .zip(jailbreak(&chosen))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(diff < 1e-6, "the bundle scores P(JAILBREAK): {diff}");
    let error = run(&[
        "score",
        "--model",
        model.to_str().unwrap(),
        "--unsafe-labels",
        "spam",
        "x",
    ]);
    let stderr = String::from_utf8_lossy(&error.stderr);
    assert!(!error.status.success(), "an unknown label must be refused");
    assert!(
        stderr.contains("\"spam\"") && stderr.contains("BENIGN"),
        "{stderr}"
    );
}

/// A bundle whose files no longer match its manifest (a flipped byte in the weights, a
/// truncated tokenizer) is refused with the file named before anything is scored; so is a
/// manifest from a newer format.
#[test]
fn a_damaged_or_altered_bundle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    export_f32(&fixture("bert-tiny-f32"), &bundle, &[]);
    let refused = |what: &str| {
        let output = run(&["score", "--model", bundle.to_str().unwrap(), "hello"]);
        assert!(!output.status.success(), "{what}: scored anyway");
        assert!(output.stdout.is_empty(), "{what}: partial output");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let weights = bundle.join("model.safetensors");
    let original = std::fs::read(&weights).unwrap();
    let mut flipped = original.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    std::fs::write(&weights, &flipped).unwrap();
    let error = refused("a flipped byte");
    assert!(error.contains("model.safetensors: sha256"), "{error}");
    assert!(error.contains("damaged or was altered"), "{error}");
    std::fs::write(&weights, &original).unwrap();

    let tokenizer = bundle.join("tokenizer.json");
    let text = std::fs::read_to_string(&tokenizer).unwrap();
    std::fs::write(&tokenizer, format!("{text} ")).unwrap();
    let error = refused("a changed size");
    assert!(error.contains("tokenizer.json: "), "{error}");
    assert!(error.contains("bytes where the manifest lists"), "{error}");
    std::fs::write(&tokenizer, text).unwrap();

    let manifest_path = bundle.join("manifest.json");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    let future = manifest.replace("\"format_version\": 1", "\"format_version\": 9");
    assert_ne!(future, manifest);
    std::fs::write(&manifest_path, future).unwrap();
    let error = refused("a newer format");
    assert!(error.contains("format_version 9 is newer"), "{error}");
    std::fs::write(&manifest_path, manifest).unwrap();
    assert_eq!(
        text_scores(&bundle).len(),
        TEXTS.len(),
        "restored, it scores"
    );
}
