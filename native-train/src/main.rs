//! The `harmaug` command line: each subcommand is a module; this file only parses arguments.

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

use std::io::{ErrorKind, IsTerminal};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Tensors are large, short-lived allocations; glibc returns them to the kernel and every new
/// one page-faults afresh (8% of a CPU forward pass). mimalloc keeps them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "harmaug",
    version,
    about = "Build small, fast safety guards for LLM apps (HarmAug)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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

/// mimalloc's `mi_option_purge_delay` (index 15 of `mi_option_e` in mimalloc 2 and 3; the Rust
/// binding does not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // Never hand freed memory back to the kernel: training frees and reallocates the same
    // large buffers every step, and each return cost a fresh zeroed page on the next
    // allocation (15% of a CPU training step in kernel `clear_page`). Peak memory is unchanged.
    // SAFETY: sets a plain integer option; mimalloc reads it on each purge decision.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only on a terminal: logs redirected to files stay plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_env("HARMAUG_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`harmaug score … | head -1`): what it wanted it
        // has; like other Unix tools, stop quietly.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:?}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
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

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
    })
}
