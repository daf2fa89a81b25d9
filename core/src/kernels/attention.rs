//! softmax(q·kᵀ/√d + bias)·v on burn-flex, one (sequence, head) pair at a time: each pair's
//! `[seq, seq]` probabilities live in a scratch buffer that stays in cache, where the batched
//! composition builds `[batch, heads, seq, seq]` tensors — 400 MB at 32 × 512 tokens, whose page
//! faults, fills and copies cost more than the softmax itself (measured: a third of a batch-32
//! forward pass). q, k and v are read in place from the projections' `[batch, seq, heads·d]`
//! layout and the context is written in it, so the four head split/merge copies go too. It also
//! reads packed sequences (no padding) and attends from the first token only where that is all
//! a classifier reads (models/layout.rs). Pairs run in parallel over rayon (feature `threads`;
//! one after another in the browser); the per-pair matmuls are the `gemm` crate's, the GEMM
//! burn-flex calls. DeBERTa's disentangled position terms are added to each pair's scores in
//! the same pass (disentangled.rs).

#[cfg(feature = "flex")]
mod disentangled;
#[cfg(feature = "autodiff")]
pub(super) mod training;

#[cfg(feature = "autodiff")]
pub(super) use on_flex::{Shape, kernel_shape};

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
    /// Sequences packed without padding (see [`Packed`]); `None` for `[batch, seq, ·]`.
    pub packed: Option<Packed>,
}

/// Sequences laid one after another on the token axis, without padding: k and v are
/// `[1, tokens, heads·d]`, q the same or `[1, sequences, heads·d]` (each sequence's first
/// token), and no bias is needed. Only the kernel reads this layout; where it does not run the
/// caller pads (models/layout.rs).
#[derive(Clone, Debug)]
pub struct Packed {
    /// Tokens per sequence, in order; they sum to the token axis.
    pub lengths: Arc<[usize]>,
    /// Whether q holds each sequence's first token only.
    pub first_only: bool,
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
    /// `[n, n]`, `n` ≥ every sequence's length: the row of the position tables that query i
    /// and key j meet at, its bucketed relative position shifted by the span (positions are
    /// relative, so a sequence of any length reads the top-left block). The p2c term reads it
    /// too: position buckets are odd in the distance, so HF's p2c index at (j, i) equals this
    /// one at (i, j).
    pub index: Arc<[u32]>,
}

