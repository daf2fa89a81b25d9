//! Binary-classification metrics that equal scikit-learn's: precision, recall, F1 and accuracy
//! at a threshold (`score >= threshold` is unsafe), average precision (AUPRC, the step-wise
//! integral of `average_precision_score`), ROC-AUC, the F1-optimal threshold and the threshold
//! for a target false-positive rate.
//!
//! Where scikit-learn's value is undefined (no positives, nothing flagged, one class only) the
//! metric is `None` (null in reports), as scikit-learn's `zero_division=np.nan` gives, never a
//! crash.

use serde::Serialize;

/// Counts at one threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
}

impl Confusion {
    pub fn at(labels: &[bool], scores: &[f64], threshold: f64) -> Self {
        let mut c = Confusion::default();
        for (&label, &score) in labels.iter().zip(scores) {
            match (label, score >= threshold) {
                (true, true) => c.tp += 1,
                (false, true) => c.fp += 1,
                (false, false) => c.tn += 1,
                (true, false) => c.fn_ += 1,
            }
        }
        c
    }

    pub fn precision(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fp)
    }

    pub fn recall(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// 2·tp / (2·tp + fp + fn), as scikit-learn computes it from counts.
    pub fn f1(&self) -> Option<f64> {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }

    pub fn accuracy(&self) -> Option<f64> {
        ratio(self.tp + self.tn, self.tp + self.fp + self.tn + self.fn_)
    }
}

fn ratio(numerator: u64, denominator: u64) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

/// Cumulative counts at each distinct score, highest first (scikit-learn's
/// `confusion_matrix_at_thresholds`): flagging every input scored ≥ `thresholds[i]` gives
/// `tps[i]` true and `fps[i]` false positives.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub thresholds: Vec<f64>,
    pub tps: Vec<u64>,
    pub fps: Vec<u64>,
    pub positives: u64,
    pub negatives: u64,
}

impl Curve {
    /// Scores must be finite (NaN has no place in an order).
    pub fn new(labels: &[bool], scores: &[f64]) -> Self {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let mut curve = Curve {
            thresholds: Vec::new(),
            tps: Vec::new(),
            fps: Vec::new(),
            positives: 0,
            negatives: 0,
        };
        for (rank, &i) in order.iter().enumerate() {
            if labels[i] {
                curve.positives += 1;
            } else {
                curve.negatives += 1;
            }
            let last_of_group = order
                .get(rank + 1)
                .is_none_or(|&next| scores[next] != scores[i]);
            if last_of_group {
                curve.thresholds.push(scores[i]);
                curve.tps.push(curve.positives);
                curve.fps.push(curve.negatives);
            }
        }
        curve
    }

    /// `average_precision_score`: Σ (Rᵢ − Rᵢ₋₁) · Pᵢ over thresholds, highest first.
    pub fn average_precision(&self) -> Option<f64> {
        if self.positives == 0 {
            return None;
        }
        let p = self.positives as f64;
        let mut previous_recall = 0.0;
        let mut sum = 0.0;
        for (&tp, &fp) in self.tps.iter().zip(&self.fps) {
            let recall = tp as f64 / p;
            let precision = tp as f64 / (tp + fp) as f64;
            sum += (recall - previous_recall) * precision;
            previous_recall = recall;
        }
        Some(sum.max(0.0))
    }

    /// The precision–recall curve as the vertices of the step function whose area is the
    /// average precision: from (0, 1), precision Pᵢ holds on (Rᵢ₋₁, Rᵢ]. Empty without
    /// positives.
    pub fn pr_steps(&self) -> Vec<(f64, f64)> {
        if self.positives == 0 {
            return Vec::new();
        }
        let p = self.positives as f64;
        let mut points = vec![(0.0, 1.0)];
        let mut previous_recall = 0.0;
        for (&tp, &fp) in self.tps.iter().zip(&self.fps) {
            let (recall, precision) = (tp as f64 / p, tp as f64 / (tp + fp) as f64);
            points.push((previous_recall, precision));
            points.push((recall, precision));
            previous_recall = recall;
        }
        points
    }

    /// `roc_auc_score`: the trapezoidal area under (FPR, TPR) from (0, 0).
    pub fn roc_auc(&self) -> Option<f64> {
        if self.positives == 0 || self.negatives == 0 {
            return None;
        }
        let (p, n) = (self.positives as f64, self.negatives as f64);
        let (mut x0, mut y0, mut area) = (0.0, 0.0, 0.0);
        for (&tp, &fp) in self.tps.iter().zip(&self.fps) {
            let (x1, y1) = (fp as f64 / n, tp as f64 / p);
            area += (x1 - x0) * (y1 + y0) / 2.0;
            (x0, y0) = (x1, y1);
        }
        Some(area)
    }

