//! Softmax over the last dimension (attention probabilities) with exp as a polynomial:
//! burn-flex's softmax vectorises the max and the sum but calls libm's scalar `expf` per
//! element, which was 9–11% of a MiniLM forward pass (perf, docs/BENCHMARKS.md).

use burn::tensor::{Tensor, activation, backend::Backend};

/// Softmax of `x` over its last dimension: the kernel below on burn-flex, burn's elsewhere.
pub fn softmax_last<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let row = x.dims()[D - 1];
    if row == 0 {
        return x;
    }
    super::on_flex_f32(x, move |values| softmax_rows(values, row))
        .unwrap_or_else(|x| activation::softmax(x, D - 1))
}

/// softmax(scores + bias) over the last dimension of `[batch, heads, rows, cols]` scores, with
/// `bias` broadcast over any of its first three dimensions of size 1 (a padding mask per key,
/// `[batch, 1, 1, cols]`, or per query and key, `[batch, 1, rows, cols]`). On burn-flex the
/// bias is added row by row inside the kernel, so no full-size bias is ever built.
pub fn softmax_last_with_bias<B: Backend>(
    scores: Tensor<B, 4>,
    bias: Option<Tensor<B, 4>>,
) -> Tensor<B, 4> {
    #[cfg(feature = "autodiff")]
    let (scores, bias) = match super::tracked::softmax_with_bias(scores, bias) {
        Ok(probs) => return probs,
        Err(inputs) => inputs,
    };
    let Some(bias) = bias else {
        return softmax_last(scores);
    };
    let dims = scores.dims();
    let kernel_bias = (super::is_flex::<B>() && !dims.contains(&0))
        .then(|| Broadcast::over(dims, bias.clone()))
        .flatten();
    let Some(kernel_bias) = kernel_bias else {
        return activation::softmax(scores + bias, 3);
    };
    super::on_flex_f32(scores, |values| {
        biased_softmax_rows(values, dims, &kernel_bias)
    })
    .unwrap_or_else(|scores| activation::softmax(scores + bias, 3))
}

/// A bias tensor's values and the strides that broadcast it over `[batch, heads, rows]`.
pub(super) struct Broadcast {
    values: Vec<f32>,
    strides: [usize; 3],
}

impl Broadcast {
    /// `bias` read for broadcasting over `scores` dims, or `None` when its shape does not
    /// broadcast (burn's op then says so).
    pub(super) fn over<B: Backend>(scores: [usize; 4], bias: Tensor<B, 4>) -> Option<Self> {
        let dims = bias.dims();
        let fits = dims[3] == scores[3] && (0..3).all(|d| dims[d] == 1 || dims[d] == scores[d]);
        if !fits {
            return None;
        }
        let [batch, heads, rows, cols] = dims;
        let stride = |size: usize, inner: usize| if size == 1 { 0 } else { inner };
        let strides = [
            stride(batch, heads * rows * cols),
            stride(heads, rows * cols),
            stride(rows, cols),
        ];
        let values = bias.into_data().convert::<f32>().into_vec().ok()?;
        Some(Self { values, strides })
    }
}

impl Broadcast {
    /// The `cols` bias values of row `r` of head `h` of sequence `b`.
    pub(super) fn row(&self, [b, h, r]: [usize; 3], cols: usize) -> &[f32] {
        let [sb, sh, sr] = self.strides;
        let start = b * sb + h * sh + r * sr;
        &self.values[start..start + cols]
    }
}

pub(super) fn biased_softmax_rows(values: &mut [f32], dims: [usize; 4], bias: &Broadcast) {
    let [_, heads, rows, cols] = dims;
    super::for_each_rows(values, cols, |chunk, first_row| {
        biased_softmax_chunk(chunk, first_row, [heads, rows, cols], bias)
    });
}

/// Rows `first_row..` of the scores, each with its row of the broadcast bias added.
fn biased_softmax_chunk(
    values: &mut [f32],
    first_row: usize,
    [heads, rows, cols]: [usize; 3],
    bias: &Broadcast,
) {
    super::simd::widest(
        #[inline(always)]
        || {
            for (local, row) in values.chunks_exact_mut(cols).enumerate() {
                let index = first_row + local;
                let at = [index / (heads * rows), index / rows % heads, index % rows];
                softmax_row_with_bias(row, bias.row(at, cols));
            }
        },
    )
}

/// Lanes of the partial maxima and sums: wide enough for AVX2, and a fixed width so LLVM
/// turns each pass into vector operations (a float reduction in one accumulator it must
/// keep in order).
const LANES: usize = 8;

pub(super) fn softmax_rows(values: &mut [f32], row: usize) {
    super::for_each_rows(values, row, |chunk, _| {
        super::simd::widest(
            #[inline(always)]
            || chunk.chunks_exact_mut(row).for_each(softmax_row),
        )
    });
}

/// The gradient of softmax's input from its output's, row by row, in place:
/// gᵢ ← pᵢ·(gᵢ − Σⱼ gⱼ·pⱼ) for the probabilities `probs` and the output's gradient `grad`.
#[cfg_attr(not(feature = "autodiff"), allow(dead_code))]
pub(super) fn softmax_backward_rows(grad: &mut [f32], probs: &[f32], row: usize) {
    super::simd::widest(
        #[inline(always)]
        || {
            for (g, p) in grad.chunks_exact_mut(row).zip(probs.chunks_exact(row)) {
                softmax_backward_row(g, p);
            }
        },
    )
}

