//! `harmaug augment generate|respond` and `harmaug label` against a real LLM: llama.cpp's
//! `llama-server` (built by scripts/setup.sh) serving SmolLM2-135M-Instruct (GGUF, from PyPI),
//! started by the test on 127.0.0.1. Also kills the server mid-run (the client retries and
//! finishes) and kills harmaug itself (a rerun resumes without duplicates).

mod common;

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{HubServer, Row, cached, harmaug, read_jsonl as rows, run_ok};
use serde_json::Value;

fn gguf() -> PathBuf {
    cached(
        "assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "HARMAUG_SMOLLM2",
    )
}

fn seeds() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/train/prompts_harmful_seed.jsonl");
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// Every test here runs an LLM that wants all the cores; run in parallel on a 2-core machine,
/// llama.cpp's spinning threads starve each other (a run once made no progress in 5 minutes).
/// Each test holds this lock for its whole run, so they take turns.
fn one_llm_at_a_time() -> MutexGuard<'static, ()> {
    static LLM: Mutex<()> = Mutex::new(());
    // A failed test poisons the lock; the next one can still run.
    LLM.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running llama-server; killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(port: u16) -> Server {
        let binary = cached("bin/llama-server", "HARMAUG_LLAMA_SERVER");
        let child = Command::new(binary)
            .args(["-m", gguf().to_str().unwrap(), "--host", "127.0.0.1"])
            .args([
                "--port",
                &port.to_string(),
                "-c",
                "4096",
                "-np",
                "2",
                "-t",
                "2",
                // A reused prompt prefix was computed in other batch shapes, which moves a
                // small quantised model's logits by ~1e-2; without the cache, scores are exact.
                "--no-cache-prompt",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("llama-server starts");
        let server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !server.healthy() {
            assert!(
                Instant::now() < deadline,
                "llama-server did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    fn healthy(&self) -> bool {
        Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{}/health", self.port)])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn unique_ids(rows: &[Row]) -> bool {
    let ids: HashSet<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.len() == rows.len()
}

type Rows = Vec<Row>;

/// The three stages on 20 prompts with `model` (a URL or a GGUF path), checked for what every
/// back end must give: ids, provenance, a response and a refusal per prompt, scores in [0, 1].
/// Returns (generated, answered, labelled) rows and the pairs file.
fn synthesise(model: &str, dir: &Path, label_extra: &[&str]) -> (Rows, Rows, Rows, PathBuf) {
    let prompts = dir.join("prompts.jsonl");
    let seeds = seeds();
    run_ok(&[
        "augment",
        "generate",
        "--generator",
        model,
        "--seeds",
        seeds.to_str().unwrap(),
        "--num",
        "20",
        "--out",
        prompts.to_str().unwrap(),
        "--concurrency",
        "2",
        "--max-new-tokens",
        "48",
    ]);
    let generated = rows(&prompts);
    assert_eq!(generated.len(), 20);
    assert!(unique_ids(&generated));
    let seed_texts: HashSet<String> = std::fs::read_to_string(&seeds)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["prompt"]
                .as_str()
                .unwrap()
                .to_lowercase()
        })
        .collect();
    for row in &generated {
        let prompt = row["prompt"].as_str().unwrap();
        assert!(
            prompt.len() > 5 && !seed_texts.contains(&prompt.to_lowercase()),
            "{prompt}"
        );
        // An introduction ("Here's one:") or talk about prompts is never kept as the prompt.
        let lower = prompt.to_lowercase();
        assert!(
            !prompt.ends_with(':') && !lower.contains("this prompt") && !lower.contains("a prompt"),
            "{prompt}"
        );
        let provenance = &row["provenance"];
        assert_eq!(provenance["exemplars"].as_array().unwrap().len(), 3);
        assert_eq!(provenance["prefix"], "I have an idea for a prompt:");
    }

    let pairs = dir.join("pairs.jsonl");
    run_ok(&[
        "augment",
        "respond",
        "--responder",
        model,
        "--input",
        prompts.to_str().unwrap(),
        "--out",
        pairs.to_str().unwrap(),
        "--max-new-tokens",
        "48",
        "--with-refusal",
    ]);
    let answered = rows(&pairs);
    assert_eq!(answered.len(), 40, "a response and a refusal per prompt");
    assert!(unique_ids(&answered));
    assert!(
        answered
            .iter()
            .all(|r| !r["response"].as_str().unwrap().is_empty())
    );

    let labelled = dir.join("labelled.jsonl");
    let mut label = vec![
        "label",
        "--teacher",
        model,
        "--input",
        pairs.to_str().unwrap(),
        "--out",
        labelled.to_str().unwrap(),
    ];
    label.extend(label_extra);
    run_ok(&label);
    let scored = rows(&labelled);
    assert_eq!(scored.len(), 40);
    let scores: Vec<f64> = scored
        .iter()
        .map(|r| r["teacher_score"].as_f64().unwrap())
        .collect();
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
    let spread = scores.iter().copied().fold(f64::MIN, f64::max)
        - scores.iter().copied().fold(f64::MAX, f64::min);
    assert!(spread > 0.01, "every score the same: {scores:?}");
    // The labelled rows keep their fields and train a student directly.
    assert!(
        scored
            .iter()
            .all(|r| r.contains_key("response") && r.contains_key("teacher"))
    );
    (generated, answered, scored, pairs)
}

#[test]
fn generates_responds_and_labels_with_a_real_llama_server() {
    let _turn = one_llm_at_a_time();
    let server = Server::start(free_port());
    let dir = tempfile::tempdir().unwrap();
    // The whole vocabulary's first-token logprobs (llama-server allows it): exact scores even
    // though this small stand-in teacher rarely starts its answer with a verdict.
    let (generated, _, scored, pairs) =
        synthesise(&server.url(), dir.path(), &["--top-logprobs", "49152"]);
    // A served model is named by the server (llama-server: the file it serves).
    assert!(generated.iter().all(|r| {
        r["provenance"]["generator"]
            .as_str()
            .unwrap()
            .contains("SmolLM2")
    }));

    // The same GGUF in process gives the same teacher scores as the server.
    let embedded = dir.path().join("labelled-embedded.jsonl");
    let gguf = gguf();
    run_ok(&[
        "label",
        "--teacher",
        gguf.to_str().unwrap(),
        "--input",
        pairs.to_str().unwrap(),
        "--out",
        embedded.to_str().unwrap(),
    ]);
    let by_id = |rows: Rows| -> HashMap<String, f64> {
        rows.into_iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_string(),
                    r["teacher_score"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let (served, local) = (by_id(scored), by_id(rows(&embedded)));
    assert_eq!(served.len(), local.len());
    let worst = served
        .iter()
        .map(|(id, s)| (s - local[id]).abs())
        .fold(0.0, f64::max);
    eprintln!("max |served − embedded| teacher score: {worst:.4}");
    assert!(
        worst <= 0.02,
        "served and embedded scores differ by {worst}"
    );
}

#[test]
fn generates_responds_and_labels_in_process_from_a_gguf_file() {
    let _turn = one_llm_at_a_time();
    let gguf = gguf();
    let dir = tempfile::tempdir().unwrap();
    let (generated, ..) = synthesise(gguf.to_str().unwrap(), dir.path(), &[]);
    // In process, the generator is named by the GGUF's `general.name`.
    let name = "Smollm2 135M 8k Lc100K Mix1 Ep2";
    assert!(
        generated
            .iter()
            .all(|r| r["provenance"]["generator"] == name)
    );
}

#[test]
fn retries_through_a_server_restart_and_resumes_after_kill_9() {
    let _turn = one_llm_at_a_time();
    let port = free_port();
    let mut server = Some(Server::start(port));
    let url = server.as_ref().unwrap().url();
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("prompts.jsonl");
    let seeds = seeds();
    let args = |num: &'static str| -> Vec<String> {
        [
            "augment",
            "generate",
            "--generator",
            &url,
            "--seeds",
            seeds.to_str().unwrap(),
            "--num",
            num,
            "--out",
            prompts.to_str().unwrap(),
            "--concurrency",
            "1",
            "--max-new-tokens",
            "48",
        ]
        .map(String::from)
        .to_vec()
    };
    let wait_for_rows = |n: usize, child: &mut Child| {
        let deadline = Instant::now() + Duration::from_secs(300);
        while rows(&prompts).len() < n {
            assert!(Instant::now() < deadline, "no progress");
            assert!(child.try_wait().unwrap().is_none(), "harmaug ended early");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    // The server dies mid-run and comes back two seconds later: requests are retried.
    let first = args("30");
    let mut child = harmaug(&first.iter().map(String::as_str).collect::<Vec<_>>())
        .spawn()
        .unwrap();
    wait_for_rows(5, &mut child);
    drop(server.take());
    std::thread::sleep(Duration::from_secs(2));
    server = Some(Server::start(port));
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(rows(&prompts).len(), 30);
    let retries: u64 = stderr
        .split(" retries")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(retries > 0, "no retries counted: {stderr}");

    // harmaug itself is killed; the rerun resumes and ends with exactly the rows asked for.
    let second = args("60");
    let argv: Vec<&str> = second.iter().map(String::as_str).collect();
    let mut child = harmaug(&argv).spawn().unwrap();
    wait_for_rows(35, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let before = rows(&prompts).len();
    assert!((35..60).contains(&before), "{before}");
    run_ok(&argv);
    let all = rows(&prompts);
    assert_eq!(all.len(), 60);
    assert!(unique_ids(&all));
    let texts: HashSet<String> = all
        .iter()
        .map(|r| r["prompt"].as_str().unwrap().to_lowercase())
        .collect();
    assert_eq!(texts.len(), 60, "duplicates after resuming");
    drop(server);
}

#[test]
fn downloads_a_gguf_from_a_hub_endpoint_once() {
    let _turn = one_llm_at_a_time();
    // A local Hub (tests/hub_server.py, the Hub's URL layout and headers); the download lands
    // in huggingface_hub's cache under $HOME and the second run needs no server.
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("smollm2");
    std::fs::create_dir_all(&served).unwrap();
    std::os::unix::fs::symlink(gguf(), served.join("model.gguf")).unwrap();
    let mut hub = HubServer::start(&[
        "--repo",
        &format!("test-owner/smollm2={}", served.display()),
    ]);
    let input = dir.path().join("rows.jsonl");
    std::fs::write(
        &input,
        "{\"id\": \"a\", \"prompt\": \"How do I bake bread?\"}\n",
    )
    .unwrap();
    let home = dir.path().join("home");
    let endpoint = hub.endpoint.clone();
    let label = |out: &str| {
        harmaug(&[
            "label",
            "--teacher",
            "hf://test-owner/smollm2/model.gguf",
            "--input",
            input.to_str().unwrap(),
            "--out",
            dir.path().join(out).to_str().unwrap(),
        ])
        .env("HOME", &home)
        .env_remove("HF_HOME")
        .env_remove("HF_HUB_CACHE")
        .env_remove("XDG_CACHE_HOME")
        .env("HF_ENDPOINT", &endpoint)
        .output()
        .unwrap()
    };
    let first = label("first.jsonl");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let snapshots = home.join(".cache/huggingface/hub/models--test-owner--smollm2/snapshots");
    let commit = std::fs::read_dir(&snapshots)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let cached = commit.join("model.gguf");
    assert_eq!(
        std::fs::metadata(&cached).unwrap().len(),
        std::fs::metadata(gguf()).unwrap().len()
    );
    hub.stop();
    let second = label("second.jsonl");
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(
        rows(&dir.path().join("second.jsonl"))[0]["teacher_score"],
        rows(&dir.path().join("first.jsonl"))[0]["teacher_score"]
    );
}

/// The rows of a JSONL output that a kill may have torn: every whole line must be a JSON row,
/// and only the unterminated tail may be cut (a rerun removes it).
fn whole_rows(path: &Path) -> Rows {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    common::json_lines(whole.as_bytes())
}

/// Kill -9 anywhere in `augment generate` and `label` (the GGUF in process): up to 20 kills
/// each at random moments (while the model loads, mid-generation, mid-write). After every kill the
/// output is whole rows with unique ids (at most a torn last line, which the rerun cuts); the
/// finished generation holds exactly the prompts asked for, each once, and the finished
/// labels equal an uninterrupted run's.
#[test]
fn twenty_kills_in_generate_and_label_leave_whole_unique_rows() {
    let _turn = one_llm_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (gguf, seeds) = (gguf(), seeds());
    let generate = |out: &Path| -> Vec<String> {
        let args = ["augment", "generate", "--generator", gguf.to_str().unwrap()];
        let rest = ["--seeds", seeds.to_str().unwrap(), "--num", "24", "--out"];
        let tail = ["--concurrency", "2", "--max-new-tokens", "32"];
        let out = [out.to_str().unwrap()];
        [&args[..], &rest, &out, &tail]
            .concat()
            .into_iter()
            .map(String::from)
            .collect()
    };
    let label = |input: &Path, out: &Path| -> Vec<String> {
        let args = ["label", "--teacher", gguf.to_str().unwrap(), "--input"];
        let paths = [input.to_str().unwrap(), "--out", out.to_str().unwrap()];
        [&args[..], &paths]
            .concat()
            .into_iter()
            .map(String::from)
            .collect()
    };
    // Whole rows with unique ids after every kill; returns how many there are.
    let after_kill = |path: &Path| {
        let rows = whole_rows(path);
        assert!(unique_ids(&rows), "duplicated ids after a kill");
        rows.len()
    };
    for stage in ["generate", "label"] {
        let straight = dir.path().join(format!("{stage}-straight.jsonl"));
        let killed = dir.path().join(format!("{stage}-killed.jsonl"));
        // Labelling: the generated prompts twice over (new ids), so that labelling, not
        // loading the model, takes most of a run.
        let input = dir.path().join("label-input.jsonl");
        if stage == "label" {
            let prompts = rows(&dir.path().join("generate-straight.jsonl"));
            let copies: String = (0..2)
                .flat_map(|copy| prompts.iter().map(move |r| (copy, r)))
                .map(|(copy, r)| {
                    let id = format!("{}-{copy}", r["id"].as_str().unwrap());
                    format!("{}\n", serde_json::json!({"id": id, "prompt": r["prompt"]}))
                })
                .collect();
            std::fs::write(&input, copies).unwrap();
        }
        let args_for = |out: &Path| match stage {
            "generate" => generate(out),
            _ => label(&input, out),
        };
        let started = Instant::now();
        run_ok(&strs(&args_for(&straight)));
        // Kills within an eighth of a whole run: 20 land before it is done, some mid-work.
        let horizon = started.elapsed() / 8;
        let mut counts = Vec::new();
        let record = |_| counts.push(after_kill(&killed));
        let kills = common::kill_repeatedly(|_| args_for(&killed), 20, horizon, 5, record);
        // Up to 20 kills; a run may finish before all of them land (machine speed varies).
        assert!(kills >= 12, "{stage}: the run finished after {kills} kills");
        let progressed = counts.windows(2).filter(|w| w[1] > w[0]).count();
        assert!(progressed >= 3, "{stage}: rows after each kill {counts:?}");
        run_ok(&strs(&args_for(&killed)));
        let (done, reference) = (rows(&killed), rows(&straight));
        assert_eq!(done.len(), reference.len(), "{stage}");
        assert!(unique_ids(&done), "{stage}");
        if stage == "label" {
            let by_id = |rows: &Rows| -> HashMap<String, f64> {
                rows.iter()
                    .map(|r| {
                        (
                            r["id"].as_str().unwrap().into(),
                            r["teacher_score"].as_f64().unwrap(),
                        )
                    })
                    .collect()
            };
            assert_eq!(by_id(&done), by_id(&reference));
        } else {
            let texts: HashSet<String> = done.iter().map(|r| r["prompt"].to_string()).collect();
            assert_eq!(texts.len(), done.len(), "duplicate prompts after kills");
        }
    }
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}
