//! DeBERTa's position terms inside the attention kernel: per (sequence, head) pair, q_h (c2p) or
//! k_h (p2c) against the head's slice of a projected position table, `[seq, 2·span]`, then
//! gathered into the pair's `[queries, seq]` scores through the relative-position index. burn's
//! composition builds both terms as `[batch, heads, seq, seq]` tensors and gathers them with an
//! index tensor of the same size, per layer.

use std::sync::Arc;

use burn::tensor::{DType, backend::Backend};

use super::RelativeTerms;
use super::on_flex::{Shape, Span, values};
use crate::kernels::matmul::{Product, View, product};

/// [`RelativeTerms`] read into plain buffers.
pub(crate) struct PositionTables {
    /// `[rows, heads·d]` each.
    pos_key: Option<Vec<f32>>,
    pos_query: Option<Vec<f32>>,
    rows: usize,
    /// `[side, side]`: positions are relative within each sequence, so every sequence reads
    /// the top-left block of its own length.
    index: Arc<[u32]>,
    side: usize,
}

impl PositionTables {
    /// Whether `terms` fits an attention of `width` whose longest sequence has `longest`
    /// tokens: f32 tables of one shape `[rows, width]`, and a square index at least that long
    /// that stays inside them.
    pub(super) fn fit<B: Backend>(terms: &RelativeTerms<B>, longest: usize, width: usize) -> bool {
        let tables = [&terms.pos_key, &terms.pos_query];
        let mut dims = tables.iter().filter_map(|t| t.as_ref().map(|t| t.dims()));
        let rows = match dims.next() {
            Some([rows, w]) if w == width => rows,
            Some(_) => return false,
            None => 0,
        };
        dims.all(|d| d == [rows, width])
            && tables
                .iter()
                .flat_map(|t| t.as_ref())
                .all(|t| t.dtype() == DType::F32)
            && terms.index.len() == side(&terms.index).pow(2)
            && side(&terms.index) >= longest
            && terms.index.iter().all(|&r| (r as usize) < rows)
    }

    pub(super) fn read<B: Backend>(terms: RelativeTerms<B>) -> Self {
        let rows = [&terms.pos_key, &terms.pos_query]
            .iter()
            .find_map(|t| t.as_ref().map(|t| t.dims()[0]))
            .unwrap_or(0);
        Self {
            pos_key: terms.pos_key.map(values),
            pos_query: terms.pos_query.map(values),
            rows,
            side: side(&terms.index),
            index: terms.index,
        }
    }

    /// How many terms beside q·kᵀ: each divides the scale.
    pub(super) fn terms(&self) -> usize {
        usize::from(self.pos_key.is_some()) + usize::from(self.pos_query.is_some())
    }

    /// Adds `scale` times the c2p and p2c terms of head `h` of the sequence at `span` to its
    /// `[queries, keys]` scores; `q` and `k` start at the pair's first element.
    pub(super) fn add_terms(
        &self,
        scores: &mut [f32],
        shape: &Shape,
        span: Span,
        h: usize,
        [q, k]: [&[f32]; 2],
        scale: f32,
    ) {
        let seq = span.keys;
        if let Some(pos_key) = &self.pos_key {
            // Query i meets key j at position row index(i, j) of query i's c2p row.
            let c2p = self.against(q, span.queries, pos_key, shape, h, scale);
            for (i, row) in scores.chunks_exact_mut(seq).enumerate() {
                let c2p = &c2p[i * self.rows..(i + 1) * self.rows];
                for (score, &r) in row.iter_mut().zip(self.index_row(i, seq)) {
                    *score += c2p[r as usize];
                }
            }
        }
        if let Some(pos_query) = &self.pos_query {
            // ... and at the same position row of key j's p2c row.
            let p2c = self.against(k, seq, pos_query, shape, h, scale);
            for (i, row) in scores.chunks_exact_mut(seq).enumerate() {
                let index = self.index_row(i, seq);
                for (j, (score, &r)) in row.iter_mut().zip(index).enumerate() {
                    *score += p2c[j * self.rows + r as usize];
                }
            }
        }
    }

    /// Query i's index against the first `seq` keys.
    fn index_row(&self, i: usize, seq: usize) -> &[u32] {
        &self.index[i * self.side..i * self.side + seq]
    }

    /// `[x_rows, rows]`: `scale · x_h · table_hᵀ`.
    fn against(
        &self,
        x: &[f32],
        x_rows: usize,
        table: &[f32],
        shape: &Shape,
        h: usize,
        scale: f32,
    ) -> Vec<f32> {
        let width = shape.width();
        let table_h = View::rows(&table[h * shape.d..], width).transposed();
        product(
            [x_rows, self.rows],
            View::rows(x, width),
            table_h,
            shape.d,
            Product::scaled(scale),
        )
    }
}

/// The side of a square index.
fn side(index: &[u32]) -> usize {
    index.len().isqrt()
}
