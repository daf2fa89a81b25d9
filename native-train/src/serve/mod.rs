//! `harmaug serve`: a local moderation server with OpenAI's `/v1/moderations` API.
//!
//! Three parts: [`http`] (axum: routes, limits, auth, shutdown) on its own thread, [`queue`]
//! (dynamic batching with back-pressure) between them, and model workers on the backend's
//! thread scoring through the same `core` path as `score`, `eval` and the browser. The port is
//! bound before the model loads, so `/health` answers `loading` until it is ready.

mod api;
mod http;
mod metrics;
mod queue;

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::http::HeaderValue;
use burn::tensor::backend::Backend;
use clap::Args;
use harmaug_core::{Guard, LoadOptions};
use sha2::{Digest, Sha256};

use crate::backend::{self, BackendJob};
use crate::cli_args::GuardRunArgs;
use crate::model_dir::ModelDir;
use http::{AppState, HttpSettings};
use queue::{BatchQueue, BatchSettings};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// HF model directory, `harmaug export` bundle or Hub model id (`OWNER/NAME[@REVISION]`).
    /// Default: the built-in guard.
    #[arg(long, env = "HARMAUG_MODEL")]
    model: Option<PathBuf>,
    /// Address to bind: loopback by default; `0.0.0.0` exposes the server to the network.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to bind; 0 picks a free one (the first line on stdout names it).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// `--batch-size` (alias `--max-batch`) caps the inputs of one model call.
    #[command(flatten)]
    run: GuardRunArgs,
    /// `flagged` is true when score ≥ threshold. Default: the bundle's calibrated threshold.
    #[arg(long)]
    threshold: Option<f32>,
    /// How long the first request of a batch waits for others to join it.
    #[arg(long, default_value_t = 5)]
    max_wait_ms: u64,
    /// Inputs that may wait for a worker; past it requests get 429.
    #[arg(long, default_value_t = 1024)]
    max_queue: usize,
    /// Largest request body; past it requests get 413.
    #[arg(long, default_value_t = 2 << 20)]
    max_body_bytes: usize,
    /// Most inputs in one request; past it requests get 400.
    #[arg(long, default_value_t = 256)]
    max_inputs: usize,
    /// Seconds from a request's arrival to its answer before it gets 504 (408 for a slow body).
    #[arg(long, default_value_t = 30)]
    request_timeout_s: u64,
    /// Model workers, each with its own copy of the model (CPU backends already use every core
    /// in one; more help on a GPU or many cores).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Require `Authorization: Bearer KEY` on /v1/ routes.
    #[arg(
        long,
        env = "HARMAUG_API_KEY",
        conflicts_with = "api_key_file",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// Read the API key from a file (its first line), so that it stays out of `ps`.
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// Allow browsers on this origin (repeatable); CORS is off without one.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origins: Vec<String>,
    /// Log every request's input text (off by default: inputs may be private).
    #[arg(long)]
    log_inputs: bool,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let model = ModelDir::open_or_default(args.model.as_deref())?;
    let settings = http_settings(&args, &model)?;
    if args.max_inputs > args.max_queue {
        bail!(
            "--max-inputs {} exceeds --max-queue {}",
            args.max_inputs,
            args.max_queue
        );
    }
    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    let address = listener.local_addr()?;
    let state = Arc::new(AppState::new(settings, BatchQueue::new(args.max_queue)));
    let http = std::thread::spawn({
        let state = state.clone();
        move || http::serve(listener, state)
    });
    tracing::info!("listening on http://{address}");
    // For scripts that started us with --port 0; a closed stdout must not stop the server.
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening on http://{address}").and_then(|()| stdout.flush());
    let job = ServeJob {
        model: &model,
        options: args.run.load_options(),
        batch: BatchSettings {
            max_batch: args.run.batch_size.max(1),
            max_wait: Duration::from_millis(args.max_wait_ms),
        },
        workers: args.workers.max(1),
        state: &state,
    };
    let served = backend::run(args.run.backend, job);
    if served.is_err() {
        state.stop();
    }
    let http = http
        .join()
        .map_err(|_| anyhow::anyhow!("the HTTP thread panicked"))?;
    served.and(http)
}

fn http_settings(args: &ServeArgs, model: &ModelDir) -> Result<HttpSettings> {
    let api_key = match &args.api_key_file {
        Some(path) => Some(read_api_key(path)?),
        None => args.api_key.clone(),
    };
    let cors_origins = args
        .cors_origins
        .iter()
        .map(|origin| {
            HeaderValue::from_str(origin).with_context(|| format!("--cors-origin {origin:?}"))
        })
        .collect::<Result<_>>()?;
    Ok(HttpSettings {
        api_key_digest: api_key.map(|key| Sha256::digest(key.as_bytes()).into()),
        max_body_bytes: args.max_body_bytes,
        max_inputs: args.max_inputs,
        request_timeout: Duration::from_secs(args.request_timeout_s),
        threshold: args.threshold.unwrap_or(model.threshold() as f32),
        model_id: model_id(args.model.as_deref()),
        log_inputs: args.log_inputs,
        cors_origins,
    })
}

fn read_api_key(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the API key from {}", path.display()))?;
    let key = text.lines().next().unwrap_or("").trim();
    if key.is_empty() {
        bail!("{}: the API key file is empty", path.display());
    }
    Ok(key.to_string())
}

/// The name the server answers to: the model folder's name, or `harmaug-default`.
fn model_id(path: Option<&std::path::Path>) -> String {
    path.and_then(|p| p.file_name())
        .map_or("harmaug-default".into(), |name| {
            name.to_string_lossy().into_owned()
        })
}

/// Loads the guard, marks the server ready and runs the model workers until the queue closes.
struct ServeJob<'a> {
    model: &'a ModelDir,
    options: LoadOptions,
    batch: BatchSettings,
    workers: usize,
    state: &'a AppState,
}

impl BackendJob for ServeJob<'_> {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let guard = self.model.load_guard::<B>(&self.options, &device)?;
        let copies: Vec<Guard<B>> = (1..self.workers)
            .map(|_| Guard::from_parts(guard.model().clone(), guard.parts().clone(), &device))
            .collect();
        let labels = guard.labels();
        let reported = labels.reported_names().map(<[String]>::to_vec);
        let _ = self.state.labels.set(reported);
        self.state.metrics.set_ready();
        tracing::info!(
            backend = B::name(&device),
            workers = self.workers,
            max_length = guard.max_length(),
            threshold = self.state.settings.threshold,
            "model loaded: ready"
        );
        let state = self.state;
        std::thread::scope(|scope| {
            for copy in &copies {
                scope.spawn(|| queue::work(copy, &state.queue, self.batch, &state.metrics));
            }
            queue::work(&guard, &state.queue, self.batch, &state.metrics);
        });
        Ok(())
    }
}
