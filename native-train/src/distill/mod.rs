//! `harmaug distill`: trains a student guard as the HarmAug paper does (see `loss`, `optimizer`
//! and `data`), on any burn backend, resumable after a kill (see `state`).
//!
//! One update = one effective batch (`--batch-size` rows drawn by the sampler) = several
//! micro-batches whose gradients are summed, then clipped by their global norm and applied by
//! AdamW with the scheduled learning rate.

mod data;
mod loss;
mod optimizer;
mod state;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module};
use burn::tensor::ElementConversion;
// `from_id` comes from the device trait the prelude exports; `id` from the backend one.
use burn::prelude::DeviceOps as _;
use burn::tensor::backend::{Backend, DeviceId, DeviceOps};
use clap::Args;
use harmaug_core::checkpoint::{self, Checkpoint, StoredDtype};
use harmaug_core::config::{ModelConfig, is_unsafe_name};
use harmaug_core::datasets::{Level, ParseOptions};
use harmaug_core::guard::GuardParts;
use harmaug_core::kernels::on_kernel_threads;
use harmaug_core::metrics::BinaryMetrics;
use harmaug_core::models::{BatchTensors, GuardModel};
use harmaug_core::tokenize::{EncodedBatch, EncodedText};
use harmaug_core::{Guard, LoadOptions, ModelFiles};
use serde::Serialize;
use serde_json::{Value, json};

use crate::backend::{self, BackendChoice, BackendJob};
use crate::cli_args::FormatArg;
use crate::files::replace_file;
use crate::model_dir::ModelDir;
use data::{Example, Sampler, Sampling};
use loss::Targets;
use optimizer::{AdamW, AdamWConfig, GradientSum, LinearSchedule};
use state::{MetricsLog, RunSettings, SnapshotFiles, TrainerState};

#[derive(Debug, Args)]
pub struct DistillArgs {
    /// The student to start from: a HF model directory (`config.json`, `model.safetensors`,
    /// `tokenizer.json`) or Hub model id (`OWNER/NAME[@REVISION]`) of a BERT or DeBERTa-v2/v3
    /// model, with or without a classifier.
    #[arg(long)]
    model: PathBuf,
    /// Training data (repeatable): JSONL rows `{"prompt", "response"?, "label"?,
    /// "teacher_score"?}` or any format `harmaug eval` reads.
    #[arg(long = "train", required = true)]
    train: Vec<PathBuf>,
    /// Output directory: the trained student, `metrics.jsonl` and `trainer_state/`.
    #[arg(long)]
    out: PathBuf,
    /// Continue the run saved in `--out` (same data and hyper-parameters).
    #[arg(long)]
    resume: bool,
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendChoice,
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Rows per optimiser update (the effective batch).
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Rows per forward/backward pass; gradients are accumulated up to `--batch-size`.
    #[arg(long, default_value_t = 16)]
    micro_batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-5)]
    lr: f64,
    /// Linear warm-up, in updates.
    #[arg(long, default_value_t = 100)]
    warmup_steps: usize,
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    #[arg(long, default_value_t = 0.9)]
    beta1: f64,
    #[arg(long, default_value_t = 0.999)]
    beta2: f64,
    #[arg(long, default_value_t = 1e-8)]
    adam_epsilon: f64,
    /// Weight of the KL term against the teacher score (the CE term gets 1 − λ).
    #[arg(long = "lambda", default_value_t = 0.5)]
    lambda: f64,
    /// Global gradient-norm clip (0 disables).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Truncation length. DeBERTa's `max_position_embeddings` is raised to match, as the paper
    /// does; BERT cannot go past its position table and is capped with a warning.
    #[arg(long, default_value_t = 1024)]
    max_length: usize,
    #[arg(long, value_enum, default_value = "balanced")]
    sampling: Sampling,
    /// Put rows of similar length in the same effective batch (windows of 50 batches sorted by
    /// length, batch order shuffled), as transformers' `group_by_length`: far less padding
    /// when short prompts and long prompt + response pairs are mixed.
    #[arg(long)]
    group_by_length: bool,
    /// Rows drawn per epoch by balanced sampling (default: as many as the training rows); sets
    /// the run's length independently of the data's size.
    #[arg(long)]
    samples_per_epoch: Option<usize>,
    /// Share of the rows held out (stratified) for end-of-epoch validation; 0 disables.
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Stop after this many updates (smoke runs); the schedule still spans every epoch.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Train data-parallel on these device indices of the backend (e.g. `--devices 0,1` with
    /// `--backend cuda`): each update's micro-batches are dealt round-robin to one model copy
    /// per device, and the gradients are summed on the first. Default: the backend's default
    /// device; on the CPU (burn-flex) one copy per core on it, up to the micro-batches of an
    /// update (`--devices 0` trains one).
    #[arg(long, value_delimiter = ',')]
    devices: Vec<u16>,
    /// Snapshot the run every N updates (and always at the end).
    #[arg(long, default_value_t = 100)]
    save_every: usize,
    /// The format of the --train files (default: detected per file).
    #[arg(long, value_enum, default_value = "auto")]
    format: FormatArg,
    /// Leave out invalid rows (counted) instead of stopping at the first.
    #[arg(long)]
    skip_invalid: bool,
}

