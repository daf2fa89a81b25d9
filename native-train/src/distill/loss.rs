//! The HarmAug objective. Per row, with a teacher score t (P(unsafe)) and hard label y:
//!
//! `λ·KL([1−t, t] ‖ softmax(z)) + (1−λ)·CE(z, y)`, or `CE(z, y)` for a row without t.
//!
//! Both terms are linear in log softmax(z), so the loss is one weighted sum
//! `c − Σ_k w_k·log p_k` with host-built weights `w = λ·[1−t, t] + (1−λ)·onehot(y)` and the
//! constant `c = λ·Σ_k t_k·log t_k` (0·log 0 = 0): one small tensor op, exact values.

use burn::tensor::{Tensor, TensorData, activation::log_softmax, backend::Backend};

/// The targets of one micro-batch, ready to meet the logits.
pub struct Targets {
    /// `[rows, 2]` weights of log p, row-major.
    weights: Vec<f32>,
    /// Σ of the rows' constants.
    constant: f64,
    rows: usize,
}

impl Targets {
    /// `unsafe_index` is the logit column of "unsafe"; `lambda` weighs the KL term.
    pub fn new(hard: &[bool], soft: &[Option<f32>], unsafe_index: usize, lambda: f64) -> Self {
        let mut weights = Vec::with_capacity(hard.len() * 2);
        let mut constant = 0.0;
        for (&y, &t) in hard.iter().zip(soft) {
            let mut onehot = [0.0f64; 2];
            onehot[if y { unsafe_index } else { 1 - unsafe_index }] = 1.0;
            let row = match t {
                None => onehot,
                Some(t) => {
                    let t = f64::from(t);
                    let mut teacher = [1.0 - t; 2];
                    teacher[unsafe_index] = t;
                    constant += lambda * teacher.iter().map(|&p| xlogx(p)).sum::<f64>();
                    [0, 1].map(|k| lambda * teacher[k] + (1.0 - lambda) * onehot[k])
                }
            };
            weights.extend(row.map(|w| w as f32));
        }
        Self {
            weights,
            constant,
            rows: hard.len(),
        }
    }

    /// Σ over rows of the per-row loss, as a scalar tensor (divide by the effective batch).
    pub fn summed_loss<B: Backend>(&self, logits: Tensor<B, 2>) -> Tensor<B, 1> {
        let device = logits.device();
        let weights = Tensor::<B, 2>::from_data(
            TensorData::new(self.weights.clone(), [self.rows, 2]),
            &device,
        );
        let weighted = (log_softmax(logits, 1) * weights).sum();
        weighted.neg() + self.constant
    }
}

fn xlogx(p: f64) -> f64 {
    if p > 0.0 { p * p.ln() } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn loss(logits: [f32; 2], hard: bool, soft: Option<f32>, lambda: f64) -> f64 {
        let device = Default::default();
        let logits =
            Tensor::<Flex, 2>::from_data(TensorData::new(logits.to_vec(), [1, 2]), &device);
        let targets = Targets::new(&[hard], &[soft], 1, lambda);
        f64::from(targets.summed_loss(logits).into_scalar())
    }

    #[test]
    fn cross_entropy_alone_without_a_teacher_score() {
        // z = [2, −1], y = unsafe: −log(e^−1 / (e^2 + e^−1)) = 3 + log(1 + e^−3) = 3.048587.
        assert!((loss([2.0, -1.0], true, None, 0.5) - 3.048_587_35).abs() < 1e-5);
        // y = safe: log(1 + e^−3) = 0.048587.
        assert!((loss([2.0, -1.0], false, None, 0.5) - 0.048_587_35).abs() < 1e-5);
    }

    #[test]
    fn half_kl_half_cross_entropy_with_a_teacher_score() {
        // z = [2, −1]: log p = [−0.048587, −3.048587]; t = 0.8, y = unsafe, λ = 0.5.
        // KL = 0.2·(ln 0.2 + 0.048587) + 0.8·(ln 0.8 + 3.048587) = 1.948185
        // CE = 3.048587 → 0.5·1.948185 + 0.5·3.048587 = 2.498386.
        assert!((loss([2.0, -1.0], true, Some(0.8), 0.5) - 2.498_386_14).abs() < 1e-5);
        // λ = 1: the KL alone; a student equal to the teacher has zero loss.
        let teacher_logit = (0.8f32 / 0.2).ln();
        assert!(loss([0.0, teacher_logit], true, Some(0.8), 1.0).abs() < 1e-6);
        // A certain teacher (t = 1): KL = CE, so the loss is CE whatever λ.
        let ce = loss([2.0, -1.0], true, None, 0.5);
        assert!((loss([2.0, -1.0], true, Some(1.0), 0.3) - ce).abs() < 1e-5);
    }

    #[test]
    fn rows_sum_and_the_unsafe_column_is_respected() {
        let device = Default::default();
        let logits = Tensor::<Flex, 2>::from_data(
            TensorData::new(vec![2.0f32, -1.0, -1.0, 2.0], [2, 2]),
            &device,
        );
        // Unsafe is column 0 here: row 1 (logits [−1, 2]) labelled unsafe costs 3.048587.
        let targets = Targets::new(&[false, true], &[None, None], 0, 0.5);
        let sum = f64::from(targets.summed_loss(logits).into_scalar());
        assert!((sum - 2.0 * 3.048_587_35).abs() < 1e-5, "{sum}");
    }
}
