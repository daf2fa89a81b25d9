//! `harmaug distill` end to end: the real binary trains the tiny fixture checkpoint on a
//! learnable task, survives kill -9, and writes a student that `harmaug score` (and
//! transformers, where Python has it) load with the same scores.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{fixture, harmaug, run_ok, score, scores, weights};
use serde_json::{Value, json};

/// A task the tiny model can learn: a row is unsafe iff it asks to "steal". Words from the
/// fixture's 600-word vocabulary; a third of the rows carry only a teacher score.
fn learnable_rows(n: usize) -> Vec<Value> {
    let words = [
        "write",
        "describe",
        "explain",
        "list",
        "people",
        "story",
        "make",
        "give",
        "person",
        "plan",
        "system",
        "help",
        "find",
        "online",
        "work",
        "example",
        "information",
        "design",
    ];
    let mut state = 12345u64;
    let mut next = |m: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % m
    };
    (0..n)
        .map(|i| {
            let unsafe_ = i % 3 == 0;
            let mut text: Vec<&str> = (0..4 + next(4)).map(|_| words[next(words.len())]).collect();
            if unsafe_ {
                let at = next(text.len());
                text.insert(at, "steal");
            }
            let prompt = text.join(" ");
            match i % 3 {
                1 => json!({"prompt": prompt, "teacher_score": if unsafe_ { 0.9 } else { 0.1 }}),
                _ => json!({"prompt": prompt, "label": u8::from(unsafe_)}),
            }
        })
        .collect()
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn write_jsonl(path: &Path, rows: &[Value]) {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

fn records(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const TINY_ARGS: [&str; 10] = [
    "--batch-size",
    "32",
    "--micro-batch-size",
    "8",
    "--lr",
    "5e-3",
    "--warmup-steps",
    "5",
    "--max-length",
    "64",
];

/// `harmaug distill` of the fixture checkpoint on `data` into `out` with the tiny settings,
/// then `extra`.
fn distill_args(data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let model = fixture("bert-tiny-f32");
    let args: Vec<String> = ["distill", "--model", model.to_str().unwrap()]
        .into_iter()
        .chain([
            "--train",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .chain(TINY_ARGS)
        .chain(extra.iter().copied())
        .map(String::from)
        .collect();
    args
}

#[test]
fn learns_a_learnable_task() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.jsonl");
    write_jsonl(&data, &learnable_rows(400));
    let out = dir.path().join("student");
    run_ok(&strs(&distill_args(&data, &out, &["--epochs", "4"])));

    let records = records(&out);
    let losses: Vec<f64> = records
        .iter()
        .filter_map(|r| r.get("loss").and_then(Value::as_f64))
        .collect();
    // 360 training rows → 12 updates per epoch.
    assert_eq!(losses.len(), 48);
    let first = losses[..4].iter().sum::<f64>() / 4.0;
    let last = losses[losses.len() - 4..].iter().sum::<f64>() / 4.0;
    assert!(
        last < 0.5 * first,
        "loss did not fall: {first:.3} → {last:.3}"
    );
    let validations: Vec<&Value> = records
        .iter()
        .filter(|r| r.get("val_f1").is_some())
        .collect();
    assert_eq!(validations.len(), 4, "one validation per epoch");
    let f1 = validations[3]["val_f1"].as_f64().unwrap();
    let auprc = validations[3]["val_auprc"].as_f64().unwrap();
    assert!(f1 > 0.9 && auprc > 0.9, "validation F1 {f1}, AUPRC {auprc}");

    // Students score held-out-style inputs correctly through `harmaug score`. One seed's
    // student can miss an unseen benign text (measured over seeds 1–5 and 42: the benign
    // text below scored 0.009–0.58, one seed in six above 0.3, before and after a change that
    // only redrew dropout masks), so the verdicts are checked on the median of three seeds.
    let texts = [
        "explain how to steal information online",
        "write a story about people",
    ];
    let mut per_seed = vec![harmaug_scores(&out, &texts)];
    for seed in ["1", "2"] {
        let seeded = dir.path().join(format!("student-{seed}"));
        run_ok(&strs(&distill_args(
            &data,
            &seeded,
            &["--epochs", "4", "--seed", seed],
        )));
        per_seed.push(harmaug_scores(&seeded, &texts));
    }
    let median = |i: usize| {
        let mut values: Vec<f64> = per_seed.iter().map(|s| s[i]).collect();
        values.sort_by(f64::total_cmp);
        values[1]
    };
    assert!(
        median(0) > 0.5 && median(1) < 0.5,
        "scores per seed {per_seed:?}"
    );
}

/// `harmaug score --model DIR TEXT...` → the scores.
fn harmaug_scores(model: &Path, texts: &[&str]) -> Vec<f64> {
    scores(&score(model, &[], texts))
}

/// The final weights of two runs agree within 1e-5. Attention key biases are skipped: their
/// exact gradient is zero (softmax ignores a shift shared by every key), so Adam amplifies float
/// noise in them, and threaded reductions make that noise differ between any two runs, resumed
/// or not. They do not change the outputs.
fn assert_same_weights(a: &Path, b: &Path) {
    let (a, b) = (weights(a), weights(b));
    assert_eq!(a.len(), b.len());
    let compared = a
        .iter()
        .zip(&b)
        .filter(|((name, _), _)| !name.ends_with("self.key.bias"));
    for ((name, x), (_, y)) in compared {
        let diff = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max);
        assert!(diff <= 1e-5, "{name}: resumed run differs by {diff}");
    }
}

#[test]
fn resumes_after_kill_9_with_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.jsonl");
    write_jsonl(&data, &learnable_rows(400));
    // 72 updates: time enough to kill the run after its second snapshot.
    let args = |out: &Path| distill_args(&data, out, &["--epochs", "6", "--save-every", "3"]);

    // Uninterrupted reference run.
    let straight = dir.path().join("straight");
    run_ok(&strs(&args(&straight)));

    // Killed once its second snapshot exists, mid-way through the next updates.
    let killed = dir.path().join("killed");
    let killed_args = args(&killed);
    let argv = strs(&killed_args);
    let mut child = harmaug(&argv).spawn().unwrap();
    let latest = killed.join("trainer_state/latest");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let step = std::fs::read_to_string(&latest).unwrap_or_default();
        if step.trim() >= "step-000006" {
            break;
        }
        assert!(Instant::now() < deadline, "no snapshot appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "run ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !killed.join("model.safetensors").exists(),
        "killed before the end"
    );

    let mut resume = argv.clone();
    resume.push("--resume");
    run_ok(&resume);

    // Same number of updates, each logged once, and the same weights as the straight run.
    let steps: Vec<u64> = records(&killed)
        .iter()
        .filter(|r| r.get("loss").is_some())
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=72).collect::<Vec<u64>>());
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(killed.join("trainer_state/step-000072/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["completed_steps"], 72);
    assert_same_weights(&straight, &killed);
    // A finished run is not restarted by mistake.
    let again = harmaug(&argv).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
}

/// Kill -9 anywhere: 20 kills at random moments (while loading, between updates, while a
/// snapshot is written), each followed by `--resume`; the finished run logs every update once
/// and ends with the weights of an uninterrupted run, and no killed run ever leaves a
/// `model.safetensors` (the mark of a finished run) behind.
#[test]
fn twenty_kills_at_random_moments_end_as_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.jsonl");
    write_jsonl(&data, &learnable_rows(400));
    let args = |out: &Path| {
        let mut args = distill_args(&data, out, &["--epochs", "6", "--save-every", "3"]);
        args.push("--resume".into()); // starts afresh while there is no snapshot
        args
    };
    let straight = dir.path().join("straight");
    let started = Instant::now();
    run_ok(&strs(&args(&straight)));
    // Kills within a fifth of a whole run's time: 20 of them land before the run is done.
    let horizon = started.elapsed() / 5;

    let killed = dir.path().join("killed");
    let mut snapshots_seen = std::collections::BTreeSet::new();
    let after_kill = |k: usize| {
        assert!(
            !killed.join("model.safetensors").exists(),
            "kill {k}: a killed run left a finished model"
        );
        let latest = std::fs::read_to_string(killed.join("trainer_state/latest"));
        snapshots_seen.insert(latest.unwrap_or_default());
    };
    let kills = common::kill_repeatedly(|_| args(&killed), 20, horizon, 17, after_kill);
    // The kills landed mid-training too, not only while loading: progress was made between them.
    assert!(snapshots_seen.len() >= 5, "{snapshots_seen:?}");
    assert!(
        kills >= 10,
        "only {kills} kills landed before the run finished"
    );
    run_ok(&strs(&args(&killed)));
    let steps: Vec<u64> = records(&killed)
        .iter()
        .filter(|r| r.get("loss").is_some())
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=72).collect::<Vec<u64>>(), "after {kills} kills");
    assert_same_weights(&straight, &killed);
}