pub fn run(args: DistillArgs) -> Result<()> {
    if args.batch_size == 0 || args.micro_batch_size == 0 || args.epochs == 0 {
        bail!("--batch-size, --micro-batch-size and --epochs must be at least 1");
    }
    if args.samples_per_epoch == Some(0) {
        bail!("--samples-per-epoch must be at least 1");
    }
    if args.samples_per_epoch.is_some() && args.sampling != Sampling::Balanced {
        bail!("--samples-per-epoch needs --sampling balanced (shuffling deals every row once)");
    }
    if !(0.0..=1.0).contains(&args.lambda) {
        bail!("--lambda must be in [0, 1], not {}", args.lambda);
    }
    if !(0.0..1.0).contains(&args.val_fraction) {
        bail!(
            "--val-fraction must be in [0, 1), not {}",
            args.val_fraction
        );
    }
    backend::run(args.backend, Distill { args })
}

struct Distill {
    args: DistillArgs,
}

/// Model copies to train data-parallel when `--devices` is not given: on burn-flex one per
/// core, up to the micro-batches of an update. Its element-wise ops and small matmuls keep one
/// core busy, so a second copy fills the other (measured 1.28× examples/s on 2 cores,
/// docs/BENCHMARKS.md). GPU and other CPU backends: one.
fn default_copies(args: &DistillArgs) -> usize {
    let flex =
        cfg!(feature = "flex") && matches!(args.backend, BackendChoice::Cpu | BackendChoice::Flex);
    if !flex {
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores
        .min(args.batch_size.div_ceil(args.micro_batch_size))
        .max(1)
}

impl BackendJob for Distill {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let kind = device.id().type_id;
        let devices: Vec<B::Device> = if self.args.devices.is_empty() {
            let copies = default_copies(&self.args);
            if copies > 1 {
                tracing::info!(
                    "training {copies} model copies data-parallel on the CPU (--devices 0 for one)"
                );
            }
            vec![device; copies]
        } else {
            let count = B::device_count(kind);
            if let Some(&missing) = self.args.devices.iter().find(|&&i| usize::from(i) >= count) {
                bail!("--devices: device {missing} does not exist ({count} found)");
            }
            let at = |index_id| {
                B::Device::from_id(DeviceId {
                    type_id: kind,
                    index_id,
                })
            };
            self.args.devices.iter().map(|&i| at(i)).collect()
        };
        train::<B>(&self.args, &devices)
    }
}

/// One line of `metrics.jsonl` per update.
#[derive(Serialize)]
struct StepRecord {
    step: usize,
    epoch: f64,
    loss: f64,
    lr: f64,
    grad_norm: f64,
    examples_per_s: f64,
}

/// One line of `metrics.jsonl` per validation.
#[derive(Serialize)]
struct ValidationRecord {
    step: usize,
    epoch: f64,
    val_rows: usize,
    val_loss: f64,
    val_f1: Option<f64>,
    val_auprc: Option<f64>,
    val_precision: Option<f64>,
    val_recall: Option<f64>,
}

