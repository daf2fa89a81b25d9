//! `harmaug score`: JSONL (or TEXT arguments) in, the same rows plus `score` and `unsafe` out.
//!
//! All input is parsed before anything is scored, and all scores are computed before anything
//! is written, so a bad line never leaves partial output behind.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;
use clap::Args;
use harmaug_core::jsonl::{Row, parse_jsonl};
use harmaug_core::tokenize::LongInput;
use harmaug_core::{GuardInput, LoadOptions, Scores};
use serde_json::{Map, Number, Value};

use crate::backend::{self, BackendJob};
use crate::cli_args::GuardRunArgs;
use crate::model_dir::ModelDir;
use crate::progress;

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// HF model directory or `harmaug export` bundle (config.json, model.safetensors,
    /// tokenizer.json), or a Hub model id (`OWNER/NAME[@REVISION]`, downloaded into the HF
    /// cache). Default: the guard built into harmaug (models/default).
    #[arg(long, env = "HARMAUG_MODEL")]
    model: Option<PathBuf>,
    /// JSONL rows {"prompt": ..., "response": ...optional}; `-` reads standard input.
    #[arg(long, conflicts_with = "texts")]
    input: Option<String>,
    /// Prompts to score, one per argument.
    #[arg(value_name = "TEXT")]
    texts: Vec<String>,
    #[command(flatten)]
    run: GuardRunArgs,
    /// `unsafe` is true when score ≥ threshold. Default: the bundle's calibrated threshold
    /// (manifest.json), else 0.5.
    #[arg(long)]
    threshold: Option<f32>,
}

pub fn run(args: ScoreArgs) -> Result<()> {
    let rows = read_rows(&args)?;
    let model = ModelDir::open_or_default(args.model.as_deref())?;
    let scored = backend::run(
        args.run.backend,
        ScoreJob {
            model: &model,
            options: args.run.load_options(),
            inputs: rows.iter().map(|r| r.input.clone()).collect(),
            batch_size: args.run.batch_size,
        },
    )?;
    // f32 like the scores: a score equal to the manifest's threshold counts as unsafe.
    let threshold = args.threshold.unwrap_or(model.threshold() as f32);
    tracing::info!("unsafe when score ≥ {threshold}");
    write_rows(rows, &scored, threshold)
}

fn read_rows(args: &ScoreArgs) -> Result<Vec<Row>> {
    let Some(source) = &args.input else {
        if args.texts.is_empty() {
            bail!("nothing to score: give TEXT arguments or --input FILE.jsonl (- for stdin)");
        }
        return Ok(args
            .texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let mut fields = Map::new();
                fields.insert("prompt".into(), Value::String(text.clone()));
                Row {
                    line: i + 1,
                    fields,
                    input: GuardInput::prompt(text.clone()),
                }
            })
            .collect());
    };
    let (name, bytes) = if source == "-" {
        let stdin = std::io::stdin().lock();
        let name = "<stdin>".to_string();
        (
            name.clone(),
            crate::data_files::read_jsonl_input(stdin, &name)?,
        )
    } else {
        let file = std::fs::File::open(source).with_context(|| format!("reading {source}"))?;
        let bytes = crate::data_files::read_jsonl_input(std::io::BufReader::new(file), source)?;
        (source.clone(), bytes)
    };
    parse_jsonl(&bytes).map_err(|e| anyhow::anyhow!("{name}:{}: {}", e.line, e.message))
}

struct ScoreJob<'a> {
    model: &'a ModelDir,
    options: LoadOptions,
    inputs: Vec<GuardInput>,
    batch_size: usize,
}

/// Scores, and the label names when every label's probability is reported too.
struct Scored {
    scores: Scores,
    label_names: Option<Vec<String>>,
}

impl BackendJob for ScoreJob<'_> {
    type Output = Scored;

    fn run<B: Backend>(self, device: B::Device) -> Result<Scored> {
        let guard = self.model.load_guard::<B>(&self.options, &device)?;
        let bar = progress::bar(self.inputs.len(), "scoring")?;
        let started = Instant::now();
        let scored = guard.score(&self.inputs, self.batch_size, |n| bar.inc(n as u64))?;
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            inputs = self.inputs.len(),
            seconds,
            per_second = self.inputs.len() as f64 / seconds,
            backend = B::name(&device),
            "scored"
        );
        if scored.truncated > 0 {
            let how = match self.options.long_input {
                LongInput::Truncate => "were truncated (--long-input chunk reads them whole)",
                LongInput::Chunk => "were scored by overlapping windows",
            };
            tracing::warn!(
                "{} of {} inputs were longer than {} tokens and {how}",
                scored.truncated,
                self.inputs.len(),
                guard.max_length()
            );
        }
        let labels = guard.labels();
        let label_names = labels.reported_names().map(<[String]>::to_vec);
        Ok(Scored {
            scores: scored,
            label_names,
        })
    }
}

fn write_rows(rows: Vec<Row>, scored: &Scored, threshold: f32) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for (i, (row, &score)) in rows.into_iter().zip(&scored.scores.scores).enumerate() {
        let mut fields = scored_row(row.fields, score, threshold);
        if let Some(names) = &scored.label_names {
            let probabilities = scored.scores.label_probabilities_of(i);
            fields.insert("scores".into(), label_scores(names, probabilities));
        }
        // As an io::Error, so that a closed pipe is recognised as one (main exits quietly).
        serde_json::to_writer(&mut out, &fields).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// An input row's fields (kept, in order) plus `score` and `unsafe` (`score ≥ threshold`): the
/// output row of `score`, for any command that answers with scored rows.
pub fn scored_row(
    mut fields: Map<String, Value>,
    score: f32,
    threshold: f32,
) -> Map<String, Value> {
    fields.insert("score".into(), short_number(score));
    fields.insert("unsafe".into(), Value::Bool(score >= threshold));
    fields
}

/// `{"label": probability, ...}` in label order.
fn label_scores(names: &[String], probabilities: &[f32]) -> Value {
    let pairs = names.iter().zip(probabilities);
    Value::Object(pairs.map(|(n, &p)| (n.clone(), short_number(p))).collect())
}

/// An f32 written with the shortest digits that read back as the same f32 (not f64 noise).
fn short_number(x: f32) -> Value {
    format!("{x}")
        .parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map_or(Value::Null, Value::Number)
}
