//! A loaded guard: model + tokenizer + label mapping → P(unsafe). The one scoring path that the
//! CLI, the evaluator and the web package all call.

use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::{Tensor, backend::Backend};

use crate::checkpoint::{Checkpoint, ParamNames, ReleasePages};
use crate::config::{HeadKind, Labels, ModelConfig};
use crate::models::{BatchTensors, FreshParts, GuardModel};
pub use crate::tokenize::GuardInput;
use crate::tokenize::{EncodedBatch, EncodedText, LongInput, TextEncoder, passes_token_type_ids};
use crate::{Error, Result};

/// The three files of a HF model directory, as bytes (core does no file I/O).
pub struct ModelFiles<'a> {
    pub config_json: &'a str,
    /// `model.safetensors`, or every shard of a sharded checkpoint.
    pub weights: Vec<&'a [u8]>,
    pub tokenizer_json: &'a [u8],
    /// `tokenizer_config.json`, when the model has one: it decides whether the model gets
    /// segment ids ([`passes_token_type_ids`](crate::tokenize::passes_token_type_ids)).
    pub tokenizer_config_json: Option<&'a str>,
    /// Lets a memory-mapped `weights` drop pages once converted (see [`ReleasePages`]).
    pub release_weights: Option<&'a dyn ReleasePages>,
}

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Truncation length; `None` = the model's `max_position_embeddings`, capped at 512.
    pub max_length: Option<usize>,
    /// Seed for parts the checkpoint lacks (pooler, classifier of a base model).
    pub head_seed: u64,
    /// Which labels make P(unsafe) (names or indices); `None` = the default choice by name
    /// (see [`crate::labels`]).
    pub unsafe_labels: Option<Vec<String>>,
    /// Inputs past `max_length`: truncated, or scored by windows.
    pub long_input: LongInput,
    /// An int8 bundle's linear layers run as dynamic int8 (activations quantised per row, integer
    /// dot products; [`crate::kernels::Int8Linear`]) on the CPU backend: 2–5× faster layers,
    /// scores within the drift docs/BENCHMARKS.md reports. Off: its matrices are dequantised to
    /// f32 once at load and every backend runs the exact bundle. No effect on other checkpoints,
    /// other backends, or training.
    pub int8_kernels: bool,
}

/// Longest default input: BERT-family checkpoints are trained at 512 at most.
pub const DEFAULT_MAX_LENGTH_CAP: usize = 512;

/// P(unsafe) per input, in input order, and every label's probability.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    pub scores: Vec<f32>,
    /// Each input's label probabilities (softmax, or a sigmoid per label for multi-label
    /// heads), row-major `[inputs, num_labels]`.
    pub label_probabilities: Vec<f32>,
    pub num_labels: usize,
    /// How many inputs were longer than `max_length` and got truncated.
    pub truncated: usize,
}

impl Scores {
    /// Input `i`'s probability of each label, in label order.
    pub fn label_probabilities_of(&self, i: usize) -> &[f32] {
        &self.label_probabilities[i * self.num_labels..(i + 1) * self.num_labels]
    }
}

pub struct Guard<B: Backend> {
    model: GuardModel<B>,
    parts: GuardParts,
    device: B::Device,
}

/// Everything of a guard except the model: lets a trainer own the model and build scoring
/// guards from it (on the inner backend, for validation) without reloading anything.
#[derive(Clone)]
pub struct GuardParts {
    pub encoder: TextEncoder,
    pub config: ModelConfig,
    /// Parts initialised fresh because the checkpoint lacked them.
    pub fresh: FreshParts,
    /// The HF name of every parameter, to save the model back (see [`crate::checkpoint`]).
    pub names: ParamNames,
}

