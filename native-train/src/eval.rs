//! `harmaug eval`: guards (and precomputed score files) × labelled data sets → the metrics of
//! `harmaug_core::metrics`, as a Markdown table, a JSON report and per-row scores.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use burn::tensor::backend::Backend;
use clap::{Args, ValueEnum};
use harmaug_core::bundle;
use harmaug_core::datasets::{Container, Level, ParseOptions};
use harmaug_core::metrics::BinaryMetrics;
use harmaug_core::{GuardInput, LoadOptions};
use serde::Serialize;
use serde_json::Value;

use crate::backend::{self, BackendJob};
use crate::cli_args::{FormatArg, GuardRunArgs};
use crate::data_files::{self, NamedDataset};
use crate::model_dir::ModelDir;
use crate::plot;
use crate::progress;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Guard model directory, bundle or Hub model id (`OWNER/NAME[@REVISION]`); repeat to
    /// compare several. Default (with no
    /// --scores-file either): the guard built into harmaug.
    #[arg(long = "model", env = "HARMAUG_MODEL")]
    models: Vec<PathBuf>,
    /// Precomputed scores as NAME=FILE.jsonl (rows with `prompt`, `response`?, and `score` or
    /// `teacher_score`), evaluated as one more column; repeatable.
    #[arg(long = "scores-file", value_parser = named_path)]
    score_files: Vec<(String, PathBuf)>,
    /// Labelled data set: JSON array, JSONL, CSV or Parquet (by extension), optionally .gz;
    /// repeatable.
    #[arg(long = "data", required = true)]
    data: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    format: FormatArg,
    /// WildGuardMix: score responses (`response_harm_label`) or prompts (`prompt_harm_label`).
    #[arg(long, value_enum, default_value = "response")]
    level: LevelArg,
    /// Leave malformed rows out (counted, the first few shown) instead of stopping at the first.
    #[arg(long)]
    skip_invalid: bool,
    /// A score ≥ threshold counts as unsafe. Default: each bundle's calibrated threshold
    /// (manifest.json), else 0.5.
    #[arg(long)]
    threshold: Option<f64>,
    /// Also report the lowest threshold whose false-positive rate is at most this.
    #[arg(long, default_value_t = 0.05)]
    target_fpr: f64,
    /// Write every result as JSON: {"results": [...]}.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write every input row with `label`, `score`, `model` and `dataset` as JSONL.
    #[arg(long)]
    scores: Option<PathBuf>,
    /// Draw precision–recall curves, one per model and data set (.svg or .png).
    #[arg(long)]
    plot: Option<PathBuf>,
    #[command(flatten)]
    run: GuardRunArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LevelArg {
    Response,
    Prompt,
}

fn named_path(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s.split_once('=').ok_or("expected NAME=FILE.jsonl")?;
    Ok((name.to_string(), PathBuf::from(path)))
}

/// One model × data set: the report row the JSON schema names.
#[derive(Debug, Serialize)]
struct EvalResult {
    model: String,
    dataset: String,
    n: usize,
    skipped: usize,
    f1: Option<f64>,
    precision: Option<f64>,
    recall: Option<f64>,
    accuracy: Option<f64>,
    auprc: Option<f64>,
    roc_auc: Option<f64>,
    threshold: f64,
    best_f1_threshold: Option<f64>,
    target_fpr: f64,
    /// The lowest threshold with false-positive rate ≤ `target_fpr` (null if none).
    target_fpr_threshold: Option<f64>,
    /// Wall time per batch of `--batch-size` inputs (null for score files).
    latency_ms_p50: Option<f64>,
    latency_ms_p95: Option<f64>,
    examples_per_s: Option<f64>,
    /// Peak resident memory of this process so far (Linux), null elsewhere.
    peak_rss_mb: Option<f64>,
    /// Precision–recall step vertices, for `--plot`.
    #[serde(skip)]
    pr_steps: Vec<(f64, f64)>,
}

/// Scores of one source on one data set, with timing when a model computed them.
struct Scored {
    scores: Vec<f64>,
    batch_ms: Vec<f64>,
    seconds: Option<f64>,
}

