//! Layer normalisation's rows for training: the forward keeps each row's normalised values and
//! 1/σ for the backward. Inference keeps burn-flex's own fused `layer_norm`; under autodiff
//! burn composes it from ~8 recorded ops with broadcasts (kernels/tracked.rs runs these rows
//! instead).

/// Each row of `values` (rows of `gamma.len()`) normalised in place to `x̂ = (x − μ)/σ`, its
/// 1/σ written to `inv_std`; then `out = x̂·γ + β`. `σ² + ε` as burn's and PyTorch's: the
/// biased variance.
pub(super) fn normalize_rows(
    values: &mut [f32],
    out: &mut [f32],
    inv_std: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f32,
) {
    let d = gamma.len();
    let rows = values.chunks_exact_mut(d).zip(out.chunks_exact_mut(d));
    for ((row, out), inv) in rows.zip(inv_std) {
        let mean = row.iter().sum::<f32>() / d as f32;
        let var = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / d as f32;
        *inv = 1.0 / (var + epsilon).sqrt();
        for (((x, y), g), b) in row.iter_mut().zip(out.iter_mut()).zip(gamma).zip(beta) {
            *x = (*x - mean) * *inv;
            *y = *x * g + b;
        }
    }
}

/// The input's gradient in place of the output's, row by row:
/// `dx = (1/σ)·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))` with `ĝ = g·γ`.
pub(super) fn backward_rows(grad: &mut [f32], normalized: &[f32], inv_std: &[f32], gamma: &[f32]) {
    let d = gamma.len();
    let rows = grad.chunks_exact_mut(d).zip(normalized.chunks_exact(d));
    for ((grad, x_hat), inv) in rows.zip(inv_std) {
        let (mut sum, mut dot) = (0f32, 0f32);
        for ((g, x), w) in grad.iter().zip(x_hat).zip(gamma) {
            sum += g * w;
            dot += g * w * x;
        }
        let (mean, mean_dot) = (sum / d as f32, dot / d as f32);
        for ((g, x), w) in grad.iter_mut().zip(x_hat).zip(gamma) {
            *g = inv * (*g * w - mean - x * mean_dot);
        }
    }
}

/// γ's and β's gradients: Σ over rows of `g·x̂` and of `g`.
pub(super) fn parameter_grads(grad: &[f32], normalized: &[f32], d: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut gamma, mut beta) = (vec![0f32; d], vec![0f32; d]);
    if d == 0 {
        return (gamma, beta);
    }
    for (g, x) in grad.chunks_exact(d).zip(normalized.chunks_exact(d)) {
        for (((dg, db), g), x) in gamma.iter_mut().zip(beta.iter_mut()).zip(g).zip(x) {
            *dg += g * x;
            *db += g;
        }
    }
    (gamma, beta)
}
