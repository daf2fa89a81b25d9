//! A loaded guard: model + tokenizer + label mapping → P(unsafe). The one scoring path that the
//! CLI, the evaluator and the web package all call.

use burn::tensor::{Tensor, activation::softmax, backend::Backend};

use crate::checkpoint::{Checkpoint, ParamNames, ReleasePages};
use crate::config::{Labels, ModelConfig};
use crate::models::{BatchTensors, FreshParts, GuardModel};
pub use crate::tokenize::GuardInput;
use crate::tokenize::{EncodedBatch, EncodedText, TextEncoder, passes_token_type_ids};
use crate::{Error, Result};

/// The three files of a HF model directory, as bytes (core does no file I/O).
pub struct ModelFiles<'a> {
    pub config_json: &'a str,
    pub weights: &'a [u8],
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
}

/// Longest default input: BERT-family checkpoints are trained at 512 at most.
pub const DEFAULT_MAX_LENGTH_CAP: usize = 512;

/// P(unsafe) per input, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    pub scores: Vec<f32>,
    /// How many inputs were longer than `max_length` and got truncated.
    pub truncated: usize,
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
        let config = ModelConfig::from_json(files.config_json)?;
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
                .with_segment_ids(passes_token_type_ids(files.tokenizer_config_json)?);
        let checkpoint = Checkpoint::from_bytes(files.weights)?.with_release(files.release_weights);
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
        progress: impl FnMut(usize),
    ) -> Result<Scores> {
        let encoded = self.encode_all(inputs)?;
        let rows: Vec<&EncodedText> = encoded.iter().collect();
        self.score_encoded(&rows, batch_size, progress)
    }

    /// [`Self::score`] for inputs already encoded with this guard's encoder.
    pub fn score_encoded(
        &self,
        encoded: &[&EncodedText],
        batch_size: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<Scores> {
        let mut scores = ScoreSheet::new(encoded);
        for batch in length_batches(encoded, batch_size) {
            let column = self.unsafe_probability_tensor(self.logits(&batch.rows));
            let probabilities = read_floats(column.into_data())?;
            scores.fill(&batch.indices, probabilities);
            progress(batch.indices.len());
        }
        Ok(scores.finish())
    }

    /// [`Self::score`] for backends that can only read results back asynchronously (WebGPU in
    /// the browser): the same batches and arithmetic, awaiting each batch's scores.
    pub async fn score_async(&self, inputs: &[GuardInput], batch_size: usize) -> Result<Scores> {
        let encoded = self.encode_all(inputs)?;
        let encoded: Vec<&EncodedText> = encoded.iter().collect();
        let mut scores = ScoreSheet::new(&encoded);
        for batch in length_batches(&encoded, batch_size) {
            let column = self.unsafe_probability_tensor(self.logits(&batch.rows));
            let data = column.into_data_async().await;
            let data = data.map_err(|e| Error::Backend(format!("reading scores back: {e:?}")))?;
            scores.fill(&batch.indices, read_floats(data)?);
        }
        Ok(scores.finish())
    }

    fn encode_all(&self, inputs: &[GuardInput]) -> Result<Vec<EncodedText>> {
        inputs
            .iter()
            .map(|input| self.parts.encoder.encode(input))
            .collect()
    }

    /// softmax(logits)[:, unsafe_index] as a `[rows, 1]` tensor, still on the device.
    fn unsafe_probability_tensor(&self, logits: Tensor<B, 2>) -> Tensor<B, 2> {
        let [rows, _] = logits.dims();
        let unsafe_index = self.parts.config.labels.unsafe_index;
        softmax(logits, 1).slice([0..rows, unsafe_index..unsafe_index + 1])
    }

    /// softmax(logits)[:, unsafe_index] as host floats.
    pub fn unsafe_probabilities(&self, logits: Tensor<B, 2>) -> Result<Vec<f32>> {
        read_floats(self.unsafe_probability_tensor(logits).into_data())
    }
}

fn read_floats(data: burn::tensor::TensorData) -> Result<Vec<f32>> {
    data.convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| Error::Backend(format!("reading scores back: {e:?}")))
}

/// One padded batch: which inputs (by index) and their encodings.
struct LengthBatch<'a> {
    indices: Vec<usize>,
    rows: Vec<&'a EncodedText>,
}

/// Inputs sorted by length and cut into batches of `batch_size`, so that little compute goes to
/// padding.
fn length_batches<'a>(encoded: &[&'a EncodedText], batch_size: usize) -> Vec<LengthBatch<'a>> {
    let mut order: Vec<usize> = (0..encoded.len()).collect();
    order.sort_by_key(|&i| encoded[i].ids.len());
    order
        .chunks(batch_size.max(1))
        .map(|chunk| LengthBatch {
            indices: chunk.to_vec(),
            rows: chunk.iter().map(|&i| encoded[i]).collect(),
        })
        .collect()
}

/// Scores filled in batch by batch, returned in input order.
struct ScoreSheet {
    scores: Vec<f32>,
    truncated: usize,
}

impl ScoreSheet {
    fn new(encoded: &[&EncodedText]) -> Self {
        Self {
            scores: vec![0.0; encoded.len()],
            truncated: encoded.iter().filter(|e| e.truncated).count(),
        }
    }

    fn fill(&mut self, indices: &[usize], probabilities: Vec<f32>) {
        for (&i, p) in indices.iter().zip(probabilities) {
            self.scores[i] = p;
        }
    }

    fn finish(self) -> Scores {
        Scores {
            scores: self.scores,
            truncated: self.truncated,
        }
    }
}
