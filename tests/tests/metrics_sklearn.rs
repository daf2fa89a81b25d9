//! harmaug's metrics against scikit-learn's on `fixtures/metrics.json`
//! (`fixtures/make_metric_fixtures.py`): equal within 1e-9, undefined values null on both sides.

use harmaug_core::metrics::{BinaryMetrics, Curve};
use harmaug_tests::fixture;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    name: String,
    labels: Vec<bool>,
    scores: Vec<f64>,
    at: Vec<AtThreshold>,
    auprc: Option<f64>,
    roc_auc: Option<f64>,
    best_f1_threshold: Option<f64>,
    threshold_at_fpr: std::collections::BTreeMap<String, Option<f64>>,
}

#[derive(Deserialize)]
struct AtThreshold {
    threshold: f64,
    precision: Option<f64>,
    recall: Option<f64>,
    f1: Option<f64>,
    accuracy: Option<f64>,
}

fn same(what: &str, case: &str, ours: Option<f64>, sklearn: Option<f64>) {
    match (ours, sklearn) {
        (Some(a), Some(b)) => assert!(
            (a - b).abs() <= 1e-9,
            "{case}: {what} {a} vs scikit-learn {b}"
        ),
        (None, None) => {}
        _ => panic!("{case}: {what} {ours:?} vs scikit-learn {sklearn:?}"),
    }
}

#[test]
fn metrics_equal_scikit_learn() {
    let cases: Vec<Case> =
        serde_json::from_slice(&std::fs::read(fixture("metrics.json")).unwrap()).unwrap();
    assert_eq!(cases.len(), 9);
    for case in &cases {
        let name = case.name.as_str();
        for at in &case.at {
            let m = BinaryMetrics::compute(&case.labels, &case.scores, at.threshold);
            let what = |metric: &str| format!("{metric} at {}", at.threshold);
            same(&what("precision"), name, m.precision, at.precision);
            same(&what("recall"), name, m.recall, at.recall);
            same(&what("f1"), name, m.f1, at.f1);
            same(&what("accuracy"), name, m.accuracy, at.accuracy);
            same("auprc", name, m.auprc, case.auprc);
            same("roc_auc", name, m.roc_auc, case.roc_auc);
            // Thresholds are input scores: they must be the very same number.
            assert_eq!(
                m.best_f1_threshold, case.best_f1_threshold,
                "{name}: best F1 threshold"
            );
        }
        let curve = Curve::new(&case.labels, &case.scores);
        for (target, expected) in &case.threshold_at_fpr {
            let target: f64 = target.parse().unwrap();
            assert_eq!(
                curve.threshold_at_fpr(target),
                *expected,
                "{name}: threshold at FPR {target}"
            );
        }
    }
}
