//! Guard architectures, one per file, plus the pieces they share.
//!
//! Each architecture file holds its `config.json` type ([`ArchitectureConfig`]) and its
//! classifier ([`Classifier`]); the `architectures!` list below registers it, and
//! [`GuardModel`] dispatches on the `model_type` of `config.json`.

// `GuardModel` (and the record type its `Module` derive generates) holds one architecture per
// variant: one per process, and boxing would hide the model from `Module`.
#![allow(clippy::large_enum_variant)]

pub mod activation;
pub mod bert;
pub mod deberta_v2;
pub mod head;
pub mod layout;
pub mod norm;
pub mod post_attention;
pub mod projection;

use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::Result;
use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::tokenize::EncodedBatch;
use activation::Activation;
use bert::{BertConfig, BertForSequenceClassification};
use deberta_v2::{DebertaV2Config, DebertaV2ForSequenceClassification};
pub(crate) use layout::Layout;
pub use layout::Rows;
use projection::Projection;

/// An encoded batch moved onto the device: `[batch, seq]` ids, token types and attention mask.
pub struct BatchTensors<B: Backend> {
    pub input_ids: Tensor<B, 2, Int>,
    pub token_type_ids: Tensor<B, 2, Int>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Tensor<B, 2, Int>,
    /// Real (unpadded) tokens per row, kept on the host (no device read to know whether a batch
    /// needs an attention bias at all).
    pub lengths: Vec<usize>,
}

impl<B: Backend> BatchTensors<B> {
    pub fn from_batch(batch: &EncodedBatch, device: &B::Device) -> Self {
        let shape = [batch.batch_size, batch.seq_len];
        let tensor = |values: &[i64]| {
            Tensor::<B, 2, Int>::from_data(TensorData::new(values.to_vec(), shape), device)
        };
        Self {
            input_ids: tensor(&batch.input_ids),
            token_type_ids: tensor(&batch.token_type_ids),
            attention_mask: tensor(&batch.attention_mask),
            lengths: batch
                .attention_mask
                .chunks(batch.seq_len.max(1))
                .map(|row| row.iter().filter(|&&m| m != 0).count())
                .collect(),
        }
    }

    /// Additive attention bias: 0 where attention is allowed, f32::MIN where the key is
    /// padding (transformers adds or fills `finfo.min`, so fully masked rows behave the same),
    /// and with `mask_queries` also on padded query rows (as DeBERTa's outer-product mask
    /// does). `None` when no row is padded.
    ///
    /// Built on the device from the `[batch, seq]` mask, so a GPU gets no per-batch upload of
    /// `seq²` values. Compact (`[batch, 1, 1 or seq, seq]`) where the softmax kernel adds it
    /// by broadcasting (burn-flex inference); elsewhere `[batch, heads, seq, seq]`, built once
    /// per forward pass and shared by all layers: burn-flex adds a broadcast operand element
    /// by element, which cost a third of the forward pass (and still would in training).
    pub fn attention_bias(&self, heads: usize, mask_queries: bool) -> Option<Tensor<B, 4>> {
        let [batch, seq] = self.input_ids.dims();
        if self.lengths.iter().all(|&n| n == seq) {
            return None;
        }
        let compact = crate::kernels::broadcasts_attention_bias::<B>();
        let rows = if mask_queries || !compact { seq } else { 1 };
        let shape = [batch, 1, rows, seq];
        let padding = self.attention_mask.clone().equal_elem(0);
        let mut masked = padding.clone().reshape([batch, 1, 1, seq]).expand(shape);
        if mask_queries {
            masked = masked.bool_or(padding.reshape([batch, 1, seq, 1]).expand(shape));
        }
        let bias =
            Tensor::<B, 4>::zeros(shape, &self.input_ids.device()).mask_fill(masked, f32::MIN);
        Some(if compact {
            bias
        } else {
            bias.repeat_dim(1, heads)
        })
    }
}

/// Absolute position ids `0..seq` for every row, `[batch, seq]`.
pub(crate) fn position_ids<B: Backend>(
    batch: usize,
    seq: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    Tensor::<B, 1, Int>::arange(0..seq as i64, device)
        .unsqueeze::<2>()
        .expand([batch, seq])
}

/// A linear layer over every token of `[batch, seq, d_in]` as one `[batch·seq, d_in]` matmul:
/// burn's 3-D `linear` broadcasts the weight and runs one small matmul per sequence.
pub(crate) fn project<B: Backend>(linear: &Projection<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    over_tokens(x, |x| linear.forward(x))
}

/// [`project`] then `activation` ([`Projection::forward_activated`]).
pub(crate) fn project_activated<B: Backend>(
    linear: &Projection<B>,
    x: Tensor<B, 3>,
    activation: Activation,
) -> Tensor<B, 3> {
    over_tokens(x, |x| linear.forward_activated(x, activation))
}

/// `layer` on `[batch, seq, d_in]` as one `[batch·seq, d_in]` matrix.
fn over_tokens<B: Backend>(
    x: Tensor<B, 3>,
    layer: impl FnOnce(Tensor<B, 2>) -> Tensor<B, 2>,
) -> Tensor<B, 3> {
    let [batch, seq, d_in] = x.dims();
    let y = layer(x.reshape([batch * seq, d_in]));
    let [_, d_out] = y.dims();
    y.reshape([batch, seq, d_out])
}

/// `between(project(x)) + residual` ([`Projection::forward_add`]); `residual` is shaped like
/// the output.
pub(crate) fn project_add<B: Backend>(
    linear: &Projection<B>,
    x: Tensor<B, 3>,
    residual: Tensor<B, 3>,
    between: impl FnOnce(Tensor<B, 2>) -> Tensor<B, 2>,
) -> Tensor<B, 3> {
    let [batch, seq, d_out] = residual.dims();
    let residual = residual.reshape([batch * seq, d_out]);
    over_tokens(x, |x| linear.forward_add(x, residual, between))
}