impl<B: Backend> Guard<B> {
    pub fn load(files: &ModelFiles<'_>, options: &LoadOptions, device: &B::Device) -> Result<Self> {
        let mut config = ModelConfig::from_json(files.config_json)?;
        if let Some(chosen) = &options.unsafe_labels {
            config.labels = config.labels.with_unsafe_labels(chosen)?;
        }
        let positions = config.arch.max_position_embeddings();
        let max_length = match options.max_length {
            None => positions.min(DEFAULT_MAX_LENGTH_CAP),
            Some(n) if n > positions => {
                return Err(Error::Config(format!(
                    "max length {n} exceeds max_position_embeddings {positions}"
                )));
            }
            Some(n) => n,
        };
        let encoder =
            TextEncoder::from_bytes(files.tokenizer_json, max_length, config.arch.pad_token_id())?
                .with_segment_ids(passes_token_type_ids(files.tokenizer_config_json)?)
                .with_long_input(options.long_input);
        let checkpoint = Checkpoint::from_shards(&files.weights)?
            .with_release(files.release_weights)
            .with_int8_kernels(options.int8_kernels);
        let (model, fresh) = GuardModel::load(&config, &checkpoint, options.head_seed, device)?;
        if !fresh.names.is_empty() {
            tracing::warn!(
                parts = ?fresh.names,
                seed = options.head_seed,
                "checkpoint has no trained head: initialised it from the seed; scores are \
                 meaningless until the model is fine-tuned"
            );
        }
        let names = checkpoint.param_names();
        Ok(Self {
            model,
            parts: GuardParts {
                encoder,
                config,
                fresh,
                names,
            },
            device: device.clone(),
        })
    }

    pub fn from_parts(model: GuardModel<B>, parts: GuardParts, device: &B::Device) -> Self {
        Self {
            model,
            parts,
            device: device.clone(),
        }
    }

    pub fn into_parts(self) -> (GuardModel<B>, GuardParts) {
        (self.model, self.parts)
    }

    pub fn parts(&self) -> &GuardParts {
        &self.parts
    }

    pub fn labels(&self) -> &Labels {
        &self.parts.config.labels
    }

    pub fn config(&self) -> &ModelConfig {
        &self.parts.config
    }

    pub fn max_length(&self) -> usize {
        self.parts.encoder.max_length()
    }

    /// Parts initialised fresh because the checkpoint lacked them.
    pub fn fresh_parts(&self) -> &FreshParts {
        &self.parts.fresh
    }

    pub fn model(&self) -> &GuardModel<B> {
        &self.model
    }

    pub fn encode(&self, input: &GuardInput) -> Result<EncodedText> {
        self.parts.encoder.encode(input)
    }

    pub fn batch_tensors(&self, rows: &[&EncodedText]) -> BatchTensors<B> {
        BatchTensors::from_batch(
            &EncodedBatch::pad(rows, self.parts.encoder.pad_id()),
            &self.device,
        )
    }

    /// Logits `[rows, num_labels]` of rows padded into one batch.
    pub fn logits(&self, rows: &[&EncodedText]) -> Tensor<B, 2> {
        self.model.logits(&self.batch_tensors(rows))
    }

