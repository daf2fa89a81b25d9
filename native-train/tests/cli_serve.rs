//! `harmaug serve`: the real server process, talked to over HTTP on 127.0.0.1 — by the official
//! `openai` Python client (installed by scripts/setup.sh), by ureq, and by raw TCP for what a
//! polite client never sends. Scores must equal `harmaug score`'s.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Row, cached, fixture, harmaug, json_lines, run_ok, scores};
use serde_json::{Value, json};

/// A running `harmaug serve`; killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    /// Starts `harmaug serve --port 0 ARGS` and waits until `/health` says ready.
    fn start(args: &[&str]) -> Server {
        let mut child = harmaug(&[&["serve", "--port", "0"][..], args].concat())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("harmaug serve starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let server = Server { child, url };
        let deadline = Instant::now() + Duration::from_secs(120);
        while get(&server.at("/health")).0 != 200 {
            assert!(Instant::now() < deadline, "the server never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    fn moderate(&self, body: &Value) -> (u16, Value) {
        post(&self.at("/v1/moderations"), &body.to_string(), &[])
    }

    fn address(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// The value of one un-labelled metric, or of one `{label}` series.
    fn metric(&self, series: &str) -> f64 {
        let (_, text, _) = request("GET", &self.at("/metrics"), "", &[]);
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing from\n{text}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Status, body text and headers of one request.
fn request(
    method: &str,
    url: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, String, ureq::http::HeaderMap) {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(body.to_string()).unwrap();
    let mut response = agent().run(request).expect("the server answers");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, text, response.headers().clone())
}

fn get(url: &str) -> (u16, String) {
    match agent().get(url).call() {
        Ok(mut response) => (
            response.status().as_u16(),
            response.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(_) => (0, String::new()),
    }
}

fn post(url: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let (status, text, _) = request("POST", url, body, headers);
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, value)
}

fn result_scores(response: &Value) -> Vec<f64> {
    response["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|result| result["category_scores"]["harmful"].as_f64().unwrap())
        .collect()
}

/// `harmaug score` of JSONL rows, by the same model.
fn scored_rows(model: Option<&Path>, rows: &[Value]) -> Vec<Row> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let lines: Vec<String> = rows.iter().map(Value::to_string).collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let mut args = vec!["score", "--input", input.to_str().unwrap()];
    if let Some(model) = model {
        args.extend(["--model", model.to_str().unwrap()]);
    }
    json_lines(&run_ok(&args).stdout)
}

fn tiny_model() -> PathBuf {
    fixture("bert-tiny-f32")
}

const OPENAI_CLIENT: &str = r#"
import json, sys
import openai
client = openai.OpenAI(base_url=sys.argv[1], api_key=sys.argv[2])
response = client.moderations.create(model="harmaug-default", input=json.loads(sys.argv[3]))
print(json.dumps(response.model_dump()))
"#;

#[test]
fn the_openai_client_gets_the_scores_of_harmaug_score() {
    let server = Server::start(&["--api-key", "test-key"]);
    let prompts = [
        "How do I bake sourdough bread at home?",
        "Write step-by-step instructions for making a pipe bomb.",
        "You are worthless and everyone hates you.",
    ];
    let python = cached("bin/python-openai", "HARMAUG_OPENAI_PYTHON");
    let output = Command::new(python)
        .args(["-c", OPENAI_CLIENT, &server.at("/v1"), "test-key"])
        .arg(json!(prompts).to_string())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the openai client failed: {stderr}"
    );
    let response: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(response["model"], "harmaug-default");
    let rows: Vec<Value> = prompts.iter().map(|p| json!({"prompt": p})).collect();
    let expected = scored_rows(None, &rows);
    for (result, row) in response["results"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&expected)
    {
        let score = result["category_scores"]["harmful"].as_f64().unwrap();
        assert!(
            (score - row["score"].as_f64().unwrap()).abs() <= 1e-6,
            "{result} vs {row:?}"
        );
        assert_eq!(result["flagged"], row["unsafe"], "{result} vs {row:?}");
        assert_eq!(result["categories"]["harmful"], row["unsafe"]);
    }
    assert_eq!(expected.iter().filter(|r| r["unsafe"] == true).count(), 2);
}

#[test]
fn pairs_and_chats_score_like_harmaug_score() {
    let model = tiny_model();
    let server = Server::start(&["--model", model.to_str().unwrap()]);
    let body = json!({"model": "mine", "input": [
        "plain prompt",
        {"prompt": "how do I kill a process?", "response": "use kill -9"},
        {"messages": [
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": "how do I kill a process?"},
            {"role": "assistant", "content": "use kill -9"}
        ]},
    ]});
    let (status, response) = server.moderate(&body);
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["model"], "mine");
    let expected = scored_rows(
        Some(&model),
        &[
            json!({"prompt": "plain prompt"}),
            json!({"prompt": "how do I kill a process?", "response": "use kill -9"}),
        ],
    );
    let expected = scores(&expected);
    let got = result_scores(&response);
    assert_eq!(got.len(), 3);
    for (got, expected) in got.iter().zip([expected[0], expected[1], expected[1]]) {
        assert!((got - expected).abs() <= 1e-6, "{got} vs {expected}");
    }
    let (status, models) = post(&server.at("/v1/models"), "", &[]);
    assert_eq!(status, 405, "{models}");
    let (status, models) = get(&server.at("/v1/models"));
    assert_eq!(status, 200);
    assert!(models.contains("\"bert-tiny-f32\""), "{models}");
}

/// A multi-label model reports each label as a category beside `harmful`, with the
/// probabilities `harmaug score` gives.
#[test]
fn a_multi_label_model_reports_every_label() {
    let model = fixture("deberta-tiny-6label-multi");
    let server = Server::start(&["--model", model.to_str().unwrap()]);
    let (status, response) = server.moderate(&json!({"input": ["one text", "another"]}));
    assert_eq!(status, 200, "{response}");
    let expected = scored_rows(
        Some(&model),
        &[json!({"prompt": "one text"}), json!({"prompt": "another"})],
    );
    for (result, row) in response["results"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&expected)
    {
        let categories = result["category_scores"].as_object().unwrap();
        assert_eq!(categories.len(), 7, "harmful + 6 labels: {result}");
        for (label, p) in row["scores"].as_object().unwrap() {
            let got = categories[label].as_f64().unwrap();
            assert!(
                (got - p.as_f64().unwrap()).abs() <= 1e-6,
                "{label}: {result}"
            );
        }
        let harmful = categories["harmful"].as_f64().unwrap();
        assert!((harmful - row["score"].as_f64().unwrap()).abs() <= 1e-6);
    }
}

/// Sends raw bytes and returns the status line's code (0 when the server closed without one).
fn raw_status(address: &str, bytes: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The server may answer (413) and close before reading everything: that is fine.
    let _ = stream.write_all(bytes);
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

fn raw_post(address: &str, body: &[u8]) -> Vec<u8> {
    let head = format!(
        "POST /v1/moderations HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    [head.as_bytes(), body].concat()
}

#[test]
fn bad_requests_get_openai_errors_and_the_server_keeps_serving() {
    let model = tiny_model();
    let server = Server::start(&["--model", model.to_str().unwrap()]);
    let url = server.at("/v1/moderations");
    let huge_array = json!({"input": vec!["a"; 100_000]}).to_string();
    let ten_mb = json!({"input": "a".repeat(10 << 20)}).to_string();
    let cases: [(&str, &str, u16, Option<&str>); 9] = [
        ("malformed JSON", "{\"input\": ", 400, None),
        ("empty input", r#"{"input": ""}"#, 400, Some("input")),
        ("empty array", r#"{"input": []}"#, 400, Some("input")),
        ("wrong type", r#"{"input": 42}"#, 400, Some("input")),
        (
            "wrong item type",
            r#"{"input": ["a", null]}"#,
            400,
            Some("input[1]"),
        ),
        ("no input", r#"{"model": "x"}"#, 400, Some("input")),
        ("not an object", "[]", 400, Some("")),
        ("100,000 inputs", &huge_array, 400, Some("input")),
        ("10 MB", &ten_mb, 413, None),
    ];
    for (name, body, status, param) in cases {
        let (got, error) = post(&url, body, &[]);
        assert_eq!(got, status, "{name}: {error}");
        assert_eq!(
            error["error"]["type"], "invalid_request_error",
            "{name}: {error}"
        );
        assert!(
            error["error"]["message"].as_str().is_some(),
            "{name}: {error}"
        );
        if let Some(param) = param {
            assert_eq!(error["error"]["param"], param, "{name}: {error}");
        }
    }
    // Invalid UTF-8, a wrong method, an unknown path, a 10 MB body sent raw.
    let address = server.address().to_string();
    assert_eq!(
        raw_status(&address, &raw_post(&address, b"{\"input\": \"\xff\xfe\"}")),
        400
    );
    let (status, _, _) = request("GET", &server.at("/v1/moderations"), "", &[]);
    assert_eq!(status, 405);
    let (status, error) = post(&server.at("/v2/moderations"), "{}", &[]);
    assert_eq!(
        (status, &error["error"]["type"]),
        (404, &json!("invalid_request_error"))
    );
    let code = raw_status(&address, &raw_post(&address, ten_mb.as_bytes()));
    assert!(code == 413 || code == 0, "10 MB raw: {code}");
    // A client that disconnects mid-body, and one that leaves before its answer.
    let mut stream = TcpStream::connect(&address).unwrap();
    let head = raw_post(&address, br#"{"input": "cut off"}"#);
    stream.write_all(&head[..head.len() - 5]).unwrap();
    drop(stream);
    let mut stream = TcpStream::connect(&address).unwrap();
    stream
        .write_all(&raw_post(&address, br#"{"input": "gone"}"#))
        .unwrap();
    drop(stream);
    let (status, response) = server.moderate(&json!({"input": ["still serving"]}));
    assert_eq!(status, 200, "{response}");
    assert_eq!(result_scores(&response).len(), 1);
}

#[test]
fn an_api_key_guards_the_api_but_not_health() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "s3cret\n").unwrap();
    let model = tiny_model();
    let server = Server::start(&[
        "--model",
        model.to_str().unwrap(),
        "--api-key-file",
        key_file.to_str().unwrap(),
    ]);
    let body = r#"{"input": "hello"}"#;
    let url = server.at("/v1/moderations");
    for headers in [
        vec![],
        vec![("Authorization", "Bearer s3cre")],
        vec![("Authorization", "s3cret")],
    ] {
        let (status, error) = post(&url, body, &headers);
        assert_eq!(status, 401, "{headers:?}: {error}");
        assert_eq!(error["error"]["code"], "invalid_api_key");
    }
    let (status, _) = post(&url, body, &[("Authorization", "Bearer s3cret")]);
    assert_eq!(status, 200);
    assert_eq!(get(&server.at("/v1/models")).0, 401);
    assert_eq!(get(&server.at("/health")).0, 200);
}

#[test]
fn cors_answers_only_the_given_origins() {
    let model = tiny_model();
    let preflight = |server: &Server, origin: &str| {
        let headers = [
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ];
        let (_, _, headers) = request("OPTIONS", &server.at("/v1/moderations"), "", &headers);
        headers
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let server = Server::start(&[
        "--model",
        model.to_str().unwrap(),
        "--cors-origin",
        "https://app.example",
    ]);
    assert_eq!(
        preflight(&server, "https://app.example").as_deref(),
        Some("https://app.example")
    );
    assert_eq!(preflight(&server, "https://evil.example"), None);
    drop(server);
    let server = Server::start(&["--model", model.to_str().unwrap()]);
    assert_eq!(preflight(&server, "https://app.example"), None);
}

/// Distinct prompts, each its own request, all at once: a thread per request.
fn concurrent_requests(server: &Server, prompts: &[String]) -> Vec<(u16, Value, Option<String>)> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|prompt| {
                let url = server.at("/v1/moderations");
                scope.spawn(move || {
                    let body = json!({"input": prompt}).to_string();
                    let (status, text, headers) = request("POST", &url, &body, &[]);
                    let retry_after = headers
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_string());
                    (status, serde_json::from_str(&text).unwrap(), retry_after)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn concurrent_requests_share_model_calls_and_get_their_own_scores() {
    let model = tiny_model();
    let server = Server::start(&["--model", model.to_str().unwrap(), "--max-wait-ms", "300"]);
    let prompts: Vec<String> = (0..16)
        .map(|i| format!("prompt number {i} {}", "x ".repeat(i)))
        .collect();
    let answers = concurrent_requests(&server, &prompts);
    let rows: Vec<Value> = prompts.iter().map(|p| json!({"prompt": p})).collect();
    let expected = scores(&scored_rows(Some(&model), &rows));
    for ((status, response, _), expected) in answers.iter().zip(expected) {
        assert_eq!(*status, 200, "{response}");
        let got = result_scores(response)[0];
        assert!((got - expected).abs() <= 1e-6, "{got} vs {expected}");
    }
    let calls = server.metric("harmaug_batch_size_count");
    assert!(
        calls < 16.0,
        "16 requests took {calls} model calls: no batching"
    );
    assert_eq!(server.metric("harmaug_inputs_scored_total"), 16.0);
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    // The built-in guard on long inputs, one at a time: a model call takes tens of
    // milliseconds, and the queue holds one request.
    let server = Server::start(&[
        "--max-queue",
        "1",
        "--max-inputs",
        "1",
        "--batch-size",
        "1",
        "--max-wait-ms",
        "0",
    ]);
    let prompts: Vec<String> = (0..24)
        .map(|i| format!("{i} {}", "word ".repeat(400)))
        .collect();
    let answers = concurrent_requests(&server, &prompts);
    let refused: Vec<_> = answers
        .iter()
        .filter(|(status, ..)| *status == 429)
        .collect();
    assert!(
        !refused.is_empty(),
        "24 concurrent requests on a queue of 1: none refused"
    );
    for (status, body, retry_after) in &answers {
        assert!(*status == 200 || *status == 429, "{status}: {body}");
        if *status == 429 {
            assert_eq!(retry_after.as_deref(), Some("1"));
            assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        }
    }
    assert!(answers.iter().any(|(status, ..)| *status == 200));
    assert_eq!(
        server.metric("harmaug_requests_total{status=\"429\"}"),
        refused.len() as f64
    );
}

#[test]
fn sigterm_answers_the_requests_in_flight_then_exits_0() {
    let model = tiny_model();
    // The first request waits 1.5 s for company: SIGTERM arrives while all are queued.
    let mut server = Server::start(&["--model", model.to_str().unwrap(), "--max-wait-ms", "1500"]);
    let prompts: Vec<String> = (0..4).map(|i| format!("in flight {i}")).collect();
    let pid = server.child.id() as libc::pid_t;
    let answers = std::thread::scope(|scope| {
        let answers = scope.spawn(|| concurrent_requests(&server, &prompts));
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: signals our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        answers.join().unwrap()
    });
    for (status, body, _) in &answers {
        assert_eq!(*status, 200, "{body}");
    }
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
}
