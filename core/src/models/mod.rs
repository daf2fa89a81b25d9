//! Guard architectures, one per file, plus the pieces they share.
//!
//! Each architecture exposes `load` (from a [`Checkpoint`](crate::checkpoint::Checkpoint)) and
//! `logits` (from an [`EncodedBatch`](crate::tokenize::EncodedBatch)); [`GuardModel`] dispatches
//! on the `model_type` of `config.json`.

pub mod activation;
pub mod bert;
pub mod head;

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::Result;
use crate::checkpoint::Checkpoint;
use crate::config::ArchConfig;
use crate::config::ModelConfig;
use crate::tokenize::EncodedBatch;

/// An encoded batch moved onto the device: `[batch, seq]` ids, token types and attention mask.
pub struct BatchTensors<B: Backend> {
    pub input_ids: Tensor<B, 2, Int>,
    pub token_type_ids: Tensor<B, 2, Int>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Tensor<B, 2, Int>,
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
        }
    }
}

/// The architectures `harmaug` can load, chosen by `config.json`'s `model_type`.
#[derive(Debug)]
pub enum GuardModel<B: Backend> {
    Bert(bert::BertForSequenceClassification<B>),
}

/// What loading found missing from the checkpoint and initialised fresh instead.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FreshParts {
    pub names: Vec<&'static str>,
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
            ArchConfig::Bert(c) => {
                let (model, fresh) = bert::BertForSequenceClassification::load(
                    c, num_labels, checkpoint, head_seed, device,
                )?;
                Ok((GuardModel::Bert(model), fresh))
            }
        }
    }

    /// Classifier logits, `[batch, num_labels]`.
    pub fn logits(&self, batch: &BatchTensors<B>) -> Tensor<B, 2> {
        match self {
            GuardModel::Bert(m) => m.forward(batch),
        }
    }

    /// Last hidden states of the encoder, `[batch, seq, hidden]` (for parity checks).
    pub fn hidden_states(&self, batch: &BatchTensors<B>) -> Tensor<B, 3> {
        match self {
            GuardModel::Bert(m) => m.bert.forward(batch),
        }
    }
}
