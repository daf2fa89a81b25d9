//! How a batch's tokens lie in the tensors between layers, and which of them a layer computes.
//!
//! Padded (`[batch, seq, hidden]`) is what every backend runs. Where the attention kernel runs
//! (burn-flex inference) a classifier packs the real tokens instead (`[1, tokens, hidden]`),
//! so no projection, feed-forward block or attention pair computes padding: 1,000 ToxicChat
//! prompts in batches of 32 sorted by length are still 10% padding (docs/BENCHMARKS.md), and a
//! server batching whatever arrives pads far more.

use std::sync::Arc;

use burn::nn::Dropout;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData, backend::Backend};

use super::BatchTensors;
use crate::kernels::{self, AttentionInputs, Packed};

/// The positions a layer computes outputs for. A classifier's head reads only the first
/// token's last state, so the last layer needs that row alone: its queries, attention output
/// and feed-forward block run for one token per sequence, while keys and values still cover
/// every token: 10 of the 12·d² multiply-adds per token of a layer's linear parts go (14% of
/// MiniLM's six layers, 3.5% of DeBERTa-v3-large's 24).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    All,
    First,
}

impl Rows {
    /// The rows of a layer's input `[batch, seq, hidden]` that become queries and residuals.
    pub(crate) fn of<B: Backend>(self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match self {
            Rows::All => x,
            Rows::First => {
                let [batch, _, hidden] = x.dims();
                x.slice([0..batch, 0..1, 0..hidden])
            }
        }
    }

    /// The attention bias's query rows to match (a bias of one row broadcasts already).
    pub(crate) fn of_bias<B: Backend>(self, bias: Option<Tensor<B, 4>>) -> Option<Tensor<B, 4>> {
        match (self, bias) {
            (Rows::First, Some(bias)) if bias.dims()[2] > 1 => {
                let [batch, heads, _, keys] = bias.dims();
                Some(bias.slice([0..batch, 0..heads, 0..1, 0..keys]))
            }
            (_, bias) => bias,
        }
    }

    /// What layer `n` of `layers` computes when the stack ends in `last`.
    pub(crate) fn for_layer(n: usize, layers: usize, last: Rows) -> Rows {
        if n + 1 == layers { last } else { Rows::All }
    }
}

/// The token layout of one forward pass.
pub(crate) enum Layout<B: Backend> {
    /// `[batch, seq, hidden]`; attention masks the padding.
    Padded,
    /// `[1, tokens, hidden]`: each sequence's real tokens, one sequence after another.
    Packed(PackedTokens<B>),
}

#[derive(Clone)]
pub(crate) struct PackedTokens<B: Backend> {
    /// Where each real token sits in the padded `[batch·seq]` axis.
    tokens: Tensor<B, 1, Int>,
    /// Where each sequence's first token sits in the packed axis.
    starts: Tensor<B, 1, Int>,
    lengths: Arc<[usize]>,
    seq: usize,
}

impl<B: Backend> Layout<B> {
    /// Packed when the stack ends in [`Rows::First`] (a classifier: hidden states of padded
    /// positions are never read), the attention kernel runs on `B`, and some row is padded
    /// (none empty: every encoded text has its special tokens, but an empty row has no first
    /// token to pack).
    pub(crate) fn for_batch(batch: &BatchTensors<B>, last: Rows) -> Self {
        let [_, seq] = batch.input_ids.dims();
        let padded = batch.lengths.iter().any(|&n| n < seq);
        let empty = batch.lengths.contains(&0);
        if last == Rows::All || !padded || empty || !kernels::packs_sequences::<B>() {
            return Layout::Padded;
        }
        let device = batch.input_ids.device();
        let (mut tokens, mut starts, mut at) = (Vec::new(), Vec::new(), 0);
        for (b, &n) in batch.lengths.iter().enumerate() {
            tokens.extend((0..n).map(|i| (b * seq + i) as i64));
            starts.push(at as i64);
            at += n;
        }
        let index = |values: Vec<i64>| {
            let len = values.len();
            Tensor::from_data(TensorData::new(values, [len]), &device)
        };
        Layout::Packed(PackedTokens {
            tokens: index(tokens),
            starts: index(starts),
            lengths: batch.lengths.clone().into(),
            seq,
        })
    }

    /// The embeddings' `[batch, seq, hidden]` in this layout.
    pub(crate) fn pack(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match self {
            Layout::Padded => x,
            Layout::Packed(packed) => packed.pack(x),
        }
    }

    /// The rows of a layer's input that become queries and residuals.
    pub(crate) fn queries(&self, x: Tensor<B, 3>, rows: Rows) -> Tensor<B, 3> {
        match (self, rows) {
            (Layout::Packed(packed), Rows::First) => x.select(1, packed.starts.clone()),
            _ => rows.of(x),
        }
    }

    /// Attention of `inputs` (q holding `rows`, this layout; no bias or packing set) through
    /// the kernel, or through `composed` on padded tensors with the padded `bias` where the
    /// kernel does not run.
    pub(crate) fn attend(
        &self,
        mut inputs: AttentionInputs<B>,
        rows: Rows,
        bias: Option<Tensor<B, 4>>,
        (heads, probs_dropout): (usize, &Dropout),
        composed: impl FnOnce(AttentionInputs<B>) -> Tensor<B, 3>,
    ) -> Tensor<B, 3> {
        let bias = rows.of_bias(bias);
        match self {
            Layout::Padded => {
                inputs.bias = bias;
                kernels::attention(inputs, heads, probs_dropout).unwrap_or_else(composed)
            }
            Layout::Packed(packed) => {
                inputs.packed = Some(Packed {
                    lengths: packed.lengths.clone(),
                    first_only: rows == Rows::First,
                });
                kernels::attention(inputs, heads, probs_dropout).unwrap_or_else(|inputs| {
                    let padded = packed.unpack_inputs(inputs, rows, bias);
                    packed.repack(composed(padded), rows)
                })
            }
        }
    }

