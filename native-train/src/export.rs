//! `harmaug export`: a model directory → a bundle for the web package (and for `harmaug score`,
//! which reads bundles like any model directory): `config.json`, `tokenizer.json`,
//! `model.safetensors` in f32, f16 or int8 (linear weights per-output-channel symmetric int8,
//! the rest f16), and `manifest.json` (files with sizes and sha256, dtype, max length, labels,
//! harmaug version, operating threshold). With `--eval`, the bundle is scored against the
//! original on labelled data and the drift (max and mean |Δscore|, F1 and AUPRC change) is
//! printed and recorded. With `--calibrate`, the bundle's threshold is its best-F1 threshold on
//! held-out labelled data; `harmaug score`/`eval` and the web package use it by default.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use clap::{Args, ValueEnum};
use harmaug_core::bundle::{self, BundleFile, Manifest, Threshold};
use harmaug_core::checkpoint::{self, StoredDtype};
use harmaug_core::datasets::ParseOptions;
use harmaug_core::metrics::{BinaryMetrics, Curve};
use harmaug_core::{Guard, GuardInput, ModelFiles};
use serde_json::{Value, json};

use crate::backend::{self, BackendJob};
use crate::cli_args::GuardRunArgs;
use crate::data_files;
use crate::files::replace_file;
use crate::model_dir::ModelDir;
use crate::progress;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The model to export: a directory or a Hub model id (`OWNER/NAME[@REVISION]`).
    #[arg(long, env = "HARMAUG_MODEL")]
    model: PathBuf,
    /// The bundle directory to write.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "f16")]
    dtype: DtypeArg,
    /// Labelled data (repeatable) to measure the bundle's drift from the original on.
    #[arg(long)]
    eval: Vec<PathBuf>,
    /// Held-out labelled data (never the test sets): the bundle's operating threshold becomes
    /// the one with the best F1 on it, as scored by the bundle itself.
    #[arg(long, conflicts_with = "threshold")]
    calibrate: Option<PathBuf>,
    /// The bundle's operating threshold, given directly (default 0.5).
    #[arg(long, value_parser = threshold_arg)]
    threshold: Option<f64>,
    /// How the model runs to measure drift and calibrate; `--max-length` is also the bundle's.
    #[command(flatten)]
    run: GuardRunArgs,
}

/// `--threshold`, refused before any work unless strictly between 0 and 1.
fn threshold_arg(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if bundle::is_valid_threshold(value) {
        Ok(value)
    } else {
        Err("must be strictly between 0 and 1".into())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DtypeArg {
    F32,
    F16,
    Int8,
}

impl DtypeArg {
    fn stored(self) -> StoredDtype {
        match self {
            DtypeArg::F32 => StoredDtype::F32,
            DtypeArg::F16 => StoredDtype::F16,
            DtypeArg::Int8 => StoredDtype::Int8,
        }
    }

    fn name(self) -> &'static str {
        match self {
            DtypeArg::F32 => "f32",
            DtypeArg::F16 => "f16",
            DtypeArg::Int8 => "int8",
        }
    }
}

pub fn run(args: ExportArgs) -> Result<()> {
    backend::run(args.run.backend, Export { args })
}

struct Export {
    args: ExportArgs,
}

impl BackendJob for Export {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let args = &self.args;
        let source = ModelDir::open(&args.model)?;
        let original = source.load_guard::<B>(&args.run.load_options(), &device)?;
        let weights = checkpoint::to_safetensors(
            original.model(),
            &original.parts().names,
            args.dtype.stored(),
        )?;
        let files = source.files();
        let outputs = write_bundle_files(&args.out, &files, &weights)?;

        let exported = Guard::<B>::load(
            &ModelFiles {
                weights: vec![&weights],
                release_weights: None,
                ..files
            },
            &args.run.load_options(),
            &device,
        )
        .context("loading the exported bundle back")?;
        let threshold = match (&args.calibrate, args.threshold) {
            (Some(path), _) => Some(calibrate(path, &exported, args.run.batch_size)?),
            (None, Some(value)) => Some(Threshold {
                value,
                chosen_by: "given to harmaug export (--threshold)".into(),
            }),
            (None, None) => None,
        };
        // Drift is judged where the bundle decides: at its operating threshold.
        let operating = threshold
            .as_ref()
            .map_or(bundle::DEFAULT_THRESHOLD, |t| t.value);
        let mut drift = Vec::new();
        for path in &args.eval {
            let pair = (&original, &exported);
            drift.push(measure_drift(path, pair, operating, args.run.batch_size)?);
        }

        let config = original.config();
        let manifest = Manifest {
            format: bundle::FORMAT.into(),
            format_version: bundle::FORMAT_VERSION,
            harmaug_version: env!("CARGO_PKG_VERSION").into(),
            dtype: args.dtype.name().into(),
            max_length: original.max_length(),
            unsafe_index: config.labels.unsafe_indices[0],
            labels: config.labels.names.clone(),
            unsafe_labels: config
                .labels
                .unsafe_indices
                .iter()
                .map(|&i| config.labels.names[i].clone())
                .collect(),
            files: outputs
                .iter()
                .map(|(name, bytes)| BundleFile {
                    name: (*name).into(),
                    bytes: bytes.len(),
                    sha256: bundle::sha256_hex(bytes),
                })
                .collect(),
            threshold,
            drift,
        };
        replace_file(
            &args.out.join("manifest.json"),
            serde_json::to_string_pretty(&manifest)?.as_bytes(),
        )?;
        tracing::info!(
            "{} bundle in {}: model.safetensors {:.1} MB",
            args.dtype.name(),
            args.out.display(),
            weights.len() as f64 / 1e6
        );
        Ok(())
    }
}

