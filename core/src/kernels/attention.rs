//! softmax(q·kᵀ/√d + bias)·v on burn-flex, one (sequence, head) pair at a time: each pair's
//! `[seq, seq]` probabilities live in a scratch buffer that stays in cache, where the batched
//! composition builds `[batch, heads, seq, seq]` tensors — 400 MB at 32 × 512 tokens, whose page
//! faults, fills and copies cost more than the softmax itself (measured: a third of a batch-32
//! forward pass). q, k and v are read in place from the projections' `[batch, seq, heads·d]`
//! layout and the context is written in it, so the four head split/merge copies go too. Pairs
//! run in parallel over rayon; the per-pair matmuls are the `gemm` crate's, the GEMM burn-flex
//! calls. Native builds only (feature `threads`): the browser's wasm CPU path keeps burn's
//! composition until the kernel has been measured there.

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
}

/// The context `[batch, seq, heads·d]`, or the inputs back for burn's composition (another
/// backend, `Autodiff` while training — where dropout applies too — or a dtype other than f32).
pub fn attention<B: Backend>(
    inputs: AttentionInputs<B>,
    heads: usize,
) -> Result<Tensor<B, 3>, AttentionInputs<B>> {
    #[cfg(feature = "threads")]
    return on_flex::attention(inputs, heads);
    #[cfg(not(feature = "threads"))]
    {
        let _ = heads;
        Err(inputs)
    }
}

/// The kernel itself: native builds only (`threads`) until it is measured in the browser, where
/// the wasm CPU path keeps burn's composition.
#[cfg(feature = "threads")]
mod on_flex {
    use burn::tensor::{DType, Tensor, TensorData, backend::Backend};

    use super::AttentionInputs;
    use crate::kernels::matmul::{Matrix, Product, View, matmul};
    use crate::kernels::softmax::{Broadcast, softmax_row_with_bias};

    pub(super) fn attention<B: Backend>(
        inputs: AttentionInputs<B>,
        heads: usize,
    ) -> Result<Tensor<B, 3>, AttentionInputs<B>> {
        let [batch, seq, width] = inputs.q.dims();
        let fits = inputs.k.dims() == [batch, seq, width] && inputs.v.dims() == [batch, seq, width];
        if !crate::kernels::is_flex::<B>() || inputs.q.dtype() != DType::F32 || !fits || heads == 0
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
        let [q, k, v] = [inputs.q, inputs.k, inputs.v].map(values);
        let context = shape.context(&q, &k, &v, bias.as_ref());
        Ok(Tensor::from_data(
            TensorData::new(context, [batch, seq, width]),
            &device,
        ))
    }

    fn values<B: Backend>(x: Tensor<B, 3>) -> Vec<f32> {
        x.into_data().into_vec::<f32>().unwrap_or_default()
    }

    #[derive(Clone, Copy)]
    struct Shape {
        batch: usize,
        seq: usize,
        heads: usize,
        d: usize,
    }

    impl Shape {
        fn width(self) -> usize {
            self.heads * self.d
        }

        /// Every (sequence, head) pair's context, written into `[batch, seq, heads·d]`.
        fn context(self, q: &[f32], k: &[f32], v: &[f32], bias: Option<&Broadcast>) -> Vec<f32> {
            let pairs = self.batch * self.heads;
            let one = |pair: usize| self.head(pair / self.heads, pair % self.heads, q, k, v, bias);
            let heads: Vec<Vec<f32>> = {
                use rayon::prelude::*;
                (0..pairs).into_par_iter().map(one).collect()
            };
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
        fn head(
            self,
            b: usize,
            h: usize,
            q: &[f32],
            k: &[f32],
            v: &[f32],
            bias: Option<&Broadcast>,
        ) -> Vec<f32> {
            let (seq, d, width) = (self.seq, self.d, self.width());
            let first = b * seq * width + h * self.d;
            let mut scores = vec![0f32; seq * seq];
            // scores = q_h · k_hᵀ / √d: k_h read transposed through its strides.
            let scale = 1.0 / (d as f32).sqrt();
            matmul(
                Matrix {
                    values: &mut scores,
                    rows: seq,
                    cols: seq,
                    row_stride: seq,
                },
                View::rows(&q[first..], width),
                View::rows(&k[first..], width).transposed(),
                d,
                Product {
                    scale,
                    ..Product::PLAIN
                },
            );
            for (i, row) in scores.chunks_exact_mut(seq).enumerate() {
                match bias {
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
                View::rows(&v[first..], width),
                seq,
                Product::PLAIN,
            );
            context
        }
    }
}