/// The whole run: restore or start, then updates until `--max-steps` or the schedule's end,
/// validating at each epoch's end and snapshotting every `--save-every` updates.
fn train<B: Backend>(args: &DistillArgs, devices: &[B::Device]) -> Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let snapshot = resume_point(args)?;
    let student = load_student::<B>(args, snapshot.as_deref(), &devices[0])?;
    let data = load_data(args, &student.parts, student.max_length)?;
    let steps_per_epoch = data.sampler.steps_per_epoch(args.batch_size);
    let total_steps = steps_per_epoch * args.epochs;
    let settings = run_settings(args, student.max_length, total_steps)?;
    let mut model = student.model;
    let (mut adamw, mut completed) =
        restore_optimizer(snapshot.as_deref(), &settings, &model, &student.parts)?;
    if completed > 0 {
        tracing::info!("resuming at update {completed} of {total_steps}");
    }
    let last_step = args.max_steps.map_or(total_steps, |m| m.min(total_steps));
    tracing::info!(
        "{total_steps} updates ({} epochs × {steps_per_epoch}) of {} rows in micro-batches of \
         {}; stopping after update {last_step}",
        args.epochs,
        args.batch_size,
        args.micro_batch_size
    );

    let mut metrics = MetricsLog::open(&args.out, completed)?;
    let bar = crate::progress::steps_bar(last_step, completed)?;
    let run = Run {
        args,
        config_json: &student.config_json,
        tokenizer_json: &student.tokenizer_json,
        tokenizer_config_json: student.tokenizer_config_json.as_deref(),
        settings: &settings,
        parts: &student.parts,
        examples: &data.examples,
        val_rows: &data.val_rows,
        unsafe_index: student.unsafe_index,
        steps_per_epoch,
        total_steps,
        devices,
    };
    let mut epoch_rows = (usize::MAX, Vec::new());
    while completed < last_step {
        let (epoch, step_in_epoch) = (completed / steps_per_epoch, completed % steps_per_epoch);
        if epoch_rows.0 != epoch {
            epoch_rows = (epoch, epoch_order(args, &data, epoch));
        }
        let micro = data::micro_batches(
            &epoch_rows.1,
            step_in_epoch,
            args.batch_size,
            args.micro_batch_size,
            &data.examples,
        );
        let record;
        (model, record) = run.step(model, &mut adamw, &micro, completed);
        completed = record.step;
        metrics.write(&record)?;
        bar.set_message(format!(
            "loss {:.4} lr {:.2e} {:.1} ex/s",
            record.loss, record.lr, record.examples_per_s
        ));
        bar.inc(1);

        if completed % steps_per_epoch == 0 || completed == last_step {
            bar.suspend(|| run.validate(&model, completed, &mut metrics))?;
        }
        if completed % args.save_every.max(1) == 0 || completed == last_step {
            run.snapshot(&model, &adamw, completed)?;
        }
    }
    bar.finish();
    run.write_student(&model)?;
    tracing::info!(
        "student saved to {} after {completed} of {total_steps} updates",
        args.out.display()
    );
    Ok(())
}

/// The snapshot `--resume` continues from (the newest in `--out`). Without `--resume`, an
/// `--out` that already holds a run is refused rather than overwritten.
fn resume_point(args: &DistillArgs) -> Result<Option<PathBuf>> {
    let latest = state::latest_snapshot(&args.out)?;
    match (args.resume, latest) {
        (true, None) => {
            tracing::warn!(
                "--resume: no snapshot in {} yet, starting afresh",
                args.out.display()
            );
            Ok(None)
        }
        (false, Some(_)) => bail!(
            "{} already holds a run; pass --resume to continue it or choose another --out",
            args.out.display()
        ),
        (_, latest) => Ok(latest),
    }
}

/// The student before its first (or next) update.
struct Student<B: Backend> {
    model: GuardModel<Autodiff<B>>,
    parts: GuardParts,
    unsafe_index: usize,
    config_json: String,
    /// Kept in memory: a resumed run's source snapshot is deleted once a newer one is written.
    tokenizer_json: Vec<u8>,
    /// Copied with the student: transformers must encode its inputs as it was trained on them.
    tokenizer_config_json: Option<String>,
    max_length: usize,
}

