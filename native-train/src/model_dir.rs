//! A HF model directory on disk (`config.json`, `model.safetensors`, `tokenizer.json`), read
//! into the byte form that `harmaug_core` loads from.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use harmaug_core::checkpoint::ReleasePages;
use harmaug_core::{Guard, LoadOptions, ModelFiles};
use memmap2::Mmap;
#[cfg(unix)]
use memmap2::UncheckedAdvice;

pub struct ModelDir {
    pub path: PathBuf,
    config_json: String,
    weights: Mmap,
    tokenizer_json: Vec<u8>,
}

impl ModelDir {
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_dir() {
            anyhow::bail!("{}: not a model directory", path.display());
        }
        let config_path = path.join("config.json");
        let config_json = fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        let tokenizer_path = path.join("tokenizer.json");
        let tokenizer_json = fs::read(&tokenizer_path)
            .with_context(|| format!("reading {}", tokenizer_path.display()))?;
        let weights_path = path.join("model.safetensors");
        let file = File::open(&weights_path)
            .with_context(|| format!("opening {}", weights_path.display()))?;
        // SAFETY: the map is read-only and lives as long as `self`; like every reader of
        // checkpoints we assume the file is not truncated underneath us while loading.
        let weights = unsafe { Mmap::map(&file) }
            .with_context(|| format!("mapping {}", weights_path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            config_json,
            weights,
            tokenizer_json,
        })
    }

    /// The guard in this directory on backend `B`.
    pub fn load_guard<B: Backend>(
        &self,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<Guard<B>> {
        Guard::load(&self.files(), options, device)
            .with_context(|| format!("loading model {}", self.path.display()))
    }

    pub fn files(&self) -> ModelFiles<'_> {
        ModelFiles {
            config_json: &self.config_json,
            weights: &self.weights,
            tokenizer_json: &self.tokenizer_json,
            release_weights: Some(self),
        }
    }
}

impl ReleasePages for ModelDir {
    /// Drops the mapped pages of a converted tensor from memory (Unix; elsewhere a no-op).
    #[cfg(not(unix))]
    fn release(&self, _bytes: &[u8]) {}

    /// Drops the mapped pages of a converted tensor from memory (Unix; elsewhere a no-op).
    #[cfg(unix)]
    fn release(&self, bytes: &[u8]) {
        let offset = bytes.as_ptr() as usize - self.weights.as_ptr() as usize;
        // SAFETY: the mapping is private and read-only, so dropping pages loses nothing: a
        // later read (a tensor sharing an edge page) faults them back in from the file.
        let dropped = unsafe {
            self.weights
                .unchecked_advise_range(UncheckedAdvice::DontNeed, offset, bytes.len())
        };
        if let Err(e) = dropped {
            tracing::debug!("madvise(DONTNEED) on model.safetensors failed: {e}");
        }
    }
}
