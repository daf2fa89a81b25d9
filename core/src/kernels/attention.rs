//! softmax(q·kᵀ/√d + bias)·v on burn-flex, one (sequence, head) pair at a time: each pair's
//! `[seq, seq]` probabilities live in a scratch buffer that stays in cache, where the batched
//! composition builds `[batch, heads, seq, seq]` tensors — 400 MB at 32 × 512 tokens, whose page
//! faults, fills and copies cost more than the softmax itself (measured: a third of a batch-32
//! forward pass). q, k and v are read in place from the projections' `[batch, seq, heads·d]`
//! layout and the context is written in it, so the four head split/merge copies go too. Pairs
//! run in parallel over rayon (feature `threads`; one after another in the browser); the
//! per-pair matmuls are the `gemm` crate's, the GEMM burn-flex calls. DeBERTa's disentangled
//! position terms are added to each pair's scores in the same pass (disentangled.rs).

#[cfg(feature = "flex")]
mod disentangled;

use std::sync::Arc;

use burn::tensor::{Tensor, backend::Backend};

/// The inputs of [`attention`], handed back when it does not run on the backend.
pub struct AttentionInputs<B: Backend> {
    /// `[batch, seq, heads·d]` each.
    pub q: Tensor<B, 3>,
    pub k: Tensor<B, 3>,
    pub v: Tensor<B, 3>,
    /// Added to the scores, broadcast over `[batch, heads, seq, seq]` (a key padding mask
    /// `[batch, 1, 1, seq]`, say).
    pub bias: Option<Tensor<B, 4>>,
    /// DeBERTa's position terms; `None` for BERT's attention.
    pub relative: Option<RelativeTerms<B>>,
}

/// DeBERTa's disentangled attention terms, added to the content scores q·kᵀ: content to
/// position (q against the key-projected relative embeddings) and position to content (k against
/// the query-projected ones). Each term present adds one to the count that scales every score
/// by 1/√(d · terms), as the paper does.
pub struct RelativeTerms<B: Backend> {
    /// The relative embeddings through the key projection, `[2·span, heads·d]` (c2p).
    pub pos_key: Option<Tensor<B, 2>>,
    /// The relative embeddings through the query projection, `[2·span, heads·d]` (p2c).
    pub pos_query: Option<Tensor<B, 2>>,
    /// `[seq, seq]`: the row of the position tables that query i and key j meet at, its bucketed
    /// relative position shifted by the span. The p2c term reads it too: position buckets are
    /// odd in the distance, so HF's p2c index at (j, i) equals this one at (i, j).
    pub index: Arc<[u32]>,
}

/// The context `[batch, seq, heads·d]`, or the inputs back for burn's composition (another
/// backend, `Autodiff` while training — where dropout applies too — or a dtype other than f32).
pub fn attention<B: Backend>(
    inputs: AttentionInputs<B>,
    heads: usize,
) -> Result<Tensor<B, 3>, AttentionInputs<B>> {
    #[cfg(feature = "flex")]
    return on_flex::attention(inputs, heads);
    #[cfg(not(feature = "flex"))]
    {
        let _ = heads;
        Err(inputs)
    }
}

/// The kernel itself, on burn-flex's buffers.
#[cfg(feature = "flex")]
mod on_flex {
    use burn::tensor::{DType, Tensor, TensorData, backend::Backend};

    use super::AttentionInputs;
    use super::disentangled::PositionTables;
    use crate::kernels::matmul::{Matrix, Product, View, matmul};
    use crate::kernels::softmax::{Broadcast, softmax_row_with_bias};