/// From the snapshot when resuming, else from `--model` with its config made binary and long
/// enough.
fn load_student<B: Backend>(
    args: &DistillArgs,
    snapshot: Option<&std::path::Path>,
    device: &B::Device,
) -> Result<Student<B>> {
    let source = ModelDir::open(snapshot.unwrap_or(&args.model))?;
    let (config_json, max_length) = student_config(source.files().config_json, args.max_length)
        .with_context(|| format!("{}/config.json", source.path.display()))?;
    let files = ModelFiles {
        config_json: &config_json,
        ..source.files()
    };
    let options = LoadOptions {
        max_length: Some(max_length),
        head_seed: args.seed,
        ..LoadOptions::default()
    };
    let guard = Guard::<Autodiff<B>>::load(&files, &options, device)
        .with_context(|| format!("loading model {}", source.path.display()))?;
    let tokenizer_json = files.tokenizer_json.to_vec();
    let tokenizer_config_json = source.tokenizer_config_json.clone();
    let labels = guard.labels();
    let unsafe_index = labels.binary_unsafe_index().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: distill trains a two-label softmax head; this model has {:?} labels {:?}",
            source.path.display(),
            labels.kind,
            labels.names
        )
    })?;
    let (model, parts) = guard.into_parts();
    Ok(Student {
        model,
        parts,
        unsafe_index,
        config_json,
        tokenizer_json,
        tokenizer_config_json,
        max_length,
    })
}

/// The encoded training rows, the validation rows held out of them, and the sampler that deals
/// the rest.
struct TrainingData {
    examples: Vec<Example>,
    val_rows: Vec<usize>,
    sampler: Sampler,
}

fn load_data(args: &DistillArgs, parts: &GuardParts, max_length: usize) -> Result<TrainingData> {
    let parse = ParseOptions {
        format: args.format.format(),
        level: Level::Response,
        skip_invalid: args.skip_invalid,
        ..Default::default()
    };
    let (examples, truncated) = data::load(&args.train, parse, &parts.encoder)?;
    if truncated > 0 {
        tracing::warn!("{truncated} rows are longer than {max_length} tokens and were truncated");
    }
    let labels: Vec<bool> = examples.iter().map(|e| e.unsafe_label).collect();
    let (train_rows, val_rows) = data::stratified_split(&labels, args.val_fraction, args.seed);
    if train_rows.is_empty() {
        bail!(
            "no training rows left after holding out --val-fraction {}",
            args.val_fraction
        );
    }
    let sampler = Sampler::new(
        &train_rows,
        &labels,
        args.sampling,
        args.samples_per_epoch,
        args.seed,
    );
    let [safe, unsafe_] = sampler.class_counts();
    let soft = examples
        .iter()
        .filter(|e| e.teacher_score.is_some())
        .count();
    tracing::info!(
        "{} training rows ({safe} safe, {unsafe_} unsafe; {soft} of all rows with a teacher \
         score), {} validation rows",
        train_rows.len(),
        val_rows.len()
    );
    if safe == 0 || unsafe_ == 0 {
        tracing::warn!(
            "the training rows hold only one class; the student cannot learn a boundary"
        );
    }
    Ok(TrainingData {
        examples,
        val_rows,
        sampler,
    })
}

/// The rows of `epoch` in the order its updates take them (grouped by length if asked).
fn epoch_order(args: &DistillArgs, data: &TrainingData, epoch: usize) -> Vec<usize> {
    let rows = data.sampler.epoch(epoch);
    if !args.group_by_length {
        return rows;
    }
    data::group_by_length(
        &rows,
        &data.examples,
        args.batch_size,
        args.seed ^ epoch as u64,
    )
}

/// Everything that decides the run's result; `--resume` must be given the same.
fn run_settings(args: &DistillArgs, max_length: usize, total_steps: usize) -> Result<RunSettings> {
    Ok(RunSettings {
        model: args.model.clone(),
        train_files: args
            .train
            .iter()
            .map(|p| Ok((p.clone(), std::fs::metadata(p)?.len())))
            .collect::<std::io::Result<_>>()?,
        epochs: args.epochs,
        batch_size: args.batch_size,
        max_length,
        lambda: args.lambda,
        max_grad_norm: args.max_grad_norm,
        adamw: AdamWConfig {
            beta1: args.beta1,
            beta2: args.beta2,
            epsilon: args.adam_epsilon,
            weight_decay: args.weight_decay,
        },
        schedule: LinearSchedule {
            peak: args.lr,
            warmup: args.warmup_steps,
            total: total_steps,
        },
        sampling: args.sampling,
        samples_per_epoch: args.samples_per_epoch,
        group_by_length: args.group_by_length,
        val_fraction: args.val_fraction,
        seed: args.seed,
    })
}

