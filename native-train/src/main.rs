//! The `harmaug` process: allocator, logs and exit code around the library's `run` (lib.rs).

use std::io::{ErrorKind, IsTerminal};
use std::process::ExitCode;

use clap::Parser;
use harmaug::Cli;
use tracing_subscriber::EnvFilter;

/// Tensors are large, short-lived allocations; glibc returns them to the kernel and every new
/// one page-faults afresh (8% of a CPU forward pass). mimalloc keeps them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    match harmaug::run(Cli::parse().command) {
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

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
    })
}
