//! Exact GELU, 0.5·x·(1 + erf(x/√2)) — transformers' "gelu" — with erf as one rational
//! function: burn-flex computes it with libm's scalar `erff` on one thread, which took as long
//! as the feed-forward matmul before it (MiniLM: 65 ms for [2048, 1536], docs/BENCHMARKS.md).

use burn::tensor::{Tensor, activation, backend::Backend};

/// GELU of `x`: the kernel below on burn-flex (also as a recorded op while training),
/// burn's `activation::gelu` elsewhere.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "autodiff")]
    let x = match super::tracked::gelu(x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    super::on_flex_f32(x, gelu_rows).unwrap_or_else(activation::gelu)
}

/// erf(z) for f32 as p(z)/q(z), odd over even polynomials in z², on [−4, 4]; ±1 beyond (erf
/// rounds to ±1 in f32 there, and the rational function is 6e-8 short of it). The minimax
/// coefficients are the ones XLA and Eigen use for their vectorised f32 erf; measured against
/// an f64 erf over [−6, 6] by the tests below.
#[inline(always)]
fn erf(z: f32) -> f32 {
    const P: [f32; 7] = [
        -2.726_142_3e-10,
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906e-4,
        -2.954_600_1e-3,
        -1.609_603_3e-2,
    ];
    const Q: [f32; 5] = [
        -1.456_607_2e-5,
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329e-3,
        -1.426_474e-2,
    ];
    let inside = z.clamp(-4.0, 4.0);
    let z2 = inside * inside;
    // Horner's rule with plain multiply-adds: `mul_add` would be a libm call without FMA.
    let p = P.iter().fold(0.0, |acc, &c| acc * z2 + c);
    let q = Q.iter().fold(0.0, |acc, &c| acc * z2 + c);
    // A select, not a branch: the loop stays vectorised. NaN fails the test and stays NaN.
    if z.abs() >= 4.0 {
        1f32.copysign(z)
    } else {
        inside * p / q
    }
}

/// GELU of every value, in place, split over threads like the other kernels.
pub(super) fn gelu_rows(values: &mut [f32]) {
    super::for_each_rows(values, 1, |chunk, _| {
        super::simd::widest(
            #[inline(always)]
            || gelu_in_place(chunk),
        )
    })
}

/// GELU of every value plus its column's bias (rows of `bias.len()` values), in place: a
/// linear layer's bias and activation in one pass over its product (kernels/linear.rs).
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
pub(super) fn gelu_rows_with_bias(values: &mut [f32], bias: &[f32]) {
    if bias.is_empty() {
        return;
    }
    super::for_each_rows(values, bias.len(), |chunk, _| {
        super::simd::widest(
            #[inline(always)]
            || {
                for row in chunk.chunks_exact_mut(bias.len()) {
                    for (x, &b) in row.iter_mut().zip(bias) {
                        *x = gelu_of(*x + b);
                    }
                }
            },
        )
    })
}

#[inline(always)]
fn gelu_in_place(values: &mut [f32]) {
    for x in values {
        *x = gelu_of(*x);
    }
}

#[inline(always)]
fn gelu_of(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * core::f32::consts::FRAC_1_SQRT_2))
}

/// `grad` times GELU's derivative at `input`, in place: Φ(x) + x·φ(x), the normal
/// distribution's CDF and density (burn's `gelu_backward` with libm's erf and exp).
#[cfg_attr(not(feature = "autodiff"), allow(dead_code))]
pub(super) fn gelu_derivative_times(grad: &mut [f32], input: &[f32]) {
    // 1/√(2π)
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    super::simd::widest(
        #[inline(always)]
        || {
            for (g, &x) in grad.iter_mut().zip(input) {
                let cdf = 0.5 * (1.0 + erf(x * core::f32::consts::FRAC_1_SQRT_2));
                // exp of a non-positive number (NaN stays NaN); −x²/2 below −87 gives 0.
                let density = INV_SQRT_2PI * super::softmax::exp(-0.5 * x * x);
                *g *= cdf + x * density;
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf in f64 from its Maclaurin series near 0 and its continued fraction beyond: exact
    /// to ~1e-15, far below f32's resolution (a reference without another libm).
    fn erf_f64(x: f64) -> f64 {
        if x.abs() < 2.5 {
            let (mut term, mut sum, x2) = (x, x, x * x);
            for n in 1..200 {
                term *= -x2 / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / core::f64::consts::PI.sqrt()
        } else {
            // erfc(x) = exp(−x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + …)))), x > 0.
            let a = x.abs();
            let mut fraction = 0.0;
            for k in (1..100).rev() {
                fraction = (k as f64 / 2.0) / (a + fraction);
            }
            let erfc = (-a * a).exp() / core::f64::consts::PI.sqrt() / (a + fraction);
            (1.0 - erfc).copysign(x)
        }
    }

    #[test]
    fn erf_is_within_f32_resolution_of_the_exact_value() {
        let mut worst = 0f64;
        for i in -60_000..=60_000 {
            let z = i as f32 * 1e-4;
            worst = worst.max((erf(z) as f64 - erf_f64(z as f64)).abs());
        }
        assert!(worst < 5e-7, "max |erf error| {worst:e}");
    }

    #[test]
    fn gelu_matches_the_exact_formula() {
        let mut values: Vec<f32> = (-80_000..=80_000).map(|i| i as f32 * 1e-4).collect();
        let inputs = values.clone();
        gelu_in_place(&mut values);
        let worst = inputs
            .iter()
            .zip(&values)
            .map(|(&x, &g)| {
                let x = x as f64;
                (g as f64 - 0.5 * x * (1.0 + erf_f64(x / 2f64.sqrt()))).abs()
            })
            .fold(0f64, f64::max);
        assert!(worst < 2e-6, "max |gelu error| {worst:e}");
    }

    /// The dispatched versions (AVX-512 / AVX2 where this CPU has them) compute the same bits
    /// as the baseline build of the same loop.
    #[test]
    fn every_vector_width_gives_the_same_bits() {
        let inputs: Vec<f32> = (-50_000..=50_000).map(|i| i as f32 * 1.7e-4).collect();
        let (mut baseline, mut dispatched) = (inputs.clone(), inputs);
        gelu_in_place(&mut baseline);
        gelu_rows(&mut dispatched);
        assert!(
            baseline
                .iter()
                .zip(&dispatched)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
    }

    #[test]
    fn special_values() {
        let mut values = [
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1e30,
            -1e30,
        ];
        gelu_in_place(&mut values);
        // As burn's libm GELU: −∞ · 0 is NaN there too.
        assert_eq!(values[..3], [0.0, 0.0, f32::INFINITY]);
        assert!(values[3].is_nan() && values[4].is_nan());
        assert_eq!(values[5..], [1e30, 0.0]);
    }
}
