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
#[cfg(feature = "autodiff")]
pub(super) mod training;

#[cfg(feature = "autodiff")]
pub(super) use on_flex::kernel_bias;

use std::sync::Arc;

use burn::nn::Dropout;
use burn::tensor::{Tensor, backend::Backend};

/// The inputs of [`attention`], handed back when it does not run on the backend.
pub struct AttentionInputs<B: Backend> {
    /// `[batch, queries, heads·d]`: the first `queries ≤ seq` positions' (all of them, or the
    /// first token's where only its output is read).
    pub q: Tensor<B, 3>,
    /// `[batch, seq, heads·d]` each.
    pub k: Tensor<B, 3>,
    pub v: Tensor<B, 3>,
    /// Added to the scores, broadcast over `[batch, heads, queries, seq]` (a key padding mask
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

/// The context `[batch, queries, heads·d]`, with `probs_dropout` on the probabilities while
/// training; or the inputs back for burn's composition (another backend, DeBERTa's position
/// terms while training, or a dtype other than f32).
pub fn attention<B: Backend>(
    inputs: AttentionInputs<B>,
    heads: usize,
    probs_dropout: &Dropout,
) -> Result<Tensor<B, 3>, AttentionInputs<B>> {
    #[cfg(feature = "autodiff")]
    let inputs = match super::tracked::attention(inputs, heads, probs_dropout) {
        Ok(context) => return Ok(context),
        Err(inputs) => inputs,
    };
    // Outside training dropout is the identity, so the inference kernel ignores it.
    let _ = probs_dropout;
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
    use crate::kernels::matmul::{Product, View, product};
    use crate::kernels::softmax::{Broadcast, softmax_row_with_bias};

    pub(super) fn attention<B: Backend>(
        inputs: AttentionInputs<B>,
        heads: usize,
    ) -> Result<Tensor<B, 3>, AttentionInputs<B>> {
        let [batch, queries, width] = inputs.q.dims();
        let [_, seq, _] = inputs.k.dims();
        let relative_fits = inputs
            .relative
            .as_ref()
            .is_none_or(|terms| PositionTables::fit(terms, seq, width));
        if !crate::kernels::is_flex::<B>() || !relative_fits {
            return Err(inputs);
        }
        let Some(bias) = kernel_bias(&inputs, heads) else {
            return Err(inputs);
        };
        let shape = Shape {
            batch,
            queries,
            seq,
            heads,
            d: width / heads,
        };
        let device = inputs.q.device();
        if batch * queries == 0 {
            // No pair has a row to read (slicing at a head's offset would be out of bounds).
            return Ok(Tensor::zeros([batch, queries, width], &device));
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
            TensorData::new(shape.context(&operands), [batch, queries, width]),
            &device,
        ))
    }

    pub(super) fn values<B: Backend, const D: usize>(x: Tensor<B, D>) -> Vec<f32> {
        x.into_data().into_vec::<f32>().unwrap_or_default()
    }

    /// The bias read for the kernel (`Some(None)` without one), or `None` when the kernel cannot
    /// take `inputs`: q, k and v not f32, k and v not of one `[batch, seq, heads·d]` shape, q
    /// not `[batch, queries ≤ seq, heads·d]`, or a bias that does not broadcast over the
    /// scores. Inference and training (tracked.rs) both ask.
    pub(crate) fn kernel_bias<B: Backend>(
        inputs: &AttentionInputs<B>,
        heads: usize,
    ) -> Option<Option<Broadcast>> {
        let [batch, queries, width] = inputs.q.dims();
        let kv @ [_, seq, _] = inputs.k.dims();
        let fits = [&inputs.q, &inputs.k, &inputs.v]
            .iter()
            .all(|x| x.dtype() == DType::F32)
            && inputs.v.dims() == kv
            && kv == [batch, seq, width]
            && queries <= seq
            && heads > 0
            && width.is_multiple_of(heads);
        if !fits {
            return None;
        }
        match &inputs.bias {
            Some(bias) => Broadcast::over([batch, heads, queries, seq], bias.clone()).map(Some),
            None => Some(None),
        }
    }