pub fn run(args: EvalArgs) -> Result<()> {
    if let Some(path) = &args.plot {
        plot::check_extension(path)?;
    }
    let sets = read_sets(&args)?;
    let mut scores_out = args.scores.as_deref().map(create_writer).transpose()?;
    let mut results = score_with_models(&args, &sets, &mut scores_out)?;
    results.extend(read_score_files(&args, &sets, &mut scores_out)?);
    if let Some(mut out) = scores_out {
        out.flush()?;
    }
    if let Some(path) = &args.report {
        let report = serde_json::json!({ "results": results });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        write_plot(path, &results)?;
    }
    // The table goes last: a reader that stops early (`| head`) must not cost the report.
    std::io::stdout()
        .lock()
        .write_all(markdown(&results).as_bytes())?;
    Ok(())
}

fn read_sets(args: &EvalArgs) -> Result<Vec<NamedDataset>> {
    let options = ParseOptions {
        container: Container::Json,
        format: args.format.format(),
        level: match args.level {
            LevelArg::Response => Level::Response,
            LevelArg::Prompt => Level::Prompt,
        },
        skip_invalid: args.skip_invalid,
    };
    args.data
        .iter()
        .map(|path| data_files::read(path, options))
        .collect()
}

/// Every `--model` (or the built-in guard when neither models nor score files are given) on
/// every set, at the model's own threshold unless `--threshold` is given.
fn score_with_models(
    args: &EvalArgs,
    sets: &[NamedDataset],
    scores_out: &mut Option<BufWriter<std::fs::File>>,
) -> Result<Vec<EvalResult>> {
    let models: Vec<Option<&Path>> = if args.models.is_empty() && args.score_files.is_empty() {
        vec![None]
    } else {
        args.models.iter().map(|m| Some(m.as_path())).collect()
    };
    let mut results = Vec::new();
    for model in models {
        let dir = ModelDir::open_or_default(model)?;
        let name = dir.path.display().to_string();
        let thresholds = (args.threshold.unwrap_or(dir.threshold()), args.target_fpr);
        let job = EvalJob {
            model: &dir,
            options: args.run.load_options(),
            sets,
            batch_size: args.run.batch_size,
        };
        for (set, scored) in sets.iter().zip(backend::run(args.run.backend, job)?) {
            results.push(record(&name, set, &scored, thresholds, scores_out)?);
        }
    }
    Ok(results)
}