/// A fresh AdamW, or the snapshot's (after checking the run's settings are the saved ones),
/// with the number of updates already done.
fn restore_optimizer<B: Backend>(
    snapshot: Option<&std::path::Path>,
    settings: &RunSettings,
    model: &GuardModel<Autodiff<B>>,
    parts: &GuardParts,
) -> Result<(AdamW<B>, usize)> {
    let mut adamw = AdamW::<B>::new(settings.adamw);
    let Some(snapshot) = snapshot else {
        return Ok((adamw, 0));
    };
    let saved = state::read_state(snapshot)?;
    if saved.settings != *settings {
        bail!(
            "--resume: the arguments differ from the saved run's ({}); saved: {}",
            snapshot.join("state.json").display(),
            serde_json::to_string(&saved.settings)?
        );
    }
    let path = snapshot.join("optimizer.safetensors");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let moments = Checkpoint::from_bytes(&bytes)?;
    adamw
        .load_state::<Autodiff<B>, _>(model, &parts.names, &moments, saved.completed_steps as u64)
        .with_context(|| format!("loading {}", path.display()))?;
    Ok((adamw, saved.completed_steps))
}

/// What every step of a run reads.
struct Run<'a, B: Backend> {
    args: &'a DistillArgs,
    /// The student's `config.json`, `tokenizer.json` and `tokenizer_config.json` (if the
    /// source has one), written with every snapshot.
    config_json: &'a str,
    tokenizer_json: &'a [u8],
    tokenizer_config_json: Option<&'a str>,
    settings: &'a RunSettings,
    parts: &'a GuardParts,
    examples: &'a [Example],
    val_rows: &'a [usize],
    unsafe_index: usize,
    steps_per_epoch: usize,
    total_steps: usize,
    /// The model and optimiser live on the first; the others hold replicas.
    devices: &'a [B::Device],
}