/// The context, shaped like q, with `probs_dropout` on the probabilities while
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
    use std::cell::RefCell;

    use burn::tensor::{DType, Tensor, TensorData, backend::Backend};

    use super::disentangled::PositionTables;
    use super::{AttentionInputs, Packed};
    use crate::kernels::matmul::{Matrix, Product, View, matmul, matmul_into, product};
    use crate::kernels::softmax::{Broadcast, exponentiate_row_with_bias, scale_row};

    pub(super) fn attention<B: Backend>(
        inputs: AttentionInputs<B>,
        heads: usize,
    ) -> Result<Tensor<B, 3>, AttentionInputs<B>> {
        if !crate::kernels::is_flex::<B>() {
            return Err(inputs);
        }
        let Some((shape, bias)) = kernel_shape(&inputs, heads) else {
            return Err(inputs);
        };
        let relative_fits = inputs
            .relative
            .as_ref()
            .is_none_or(|terms| PositionTables::fit(terms, shape.longest(), shape.width()));
        if !relative_fits {
            return Err(inputs);
        }
        let dims = inputs.q.dims();
        let device = inputs.q.device();
        if shape.query_rows() == 0 {
            // No pair has a row to read (slicing at a head's offset would be out of bounds).
            return Ok(Tensor::zeros(dims, &device));
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
            TensorData::new(shape.context(&operands), dims),
            &device,
        ))
    }

    pub(super) fn values<B: Backend, const D: usize>(x: Tensor<B, D>) -> Vec<f32> {
        x.into_data().into_vec::<f32>().unwrap_or_default()
    }

    /// The pairs' shape and the bias read for the kernel (`None` inside without one), or `None`
    /// when the kernel cannot take `inputs`: q, k and v not f32; k and v not of one
    /// `[batch, seq, heads·d]` shape, q not `[batch, queries ≤ seq, heads·d]` (or packed
    /// sequences that do not add up to the token axes); a bias that does not broadcast over
    /// the scores, or any bias with packed sequences. Inference and training (tracked.rs)
    /// both ask.
    pub(crate) fn kernel_shape<B: Backend>(
        inputs: &AttentionInputs<B>,
        heads: usize,
    ) -> Option<(Shape, Option<Broadcast>)> {
        let [batch, queries, width] = inputs.q.dims();
        let kv @ [_, seq, _] = inputs.k.dims();
        let fits = [&inputs.q, &inputs.k, &inputs.v]
            .iter()
            .all(|x| x.dtype() == DType::F32)
            && inputs.v.dims() == kv
            && kv == [batch, seq, width]
            && heads > 0
            && width.is_multiple_of(heads);
        if !fits {
            return None;
        }
        let d = width / heads;
        match (&inputs.packed, &inputs.bias) {
            (Some(packed), None) => {
                Shape::packed(packed, [batch, queries, seq], heads, d).map(|shape| (shape, None))
            }
            (Some(_), Some(_)) => None,
            (None, bias) => {
                let shape =
                    (queries <= seq).then(|| Shape::padded(batch, queries, seq, heads, d))?;
                let bias = match bias {
                    Some(bias) => {
                        Some(Broadcast::over([batch, heads, queries, seq], bias.clone())?)
                    }
                    None => None,
                };
                Some((shape, bias))
            }
        }
    }

    thread_local! {
        /// Each thread's scores of the pair it runs, kept between pairs and calls (as large as
        /// the longest sequence's `[seq, seq]` it has seen). A pair's products run on its own
        /// thread (no split), so no other pair can borrow it meanwhile.
        static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }

    /// The context buffer as the pairs write it, all at once: each its own block (its query
    /// rows, its head's `d` columns).
    struct HeadBlocks {
        first: *mut f32,
        len: usize,
    }

    // SAFETY: the pairs write disjoint blocks (`Shape::pair_context`), and the buffer outlives
    // them.
    unsafe impl Sync for HeadBlocks {}

    impl HeadBlocks {
        /// The first element of the `[rows, cols]` block at `first`, rows `stride` apart,
        /// checked to lie inside the buffer.
        fn block(&self, first: usize, [rows, cols, stride]: [usize; 3]) -> *mut f32 {
            let inside = rows == 0 || cols == 0 || first + (rows - 1) * stride + cols <= self.len;
            assert!(inside, "a head's block inside the context");
            self.first.wrapping_add(first)
        }
    }

    /// Everything a (sequence, head) pair reads.
    pub(crate) struct Operands<'a> {
        /// The queries' `[·, heads·d]` rows.
        pub q: &'a [f32],
        /// The keys' and values' `[·, heads·d]` rows.
        pub k: &'a [f32],
        pub v: &'a [f32],
        pub bias: Option<&'a Broadcast>,
        pub tables: Option<&'a PositionTables>,
    }

    /// Where one sequence's rows lie: its queries are its first `queries` positions, starting
    /// at row `queries_at` of q; its keys and values start at row `keys_at` of k and v.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Span {
        pub queries_at: usize,
        pub queries: usize,
        pub keys_at: usize,
        pub keys: usize,
    }

    /// The (sequence, head) pairs of one attention.
    #[derive(Clone, Debug)]
    pub(crate) struct Shape {
        pub heads: usize,
        pub d: usize,
        spans: Vec<Span>,
    }

    impl Shape {
        /// `[batch, queries, ·]` queries against `[batch, seq, ·]` keys.
        pub fn padded(batch: usize, queries: usize, seq: usize, heads: usize, d: usize) -> Self {
            let span = |b: usize| Span {
                queries_at: b * queries,
                queries,
                keys_at: b * seq,
                keys: seq,
            };
            Self {
                heads,
                d,
                spans: (0..batch).map(span).collect(),
            }
        }

        /// Packed sequences, or `None` when they do not add up to q's and k's token axes.
        fn packed(
            packed: &Packed,
            [batch, queries, seq]: [usize; 3],
            heads: usize,
            d: usize,
        ) -> Option<Self> {
            let (mut keys_at, mut spans) = (0, Vec::with_capacity(packed.lengths.len()));
            for (b, &keys) in packed.lengths.iter().enumerate() {
                if packed.first_only && keys == 0 {
                    return None; // no first token to attend from
                }
                let (queries_at, queries) = match packed.first_only {
                    true => (b, keys.min(1)),
                    false => (keys_at, keys),
                };
                spans.push(Span {
                    queries_at,
                    queries,
                    keys_at,
                    keys,
                });
                keys_at += keys;
            }
            let query_rows = match packed.first_only {
                true => packed.lengths.len(),
                false => keys_at,
            };
            let fits = batch == 1 && seq == keys_at && queries == query_rows;
            fits.then_some(Self { heads, d, spans })
        }

        pub fn width(&self) -> usize {
            self.heads * self.d
        }

        /// Training's pairs read their sizes here.
        #[cfg_attr(not(feature = "autodiff"), allow(dead_code))]
        pub fn span(&self, b: usize) -> Span {
            self.spans[b]
        }

        /// The most keys of any sequence.
        fn longest(&self) -> usize {
            self.spans.iter().map(|s| s.keys).max().unwrap_or(0)
        }

        /// Query rows over all sequences (the context's rows).
        fn query_rows(&self) -> usize {
            self.spans.iter().map(|s| s.queries).sum()
        }

        /// Where head `h` of sequence `b`'s keys (and values) start.
        pub fn first(&self, b: usize, h: usize) -> usize {
            self.spans[b].keys_at * self.width() + h * self.d
        }

        /// ... and its queries (and context).
        pub fn first_query(&self, b: usize, h: usize) -> usize {
            self.spans[b].queries_at * self.width() + h * self.d
        }

        /// `one(b, h)` for every (sequence, head) pair, on rayon's pool with `threads`.
        pub fn each_pair<T: Send>(&self, one: impl Fn(usize, usize) -> T + Sync) -> Vec<T> {
            let pairs = self.spans.len() * self.heads;
            let one = |pair: usize| one(pair / self.heads, pair % self.heads);
            #[cfg(feature = "threads")]
            {
                use rayon::prelude::*;
                (0..pairs).into_par_iter().map(one).collect()
            }
            #[cfg(not(feature = "threads"))]
            (0..pairs).map(one).collect()
        }

        /// Each pair's `[queries, d]` rows written into one buffer laid out like q.
        #[cfg_attr(not(feature = "autodiff"), allow(dead_code))]
        pub fn merge(&self, heads: &[Vec<f32>]) -> Vec<f32> {
            let width = self.width();
            let mut out = vec![0f32; self.query_rows() * width];
            for (pair, head) in heads.iter().enumerate() {
                let first = self.first_query(pair / self.heads, pair % self.heads);
                for (i, row) in head.chunks_exact(self.d).enumerate() {
                    let at = first + i * width;
                    out[at..at + self.d].copy_from_slice(row);
                }
            }
            out
        }

        /// Every (sequence, head) pair's context, laid out like q. Each pair's scores go to a
        /// scratch buffer of its thread and are exponentiated there; `· v` writes straight
        /// into the pair's block of the output, and those rows, not the scores, are divided by
        /// the softmax's sums: one pass over the scores fewer than normalising them, and no
        /// zeroed buffer per pair nor serial merge of the heads afterwards (docs/BENCHMARKS.md).
        fn context(&self, operands: &Operands<'_>) -> Vec<f32> {
            let width = self.width();
            let mut out = vec![0f32; self.query_rows() * width];
            let blocks = HeadBlocks {
                first: out.as_mut_ptr(),
                len: out.len(),
            };
            self.each_pair(|b, h| {
                SCORES.with_borrow_mut(|scores| self.pair_context(b, h, operands, scores, &blocks))
            });
            out
        }

        /// Pair (b, h)'s context rows, written into its block of `blocks`.
        fn pair_context(
            &self,
            b: usize,
            h: usize,
            operands: &Operands<'_>,
            scores: &mut Vec<f32>,
            blocks: &HeadBlocks,
        ) {
            let (span, width) = (self.spans[b], self.width());
            if span.queries == 0 {
                return;
            }
            let sums = self.exponentials(b, h, operands, scores);
            let (first, dims) = (self.first_query(b, h), [span.queries, self.d, width]);
            let probs = View::rows(scores, span.keys);
            let v = View::rows(&operands.v[self.first(b, h)..], width);
            // SAFETY: `blocks` holds every pair's block, and pair (b, h) is the only one to
            // write rows `first_query(b, h)..` at columns `h·d..(h+1)·d`.
            unsafe {
                let out = blocks.block(first, dims);
                matmul_into(out, dims, probs, v, span.keys, Product::PLAIN);
                for (i, sum) in sums.into_iter().enumerate() {
                    scale_row(
                        std::slice::from_raw_parts_mut(out.add(i * width), self.d),
                        1.0 / sum,
                    );
                }
            }
        }

        /// The attention probabilities of head `h` of sequence `b`, `[queries, keys]`.
        #[cfg_attr(not(feature = "autodiff"), allow(dead_code))]
        pub fn probs(&self, b: usize, h: usize, operands: &Operands<'_>) -> Vec<f32> {
            let mut probs = Vec::new();
            let sums = self.exponentials(b, h, operands, &mut probs);
            let keys = self.spans[b].keys.max(1);
            crate::kernels::simd::widest(
                #[inline(always)]
                || {
                    for (row, sum) in probs.chunks_exact_mut(keys).zip(sums) {
                        scale_row(row, 1.0 / sum);
                    }
                },
            );
            probs
        }

        /// Pair (b, h)'s scores, `[queries, keys]` in the first values of `scores` (grown as
        /// needed), replaced by the softmax's numerators; returns each row's sum.
        fn exponentials(
            &self,
            b: usize,
            h: usize,
            operands: &Operands<'_>,
            scores: &mut Vec<f32>,
        ) -> Vec<f32> {
            let (span, width) = (self.spans[b], self.width());
            let q = &operands.q[self.first_query(b, h)..];
            let k = &operands.k[self.first(b, h)..];
            if scores.len() < span.queries * span.keys {
                scores.resize(span.queries * span.keys, 0.0);
            }
            let scores = &mut scores[..span.queries * span.keys];
            // scores = q_h · k_hᵀ · scale: k_h read transposed through its strides.
            let scale = self.scale(operands.tables);
            let (q_h, k_h) = (View::rows(q, width), View::rows(k, width).transposed());
            let out = Matrix {
                values: scores,
                rows: span.queries,
                cols: span.keys,
                row_stride: span.keys,
            };
            matmul(out, q_h, k_h, self.d, Product::scaled(scale));
            if let Some(tables) = operands.tables {
                tables.add_terms(scores, self, span, h, [q, k], scale);
            }
            crate::kernels::simd::widest(
                #[inline(always)]
                || {
                    // A loop, not an iterator's `map`: its closure would be compiled out of
                    // line, without the vector unit's features (simd.rs).
                    let mut sums = Vec::with_capacity(span.queries);
                    for (i, row) in scores.chunks_exact_mut(span.keys.max(1)).enumerate() {
                        let bias = operands
                            .bias
                            .map_or(&[][..], |all| all.row([b, h, i], span.keys));
                        sums.push(exponentiate_row_with_bias(row, bias));
                    }
                    sums
                },
            )
        }

        /// 1/√(d · terms): q·kᵀ and each position term.
        pub fn scale(&self, tables: Option<&PositionTables>) -> f32 {
            let terms = 1 + tables.map_or(0, PositionTables::terms);
            1.0 / ((self.d * terms) as f32).sqrt()
        }

        /// `probs [queries, keys] · v_h` of sequence `b`, `v` starting at the pair's first
        /// element: `[queries, d]`.
        #[cfg_attr(not(feature = "autodiff"), allow(dead_code))]
        pub fn times_values(&self, b: usize, probs: &[f32], v: &[f32]) -> Vec<f32> {
            let span = self.spans[b];
            let (probs, v) = (View::rows(probs, span.keys), View::rows(v, self.width()));
            product([span.queries, self.d], probs, v, span.keys, Product::PLAIN)
        }
    }
}
