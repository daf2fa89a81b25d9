//! The `harmaug` command line: each subcommand is a module, [`Cli`] parses the arguments and
//! [`run`] dispatches them; `main.rs` only sets the process up (allocator, logs, exit code).
//! [`untrusted`] opens the readers of downloaded bytes to the fuzz targets (`fuzz/`) and their
//! regression tests; nothing else here is a public API.

mod augment;
mod backend;
mod cli_args;
mod data_files;
mod distill;
mod eval;
mod export;
mod files;
mod hub;
mod label;
mod llm;
mod model_dir;
mod plot;
mod progress;
mod resumable;
mod score;
mod serve;
pub mod untrusted;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "harmaug",
    version,
    about = "Build small, fast safety guards for LLM apps (HarmAug)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Score prompts (or prompt + response pairs) with P(unsafe), as JSONL on stdout.
    Score(score::ScoreArgs),
    /// Train a student guard (HarmAug distillation): hard labels and teacher scores, resumable.
    Distill(distill::DistillArgs),
    /// HarmAug synthesis with an LLM: `generate` harmful prompts, then `respond` to them.
    #[command(subcommand)]
    Augment(augment::AugmentCommand),
    /// Add a teacher's P(unsafe) (`teacher_score`) to every row: an LLM guard or a checkpoint.
    Label(label::LabelArgs),
    /// Write a model as a bundle for the web package (f32, f16 or int8) with a manifest, and
    /// measure its drift from the original.
    Export(export::ExportArgs),
    /// Evaluate guards on labelled benchmarks: F1, AUPRC and more, equal to scikit-learn's.
    Eval(eval::EvalArgs),
    /// A local moderation server: OpenAI's `/v1/moderations` API with dynamic batching.
    Serve(serve::ServeArgs),
}

/// Runs one subcommand to the end.
pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Score(args) => score::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Distill(args) => distill::run(args),
        Command::Augment(command) => augment::run(command),
        Command::Label(args) => label::run(args),
        Command::Export(args) => export::run(args),
        Command::Serve(args) => serve::run(args),
    }
}