impl<B: Backend> Run<'_, B> {
    /// Update number `completed + 1` on `micro`: summed gradients, clipped by their global
    /// norm, applied by AdamW at the scheduled rate. Returns the new weights and the record.
    fn step(
        &self,
        model: GuardModel<Autodiff<B>>,
        adamw: &mut AdamW<B>,
        micro: &[Vec<usize>],
        completed: usize,
    ) -> (GuardModel<Autodiff<B>>, StepRecord) {
        let started = Instant::now();
        // Dropout masks from the step number: a resumed run draws what the first would have.
        let seed = self.args.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ completed as u64;
        for (d, device) in self.devices.iter().enumerate() {
            Autodiff::<B>::seed(device, seed.wrapping_add(d as u64));
        }
        let rows: usize = micro.iter().map(Vec::len).sum();
        let (gradients, loss_sum) = self.gradients(&model, micro, seed);
        // The objective is the mean over the effective batch: scale the summed gradients.
        let grad_norm = gradients.global_norm() / rows as f64;
        let max_norm = self.args.max_grad_norm;
        let clip = if max_norm > 0.0 {
            (max_norm / (grad_norm + 1e-6)).min(1.0)
        } else {
            1.0
        };
        let lr = self.settings.schedule.lr(completed);
        let model = adamw.step::<Autodiff<B>, _>(model, gradients, lr, clip / rows as f64);
        let step = completed + 1;
        let record = StepRecord {
            step,
            epoch: step as f64 / self.steps_per_epoch as f64,
            loss: loss_sum / rows as f64,
            lr,
            grad_norm,
            examples_per_s: rows as f64 / started.elapsed().as_secs_f64(),
        };
        (model, record)
    }

    /// Summed gradients (on the first device) and summed loss of one update's micro-batches.
    /// With several devices, each gets a copy of the model and every n-th micro-batch, runs
    /// on its own thread, and its gradients are moved to the first device and added.
    /// Each copy's thread seeds its own dropout stream (`seed` + its index), so the masks do not
    /// depend on how the threads interleave.
    fn gradients(
        &self,
        model: &GuardModel<Autodiff<B>>,
        micro: &[Vec<usize>],
        seed: u64,
    ) -> (GradientSum<B>, f64) {
        let [first, others @ ..] = self.devices else {
            unreachable!("at least one device")
        };
        if others.is_empty() {
            // On a pool thread, so the kernels' splits fork instead of waking the pool. Not
            // the copies below: they run on threads of their own, and a pool thread waiting
            // for them leaves their splits one thread short (one run: 10.4 examples/s
            // against 17.5 with the whole step on the pool).
            return on_kernel_threads::<B, _>(|| {
                harmaug_core::kernels::seed_dropout(seed);
                self.accumulate(model, micro.iter(), first)
            });
        }
        let count = self.devices.len();
        std::thread::scope(|scope| {
            let workers: Vec<_> = self
                .devices
                .iter()
                .enumerate()
                .map(|(d, device)| {
                    let replica = if d == 0 {
                        model.clone()
                    } else {
                        model.clone().fork(device)
                    };
                    let share = micro.iter().skip(d).step_by(count);
                    scope.spawn(move || {
                        harmaug_core::kernels::seed_dropout(seed.wrapping_add(d as u64));
                        self.accumulate(&replica, share, device)
                    })
                })
                .collect();
            let mut total = (GradientSum::default(), 0.0);
            for worker in workers {
                let (gradients, loss) = worker.join().expect("a training thread panicked");
                total.0.merge(gradients);
                total.1 += loss;
            }
            total
        })
    }

    fn accumulate<'r>(
        &self,
        model: &GuardModel<Autodiff<B>>,
        micro: impl Iterator<Item = &'r Vec<usize>>,
        device: &B::Device,
    ) -> (GradientSum<B>, f64) {
        let mut gradients = GradientSum::<B>::default();
        let mut loss_sum = 0.0;
        for batch in micro {
            let (tensors, targets) = self.batch::<Autodiff<B>>(batch, device);
            let loss = targets.summed_loss(model.logits(&tensors));
            loss_sum += loss.clone().into_scalar().elem::<f64>();
            let grads = loss.backward();
            gradients.add::<Autodiff<B>, _>(model, &grads);
        }
        (gradients, loss_sum)
    }

    /// The padded tensors and the loss targets of `rows`.
    fn batch<BB: Backend<Device = B::Device>>(
        &self,
        rows: &[usize],
        device: &B::Device,
    ) -> (BatchTensors<BB>, Targets) {
        let encoded: Vec<&EncodedText> = rows.iter().map(|&i| &self.examples[i].encoded).collect();
        let padded = EncodedBatch::pad(&encoded, self.parts.encoder.pad_id());
        let hard: Vec<bool> = rows
            .iter()
            .map(|&i| self.examples[i].unsafe_label)
            .collect();
        let soft: Vec<Option<f32>> = rows
            .iter()
            .map(|&i| self.examples[i].teacher_score)
            .collect();
        (
            BatchTensors::from_batch(&padded, device),
            Targets::new(&hard, &soft, self.unsafe_index, self.args.lambda),
        )
    }

    /// Scores the validation rows with the current weights (no dropout) and logs F1 at 0.5,
    /// AUPRC and the validation loss.
    fn validate(
        &self,
        model: &GuardModel<Autodiff<B>>,
        step: usize,
        metrics: &mut MetricsLog,
    ) -> Result<()> {
        if self.val_rows.is_empty() {
            return Ok(());
        }
        let guard = Guard::<B>::from_parts(model.valid(), self.parts.clone(), &self.devices[0]);
        let batch = self.args.micro_batch_size.max(32);
        let mut loss = 0.0;
        let mut scores = Vec::with_capacity(self.val_rows.len());
        let mut order = self.val_rows.to_vec();
        order.sort_by_key(|&i| self.examples[i].encoded.ids.len());
        let mut labels = Vec::with_capacity(order.len());
        for chunk in order.chunks(batch) {
            let (tensors, targets) = self.batch::<B>(chunk, &self.devices[0]);
            let logits = guard.model().logits(&tensors);
            loss += targets
                .summed_loss(logits.clone())
                .into_scalar()
                .elem::<f64>();
            scores.extend(
                guard
                    .unsafe_probabilities(logits)?
                    .into_iter()
                    .map(f64::from),
            );
            labels.extend(chunk.iter().map(|&i| self.examples[i].unsafe_label));
        }
        let m = BinaryMetrics::compute(&labels, &scores, 0.5);
        let record = ValidationRecord {
            step,
            epoch: step as f64 / self.steps_per_epoch as f64,
            val_rows: labels.len(),
            val_loss: loss / labels.len() as f64,
            val_f1: m.f1,
            val_auprc: m.auprc,
            val_precision: m.precision,
            val_recall: m.recall,
        };
        let show = |v: Option<f64>| v.map_or("undefined".into(), |v| format!("{v:.4}"));
        tracing::info!(
            "validation after update {step}: loss {:.4}, F1 {}, AUPRC {} ({} rows)",
            record.val_loss,
            show(record.val_f1),
            show(record.val_auprc),
            record.val_rows
        );
        metrics.write(&record)
    }

    fn snapshot(
        &self,
        model: &GuardModel<Autodiff<B>>,
        adamw: &AdamW<B>,
        completed: usize,
    ) -> Result<()> {
        let weights =
            checkpoint::to_safetensors(&model.valid(), &self.parts.names, StoredDtype::F32)?;
        let moments = checkpoint::serialize(
            adamw.state::<Autodiff<B>, _>(model, &self.parts.names)?,
            StoredDtype::F32,
        )?;

        let state = TrainerState {
            completed_steps: completed,
            total_steps: self.total_steps,
            steps_per_epoch: self.steps_per_epoch,
            epoch: completed / self.steps_per_epoch,
            step_in_epoch: completed % self.steps_per_epoch,
            settings: self.settings.clone(),
            harmaug_version: env!("CARGO_PKG_VERSION").into(),
        };
        let mut files = vec![
            ("config.json", self.config_json.as_bytes()),
            ("model.safetensors", &weights),
            ("tokenizer.json", self.tokenizer_json),
            ("optimizer.safetensors", &moments),
        ];
        if let Some(json) = self.tokenizer_config_json {
            files.push(("tokenizer_config.json", json.as_bytes()));
        }
        let files = SnapshotFiles { files };
        let dir = state::write_snapshot(&self.args.out, &state, files)?;
        tracing::debug!("snapshot {}", dir.display());
        Ok(())
    }

    /// The student in `--out`, loadable by `harmaug score` and transformers.
    fn write_student(&self, model: &GuardModel<Autodiff<B>>) -> Result<()> {
        let out = &self.args.out;
        let weights =
            checkpoint::to_safetensors(&model.valid(), &self.parts.names, StoredDtype::F32)?;
        replace_file(&out.join("model.safetensors"), &weights)?;
        replace_file(&out.join("config.json"), self.config_json.as_bytes())?;
        replace_file(&out.join("tokenizer.json"), self.tokenizer_json)?;
        if let Some(json) = self.tokenizer_config_json {
            replace_file(&out.join("tokenizer_config.json"), json.as_bytes())?;
        }
        Ok(())
    }
}