/// Writes the bundle's files (the manifest comes last) and returns them by name. A stale
/// `tokenizer_config.json` is removed when the model has none: it would change the encoding.
fn write_bundle_files<'a>(
    out: &Path,
    files: &ModelFiles<'a>,
    weights: &'a [u8],
) -> Result<Vec<(&'static str, &'a [u8])>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut outputs = vec![
        ("config.json", files.config_json.as_bytes()),
        ("tokenizer.json", files.tokenizer_json),
        ("model.safetensors", weights),
    ];
    let tokenizer_config = out.join("tokenizer_config.json");
    match files.tokenizer_config_json {
        Some(json) => outputs.push(("tokenizer_config.json", json.as_bytes())),
        None if tokenizer_config.exists() => std::fs::remove_file(&tokenizer_config)
            .with_context(|| format!("removing {}", tokenizer_config.display()))?,
        None => {}
    }
    for (name, bytes) in &outputs {
        replace_file(&out.join(name), bytes)?;
    }
    Ok(outputs)
}

/// A labelled data file's inputs and labels.
struct Labelled {
    name: String,
    inputs: Vec<GuardInput>,
    labels: Vec<bool>,
}

impl Labelled {
    fn read(path: &Path) -> Result<Self> {
        let named = data_files::read(path, ParseOptions::default())?;
        let rows = &named.dataset.rows;
        Ok(Self {
            inputs: rows.iter().map(|r| r.input.clone()).collect(),
            labels: rows.iter().map(|r| r.unsafe_label).collect(),
            name: named.name,
        })
    }

    /// `guard`'s scores of the inputs, with a progress bar.
    fn scores<B: Backend>(
        &self,
        guard: &Guard<B>,
        batch_size: usize,
        what: &str,
    ) -> Result<Vec<f64>> {
        let bar = progress::bar(self.inputs.len(), &format!("{what} {}", self.name))?;
        let scored = guard.score(&self.inputs, batch_size, |n| bar.inc(n as u64))?;
        bar.finish_and_clear();
        Ok(scored.scores.into_iter().map(f64::from).collect())
    }
}

/// The best-F1 threshold of `guard` on the labelled data in `path`.
fn calibrate<B: Backend>(path: &Path, guard: &Guard<B>, batch_size: usize) -> Result<Threshold> {
    let data = Labelled::read(path)?;
    let scores = data.scores(guard, batch_size, "calibrating on")?;
    let value = Curve::new(&data.labels, &scores)
        .best_f1_threshold()
        .filter(|&t| bundle::is_valid_threshold(t))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}: no threshold strictly between 0 and 1 separates its {} rows (are both \
                 labels present?)",
                data.name,
                data.inputs.len()
            )
        })?;
    let at = BinaryMetrics::compute(&data.labels, &scores, value);
    tracing::info!(
        "threshold {value:.4}: best F1 {:?} on {} ({} rows; precision {:?}, recall {:?})",
        at.f1,
        data.name,
        data.inputs.len(),
        at.precision,
        at.recall
    );
    Ok(Threshold {
        value,
        chosen_by: format!("best F1 on {} ({} rows)", data.name, data.inputs.len()),
    })
}

/// Scores `path` with both guards and compares.
/// The bundle against its original on one labelled file: score differences, verdicts that
/// flip at `threshold`, and F1 (at `threshold`) and AUPRC before and after.
fn measure_drift<B: Backend>(
    path: &Path,
    (original, exported): (&Guard<B>, &Guard<B>),
    threshold: f64,
    batch_size: usize,
) -> Result<Value> {
    let data = Labelled::read(path)?;
    let a = data.scores(original, batch_size, "original on")?;
    let b = data.scores(exported, batch_size, "bundle on")?;
    let deltas: Vec<f64> = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).collect();
    let max = deltas.iter().copied().fold(0.0, f64::max);
    let mean = deltas.iter().sum::<f64>() / deltas.len().max(1) as f64;
    let flips = a
        .iter()
        .zip(&b)
        .filter(|&(x, y)| (*x >= threshold) != (*y >= threshold))
        .count();
    let before = BinaryMetrics::compute(&data.labels, &a, threshold);
    let after = BinaryMetrics::compute(&data.labels, &b, threshold);
    let change = |x: Option<f64>, y: Option<f64>| x.zip(y).map(|(x, y)| y - x);
    tracing::info!(
        "{}: {} rows, max |Δscore| {max:.2e}, mean {mean:.2e}, {flips} verdicts flip at \
         {threshold}, F1 {:?} → {:?}, AUPRC {:?} → {:?}",
        data.name,
        data.inputs.len(),
        before.f1,
        after.f1,
        before.auprc,
        after.auprc
    );
    Ok(json!({
        "dataset": data.name,
        "rows": data.inputs.len(),
        "max_abs_delta_score": max,
        "mean_abs_delta_score": mean,
        "threshold": threshold,
        "verdict_flips": flips,
        "f1": [before.f1, after.f1],
        "f1_change": change(before.f1, after.f1),
        "auprc": [before.auprc, after.auprc],
        "auprc_change": change(before.auprc, after.auprc),
    }))
}