/// `[batch, seq, heads·d]` → `[batch, heads, seq, d]`.
pub(crate) fn split_heads<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [batch, seq, width] = x.dims();
    x.reshape([batch, seq, heads, width / heads])
        .swap_dims(1, 2)
}

/// `[batch, heads, seq, d]` → `[batch, seq, heads·d]`.
pub(crate) fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [batch, heads, seq, d] = x.dims();
    x.swap_dims(1, 2).reshape([batch, seq, heads * d])
}

/// What an architecture's `config.json` type tells the rest of harmaug.
pub trait ArchitectureConfig: Sized {
    /// `config.json`'s `model_type`.
    const MODEL_TYPE: &'static str;
    /// The `architectures` entry transformers loads a classifier of this kind with.
    const HF_CLASS: &'static str;
    /// Parses and checks a `config.json` of this `model_type`.
    fn from_json(json: &str) -> Result<Self>;
    fn max_positions(&self) -> usize;
    fn pad_token(&self) -> u32;
    /// Whether `max_position_embeddings` may be raised for longer inputs (no learned table of
    /// absolute positions to outgrow).
    fn can_extend_positions(&self) -> bool;
}

/// A sequence classifier of one architecture, as `*ForSequenceClassification`.
pub trait Classifier<B: Backend>: Sized {
    type Config: ArchitectureConfig;
    /// From the checkpoint; parts it lacks (pooler, classifier) are drawn from `head_seed`.
    fn load(
        config: &Self::Config,
        num_labels: usize,
        checkpoint: &Checkpoint<'_>,
        head_seed: u64,
        device: &B::Device,
    ) -> Result<(Self, FreshParts)>;
    /// Logits, `[batch, num_labels]`.
    fn logits(&self, batch: &BatchTensors<B>) -> Tensor<B, 2>;
    /// Last hidden states of the encoder, `[batch, seq, hidden]` (for parity checks).
    fn hidden_states(&self, batch: &BatchTensors<B>) -> Tensor<B, 3>;
}

/// Declares the architectures: `ArchConfig` (a parsed `config.json`) and `GuardModel` (a burn
/// `Module`, so trainers can differentiate, update and save it like any other) with one
/// variant each, and their dispatch. Adding an architecture = a new file in this folder (its
/// config implementing [`ArchitectureConfig`], its model [`Classifier`]) + one line below.
macro_rules! architectures {
    ($($variant:ident => $config:ty, $model:ident;)+) => {
        #[derive(Debug, Clone)]
        pub enum ArchConfig {
            $($variant($config),)+
        }

        #[derive(Module, Debug)]
        pub enum GuardModel<B: Backend> {
            $($variant($model<B>),)+
        }

        impl ArchConfig {
            /// `json` parsed as the architecture its `model_type` names.
            pub fn from_json(model_type: &str, json: &str) -> Result<Self> {
                $(if model_type == <$config>::MODEL_TYPE {
                    return Ok(ArchConfig::$variant(<$config>::from_json(json)?));
                })+
                let supported: Vec<String> =
                    vec![$(format!("{:?}", <$config>::MODEL_TYPE)),+];
                Err(crate::Error::Unsupported(format!(
                    "model_type {model_type:?} (supported: {})",
                    supported.join(", ")
                )))
            }

            pub fn max_position_embeddings(&self) -> usize {
                match self { $(ArchConfig::$variant(c) => c.max_positions(),)+ }
            }

            pub fn pad_token_id(&self) -> u32 {
                match self { $(ArchConfig::$variant(c) => c.pad_token(),)+ }
            }

            /// See [`ArchitectureConfig::HF_CLASS`].
            pub fn hf_class(&self) -> &'static str {
                match self { $(ArchConfig::$variant(_) => <$config>::HF_CLASS,)+ }
            }

            /// See [`ArchitectureConfig::can_extend_positions`].
            pub fn can_extend_positions(&self) -> bool {
                match self { $(ArchConfig::$variant(c) => c.can_extend_positions(),)+ }
            }
        }

        impl<B: Backend> GuardModel<B> {
            pub fn load(
                config: &ModelConfig,
                checkpoint: &Checkpoint<'_>,
                head_seed: u64,
                device: &B::Device,
            ) -> Result<(Self, FreshParts)> {
                let num_labels = config.labels.len();
                match &config.arch {
                    $(ArchConfig::$variant(c) => {
                        let (model, fresh) =
                            $model::load(c, num_labels, checkpoint, head_seed, device)?;
                        Ok((GuardModel::$variant(model), fresh))
                    })+
                }
            }

            /// Classifier logits, `[batch, num_labels]`.
            pub fn logits(&self, batch: &BatchTensors<B>) -> Tensor<B, 2> {
                match self { $(GuardModel::$variant(m) => m.logits(batch),)+ }
            }

            /// Last hidden states of the encoder, `[batch, seq, hidden]` (for parity checks).
            pub fn hidden_states(&self, batch: &BatchTensors<B>) -> Tensor<B, 3> {
                match self { $(GuardModel::$variant(m) => m.hidden_states(batch),)+ }
            }
        }
    };
}

architectures! {
    Bert => BertConfig, BertForSequenceClassification;
    DebertaV2 => DebertaV2Config, DebertaV2ForSequenceClassification;
}

/// What loading found missing from the checkpoint and initialised fresh instead.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FreshParts {
    pub names: Vec<&'static str>,
}