    /// Everything a (sequence, head) pair reads.
    pub(crate) struct Operands<'a> {
        /// `[batch, queries, heads·d]`.
        pub q: &'a [f32],
        /// `[batch, seq, heads·d]` each.
        pub k: &'a [f32],
        pub v: &'a [f32],
        pub bias: Option<&'a Broadcast>,
        pub tables: Option<&'a PositionTables>,
    }

    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Shape {
        pub batch: usize,
        /// Query rows per sequence: its first positions (`seq`, or 1 for the first token's).
        pub queries: usize,
        /// Key and value rows per sequence.
        pub seq: usize,
        pub heads: usize,
        pub d: usize,
    }

    impl Shape {
        pub fn width(self) -> usize {
            self.heads * self.d
        }

        /// Where head `h` of sequence `b` starts in the `[batch, seq, heads·d]` layout (k, v).
        pub fn first(self, b: usize, h: usize) -> usize {
            b * self.seq * self.width() + h * self.d
        }

        /// ... and in the `[batch, queries, heads·d]` layout (q, the context).
        pub fn first_query(self, b: usize, h: usize) -> usize {
            b * self.queries * self.width() + h * self.d
        }

        /// `one(b, h)` for every (sequence, head) pair, on rayon's pool with `threads`.
        pub fn each_pair<T: Send>(self, one: impl Fn(usize, usize) -> T + Sync) -> Vec<T> {
            let pairs = self.batch * self.heads;
            let one = |pair: usize| one(pair / self.heads, pair % self.heads);
            #[cfg(feature = "threads")]
            {
                use rayon::prelude::*;
                (0..pairs).into_par_iter().map(one).collect()
            }
            #[cfg(not(feature = "threads"))]
            (0..pairs).map(one).collect()
        }

        /// Each pair's `[queries, d]` rows written into one `[batch, queries, heads·d]` buffer.
        pub fn merge(self, heads: &[Vec<f32>]) -> Vec<f32> {
            let mut out = vec![0f32; self.batch * self.queries * self.width()];
            for (pair, head) in heads.iter().enumerate() {
                let first = self.first_query(pair / self.heads, pair % self.heads);
                for (i, row) in head.chunks_exact(self.d).enumerate() {
                    let at = first + i * self.width();
                    out[at..at + self.d].copy_from_slice(row);
                }
            }
            out
        }

        /// Every (sequence, head) pair's context, written into `[batch, queries, heads·d]`.
        fn context(self, operands: &Operands<'_>) -> Vec<f32> {
            let heads = self.each_pair(|b, h| {
                let probs = self.probs(b, h, operands);
                self.times_values(&probs, &operands.v[self.first(b, h)..])
            });
            self.merge(&heads)
        }

        /// The attention probabilities of head `h` of sequence `b`, `[queries, seq]`.
        pub fn probs(self, b: usize, h: usize, operands: &Operands<'_>) -> Vec<f32> {
            let (seq, d, width) = (self.seq, self.d, self.width());
            let q = &operands.q[self.first_query(b, h)..];
            let k = &operands.k[self.first(b, h)..];
            // scores = q_h · k_hᵀ · scale: k_h read transposed through its strides.
            let scale = self.scale(operands.tables);
            let (q_h, k_h) = (View::rows(q, width), View::rows(k, width).transposed());
            let mut scores = product([self.queries, seq], q_h, k_h, d, Product::scaled(scale));
            if let Some(tables) = operands.tables {
                tables.add_terms(&mut scores, self, h, [q, k], scale);
            }
            crate::kernels::simd::widest(
                #[inline(always)]
                || {
                    for (i, row) in scores.chunks_exact_mut(seq).enumerate() {
                        match operands.bias {
                            Some(bias) => softmax_row_with_bias(row, bias.row([b, h, i], seq)),
                            None => softmax_row_with_bias(row, &[]),
                        }
                    }
                },
            );
            scores
        }

        /// 1/√(d · terms): q·kᵀ and each position term.
        pub fn scale(self, tables: Option<&PositionTables>) -> f32 {
            let terms = 1 + tables.map_or(0, PositionTables::terms);
            1.0 / ((self.d * terms) as f32).sqrt()
        }

        /// `probs [queries, seq] · v_h`, `v` starting at the pair's first element:
        /// `[queries, d]`.
        pub fn times_values(self, probs: &[f32], v: &[f32]) -> Vec<f32> {
            let (probs, v) = (View::rows(probs, self.seq), View::rows(v, self.width()));
            product([self.queries, self.d], probs, v, self.seq, Product::PLAIN)
        }
    }
}