    /// The last layer's first-token states as `[batch, 1, hidden]`, for the head.
    pub(crate) fn first_tokens(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match self {
            Layout::Padded => x,
            Layout::Packed(packed) => packed.first_tokens(x),
        }
    }
}

impl<B: Backend> PackedTokens<B> {
    fn pack(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, seq, hidden] = x.dims();
        let rows = x
            .reshape([batch * seq, hidden])
            .select(0, self.tokens.clone());
        let [tokens, _] = rows.dims();
        rows.reshape([1, tokens, hidden])
    }

    /// Packed `[1, tokens, hidden]` back to `[batch, seq, hidden]`, zeros in the padding.
    fn unpack(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [_, tokens, hidden] = x.dims();
        let batch = self.lengths.len();
        let zeros = Tensor::zeros([batch * self.seq, hidden], &x.device());
        zeros
            .select_assign(
                0,
                self.tokens.clone(),
                x.reshape([tokens, hidden]),
                IndexingUpdateOp::Add,
            )
            .reshape([batch, self.seq, hidden])
    }

    /// Attention inputs in the padded layout, for burn's composition.
    fn unpack_inputs(
        &self,
        inputs: AttentionInputs<B>,
        rows: Rows,
        bias: Option<Tensor<B, 4>>,
    ) -> AttentionInputs<B> {
        AttentionInputs {
            q: match rows {
                Rows::All => self.unpack(inputs.q),
                Rows::First => self.first_tokens(inputs.q),
            },
            k: self.unpack(inputs.k),
            v: self.unpack(inputs.v),
            bias,
            relative: inputs.relative,
            packed: None,
        }
    }

    /// A padded context (`[batch, seq or 1, width]`) in the packed layout.
    fn repack(&self, context: Tensor<B, 3>, rows: Rows) -> Tensor<B, 3> {
        match rows {
            Rows::All => self.pack(context),
            Rows::First => {
                let [batch, _, width] = context.dims();
                context.reshape([1, batch, width])
            }
        }
    }

    /// `[1, batch, hidden]` (each sequence's first token, packed) as `[batch, 1, hidden]`.
    fn first_tokens(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [_, _, hidden] = x.dims();
        x.reshape([self.lengths.len(), 1, hidden])
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::nn::DropoutConfig;
    use burn::tensor::Distribution;
    use burn_flex::Flex;

    use super::*;
    use crate::models::bert::scaled_dot_product;
    use crate::models::{merge_heads, split_heads};

    /// Three sequences of 5, 2 and 3 tokens padded to 5.
    fn padded_batch() -> BatchTensors<Flex> {
        let lengths = vec![5, 2, 3];
        let mask: Vec<i64> = lengths
            .iter()
            .flat_map(|&n| (0..5).map(move |i| i64::from(i < n)))
            .collect();
        let device = Default::default();
        let ints = |values: Vec<i64>| Tensor::from_data(TensorData::new(values, [3, 5]), &device);
        BatchTensors {
            input_ids: ints(mask.clone()),
            token_type_ids: ints(vec![0; 15]),
            attention_mask: ints(mask),
            lengths,
        }
    }

    /// Where the kernel declines packed inputs, the layout pads them for burn's composition and
    /// packs the context again: the same values as the kernel's, for every query row and for
    /// the first token's.
    #[test]
    fn the_padded_fallback_equals_the_packed_kernel() {
        let (batch, heads) = (padded_batch(), 2);
        let Layout::Packed(packed) = Layout::for_batch(&batch, Rows::First) else {
            panic!("a padded batch on burn-flex is packed");
        };
        let bias = batch.attention_bias(heads, false);
        let dropout = DropoutConfig::new(0.0).init();
        let random = |rows: usize| {
            Tensor::<Flex, 3>::random([1, rows, 8], Distribution::Default, &Default::default())
        };
        let composed = |inputs: AttentionInputs<Flex>| {
            let split = |t| split_heads(t, heads);
            let (q, k, v) = (split(inputs.q), split(inputs.k), split(inputs.v));
            merge_heads(scaled_dot_product(q, k, v, inputs.bias, &dropout))
        };
        for (rows, queries) in [(Rows::All, 10), (Rows::First, 3)] {
            let inputs = AttentionInputs {
                q: random(queries),
                k: random(10),
                v: random(10),
                bias: None,
                relative: None,
                packed: None,
            };
            let padded = packed.unpack_inputs(copy(&inputs), rows, rows.of_bias(bias.clone()));
            let fallback = packed.repack(composed(padded), rows);
            let layout = Layout::Packed(packed.clone());
            let kernel = layout.attend(inputs, rows, bias.clone(), (heads, &dropout), |_| {
                panic!("the kernel takes packed inputs")
            });
            let diff = (kernel - fallback).abs().max().into_scalar();
            assert!(diff < 1e-5, "{rows:?}: max |Δ| {diff:e}");
        }
    }

    fn copy(inputs: &AttentionInputs<Flex>) -> AttentionInputs<Flex> {
        AttentionInputs {
            q: inputs.q.clone(),
            k: inputs.k.clone(),
            v: inputs.v.clone(),
            bias: None,
            relative: None,
            packed: None,
        }
    }
}
