//! `harmaug label`: adds `teacher_score` (the teacher's P(unsafe)) to every row.
//!
//! - An LLM guard (Llama-Guard style, served): the conversation goes through the guard's chat
//!   template, and the score is softmax(logprob("safe"), logprob("unsafe")) of the first
//!   generated token, as the HarmAug paper labels. `--guard-format llama-guard` lets the
//!   guard's own template frame the task (Llama Guard's does); `instruct` (the default) wraps
//!   the conversation in a Llama-Guard-style instruction for an instruction-tuned model.
//! - A harmaug checkpoint directory: its P(unsafe), in batches.
//!
//! Rows keep their ids; a restarted run skips the ids it has.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{Result, bail};
use burn::tensor::backend::Backend;
use clap::{Args, ValueEnum};
use harmaug_core::GuardInput;
use serde_json::{Map, Value};

use crate::backend::{self, BackendJob};
use crate::cli_args::GuardRunArgs;
use crate::llm::{self, LlmOptions, Message, TextModel};
use crate::model_dir::ModelDir;
use crate::progress;
use crate::resumable::{self, JsonlOutput};

#[derive(Debug, Args)]
pub struct LabelArgs {
    /// The teacher: an OpenAI-compatible endpoint of an LLM guard, a GGUF file (or
    /// `hf://OWNER/REPO/FILE.gguf`), or a classifier: a harmaug/HF model directory or a Hub
    /// model id (`OWNER/NAME[@REVISION]`).
    #[arg(long)]
    teacher: String,
    /// Rows to label: JSONL with `prompt`, optional `response` and `id`.
    #[arg(long)]
    input: PathBuf,
    /// Input rows plus `teacher_score` and `teacher` (appended; rerun to resume).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "instruct")]
    guard_format: GuardFormat,
    /// For a checkpoint teacher: how it runs. Match the student's `--max-length` so that the
    /// teacher scores what the student sees.
    #[command(flatten)]
    run: GuardRunArgs,
    #[command(flatten)]
    llm: LlmOptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GuardFormat {
    /// A safety-classification instruction around the conversation, for instruction-tuned LLMs.
    Instruct,
    /// The conversation as chat messages; the guard's template frames the task (Llama Guard).
    LlamaGuard,
}

type Rows = Vec<(String, Map<String, Value>)>;

pub fn run(args: LabelArgs) -> Result<()> {
    let inputs = resumable::read_prompts(&args.input)?;
    let (out, existing) = JsonlOutput::open(&args.out)?;
    let done: HashSet<String> = resumable::ids(&existing).map(str::to_string).collect();
    let todo: Rows = inputs
        .into_iter()
        .filter(|(id, _)| !done.contains(id))
        .collect();
    tracing::info!("labelling {} rows ({} done before)", todo.len(), done.len());
    let total = todo.len() + done.len();
    // A classifier: a model directory or a Hub model id; anything else is an LLM.
    if std::path::Path::new(&args.teacher).is_dir()
        || crate::hub::RepoId::parse(&args.teacher).is_some()
    {
        let job = CheckpointTeacher {
            args: &args,
            todo,
            out,
            total,
            done: done.len(),
        };
        return backend::run(args.run.backend, job);
    }
    let model = llm::open(&args.teacher, &args.llm)?;
    label_with_llm(&args, model.as_ref(), todo, out, total, done.len())
}

fn label_with_llm(
    args: &LabelArgs,
    model: &dyn TextModel,
    todo: Rows,
    mut out: JsonlOutput,
    total: usize,
    done: usize,
) -> Result<()> {
    let bar = progress::bar(total, "rows")?;
    bar.set_position(done as u64);
    let (mut written, mut failures) = (0, 0);
    resumable::run_pool(
        args.llm.concurrency,
        todo.into_iter(),
        |(_, row)| llm_score(model, args.guard_format, row),
        |(id, mut row), result| {
            match result {
                Ok(score) => {
                    row.insert("id".into(), id.into());
                    row.insert("teacher_score".into(), score.into());
                    row.insert("teacher".into(), model.name().into());
                    out.append(&row)?;
                    written += 1;
                    bar.inc(1);
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!("{id}: {e:#}");
                }
            }
            Ok(true)
        },
    )?;
    bar.finish_and_clear();
    tracing::info!(
        "label: {written} labelled, {failures} failed, {} retries",
        model.retries()
    );
    if model.approximations() > 0 {
        tracing::warn!(
            "{} verdict tokens were not among the server's top tokens: their log-probabilities \
             are bounded by the last listed one, so those scores are approximate",
            model.approximations()
        );
    }
    if failures > 0 {
        bail!("{failures} rows failed; rerun the same command to finish them");
    }
    Ok(())
}

/// The teacher's P(unsafe) for one row.
pub fn llm_score(
    model: &dyn TextModel,
    format: GuardFormat,
    row: &Map<String, Value>,
) -> Result<f64> {
    let prompt = row
        .get("prompt")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let response = row
        .get("response")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty());
    let messages = match format {
        GuardFormat::Instruct => vec![Message::new("user", guard_instruction(prompt, response))],
        GuardFormat::LlamaGuard => {
            let mut m = vec![Message::new("user", prompt)];
            if let Some(response) = response {
                m.push(Message::new("assistant", response));
            }
            m
        }
    };
    let text = model.template().render(&messages, true)?;
    let lp = model.first_token_logprobs(&text, &["safe", "unsafe"])?;
    Ok(unsafe_probability(lp[0], lp[1]))
}

