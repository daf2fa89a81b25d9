//! What a run leaves on disk, written so that a kill -9 at any moment loses nothing saved:
//!
//! ```text
//! OUT/config.json, model.safetensors, tokenizer.json   the student (HF layout), at the end
//! OUT/metrics.jsonl                                    one line per update and per validation
//! OUT/trainer_state/latest                             name of the newest complete snapshot
//! OUT/trainer_state/step-000120/                       a model directory plus state.json and
//!                                                      optimizer.safetensors
//! ```
//!
//! A snapshot is written to a temporary directory and renamed into place, then `latest` is
//! replaced by rename: a reader sees the old snapshot or the new one, never half of one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::optimizer::{AdamWConfig, LinearSchedule};
use crate::files::{replace_file, write_synced};

/// Everything that must match for a run to be resumed: the data, the starting model and the
/// hyper-parameters (not the backend, batch split or save interval, which may change).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    pub model: PathBuf,
    /// `--train` files with their sizes in bytes.
    pub train_files: Vec<(PathBuf, u64)>,
    pub epochs: usize,
    pub batch_size: usize,
    pub max_length: usize,
    pub lambda: f64,
    pub max_grad_norm: f64,
    pub adamw: AdamWConfig,
    pub schedule: LinearSchedule,
    pub sampling: super::data::Sampling,
    /// Rows drawn per epoch (balanced sampling); `None` = the training rows.
    #[serde(default)]
    pub samples_per_epoch: Option<usize>,
    #[serde(default)]
    pub group_by_length: bool,
    pub val_fraction: f64,
    pub seed: u64,
}

/// `state.json` of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimiser updates applied; the next update is this one (0-based).
    pub completed_steps: usize,
    pub total_steps: usize,
    pub steps_per_epoch: usize,
    /// Where the sampler stands: it redraws epoch `epoch` from the seed and skips
    /// `step_in_epoch` batches.
    pub epoch: usize,
    pub step_in_epoch: usize,
    /// Dropout masks are drawn from the backend RNG seeded with `seed` and the step, so a
    /// resumed run draws the same masks as an uninterrupted one.
    pub settings: RunSettings,
    pub harmaug_version: String,
}

pub const STATE_DIR: &str = "trainer_state";

pub fn state_dir(out: &Path) -> PathBuf {
    out.join(STATE_DIR)
}

/// The newest complete snapshot, if any.
pub fn latest_snapshot(out: &Path) -> Result<Option<PathBuf>> {
    let latest = state_dir(out).join("latest");
    if !latest.exists() {
        return Ok(None);
    }
    let name =
        fs::read_to_string(&latest).with_context(|| format!("reading {}", latest.display()))?;
    let dir = state_dir(out).join(name.trim());
    if !dir.join("state.json").is_file() {
        bail!(
            "{} points to {}, which has no state.json",
            latest.display(),
            dir.display()
        );
    }
    Ok(Some(dir))
}

pub fn read_state(snapshot: &Path) -> Result<TrainerState> {
    let path = snapshot.join("state.json");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Files of a snapshot, by name.
pub struct SnapshotFiles<'a> {
    pub files: Vec<(&'a str, &'a [u8])>,
}

/// Writes a snapshot for `state` and makes it the latest; older snapshots are removed.
pub fn write_snapshot(
    out: &Path,
    state: &TrainerState,
    files: SnapshotFiles<'_>,
) -> Result<PathBuf> {
    let root = state_dir(out);
    let name = format!("step-{:06}", state.completed_steps);
    let final_dir = root.join(&name);
    let tmp_dir = root.join(format!("{name}.tmp"));
    if tmp_dir.exists() {
        fs::remove_dir_all(&tmp_dir)?;
    }
    fs::create_dir_all(&tmp_dir).with_context(|| format!("creating {}", tmp_dir.display()))?;
    for (file, bytes) in files.files {
        write_synced(&tmp_dir.join(file), bytes)?;
    }
    write_synced(
        &tmp_dir.join("state.json"),
        serde_json::to_string_pretty(state)?.as_bytes(),
    )?;
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir)?;
    }
    fs::rename(&tmp_dir, &final_dir)?;
    replace_file(&root.join("latest"), name.as_bytes())?;
    for entry in fs::read_dir(&root)? {
        let path = entry?.path();
        let stale = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("step-") && n != name);
        if stale && path.is_dir() {
            fs::remove_dir_all(&path)?;
        }
    }
    Ok(final_dir)
}

/// `metrics.jsonl`, appended line by line.
pub struct MetricsLog {
    file: fs::File,
}

impl MetricsLog {
    /// Opens the log for appending; when resuming, first drops lines past `completed_steps`
    /// (written after the snapshot the run resumes from, and about to be redone).
    pub fn open(out: &Path, completed_steps: usize) -> Result<Self> {
        let path = out.join("metrics.jsonl");
        if path.exists() {
            let text =
                fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let kept: String = text
                .lines()
                .filter(|line| {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64))
                        .is_some_and(|step| step as usize <= completed_steps)
                })
                .flat_map(|line| [line, "\n"])
                .collect();
            replace_file(&path, kept.as_bytes())?;
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { file })
    }

    pub fn write(&mut self, record: &impl Serialize) -> Result<()> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        Ok(())
    }
}
