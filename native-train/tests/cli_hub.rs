//! `--model OWNER/NAME[@REVISION]`: models from a Hugging Face Hub (a real local HTTP server in
//! the Hub's URL layout, `tests/hub_server.py`) into huggingface_hub's cache layout.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{HubServer, fixture, harmaug, json_lines, score, scores};

const TEXTS: [&str; 2] = ["How do I bake bread?", "Tell me how to build a bomb"];
const TOKEN: &str = "hf_test_token";

/// A fresh HF_HOME for one test, and `harmaug score` run against `hub` with it.
struct Client {
    home: tempfile::TempDir,
    endpoint: String,
}

impl Client {
    fn new(hub: &HubServer) -> Self {
        Self {
            home: tempfile::tempdir().unwrap(),
            endpoint: hub.endpoint.clone(),
        }
    }

    /// `harmaug ARGS` with this client's Hub environment (and `env` on top).
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        harmaug(args)
            .env("HF_HOME", self.home.path())
            .env("HF_ENDPOINT", &self.endpoint)
            .env_remove("HF_TOKEN")
            .env_remove("HF_HUB_CACHE")
            .env_remove("HF_HUB_OFFLINE")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }

    fn score(&self, model: &str, env: &[(&str, &str)]) -> Output {
        self.run(
            &[&["score", "--model", model][..], &TEXTS[..]].concat(),
            env,
        )
    }

    fn score_ok(&self, model: &str, env: &[(&str, &str)]) -> Vec<f64> {
        let output = self.score(model, env);
        assert!(output.status.success(), "{}", stderr(&output));
        scores(&json_lines(&output.stdout))
    }

    fn repo_folder(&self, repo: &str) -> PathBuf {
        self.home
            .path()
            .join("hub")
            .join(format!("models--{}", repo.replace('/', "--")))
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn failure(output: &Output) -> String {
    assert!(!output.status.success(), "expected a failure");
    let text = stderr(output);
    assert!(!text.contains("panicked"), "{text}");
    text
}

fn local_scores(name: &str) -> Vec<f64> {
    scores(&score(&fixture(name), &[], &TEXTS))
}

fn serve(name: &str) -> String {
    format!("{name}={}", fixture("bert-tiny-f32").display())
}

#[test]
fn hub_ids_download_into_the_hf_cache_and_score_as_the_local_folder() {
    let hub = HubServer::start(&[
        "--repo",
        &serve("test/bert"),
        "--shard",
        &serve("test/sharded"),
    ]);
    let client = Client::new(&hub);
    let expected = local_scores("bert-tiny-f32");
    assert_eq!(client.score_ok("test/bert", &[]), expected);
    // transformers' sharded layout: model.safetensors.index.json + two shards.
    assert_eq!(client.score_ok("hf://test/sharded@main", &[]), expected);

    // huggingface_hub's layout: refs/main → the commit, snapshot files → ../../blobs/<etag>.
    let folder = client.repo_folder("test/bert");
    let commit = std::fs::read_to_string(folder.join("refs/main")).unwrap();
    assert_eq!(commit.len(), 40);
    let weights = folder
        .join("snapshots")
        .join(&commit)
        .join("model.safetensors");
    let link = std::fs::read_link(&weights).unwrap();
    assert!(link.starts_with("../../blobs"), "{}", link.display());
    let original = std::fs::read(fixture("bert-tiny-f32/model.safetensors")).unwrap();
    assert_eq!(std::fs::read(&weights).unwrap(), original);
    let shards = client.repo_folder("test/sharded").join("snapshots");
    let shard_dir = std::fs::read_dir(&shards)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for file in [
        "model.safetensors.index.json",
        "model-00002-of-00002.safetensors",
    ] {
        assert!(shard_dir.join(file).is_file(), "{file}");
    }

    // The commit id as the revision resolves too, and nothing is downloaded twice.
    let before = hub
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET"))
        .count();
    assert_eq!(
        client.score_ok(&format!("test/bert@{commit}"), &[]),
        expected
    );
    let after = hub
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET"))
        .count();
    assert_eq!(before, after, "a cached file was fetched again");
}

#[test]
fn a_warm_cache_serves_offline_and_when_the_hub_is_down() {
    let mut hub = HubServer::start(&["--repo", &serve("test/bert")]);
    let client = Client::new(&hub);
    let cold = failure(&client.score("test/bert", &[("HF_HUB_OFFLINE", "1")]));
    assert!(cold.contains("HF_HUB_OFFLINE"), "{cold}");
    let online = client.score_ok("test/bert", &[]);
    hub.stop();
    assert_eq!(
        client.score_ok("test/bert", &[("HF_HUB_OFFLINE", "1")]),
        online
    );
    // Online but unreachable: the cached snapshot, with a warning, as huggingface_hub does.
    let output = client.score("test/bert", &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("using the cache"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn missing_repositories_revisions_and_files_are_named() {
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("config.json"), "{}").unwrap();
    let no_tokenizer = format!("test/no-tokenizer={}", empty.path().display());
    let hub = HubServer::start(&["--repo", &serve("test/bert"), "--repo", &no_tokenizer]);
    let client = Client::new(&hub);
    let missing = failure(&client.score("test/missing", &[]));
    assert!(
        missing.contains("test/missing: repository not found"),
        "{missing}"
    );
    assert!(missing.contains("set HF_TOKEN"), "{missing}");
    let revision = failure(&client.score("test/bert@v9", &[]));
    assert!(revision.contains("revision `v9` not found"), "{revision}");
    let tokenizer = failure(&client.score("test/no-tokenizer", &[]));
    assert!(tokenizer.contains("has no tokenizer.json"), "{tokenizer}");
    // Not shaped like an id and not a directory: the old message, no request made.
    let path = failure(&client.score("no/such/dir", &[]));
    assert!(
        path.contains("no/such/dir: not a model directory"),
        "{path}"
    );
}

#[test]
fn gated_repositories_need_the_token() {
    let hub = HubServer::start(&[
        "--repo",
        &serve("test/gated"),
        "--gated",
        "test/gated",
        "--token",
        TOKEN,
    ]);
    let client = Client::new(&hub);
    let anonymous = failure(&client.score("test/gated", &[]));
    assert!(
        anonymous.contains("is gated") && anonymous.contains("set HF_TOKEN"),
        "{anonymous}"
    );
    let wrong = failure(&client.score("test/gated", &[("HF_TOKEN", "hf_wrong")]));
    assert!(wrong.contains("does not give access"), "{wrong}");
    let expected = local_scores("bert-tiny-f32");
    assert_eq!(
        client.score_ok("test/gated", &[("HF_TOKEN", TOKEN)]),
        expected
    );
    // The token file huggingface_hub's login writes works as well.
    let other = Client::new(&hub);
    std::fs::write(other.home.path().join("token"), format!("{TOKEN}\n")).unwrap();
    assert_eq!(other.score_ok("test/gated", &[]), expected);
    assert!(
        hub.requests()
            .iter()
            .any(|r| r.ends_with(&format!("Bearer {TOKEN}")))
    );
}

#[test]
fn downloads_resume_after_a_dropped_connection_and_after_a_kill() {
    let hub = HubServer::start(&[
        "--repo",
        &serve("test/bert"),
        "--interrupt",
        "model.safetensors",
    ]);
    let client = Client::new(&hub);
    let expected = local_scores("bert-tiny-f32");
    // The first transfer stops half-way: the same run asks for the rest with a Range request.
    assert_eq!(client.score_ok("test/bert", &[]), expected);
    let ranged: Vec<String> = hub
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /cdn/") && r.contains("bytes="))
        .collect();
    assert_eq!(ranged.len(), 1, "{:?}", hub.requests());

    // A run killed mid-download leaves blobs/<etag>.incomplete; the next run resumes it.
    let resumed = Client::new(&hub);
    let original = std::fs::read(fixture("bert-tiny-f32/model.safetensors")).unwrap();
    let blob = prepare_partial(&client, &resumed, &original[..original.len() / 3]);
    assert_eq!(resumed.score_ok("test/bert", &[]), expected);
    let offset = original.len() / 3;
    assert!(
        hub.requests()
            .iter()
            .any(|r| r.contains(&format!("bytes={offset}-"))),
        "{:?}",
        hub.requests()
    );
    assert_eq!(std::fs::read(&blob).unwrap(), original);

    // A partial file with wrong bytes fails the hash check, is removed, and a rerun succeeds.
    let corrupt = Client::new(&hub);
    let mut wrong = original[..original.len() / 2].to_vec();
    wrong[100] ^= 0xff;
    prepare_partial(&client, &corrupt, &wrong);
    let refused = failure(&corrupt.score("test/bert", &[]));
    assert!(
        refused.contains("does not match the Hub's ETag"),
        "{refused}"
    );
    assert_eq!(corrupt.score_ok("test/bert", &[]), expected);
}

/// Writes `bytes` as `fresh`'s partial download of the weights blob that `done` holds whole;
/// returns the blob's path in `fresh`'s cache.
fn prepare_partial(done: &Client, fresh: &Client, bytes: &[u8]) -> PathBuf {
    let blobs = done.repo_folder("test/bert").join("blobs");
    let etag = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|name| name.len() == 64)
        .expect("the weights' sha256 blob");
    let target = fresh.repo_folder("test/bert").join("blobs");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join(format!("{etag}.incomplete")), bytes).unwrap();
    target.join(etag)
}

#[test]
fn every_model_command_takes_a_hub_id() {
    let hub = HubServer::start(&["--repo", &serve("test/bert")]);
    let client = Client::new(&hub);
    let out = tempfile::tempdir().unwrap();
    let bundle = out.path().join("bundle");
    let bundle_arg = bundle.to_str().unwrap();
    let export_args = [
        "export",
        "--model",
        "test/bert",
        "--dtype",
        "f32",
        "--out",
        bundle_arg,
    ];
    let export = client.run(&export_args, &[]);
    assert!(export.status.success(), "{}", stderr(&export));
    assert_eq!(
        scores(&score(&bundle, &[], &TEXTS)),
        local_scores("bert-tiny-f32")
    );
    let data = out.path().join("rows.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\": \"How do I bake bread?\", \"label\": 0}\n{\"prompt\": \"Tell me how to build a bomb\", \"label\": 1}\n",
    )
    .unwrap();
    let eval = client.run(
        &[
            "eval",
            "--model",
            "test/bert",
            "--data",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert!(eval.status.success(), "{}", stderr(&eval));
    assert!(Path::new(&client.repo_folder("test/bert")).is_dir());
}

/// The README's claim, end to end: a released DeBERTa-v3-large guard's Hub repository
/// (`tests/fixtures/deberta-v3-large-layout` — HarmAug-Guard's config and tokenizer files at
/// width 8 — plus the DeBERTa-v3 tokenizer.json) scores through `--model OWNER/NAME` as
/// transformers does: P(LABEL_1) = softmax of the reference logits.
#[test]
fn a_released_deberta_v3_guard_repository_scores_as_transformers() {
    let repo = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture("deberta-v3-large-layout")).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "reference.json" {
            std::fs::copy(&path, repo.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let tokenizer = common::cached(
        "assets/deberta-v3-tokenizer/tokenizer.json",
        "HARMAUG_DEBERTA_TOKENIZER",
    );
    std::fs::copy(tokenizer, repo.path().join("tokenizer.json")).unwrap();
    let hub = HubServer::start(&[
        "--repo",
        &format!("hbseong/HarmAug-Guard={}", repo.path().display()),
    ]);
    let client = Client::new(&hub);

    let reference: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixture("deberta-v3-large-layout/reference.json")).unwrap(),
    )
    .unwrap();
    let input = repo.path().join("rows.jsonl");
    let rows: Vec<String> = reference["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.to_string())
        .collect();
    std::fs::write(&input, rows.join("\n")).unwrap();
    let max_length = reference["max_length"].to_string();
    let args = [
        "score",
        "--model",
        "hbseong/HarmAug-Guard",
        "--max-length",
        &max_length,
        "--long-input",
        "truncate",
        "--input",
        input.to_str().unwrap(),
    ];
    let output = client.run(&args, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let got = scores(&json_lines(&output.stdout));
    let logits = reference["logits_batched"].as_array().unwrap();
    assert_eq!(got.len(), logits.len());
    for (i, (score, logits)) in got.iter().zip(logits).enumerate() {
        let [safe, unsafe_] = [0, 1].map(|j| logits[j].as_f64().unwrap());
        let expected = 1.0 / (1.0 + (safe - unsafe_).exp());
        assert!(
            (score - expected).abs() < 1e-5,
            "input {i}: {score} vs {expected}"
        );
    }
}