/// Every `--score-file` on every set: each row's score looked up by its prompt and response.
fn read_score_files(
    args: &EvalArgs,
    sets: &[NamedDataset],
    scores_out: &mut Option<BufWriter<std::fs::File>>,
) -> Result<Vec<EvalResult>> {
    let thresholds = (
        args.threshold.unwrap_or(bundle::DEFAULT_THRESHOLD),
        args.target_fpr,
    );
    let mut results = Vec::new();
    for (name, path) in &args.score_files {
        let lookup = read_score_file(path)?;
        for set in sets {
            let scores = set
                .dataset
                .rows
                .iter()
                .map(|row| {
                    lookup.get(&key(&row.input)).copied().ok_or_else(|| {
                        anyhow!(
                            "{}: no score for the row on line {} of {}",
                            path.display(),
                            row.line,
                            set.name
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let scored = Scored {
                scores,
                batch_ms: Vec::new(),
                seconds: None,
            };
            results.push(record(name, set, &scored, thresholds, scores_out)?);
        }
    }
    Ok(results)
}

fn write_plot(path: &Path, results: &[EvalResult]) -> Result<()> {
    let series: Vec<plot::Series> = results
        .iter()
        .map(|r| plot::Series {
            label: format!(
                "{} · {} (AP {})",
                r.model,
                r.dataset,
                r.auprc.map_or("–".into(), |a| format!("{a:.3}"))
            ),
            points: r.pr_steps.clone(),
        })
        .collect();
    plot::write_pr_curves(path, &series)
}

struct EvalJob<'a> {
    model: &'a ModelDir,
    options: LoadOptions,
    sets: &'a [NamedDataset],
    batch_size: usize,
}

impl BackendJob for EvalJob<'_> {
    type Output = Vec<Scored>;

    fn run<B: Backend>(self, device: B::Device) -> Result<Vec<Scored>> {
        let guard = self.model.load_guard::<B>(&self.options, &device)?;
        let mut all = Vec::new();
        for set in self.sets {
            let inputs: Vec<GuardInput> =
                set.dataset.rows.iter().map(|r| r.input.clone()).collect();
            let bar = progress::bar(inputs.len(), &set.name)?;
            let started = Instant::now();
            let mut last = started;
            let mut batch_ms = Vec::new();
            let scored = guard.score(&inputs, self.batch_size, |n| {
                let now = Instant::now();
                batch_ms.push((now - last).as_secs_f64() * 1e3);
                last = now;
                bar.inc(n as u64);
            })?;
            bar.finish_and_clear();
            if scored.truncated > 0 {
                tracing::info!(
                    "{}: {} of {} inputs are longer than {} tokens ({:?})",
                    set.name,
                    scored.truncated,
                    inputs.len(),
                    guard.max_length(),
                    self.options.long_input
                );
            }
            all.push(Scored {
                scores: scored.scores.iter().map(|&s| f64::from(s)).collect(),
                batch_ms,
                seconds: Some(started.elapsed().as_secs_f64()),
            });
        }
        Ok(all)
    }
}

fn record(
    model: &str,
    set: &NamedDataset,
    scored: &Scored,
    (threshold, target_fpr): (f64, f64),
    scores_out: &mut Option<BufWriter<std::fs::File>>,
) -> Result<EvalResult> {
    let labels: Vec<bool> = set.dataset.rows.iter().map(|r| r.unsafe_label).collect();
    let (m, curve) = BinaryMetrics::compute_with_curve(&labels, &scored.scores, threshold);
    let undefined = m.undefined();
    if !undefined.is_empty() {
        tracing::warn!(
            "{model} on {}: {} undefined here (reported as null)",
            set.name,
            undefined.join(", ")
        );
    }
    if let Some(out) = scores_out {
        for (row, &score) in set.dataset.rows.iter().zip(&scored.scores) {
            let mut fields = row.fields.clone();
            fields.insert("label".into(), Value::from(u8::from(row.unsafe_label)));
            fields.insert("score".into(), Value::from(score));
            fields.insert("model".into(), Value::from(model));
            fields.insert("dataset".into(), Value::from(set.name.as_str()));
            serde_json::to_writer(&mut *out, &fields)?;
            out.write_all(b"\n")?;
        }
    }
    let mut sorted = scored.batch_ms.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(EvalResult {
        model: model.to_string(),
        dataset: set.name.clone(),
        n: m.n,
        skipped: set.dataset.skipped,
        f1: m.f1,
        precision: m.precision,
        recall: m.recall,
        accuracy: m.accuracy,
        auprc: m.auprc,
        roc_auc: m.roc_auc,
        threshold,
        best_f1_threshold: m.best_f1_threshold,
        target_fpr,
        target_fpr_threshold: curve.threshold_at_fpr(target_fpr),
        latency_ms_p50: percentile(&sorted, 0.50),
        latency_ms_p95: percentile(&sorted, 0.95),
        examples_per_s: scored.seconds.map(|s| m.n as f64 / s),
        peak_rss_mb: peak_rss_mb(),
        pr_steps: curve.pr_steps(),
    })
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

/// `VmHWM` of /proc/self/status: the process's peak resident set.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn key(input: &GuardInput) -> (String, Option<String>) {
    (
        input.prompt.clone(),
        input.response.clone().filter(|r| !r.is_empty()),
    )
}

/// (prompt, response) → score from a JSONL file with `score` or `teacher_score`.
fn read_score_file(path: &Path) -> Result<HashMap<(String, Option<String>), f64>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let rows = harmaug_core::jsonl::parse_jsonl(&bytes)
        .map_err(|e| anyhow!("{}:{}: {}", path.display(), e.line, e.message))?;
    rows.into_iter()
        .map(|row| {
            let score = ["score", "teacher_score"]
                .iter()
                .find_map(|k| row.fields.get(*k).and_then(Value::as_f64))
                .ok_or_else(|| {
                    anyhow!(
                        "{}:{}: missing numeric `score` or `teacher_score`",
                        path.display(),
                        row.line
                    )
                })?;
            Ok((key(&row.input), score))
        })
        .collect()
}

fn create_writer(path: &Path) -> Result<BufWriter<std::fs::File>> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(BufWriter::new(file))
}

fn markdown(results: &[EvalResult]) -> String {
    let cell = |x: Option<f64>| x.map_or_else(|| "–".to_string(), |v| format!("{v:.4}"));
    let mut table = String::from(
        "| model | dataset | n | F1 | AUPRC | precision | recall | threshold | examples/s |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.model,
            r.dataset,
            r.n,
            cell(r.f1),
            cell(r.auprc),
            cell(r.precision),
            cell(r.recall),
            r.threshold,
            r.examples_per_s
                .map_or_else(|| "–".to_string(), |v| format!("{v:.1}")),
        ));
    }
    table
}
