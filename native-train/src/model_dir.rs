//! A HF model directory on disk (`config.json`, `model.safetensors` or its shards,
//! `tokenizer.json`, and a bundle's `manifest.json` when there is one), read into the byte form
//! that `harmaug_core` loads from. A Hub repository id in place of a directory is downloaded
//! first ([`crate::hub`]).

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;
use harmaug_core::bundle::{self, Manifest};
use harmaug_core::checkpoint::ReleasePages;
use harmaug_core::{Guard, LoadOptions, ModelFiles};
use memmap2::Mmap;

use crate::hub;
#[cfg(unix)]
use memmap2::UncheckedAdvice;

pub struct ModelDir {
    pub path: PathBuf,
    /// Bundles written by `harmaug export` have one; HF model directories do not.
    pub manifest: Option<Manifest>,
    config_json: String,
    weights: Weights,
    tokenizer_json: Vec<u8>,
    /// Optional; decides whether the model gets segment ids (see `passes_token_type_ids`).
    pub tokenizer_config_json: Option<String>,
}

enum Weights {
    /// `model.safetensors`, or each shard of a sharded checkpoint.
    Mapped(Vec<Mmap>),
    /// The default guard compiled into the binary.
    #[cfg(feature = "default-model")]
    Embedded(&'static [u8]),
}

/// The project's default guard (models/default/, see its README), compiled in so that
/// `harmaug score "text"` works anywhere without a download.
#[cfg(feature = "default-model")]
mod embedded {
    macro_rules! default_model_file {
        ($name:literal) => {
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../models/default/",
                $name
            ))
        };
    }
    pub const CONFIG: &[u8] = default_model_file!("config.json");
    pub const MANIFEST: &[u8] = default_model_file!("manifest.json");
    pub const TOKENIZER: &[u8] = default_model_file!("tokenizer.json");
    pub const WEIGHTS: &[u8] = default_model_file!("model.safetensors");
}

impl ModelDir {
    /// The model at `spec`: a local directory, else a Hub repository id
    /// (`OWNER/NAME[@REVISION]`, `hf://…`), downloaded into the Hub cache first.
    pub fn open(spec: &Path) -> Result<Self> {
        if spec.is_dir() {
            return Self::open_dir(spec);
        }
        let Some(repo) = spec.to_str().and_then(hub::RepoId::parse) else {
            bail!("{}: not a model directory", spec.display());
        };
        let dir = hub::model_snapshot(&repo).with_context(|| {
            format!(
                "{}: no such directory, so read as a Hub model id",
                spec.display()
            )
        })?;
        Self::open_dir(&dir)
    }

    fn open_dir(path: &Path) -> Result<Self> {
        let config_path = path.join("config.json");
        let config_json = fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        let tokenizer_path = path.join("tokenizer.json");
        let tokenizer_json = fs::read(&tokenizer_path)
            .with_context(|| format!("reading {}", tokenizer_path.display()))?;
        let tokenizer_config_json = read_optional(&path.join("tokenizer_config.json"))?;
        let manifest_path = path.join("manifest.json");
        let manifest = read_optional(&manifest_path)?
            .map(|json| Manifest::parse(&json))
            .transpose()
            .with_context(|| format!("{}", manifest_path.display()))?;
        let dir = Self {
            path: path.to_path_buf(),
            manifest,
            config_json,
            weights: Weights::Mapped(map_weights(path)?),
            tokenizer_json,
            tokenizer_config_json,
        };
        dir.check_against_manifest()?;
        Ok(dir)
    }

    /// A bundle's files against the sizes and sha256 its manifest lists (as the browser checks
    /// its downloads): a damaged or altered bundle is refused before it scores anything.
    fn check_against_manifest(&self) -> Result<()> {
        let Some(manifest) = &self.manifest else {
            return Ok(());
        };
        let weights = self.weights();
        let mut files = vec![
            ("config.json", self.config_json.as_bytes()),
            ("tokenizer.json", &self.tokenizer_json[..]),
        ];
        if let [single] = weights[..] {
            files.push(("model.safetensors", single));
        }
        if let Some(json) = &self.tokenizer_config_json {
            files.push(("tokenizer_config.json", json.as_bytes()));
        }
        for (name, bytes) in files {
            manifest
                .check_file(name, bytes)
                .with_context(|| format!("{}", self.path.display()))?;
        }
        Ok(())
    }

    /// `path`, or without one the default guard compiled into harmaug.
    pub fn open_or_default(path: Option<&Path>) -> Result<Self> {
        match path {
            Some(path) => Self::open(path),
            None => Self::embedded_default(),
        }
    }

