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
