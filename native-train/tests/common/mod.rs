//! What the CLI tests share: fixture paths, the real `harmaug` binary, and its JSON output.
// Each test binary compiles its own copy and uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Map, Value};

pub type Row = Map<String, Value>;

/// A file or folder under the repository's `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    repo(&format!("tests/fixtures/{name}"))
}

/// A path relative to the repository root.
pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// A tool or asset that scripts/setup.sh installs under ~/.cache/harmaug (or `env` names);
/// missing, the test fails and says how to get it — no test skips silently.
pub fn cached(relative: &str, env: &str) -> PathBuf {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME"))
            .join(".cache/harmaug")
            .join(relative)
    });
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh",
        path.display()
    );
    path
}

/// The harmaug under test, with its output captured and no model from the environment.
pub fn harmaug(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_harmaug"));
    command
        .args(args)
        .env_remove("HARMAUG_MODEL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// How a run ended and the most memory it held (its own peak resident set, from the kernel).
pub struct Measured {
    pub success: bool,
    pub stderr: String,
    pub peak_rss_mb: f64,
}

/// Runs harmaug to the end with `env` set and measures its peak memory: wait4's rusage is that
/// one process's, whatever other tests run beside it. Without RUST_BACKTRACE from the caller's
/// shell: capturing a backtrace on the error path costs ~90 MB in a debug build.
#[allow(clippy::zombie_processes)] // Reaped by wait4, which std's `wait` cannot replace here.
pub fn run_measured(args: &[&str], env: &[(&str, &str)]) -> Measured {
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let child = harmaug(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(stderr.reopen().unwrap())
        .spawn()
        .expect("harmaug runs");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain out-parameters; the child is ours and nothing else waits for it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4 failed");
    Measured {
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        stderr: std::fs::read_to_string(stderr.path()).unwrap(),
        // Linux reports kilobytes.
        peak_rss_mb: usage.ru_maxrss as f64 / 1024.0,
    }
}

/// Runs harmaug to the end, whatever it returns.
pub fn run(args: &[&str]) -> Output {
    harmaug(args).output().expect("harmaug runs")
}

/// Runs harmaug with its standard output closed before anything is written (a reader that
/// went away, as `| head` does) and requires a quiet success.
pub fn run_ok_with_closed_stdout(args: &[&str]) -> Output {
    let mut child = harmaug(args).spawn().expect("harmaug runs");
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}: {stderr}",
        output.status
    );
    assert!(!stderr.contains("Error"), "{stderr}");
    output
}

/// Runs harmaug and requires success (the failure shows harmaug's stderr).
pub fn run_ok(args: &[&str]) -> Output {
    let output = run(args);
    assert!(
        output.status.success(),
        "harmaug {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// One JSON object per line.
pub fn json_lines(text: &[u8]) -> Vec<Row> {
    std::str::from_utf8(text)
        .expect("UTF-8 output")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON object per line"))
        .collect()
}

/// The rows of a JSONL file; none when it does not exist yet.
pub fn read_jsonl(path: &Path) -> Vec<Row> {
    std::fs::read(path)
        .map(|bytes| json_lines(&bytes))
        .unwrap_or_default()
}

/// `harmaug score --model MODEL EXTRA... TEXT...` → the scored rows.
pub fn score(model: &Path, extra: &[&str], texts: &[&str]) -> Vec<Row> {
    let model = model.to_str().expect("UTF-8 path");
    let args = [&["score", "--model", model][..], extra, texts].concat();
    json_lines(&run_ok(&args).stdout)
}

/// The f32 weights of a written checkpoint (`DIR/model.safetensors`), by tensor name.
pub fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut named: Vec<(String, Vec<f32>)> = tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = view.data().chunks_exact(4);
            let values = values.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            (name, values.collect())
        })
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// The `score` field of scored rows.
pub fn scores(rows: &[Row]) -> Vec<f64> {
    rows.iter()
        .map(|row| row["score"].as_f64().expect("a numeric score"))
        .collect()
}

/// `tests/hub_server.py`: a local Hugging Face Hub serving fixture folders in the Hub's URL
/// layout (see the script for its options); stopped when dropped.
pub struct HubServer {
    child: std::process::Child,
    pub endpoint: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl HubServer {
    pub fn start(args: &[&str]) -> Self {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.log");
        let mut child = Command::new("python3")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/hub_server.py"))
            .args(args)
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 tests/hub_server.py");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("hub_server.py said {line:?}"));
        Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        }
    }

    /// Every request so far, one line each: METHOD PATH RANGE AUTHORIZATION.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs harmaug again and again (run `k` with the arguments `args_for(k)`), killing it with
/// SIGKILL at moments drawn uniformly from `[0, horizon)` (a fixed `seed`), and calls `check`
/// on what each killed run left behind. Stops after `kills` kills, or when a run ends by
/// itself; returns the kills made. The caller then reruns to completion.
pub fn kill_repeatedly(
    args_for: impl Fn(usize) -> Vec<String>,
    kills: usize,
    horizon: std::time::Duration,
    seed: u64,
    mut check: impl FnMut(usize),
) -> usize {
    use std::time::{Duration, Instant};
    let mut state = seed;
    let mut next_unit = move || {
        // SplitMix64: a reproducible schedule without a dependency.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
    };
    let mut killed = 0;
    for run in 0.. {
        let args = args_for(run);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = harmaug(&argv)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("harmaug runs");
        let moment = Instant::now() + horizon.mul_f64(next_unit());
        while Instant::now() < moment {
            if child.try_wait().unwrap().is_some() {
                return killed; // it finished first
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        killed += 1;
        check(killed);
        if killed == kills {
            return killed;
        }
    }
    unreachable!()
}