    #[cfg(feature = "default-model")]
    fn embedded_default() -> Result<Self> {
        tracing::info!("no --model: using the built-in default guard (models/default)");
        let manifest = Manifest::parse(std::str::from_utf8(embedded::MANIFEST)?)
            .context("the built-in guard's manifest.json")?;
        Ok(Self {
            path: PathBuf::from("<built-in default guard>"),
            manifest: Some(manifest),
            config_json: String::from_utf8(embedded::CONFIG.to_vec())?,
            weights: Weights::Embedded(embedded::WEIGHTS),
            tokenizer_json: embedded::TOKENIZER.to_vec(),
            tokenizer_config_json: None,
        })
    }

    #[cfg(not(feature = "default-model"))]
    fn embedded_default() -> Result<Self> {
        anyhow::bail!(
            "no model given: pass --model DIR (or set HARMAUG_MODEL); this harmaug was built \
             without the default guard (feature `default-model`)"
        )
    }

    /// The score at and above which this model's verdict is unsafe: the bundle's calibrated
    /// threshold, else 0.5.
    pub fn threshold(&self) -> f64 {
        bundle::operating_threshold(self.manifest.as_ref())
    }

    /// The guard in this directory on backend `B`.
    pub fn load_guard<B: Backend>(
        &self,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<Guard<B>> {
        // A bundle remembers the unsafe labels chosen at export; the command line wins.
        let mut options = options.clone();
        if options.unsafe_labels.is_none() {
            options.unsafe_labels = self
                .manifest
                .as_ref()
                .map(|manifest| manifest.unsafe_labels.clone())
                .filter(|labels| !labels.is_empty());
        }
        Guard::load(&self.files(), &options, device)
            .with_context(|| format!("loading model {}", self.path.display()))
    }

    fn weights(&self) -> Vec<&[u8]> {
        match &self.weights {
            Weights::Mapped(maps) => maps.iter().map(|map| &map[..]).collect(),
            #[cfg(feature = "default-model")]
            Weights::Embedded(bytes) => vec![bytes],
        }
    }

    pub fn files(&self) -> ModelFiles<'_> {
        ModelFiles {
            config_json: &self.config_json,
            weights: self.weights(),
            tokenizer_json: &self.tokenizer_json,
            tokenizer_config_json: self.tokenizer_config_json.as_deref(),
            release_weights: match self.weights {
                Weights::Mapped(_) => Some(self),
                #[cfg(feature = "default-model")]
                Weights::Embedded(_) => None,
            },
        }
    }
}

/// `model.safetensors`, else every shard its index names, memory-mapped.
fn map_weights(dir: &Path) -> Result<Vec<Mmap>> {
    let single = dir.join("model.safetensors");
    let index = dir.join(hub::SHARD_INDEX);
    let files = if !single.exists() && index.exists() {
        hub::shard_files(&index)?
            .into_iter()
            .map(|name| dir.join(name))
            .collect()
    } else {
        vec![single]
    };
    files
        .iter()
        .map(|path| {
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            // SAFETY: the map is read-only and lives as long as the ModelDir; like every
            // reader of checkpoints we assume the file is not truncated underneath us.
            unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))
        })
        .collect()
}

/// A text file the model directory may lack: `None` when absent, an error for anything else.
fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

impl ReleasePages for ModelDir {
    /// Drops the mapped pages of a converted tensor from memory (Unix; elsewhere a no-op).
    #[cfg(not(unix))]
    fn release(&self, _bytes: &[u8]) {}

    /// Drops the mapped pages of a converted tensor from memory (Unix; elsewhere a no-op).
    #[cfg(unix)]
    fn release(&self, bytes: &[u8]) {
        #[cfg_attr(not(feature = "default-model"), allow(irrefutable_let_patterns))]
        let Weights::Mapped(maps) = &self.weights else {
            return;
        };
        let start = bytes.as_ptr() as usize;
        let Some(map) = maps.iter().find(|map| {
            (map.as_ptr() as usize..map.as_ptr() as usize + map.len()).contains(&start)
        }) else {
            return;
        };
        let offset = start - map.as_ptr() as usize;
        // SAFETY: the mapping is private and read-only, so dropping pages loses nothing: a
        // later read (a tensor sharing an edge page) faults them back in from the file.
        let dropped =
            unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, offset, bytes.len()) };
        if let Err(e) = dropped {
            tracing::debug!("madvise(DONTNEED) on model.safetensors failed: {e}");
        }
    }
}
