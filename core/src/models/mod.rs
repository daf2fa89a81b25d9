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
    /// Real (unpadded) tokens per row, kept on the host to build attention biases.
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

    /// Additive attention bias `[batch, heads, seq, seq]`: 0 for real keys, f32::MIN for
    /// padded ones (transformers adds `finfo.min`, so fully padded rows behave the same);
    /// `None` when no row is padded. Built once per forward pass at full size and shared by
    /// all layers: CPU backends add a broadcast `[batch, 1, 1, seq]` bias element by element,
    /// which cost a third of the forward pass.
    pub fn key_padding_bias(&self, heads: usize) -> Option<Tensor<B, 4>> {
        let [batch, seq] = self.input_ids.dims();
        if self.lengths.iter().all(|&n| n == seq) {
            return None;
        }
        let mut bias = Vec::with_capacity(batch * heads * seq * seq);
        for &length in &self.lengths {
            let mut row = vec![0.0f32; seq];
            row[length..].fill(f32::MIN);
            for _ in 0..heads * seq {
                bias.extend_from_slice(&row);
            }
        }
        let shape = [batch, heads, seq, seq];
        Some(Tensor::from_data(
            TensorData::new(bias, shape),
            &self.input_ids.device(),
        ))
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
