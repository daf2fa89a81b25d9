//! The progress bar every long command shows (hidden when stderr is not a terminal).

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` inputs, labelled `what`, with rate and ETA.
pub fn bar(len: usize, what: &str) -> Result<ProgressBar> {
    let style = ProgressStyle::with_template(
        "{spinner} {msg} {pos}/{len} [{elapsed_precise}] {per_sec} ETA {eta}",
    )?;
    let bar = ProgressBar::new(len as u64).with_style(style);
    bar.set_message(what.to_string());
    Ok(bar)
}

/// A bar over training updates, starting at `done` (a resumed run), with a message slot for
/// loss and learning rate.
pub fn steps_bar(total: usize, done: usize) -> Result<ProgressBar> {
    let style = ProgressStyle::with_template(
        "{spinner} update {pos}/{len} [{elapsed_precise}] {msg} ETA {eta}",
    )?;
    let bar = ProgressBar::new(total as u64).with_style(style);
    bar.set_position(done as u64);
    bar.reset_eta();
    Ok(bar)
}

/// A bar over a download of `len` bytes (a spinner when the size is unknown).
pub fn bytes_bar(len: Option<u64>, what: &str) -> Result<ProgressBar> {
    let style = ProgressStyle::with_template(
        "{spinner} {msg} {bytes}/{total_bytes} [{elapsed_precise}] {bytes_per_sec} ETA {eta}",
    )?;
    let bar = ProgressBar::new(len.unwrap_or(0)).with_style(style);
    bar.set_message(what.to_string());
    Ok(bar)
}