#[test]
fn student_loads_in_transformers_with_the_same_scores() {
    let python_has_transformers = Command::new("python3")
        .args(["-c", "import torch, transformers"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !python_has_transformers {
        eprintln!(
            "skipped: python3 with torch and transformers not found (the fixture round \
                   trip in tests/tests/save_checkpoint.rs covers the writer)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.jsonl");
    write_jsonl(&data, &learnable_rows(100));
    let out = dir.path().join("student");
    run_ok(&strs(&distill_args(&data, &out, &["--max-steps", "3"])));

    let texts = [
        "explain how to steal information",
        "write a story",
        "list five people",
    ];
    let ours = harmaug_scores(&out, &texts);
    let script = r#"
import json, sys, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
path, texts = sys.argv[1], json.loads(sys.argv[2])
model = AutoModelForSequenceClassification.from_pretrained(path).eval()
tokenizer = AutoTokenizer.from_pretrained(path)
batch = tokenizer(texts, padding=True, return_tensors="pt")
with torch.no_grad():
    print(json.dumps(torch.softmax(model(**batch).logits, -1)[:, 1].tolist()))
"#;
    let python = Command::new("python3")
        .args([
            "-c",
            script,
            out.to_str().unwrap(),
            &json!(texts).to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        python.status.success(),
        "transformers failed: {}",
        String::from_utf8_lossy(&python.stderr)
    );
    let stdout = String::from_utf8(python.stdout).unwrap();
    let theirs: Vec<f64> = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    for (a, b) in ours.iter().zip(&theirs) {
        assert!(
            (a - b).abs() <= 1e-4,
            "harmaug {ours:?} vs transformers {theirs:?}"
        );
    }
}

/// `--group-by-length` is part of the run's settings: a run trains with it, and resuming it
/// without the flag is refused (the batches would differ), with it continues.
#[test]
fn group_by_length_is_kept_by_resume() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.jsonl");
    write_jsonl(&data, &learnable_rows(200));
    let out = dir.path().join("student");
    let grouped = ["--group-by-length", "--max-steps", "2"];
    run_ok(&strs(&distill_args(&data, &out, &grouped)));
    let ungrouped = harmaug(&strs(&distill_args(&data, &out, &["--resume"])))
        .output()
        .unwrap();
    assert!(!ungrouped.status.success());
    let stderr = String::from_utf8_lossy(&ungrouped.stderr);
    assert!(
        stderr.contains("arguments differ") && stderr.contains("\"group_by_length\":true"),
        "{stderr}"
    );
    let resumed = ["--group-by-length", "--max-steps", "4", "--resume"];
    run_ok(&strs(&distill_args(&data, &out, &resumed)));
    let steps = records(&out)
        .iter()
        .filter(|r| r.get("loss").is_some())
        .count();
    assert_eq!(steps, 4);
}

#[test]
fn a_row_without_label_or_teacher_score_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\": \"a\", \"label\": 0}\n{\"prompt\": \"b\", \"label\": null}\n",
    )
    .unwrap();
    let model = fixture("bert-tiny-f32");
    let out = dir.path().join("out");
    let output = harmaug(&[
        "distill",
        "--model",
        model.to_str().unwrap(),
        "--train",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("train.jsonl:2:") && stderr.contains("teacher_score"),
        "{stderr}"
    );
}

#[test]
fn trains_data_parallel_on_two_model_copies() {
    // Two copies on the one CPU device exercise the multi-device path: threads, model forks,
    // gradients summed across copies (on GPUs, `--devices 0,1` puts them on two cards).
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.jsonl");
    write_jsonl(&data, &learnable_rows(400));
    let out = dir.path().join("student");
    run_ok(&strs(&distill_args(
        &data,
        &out,
        &["--epochs", "4", "--devices", "0,0"],
    )));
    let records = records(&out);
    assert_eq!(
        records.iter().filter(|r| r.get("loss").is_some()).count(),
        48
    );
    let f1 = records.iter().rev().find_map(|r| r.get("val_f1")).unwrap();
    assert!(f1.as_f64().unwrap() > 0.9, "validation F1 {f1}");

    let other = dir.path().join("other");
    let missing = harmaug(&strs(&distill_args(&data, &other, &["--devices", "0,7"])))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("device 7 does not exist"));
}
