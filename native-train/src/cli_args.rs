//! Arguments that several commands take, defined once (as ripgrep keeps its flags in one
//! place): how a guard model runs, and the data-set format.

use clap::builder::PossibleValue;
use clap::{Args, ValueEnum};
use harmaug_core::LoadOptions;
use harmaug_core::datasets::Format;
use harmaug_core::tokenize::LongInput;

use crate::backend::BackendChoice;

/// How a guard runs: every command that scores with a model flattens these in.
#[derive(Debug, Clone, Args)]
pub struct GuardRunArgs {
    /// The burn backend to run the model on.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendChoice,
    /// Truncation length in tokens (default: the model's max_position_embeddings, at most 512).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Inputs per forward pass.
    #[arg(long, alias = "max-batch", default_value_t = 32)]
    pub batch_size: usize,
    /// Seed for a classifier head the checkpoint lacks (base models such as MiniLM).
    #[arg(long, default_value_t = 0)]
    pub head_seed: u64,
    /// Labels whose probabilities make the score, P(unsafe): names or indices, comma-separated
    /// (default: by name — labels called unsafe/harmful/toxic, else those not called
    /// safe/benign/neutral…, else label 1; a bundle's manifest may record its own choice).
    #[arg(long, value_delimiter = ',')]
    pub unsafe_labels: Option<Vec<String>>,
    /// Inputs past the max length: `chunk`, overlapping windows of the max length (a quarter
    /// shared), score = the highest window's; or `truncate`, as transformers' pipelines do.
    /// The default, chunk, was measured better on the benchmarks (docs/BENCHMARKS.md).
    #[arg(long, value_enum, default_value = "chunk")]
    pub long_input: LongInputArg,
    /// How an int8 bundle's matrices run on the CPU backend: `f32`, dequantised once at load
    /// (the exact bundle, as every backend runs it), or `int8`, dynamic int8 kernels (2–5×
    /// faster layers; scores drift slightly, docs/BENCHMARKS.md). No effect on other checkpoints.
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: PrecisionArg,
}

/// `--precision`: core's [`LoadOptions::int8_kernels`] for clap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    F32,
    Int8,
}

/// `--long-input`, core's [`LongInput`] for clap.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LongInputArg {
    Truncate,
    Chunk,
}

impl GuardRunArgs {
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            max_length: self.max_length,
            head_seed: self.head_seed,
            unsafe_labels: self.unsafe_labels.clone(),
            long_input: match self.long_input {
                LongInputArg::Truncate => LongInput::Truncate,
                LongInputArg::Chunk => LongInput::Chunk,
            },
            int8_kernels: self.precision == PrecisionArg::Int8,
        }
    }
}

/// `--format`: `auto` (detected from the rows) or one of core's formats by its name. The
/// choices are generated from `Format::ALL`, so a new format needs no change here.
#[derive(Debug, Clone, Copy)]
pub struct FormatArg(Option<Format>);

static FORMAT_CHOICES: [FormatArg; Format::ALL.len() + 1] = {
    let mut choices = [FormatArg(None); Format::ALL.len() + 1];
    let mut i = 0;
    while i < Format::ALL.len() {
        choices[i + 1] = FormatArg(Some(Format::ALL[i]));
        i += 1;
    }
    choices
};

impl FormatArg {
    /// The chosen format; `None` = detect it.
    pub fn format(self) -> Option<Format> {
        self.0
    }
}

impl ValueEnum for FormatArg {
    fn value_variants<'a>() -> &'a [Self] {
        &FORMAT_CHOICES
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.0.map_or("auto", Format::name)))
    }
}