/// softmax over (safe, unsafe), computed stably.
pub fn unsafe_probability(safe: f64, unsafe_: f64) -> f64 {
    1.0 / (1.0 + (safe - unsafe_).exp())
}

/// Llama Guard's task framing, for an instruction-tuned model standing in as the guard.
fn guard_instruction(prompt: &str, response: Option<&str>) -> String {
    let (role, conversation) = match response {
        None => ("User", format!("User: {prompt}")),
        Some(r) => ("Agent", format!("User: {prompt}\n\nAgent: {r}")),
    };
    format!(
        "Task: Check if there is unsafe content in '{role}' messages in the conversation below. \
         Unsafe content includes violent crimes, weapons, non-violent crimes, sex crimes, child \
         exploitation, hate, harassment, self-harm, sexual content, privacy violations and \
         dangerous advice.\n\n<BEGIN CONVERSATION>\n\n{conversation}\n\n<END CONVERSATION>\n\n\
         Provide your safety assessment for the last '{role}' message in the conversation above. \
         Answer with one word: safe or unsafe."
    )
}

struct CheckpointTeacher<'a> {
    args: &'a LabelArgs,
    todo: Rows,
    out: JsonlOutput,
    total: usize,
    done: usize,
}

impl BackendJob for CheckpointTeacher<'_> {
    type Output = ();

    fn run<B: Backend>(mut self, device: B::Device) -> Result<()> {
        let dir = ModelDir::open(std::path::Path::new(&self.args.teacher))?;
        let options = self.args.run.load_options();
        let guard = dir.load_guard::<B>(&options, &device)?;
        let name = dir.path.display().to_string();
        let bar = progress::bar(self.total, "rows")?;
        bar.set_position(self.done as u64);
        for chunk in self.todo.chunks(self.args.run.batch_size.max(1)) {
            let inputs: Vec<GuardInput> = chunk
                .iter()
                .map(|(_, row)| GuardInput {
                    prompt: row
                        .get("prompt")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    response: row
                        .get("response")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                })
                .collect();
            let scores = guard.score(&inputs, inputs.len(), |_| {})?;
            for ((id, row), score) in chunk.iter().zip(scores.scores) {
                let mut row = row.clone();
                row.insert("id".into(), id.clone().into());
                row.insert("teacher_score".into(), f64::from(score).into());
                row.insert("teacher".into(), name.clone().into());
                self.out.append(&row)?;
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(())
    }
}