    /// Scores `inputs` in batches of `batch_size`, grouping inputs of similar length so that
    /// little compute goes to padding. `progress` is told how many inputs each batch finished.
    pub fn score(
        &self,
        inputs: &[GuardInput],
        batch_size: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<Scores> {
        let all = self.encode_inputs(inputs)?;
        let rows = all.rows();
        // Progress in inputs, though the model sees windows.
        let (mut windows_done, mut inputs_done) = (0, 0);
        let windows = self.score_encoded(&rows, batch_size, |n| {
            windows_done += n;
            let now = windows_done * all.inputs / rows.len().max(1);
            progress(now - inputs_done);
            inputs_done = now;
        })?;
        Ok(all.merge(windows))
    }

    /// [`Self::score`] for inputs already encoded with this guard's encoder.
    pub fn score_encoded(
        &self,
        encoded: &[&EncodedText],
        batch_size: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<Scores> {
        let mut scores = ScoreSheet::new(encoded, &self.parts.config.labels);
        for batch in length_batches(encoded, batch_size) {
            let probabilities = crate::kernels::on_kernel_threads::<B, _>(|| {
                self.label_probability_tensor(self.logits(&batch.rows))
                    .into_data()
            });
            scores.fill(&batch.indices, read_floats(probabilities)?);
            progress(batch.indices.len());
        }
        Ok(scores.finish())
    }

    /// [`Self::score`] for backends that can only read results back asynchronously (WebGPU in
    /// the browser): the same batches and arithmetic, awaiting each batch's scores.
    pub async fn score_async(&self, inputs: &[GuardInput], batch_size: usize) -> Result<Scores> {
        let all = self.encode_inputs(inputs)?;
        let encoded = all.rows();
        let mut scores = ScoreSheet::new(&encoded, &self.parts.config.labels);
        for batch in length_batches(&encoded, batch_size) {
            let probabilities = self.label_probability_tensor(self.logits(&batch.rows));
            let data = probabilities.into_data_async().await;
            let data = data.map_err(|e| Error::Backend(format!("reading scores back: {e:?}")))?;
            scores.fill(&batch.indices, read_floats(data)?);
        }
        Ok(all.merge(scores.finish()))
    }

    /// What the model sees for `inputs`: one encoding each, or windows of long ones. Score
    /// [`EncodedInputs::rows`] with [`Self::score_encoded`], then [`EncodedInputs::merge`].
    pub fn encode_inputs(&self, inputs: &[GuardInput]) -> Result<EncodedInputs> {
        let mut all = EncodedInputs {
            encoded: Vec::with_capacity(inputs.len()),
            owners: Vec::with_capacity(inputs.len()),
            inputs: inputs.len(),
        };
        for (i, input) in inputs.iter().enumerate() {
            for encoded in self.parts.encoder.encode_for_scoring(input)? {
                all.encoded.push(encoded);
                all.owners.push(i);
            }
        }
        Ok(all)
    }

    /// Label probabilities `[rows, labels]`, still on the device: softmax, or a sigmoid per
    /// label for multi-label heads.
    fn label_probability_tensor(&self, logits: Tensor<B, 2>) -> Tensor<B, 2> {
        match self.parts.config.labels.kind {
            HeadKind::SingleLabel => softmax(logits, 1),
            HeadKind::MultiLabel => sigmoid(logits),
        }
    }

    /// P(unsafe) of each row of `logits`, as host floats.
    pub fn unsafe_probabilities(&self, logits: Tensor<B, 2>) -> Result<Vec<f32>> {
        let labels = &self.parts.config.labels;
        let probabilities = read_floats(self.label_probability_tensor(logits).into_data())?;
        Ok(probabilities
            .chunks_exact(labels.len())
            .map(|row| labels.unsafe_probability(row))
            .collect())
    }
}

fn read_floats(data: burn::tensor::TensorData) -> Result<Vec<f32>> {
    data.convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| Error::Backend(format!("reading scores back: {e:?}")))
}

/// Encodings to score and the input each belongs to (several for a windowed long input).
pub struct EncodedInputs {
    encoded: Vec<EncodedText>,
    owners: Vec<usize>,
    inputs: usize,
}

impl EncodedInputs {
    pub fn rows(&self) -> Vec<&EncodedText> {
        self.encoded.iter().collect()
    }

    /// Per input, the scores of its highest-scoring window (P(unsafe) = the max over windows;
    /// the label probabilities are that window's). `truncated` counts inputs, not windows.
    pub fn merge(&self, windows: Scores) -> Scores {
        if self.owners.len() == self.inputs {
            return windows;
        }
        let n = windows.num_labels;
        let mut best: Vec<Option<usize>> = vec![None; self.inputs];
        for (window, &owner) in self.owners.iter().enumerate() {
            let better = best[owner].is_none_or(|b| windows.scores[window] > windows.scores[b]);
            if better {
                best[owner] = Some(window);
            }
        }
        let best: Vec<usize> = best.into_iter().flatten().collect();
        Scores {
            scores: best.iter().map(|&w| windows.scores[w]).collect(),
            label_probabilities: best
                .iter()
                .flat_map(|&w| windows.label_probabilities_of(w).iter().copied())
                .collect(),
            num_labels: n,
            truncated: best.iter().filter(|&&w| self.encoded[w].truncated).count(),
        }
    }
}

/// One padded batch: which inputs (by index) and their encodings.
struct LengthBatch<'a> {
    indices: Vec<usize>,
    rows: Vec<&'a EncodedText>,
}