/// The student's `config.json`: the source's, with a binary safe/unsafe label map and
/// the architecture transformers should load; `max_position_embeddings` raised to
/// `max_length` where the architecture allows (DeBERTa-v3's relative positions: the paper
/// trains at 1024), else the length capped at the position table.
/// Returns the JSON and the length to train at.
fn student_config(source: &str, max_length: usize) -> Result<(String, usize)> {
    let arch = ModelConfig::from_json(source)?.arch;
    let mut config: Value = serde_json::from_str(source)?;
    let Some(object) = config.as_object_mut() else {
        bail!("expected a JSON object");
    };
    let positions = arch.max_position_embeddings();
    let length = if max_length <= positions {
        max_length
    } else if arch.can_extend_positions() {
        object.insert("max_position_embeddings".into(), json!(max_length));
        max_length
    } else {
        tracing::warn!(
            "{} has {positions} positions: training at max length {positions}, not {max_length}",
            arch.hf_class()
        );
        positions
    };
    let labels = object.get("id2label").and_then(Value::as_object);
    let label_count = labels.map_or(2, |l| l.len());
    if label_count != 2 {
        bail!("`id2label` has {label_count} labels; a student guard has 2 (safe, unsafe)");
    }
    let names_unsafe =
        labels.is_some_and(|l| l.values().filter_map(Value::as_str).any(is_unsafe_name));
    if !names_unsafe {
        object.insert("id2label".into(), json!({"0": "safe", "1": "unsafe"}));
        object.insert("label2id".into(), json!({"safe": 0, "unsafe": 1}));
    }
    object.insert("architectures".into(), json!([arch.hf_class()]));
    Ok((serde_json::to_string_pretty(&config)?, length))
}