    pub(super) fn attention<B: Backend>(
        inputs: AttentionInputs<B>,
        heads: usize,
    ) -> Result<Tensor<B, 3>, AttentionInputs<B>> {
        let [batch, seq, width] = inputs.q.dims();
        let fits = inputs.k.dims() == [batch, seq, width] && inputs.v.dims() == [batch, seq, width];
        let relative_fits = inputs
            .relative
            .as_ref()
            .is_none_or(|terms| PositionTables::fit(terms, seq, width));
        if !crate::kernels::is_flex::<B>()
            || inputs.q.dtype() != DType::F32
            || !fits
            || !relative_fits
            || heads == 0
        {
            return Err(inputs);
        }
        let shape = Shape {
            batch,
            seq,
            heads,
            d: width / heads,
        };
        let bias = match inputs.bias {
            Some(bias) => match Broadcast::over([batch, heads, seq, seq], bias.clone()) {
                Some(broadcast) => Some(broadcast),
                None => {
                    return Err(AttentionInputs {
                        bias: Some(bias),
                        ..inputs
                    });
                }
            },
            None => None,
        };
        let device = inputs.q.device();
        if batch * seq == 0 {
            // No pair has a row to read (slicing at a head's offset would be out of bounds).
            return Ok(Tensor::zeros([batch, seq, width], &device));
        }
        let tables = inputs.relative.map(PositionTables::read);
        let [q, k, v] = [inputs.q, inputs.k, inputs.v].map(values);
        let operands = Operands {
            q: &q,
            k: &k,
            v: &v,
            bias: bias.as_ref(),
            tables: tables.as_ref(),
        };
        Ok(Tensor::from_data(
            TensorData::new(shape.context(&operands), [batch, seq, width]),
            &device,
        ))
    }

    pub(super) fn values<B: Backend, const D: usize>(x: Tensor<B, D>) -> Vec<f32> {
        x.into_data().into_vec::<f32>().unwrap_or_default()
    }

    /// Everything a (sequence, head) pair reads.
    struct Operands<'a> {
        q: &'a [f32],
        k: &'a [f32],
        v: &'a [f32],
        bias: Option<&'a Broadcast>,
        tables: Option<&'a PositionTables>,
    }

    #[derive(Clone, Copy)]
    pub(super) struct Shape {
        pub batch: usize,
        pub seq: usize,
        pub heads: usize,
        pub d: usize,
    }

    impl Shape {
        pub fn width(self) -> usize {
            self.heads * self.d
        }

        /// Every (sequence, head) pair's context, written into `[batch, seq, heads·d]`.
        fn context(self, operands: &Operands<'_>) -> Vec<f32> {
            let pairs = self.batch * self.heads;
            let one = |pair: usize| self.head(pair / self.heads, pair % self.heads, operands);
            #[cfg(feature = "threads")]
            let heads: Vec<Vec<f32>> = {
                use rayon::prelude::*;
                (0..pairs).into_par_iter().map(one).collect()
            };
            #[cfg(not(feature = "threads"))]
            let heads: Vec<Vec<f32>> = (0..pairs).map(one).collect();
            let mut out = vec![0f32; self.batch * self.seq * self.width()];
            for (pair, head) in heads.iter().enumerate() {
                let (b, h) = (pair / self.heads, pair % self.heads);
                for (i, row) in head.chunks_exact(self.d).enumerate() {
                    let at = (b * self.seq + i) * self.width() + h * self.d;
                    out[at..at + self.d].copy_from_slice(row);
                }
            }
            out
        }

        /// Head `h` of sequence `b`: `[seq, d]`.
        fn head(self, b: usize, h: usize, operands: &Operands<'_>) -> Vec<f32> {
            let (seq, d, width) = (self.seq, self.d, self.width());
            let first = b * seq * width + h * self.d;
            let (q, k) = (&operands.q[first..], &operands.k[first..]);
            let terms = 1 + operands.tables.map_or(0, PositionTables::terms);
            let scale = 1.0 / ((d * terms) as f32).sqrt();
            let mut scores = vec![0f32; seq * seq];
            // scores = q_h · k_hᵀ · scale: k_h read transposed through its strides.
            matmul(
                Matrix {
                    values: &mut scores,
                    rows: seq,
                    cols: seq,
                    row_stride: seq,
                },
                View::rows(q, width),
                View::rows(k, width).transposed(),
                d,
                Product {
                    scale,
                    ..Product::PLAIN
                },
            );
            if let Some(tables) = operands.tables {
                tables.add_terms(&mut scores, self, h, [q, k], scale);
            }
            for (i, row) in scores.chunks_exact_mut(seq).enumerate() {
                match operands.bias {
                    Some(bias) => softmax_row_with_bias(row, bias.row([b, h, i], seq)),
                    None => softmax_row_with_bias(row, &[]),
                }
            }
            let mut context = vec![0f32; seq * d];
            matmul(
                Matrix {
                    values: &mut context,
                    rows: seq,
                    cols: d,
                    row_stride: d,
                },
                View::rows(&scores, seq),
                View::rows(&operands.v[first..], width),
                seq,
                Product::PLAIN,
            );
            context
        }
    }
}