/// Inputs sorted by length and cut into batches of at most `batch_size`, so that little
/// compute goes to padding: a batch also ends where the next (longer) input would make its
/// padded size exceed [`PADDING_SLACK`] × its real tokens + [`PADDING_ALLOWANCE`]. Sorting
/// alone is not enough when the inputs are few and mixed (a server's gathered requests): one
/// 512-token prompt padded 31 short ones to 512, and throughput fell with concurrency.
fn length_batches<'a>(encoded: &[&'a EncodedText], batch_size: usize) -> Vec<LengthBatch<'a>> {
    let mut order: Vec<usize> = (0..encoded.len()).collect();
    order.sort_by_key(|&i| encoded[i].ids.len());
    let mut batches: Vec<LengthBatch<'a>> = Vec::new();
    let mut real_tokens = 0;
    for i in order {
        let length = encoded[i].ids.len();
        let fits = batches.last().is_some_and(|batch| {
            let rows = batch.rows.len() + 1;
            let padded = (rows * length) as f64;
            rows <= batch_size.max(1)
                && padded <= PADDING_SLACK * (real_tokens + length) as f64 + PADDING_ALLOWANCE
        });
        if !fits {
            batches.push(LengthBatch {
                indices: Vec::new(),
                rows: Vec::new(),
            });
            real_tokens = 0;
        }
        let batch = batches.last_mut().expect("pushed above");
        batch.indices.push(i);
        batch.rows.push(encoded[i]);
        real_tokens += length;
    }
    batches
}

/// A batch may hold this many times its real tokens once padded …
const PADDING_SLACK: f64 = 1.25;
/// … plus this many padding tokens (short inputs are cheap; a model call is not).
const PADDING_ALLOWANCE: f64 = 256.0;

/// Scores filled in batch by batch, returned in input order.
struct ScoreSheet<'a> {
    labels: &'a Labels,
    scores: Vec<f32>,
    label_probabilities: Vec<f32>,
    truncated: usize,
}

impl<'a> ScoreSheet<'a> {
    fn new(encoded: &[&EncodedText], labels: &'a Labels) -> Self {
        Self {
            labels,
            scores: vec![0.0; encoded.len()],
            label_probabilities: vec![0.0; encoded.len() * labels.len()],
            truncated: encoded.iter().filter(|e| e.truncated).count(),
        }
    }

    /// `probabilities`: the label probabilities of the inputs `indices`, row-major.
    fn fill(&mut self, indices: &[usize], probabilities: Vec<f32>) {
        let n = self.labels.len();
        for (&i, row) in indices.iter().zip(probabilities.chunks_exact(n)) {
            self.scores[i] = self.labels.unsafe_probability(row);
            self.label_probabilities[i * n..(i + 1) * n].copy_from_slice(row);
        }
    }

    fn finish(self) -> Scores {
        Scores {
            scores: self.scores,
            label_probabilities: self.label_probabilities,
            num_labels: self.labels.len(),
            truncated: self.truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_lengths(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
        let encoded: Vec<EncodedText> = lengths
            .iter()
            .map(|&n| EncodedText {
                ids: vec![0; n],
                type_ids: vec![0; n],
                truncated: false,
            })
            .collect();
        let rows: Vec<&EncodedText> = encoded.iter().collect();
        length_batches(&rows, batch_size)
            .iter()
            .map(|b| b.indices.iter().map(|&i| lengths[i]).collect())
            .collect()
    }

    #[test]
    fn batches_are_sorted_by_length_capped_and_never_mostly_padding() {
        assert_eq!(
            batch_lengths(&[8, 500, 5, 7, 6], 32),
            [vec![5, 6, 7, 8], vec![500]]
        );
        let sizes: Vec<usize> = batch_lengths(&[10; 40], 32).iter().map(Vec::len).collect();
        assert_eq!(sizes, [32, 8]);
        // Lengths that grow slowly stay together.
        assert_eq!(batch_lengths(&[100, 104, 110, 120], 32).len(), 1);
        assert!(batch_lengths(&[], 32).is_empty());
    }
}