    /// The threshold with the highest F1 (the lowest such threshold on ties), compared exactly
    /// on counts so that equal F1s from different counts tie.
    pub fn best_f1_threshold(&self) -> Option<f64> {
        if self.positives == 0 {
            return None;
        }
        // F1 = 2tp / (tp + fp + P); compare a/b ≥ c/d as a·d ≥ c·b.
        let mut best: Option<(usize, u128, u128)> = None;
        for (i, (&tp, &fp)) in self.tps.iter().zip(&self.fps).enumerate() {
            let (num, den) = (2 * tp as u128, (tp + fp + self.positives) as u128);
            let better = best.is_none_or(|(_, bn, bd)| num * bd >= bn * den);
            if better {
                best = Some((i, num, den));
            }
        }
        best.map(|(i, ..)| self.thresholds[i])
    }

    /// The lowest threshold whose false-positive rate is at most `target` (the most recall the
    /// FPR budget allows); `None` if even the highest score exceeds it, or there are no
    /// negatives.
    pub fn threshold_at_fpr(&self, target: f64) -> Option<f64> {
        if self.negatives == 0 {
            return None;
        }
        let n = self.negatives as f64;
        self.fps
            .iter()
            .rposition(|&fp| fp as f64 / n <= target)
            .map(|i| self.thresholds[i])
    }
}

/// Every metric harmaug reports for one model on one data set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BinaryMetrics {
    pub n: usize,
    pub positives: u64,
    pub threshold: f64,
    pub confusion: Confusion,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
    pub accuracy: Option<f64>,
    pub auprc: Option<f64>,
    pub roc_auc: Option<f64>,
    pub best_f1_threshold: Option<f64>,
}

impl BinaryMetrics {
    /// `labels[i]` is true for unsafe; `scores[i]` is P(unsafe).
    pub fn compute(labels: &[bool], scores: &[f64], threshold: f64) -> Self {
        Self::compute_with_curve(labels, scores, threshold).0
    }

    /// The metrics and the curve they were read from (for plots).
    pub fn compute_with_curve(labels: &[bool], scores: &[f64], threshold: f64) -> (Self, Curve) {
        assert_eq!(labels.len(), scores.len(), "one score per label");
        let confusion = Confusion::at(labels, scores, threshold);
        let curve = Curve::new(labels, scores);
        let metrics = Self {
            n: labels.len(),
            positives: curve.positives,
            threshold,
            confusion,
            precision: confusion.precision(),
            recall: confusion.recall(),
            f1: confusion.f1(),
            accuracy: confusion.accuracy(),
            auprc: curve.average_precision(),
            roc_auc: curve.roc_auc(),
            best_f1_threshold: curve.best_f1_threshold(),
        };
        (metrics, curve)
    }

    /// Names of the metrics that are undefined here, for one warning per data set.
    pub fn undefined(&self) -> Vec<&'static str> {
        [
            ("precision", self.precision),
            ("recall", self.recall),
            ("f1", self.f1),
            ("auprc", self.auprc),
            ("roc_auc", self.roc_auc),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.is_none().then_some(name))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_example() {
        // Scores 0.9 (+), 0.8 (−), 0.8 (+), 0.1 (−): a tie straddles the classes.
        let labels = [true, false, true, false];
        let scores = [0.9, 0.8, 0.8, 0.1];
        let curve = Curve::new(&labels, &scores);
        assert_eq!(curve.thresholds, vec![0.9, 0.8, 0.1]);
        assert_eq!(
            (curve.tps.clone(), curve.fps.clone()),
            (vec![1, 2, 2], vec![0, 1, 2])
        );
        // AP = 0.5·1 + 0.5·(2/3)
        assert!((curve.average_precision().unwrap() - (0.5 + 1.0 / 3.0)).abs() < 1e-15);
        // ROC: (0,0) (0,.5) (.5,1) (1,1) → 0 + .5·.75 + .5 = 0.875
        assert!((curve.roc_auc().unwrap() - 0.875).abs() < 1e-15);
        // F1 at 0.9: 2/(1+0+2)=2/3; at 0.8: 4/(2+1+2)=4/5; at 0.1: 4/6.
        assert_eq!(curve.best_f1_threshold(), Some(0.8));
        assert_eq!(curve.threshold_at_fpr(0.0), Some(0.9));
        assert_eq!(curve.threshold_at_fpr(0.5), Some(0.8));
        // The steps enclose exactly the average precision.
        let steps = curve.pr_steps();
        let area: f64 = steps.windows(2).map(|w| (w[1].0 - w[0].0) * w[1].1).sum();
        assert!((area - curve.average_precision().unwrap()).abs() < 1e-15);
        assert_eq!(steps.first(), Some(&(0.0, 1.0)));
        assert_eq!(steps.last(), Some(&(1.0, 0.5)));
    }

    #[test]
    fn one_class_gives_nulls_not_panics() {
        let m = BinaryMetrics::compute(&[false, false], &[0.2, 0.7], 0.5);
        assert_eq!(
            (m.recall, m.auprc, m.roc_auc, m.best_f1_threshold),
            (None, None, None, None)
        );
        assert_eq!(m.precision, Some(0.0));
        assert_eq!(m.undefined(), vec!["recall", "auprc", "roc_auc"]);
        let empty = BinaryMetrics::compute(&[], &[], 0.5);
        assert_eq!((empty.accuracy, empty.f1), (None, None));
    }
}
