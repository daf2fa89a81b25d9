//! `harmaug augment respond`: a response per prompt by ordinary chat generation (and, with
//! `--with-refusal`, also a refusal), so that the student sees prompt + response pairs too.
//! Rows keep their ids; a restarted run skips the ids it has.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Map, Value, json};

use crate::llm::{self, LlmOptions, Message, SamplingParams, TextModel};
use crate::progress;
use crate::resumable::{self, JsonlOutput};

#[derive(Debug, Args)]
pub struct RespondArgs {
    /// The responder: an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1.
    #[arg(long)]
    responder: String,
    /// Prompts: JSONL with `prompt` (and `id`, as `augment generate` writes).
    #[arg(long)]
    input: PathBuf,
    /// Prompt + response rows (appended; rerun to resume).
    #[arg(long)]
    out: PathBuf,
    /// Also write a refusal of each prompt (id `<id>:refusal`).
    #[arg(long)]
    with_refusal: bool,
    #[arg(long, default_value_t = 0.7)]
    temperature: f64,
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    llm: LlmOptions,
}

const REFUSAL_SYSTEM: &str = "You are a careful assistant. The user's request may be harmful: \
                              decline it briefly and politely, without giving any of what it asks.";

/// One response to make.
struct Job {
    id: String,
    source: Map<String, Value>,
    refusal: bool,
}

pub fn run(args: RespondArgs) -> Result<()> {
    let inputs = resumable::read_prompts(&args.input)?;
    let model = llm::open(&args.responder, &args.llm)?;
    let (mut out, existing) = JsonlOutput::open(&args.out)?;
    let done: HashSet<String> = resumable::ids(&existing).map(str::to_string).collect();
    let mut jobs_to_do = Vec::new();
    for (id, row) in inputs {
        if !done.contains(&id) {
            jobs_to_do.push(Job {
                id: id.clone(),
                source: row.clone(),
                refusal: false,
            });
        }
        let refusal_id = format!("{id}:refusal");
        if args.with_refusal && !done.contains(&refusal_id) {
            jobs_to_do.push(Job {
                id: refusal_id,
                source: row,
                refusal: true,
            });
        }
    }
    let total = jobs_to_do.len() + done.len();
    tracing::info!(
        "responding with {}: {} to do, {} done before",
        model.name(),
        jobs_to_do.len(),
        done.len()
    );
    let bar = progress::bar(total, "responses")?;
    bar.set_position(done.len() as u64);
    let (mut written, mut failures) = (0, 0);
    resumable::run_pool(
        args.llm.concurrency,
        jobs_to_do.into_iter(),
        |job| respond(&args, model.as_ref(), job),
        |job, result| {
            match result {
                Ok(row) => {
                    out.append(&row)?;
                    written += 1;
                    bar.inc(1);
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!("{}: {e:#}", job.id);
                }
            }
            Ok(true)
        },
    )?;
    bar.finish_and_clear();
    tracing::info!(
        "respond: {written} written, {failures} failed (rerun to retry them), {} retries",
        model.retries()
    );
    if failures > 0 {
        bail!("{failures} responses failed; rerun the same command to finish them");
    }
    Ok(())
}

fn respond(args: &RespondArgs, model: &dyn TextModel, job: &Job) -> Result<Map<String, Value>> {
    let prompt = job
        .source
        .get("prompt")
        .and_then(Value::as_str)
        .context("missing prompt")?;
    let mut messages = Vec::new();
    if job.refusal {
        messages.push(Message::new("system", REFUSAL_SYSTEM));
    }
    messages.push(Message::new("user", prompt));
    let text = model.template().render(&messages, true)?;
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        max_new_tokens: args.max_new_tokens,
        seed: Some(args.seed ^ fnv1a(&job.id)),
    };
    let response = model.complete(&text, &sampling)?;
    let mut row = Map::new();
    row.insert("id".into(), job.id.clone().into());
    row.insert("prompt".into(), prompt.into());
    row.insert("response".into(), response.trim().into());
    row.insert(
        "provenance".into(),
        json!({
            "stage": "augment respond",
            "responder": model.name(),
            "refusal": job.refusal,
            "sampling": sampling,
            "prompt_provenance": job.source.get("provenance"),
        }),
    );
    Ok(row)
}

/// A stable 64-bit hash (per-row sampling seeds must not change between runs).
pub fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    }) >> 33
}