#[inline(always)]
fn softmax_backward_row(g: &mut [f32], p: &[f32]) {
    let mut partial = [0f32; LANES];
    let (mut gs, mut ps) = (g.chunks_exact(LANES), p.chunks_exact(LANES));
    for (gc, pc) in (&mut gs).zip(&mut ps) {
        for lane in 0..LANES {
            partial[lane] += gc[lane] * pc[lane];
        }
    }
    for (lane, (&gv, &pv)) in gs.remainder().iter().zip(ps.remainder()).enumerate() {
        partial[lane] += gv * pv;
    }
    let dot: f32 = partial.iter().sum();
    for (gv, &pv) in g.iter_mut().zip(p) {
        *gv = pv * (*gv - dot);
    }
}

#[inline(always)]
pub(super) fn softmax_row_with_bias(row: &mut [f32], bias: &[f32]) {
    let sum = exponentiate_row_with_bias(row, bias);
    scale_row(row, 1.0 / sum);
}

#[inline(always)]
fn softmax_row(row: &mut [f32]) {
    softmax_row_with_bias(row, &[]);
}

/// softmax's numerators in place, `row` (+ `bias`) → e^(x − max), and their sum, the
/// denominator. Attention divides its context rows by the sum rather than every probability.
/// (Summing inside the exponent's loop kept LLVM from vectorising it: 2× slower, measured.)
#[inline(always)]
pub(super) fn exponentiate_row_with_bias(row: &mut [f32], bias: &[f32]) -> f32 {
    for (x, &add) in row.iter_mut().zip(bias) {
        *x += add;
    }
    let max = lane_wise(row, f32::NEG_INFINITY, f32::max);
    for x in row.iter_mut() {
        *x = exp(*x - max);
    }
    lane_wise(row, 0.0, |a, b| a + b)
}

#[inline(always)]
pub(super) fn scale_row(row: &mut [f32], scale: f32) {
    for x in row.iter_mut() {
        *x *= scale;
    }
}

/// `combine` over every value, in LANES partial results combined at the end. Value i always
/// goes to lane i mod LANES, so a row padded with masked keys (which add exact zeros and lose
/// every max) gives bit for bit the sum and max of the same row unpadded: the softmax adds no
/// dependence on the batch a text is scored in (the matmuls around it still may, by an ulp,
/// as they do with burn's own softmax).
#[inline(always)]
fn lane_wise(row: &[f32], start: f32, combine: impl Fn(f32, f32) -> f32) -> f32 {
    let mut partial = [start; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (p, &x) in partial.iter_mut().zip(chunk) {
            *p = combine(*p, x);
        }
    }
    for (p, &x) in partial.iter_mut().zip(chunks.remainder()) {
        *p = combine(*p, x);
    }
    partial.into_iter().reduce(&combine).unwrap_or(start)
}

/// e^x for x ≤ 0 (softmax's x − max): x = n·ln 2 + r with |r| ≤ ln 2 / 2, e^r by its Taylor
/// series to r⁷ (truncation < 6e-9 relative), 2^n built in the exponent bits. Below −87 the
/// result is 0 (e^x < 2e-38 there, the smallest normal f32); NaN stays NaN.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = core::f32::consts::LOG2_E;
    // ln 2 in two parts, so n·LN2_HIGH is exact for the n used here.
    const LN2_HIGH: f32 = 0.693_145_75;
    const LN2_LOW: f32 = 1.428_606_8e-6;
    // Adding 1.5·2^23 rounds to an integer in the low mantissa bits (|x·log2 e| < 2^22).
    const ROUND: f32 = 12_582_912.0;
    let inside = if x < -87.0 { -87.0 } else { x };
    let shifted = inside * LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = inside - n * LN2_HIGH - n * LN2_LOW;
    let mut poly = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        poly = poly * r + c;
    }
    let exponent = (shifted.to_bits() as i32 - ROUND.to_bits() as i32 + 127) as u32;
    let value = poly * f32::from_bits(exponent << 23);
    if x < -87.0 { 0.0 } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_where_softmax_uses_it() {
        let mut worst = 0f64;
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let exact = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - exact).abs() / exact);
        }
        assert!(worst < 2.4e-7, "max relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn rows_sum_to_one_and_match_the_exact_softmax() {
        for row in [1, 3, 8, 17, 128] {
            let mut values: Vec<f32> = (0..row * 4)
                .map(|i| ((i * 7919) % 101) as f32 * 0.37 - 18.0)
                .collect();
            let inputs = values.clone();
            softmax_rows(&mut values, row);
            for (out, input) in values.chunks(row).zip(inputs.chunks(row)) {
                let max = input
                    .iter()
                    .fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
                let sum: f64 = input.iter().map(|&x| (x as f64 - max).exp()).sum();
                for (&p, &x) in out.iter().zip(input) {
                    let exact = (x as f64 - max).exp() / sum;
                    assert!((p as f64 - exact).abs() < 1e-6, "row {row}: {p} vs {exact}");
                }
            }
        }
    }

    /// As GELU's: the dispatched rows equal the baseline build's bit for bit.
    #[test]
    fn every_vector_width_gives_the_same_bits() {
        let row = 211;
        let inputs: Vec<f32> = (0..row * 9)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.13)
            .collect();
        let (mut baseline, mut dispatched) = (inputs.clone(), inputs);
        baseline.chunks_exact_mut(row).for_each(softmax_row);
        softmax_rows(&mut dispatched, row);
        assert!(
            baseline
                .iter()
                .zip(&dispatched)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
    }

    #[test]
    fn masked_positions_get_zero() {
        let mut values = [0.0, f32::NEG_INFINITY, 1.0, f32::MIN];
        softmax_rows(&mut values, 4);
        assert_eq!(values[1], 0.0);
        assert_eq!(values[3], 0.0);
        assert!((values[0] + values[2] - 1.0).abs() < 1e-6);
    }
}
