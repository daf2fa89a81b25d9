//! A load generator for `harmaug serve` and any OpenAI-style moderation server (bench/serve_load.py
//! drives it): `--concurrency` clients, each sending one prompt per request, closed-loop or paced
//! to `--rate` requests per second, for `--requests` requests or `--duration-s` seconds. Prints
//! one JSON object: throughput, latency percentiles, errors, and, when `--pid` is given (the
//! soak test), the server's resident memory sampled through the run: its peak in the first and
//! in the last third after warm-up (a leak grows the peak; one big batch only moves a sample).
//!
//!     cargo run --release --example serve_load -- --url http://127.0.0.1:8080/v1/moderations \
//!         --prompts prompts.jsonl --concurrency 8 --requests 1000
//!
//! Loopback only: the URL must name 127.0.0.1 or localhost.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    url: String,
    /// JSONL with a `prompt` field per line; requests cycle through them.
    #[arg(long)]
    prompts: String,
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Stop after this many requests (default: one per prompt).
    #[arg(long)]
    requests: Option<usize>,
    /// Stop after this many seconds instead.
    #[arg(long)]
    duration_s: Option<f64>,
    /// Requests per second in total (open loop); default: as fast as answers come.
    #[arg(long)]
    rate: Option<f64>,
    /// The server's process id: sample its resident memory every half second.
    #[arg(long)]
    pid: Option<u32>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let host = args.url.split('/').nth(2).unwrap_or("");
    if !(host.starts_with("127.0.0.1") || host.starts_with("localhost")) {
        bail!("--url must be on loopback (127.0.0.1 or localhost), not {host:?}");
    }
    let prompts = read_prompts(&args.prompts)?;
    let limit = match (args.requests, args.duration_s) {
        (Some(n), _) => n,
        (None, Some(_)) => usize::MAX,
        (None, None) => prompts.len(),
    };
    let deadline = args.duration_s.map(Duration::from_secs_f64);
    let run = Run {
        args: &args,
        prompts: &prompts,
        limit,
        deadline,
        next: AtomicUsize::new(0),
        latencies: Mutex::new(Vec::new()),
        errors: Mutex::new(Vec::new()),
        started: Instant::now(),
        rss_samples: Mutex::new(Vec::new()),
        clients_done: AtomicBool::new(false),
    };
    std::thread::scope(|scope| {
        let clients: Vec<_> = (0..args.concurrency.max(1))
            .map(|_| scope.spawn(|| run.client()))
            .collect();
        scope.spawn(|| run.sample_rss());
        let joined: Vec<_> = clients.into_iter().map(|client| client.join()).collect();
        run.clients_done.store(true, Ordering::Relaxed);
        // A client that panicked still fails the run, as it did before the sampler joined it.
        if let Some(Err(panic)) = joined.into_iter().find(Result::is_err) {
            std::panic::resume_unwind(panic);
        }
    });
    println!("{}", run.report());
    Ok(())
}

fn read_prompts(path: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let prompts: Vec<String> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|row| row["prompt"].as_str().map(str::to_string))
        .collect();
    if prompts.is_empty() {
        bail!("{path}: no rows with a `prompt`");
    }
    Ok(prompts)
}

struct Run<'a> {
    args: &'a Args,
    prompts: &'a [String],
    limit: usize,
    deadline: Option<Duration>,
    next: AtomicUsize,
    latencies: Mutex<Vec<f64>>,
    errors: Mutex<Vec<String>>,
    started: Instant,
    /// (seconds since the start, the server's VmRSS in KB).
    rss_samples: Mutex<Vec<(f64, u64)>>,
    clients_done: AtomicBool,
}

impl Run<'_> {
    fn client(&self) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.limit || self.deadline.is_some_and(|d| self.started.elapsed() >= d) {
                return;
            }
            if let Some(rate) = self.args.rate {
                // Paced: a request due after the deadline is not sent (clients would otherwise
                // sleep past it and overrun the run by up to `concurrency / rate` seconds).
                let offset = Duration::from_secs_f64(i as f64 / rate);
                if self.deadline.is_some_and(|d| offset >= d) {
                    return;
                }
                std::thread::sleep(
                    (self.started + offset).saturating_duration_since(Instant::now()),
                );
            }
            let body = json!({"input": self.prompts[i % self.prompts.len()]}).to_string();
            let sent = Instant::now();
            let answer = agent
                .post(&self.args.url)
                .content_type("application/json")
                .send(&body);
            let latency = sent.elapsed().as_secs_f64();
            match answer {
                Ok(response) if response.status() == 200 => {
                    self.latencies.lock().unwrap().push(latency)
                }
                Ok(response) => self.error(format!("status {}", response.status())),
                Err(error) => self.error(error.to_string()),
            }
        }
    }

    fn error(&self, what: String) {
        self.errors.lock().unwrap().push(what);
    }

    /// The server's memory every half second until the clients are done.
    fn sample_rss(&self) {
        let Some(pid) = self.args.pid else { return };
        while !self.clients_done.load(Ordering::Relaxed) {
            if let Some(kb) = rss_kb(pid) {
                let at = self.started.elapsed().as_secs_f64();
                self.rss_samples.lock().unwrap().push((at, kb));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Peak RSS in the first and the last third of the run after its first tenth (warm-up).
    fn rss_peaks(&self, seconds: f64) -> (Option<u64>, Option<u64>) {
        let samples = self.rss_samples.lock().unwrap();
        let warm = seconds / 10.0;
        let third = (seconds - warm) / 3.0;
        let peak = |from: f64, to: f64| {
            samples
                .iter()
                .filter(|&&(at, _)| at >= from && at <= to)
                .map(|&(_, kb)| kb)
                .max()
        };
        (peak(warm, warm + third), peak(seconds - third, seconds))
    }

    fn report(&self) -> Value {
        let seconds = self.started.elapsed().as_secs_f64();
        let mut latencies = self.latencies.lock().unwrap().clone();
        latencies.sort_by(f64::total_cmp);
        let percentile = |p: f64| {
            let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len().max(1));
            latencies.get(i - 1).map_or(f64::NAN, |s| s * 1000.0)
        };
        let errors = self.errors.lock().unwrap();
        let (rss_first, rss_last) = self.rss_peaks(seconds);
        json!({
            "concurrency": self.args.concurrency,
            "ok": latencies.len(),
            "errors": errors.len(),
            "first_errors": errors.iter().take(5).collect::<Vec<_>>(),
            "seconds": seconds,
            "throughput": latencies.len() as f64 / seconds,
            "p50_ms": percentile(0.50),
            "p95_ms": percentile(0.95),
            "p99_ms": percentile(0.99),
            "rss_kb_peak_first_third": rss_first,
            "rss_kb_peak_last_third": rss_last,
            "rss_samples": self.rss_samples.lock().unwrap().len(),
        })
    }
}

/// A process's resident set (VmRSS), kilobytes (Linux).
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
