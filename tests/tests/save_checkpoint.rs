//! Writing a model back as a HF checkpoint (`checkpoint::to_safetensors`, what `harmaug distill`
//! saves): the same tensor names and values as the checkpoint it was loaded from, and the same
//! logits when loaded again, for every fixture architecture; a bare base model (MiniLM) is
//! saved under `bert.` as transformers' `BertForSequenceClassification` expects.

use std::collections::BTreeMap;
use std::path::Path;

use harmaug_core::checkpoint::{self, StoredDtype};
use harmaug_core::tokenize::EncodedText;
use harmaug_core::{Guard, GuardInput, LoadOptions};
use harmaug_tests::{
    TestBackend, fixture, load_guard, load_guard_with_weights, max_abs_diff, minilm_dir, rows_of,
};
use safetensors::{Dtype, SafeTensors};

/// Every float tensor of a safetensors file, widened to f32, with its shape (integer buffers
/// such as old checkpoints' `position_ids` are not parameters and are left out).
fn tensors(bytes: &[u8]) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let file = SafeTensors::deserialize(bytes).unwrap();
    file.tensors()
        .into_iter()
        .filter(|(_, view)| !matches!(view.dtype(), Dtype::I64 | Dtype::I32))
        .map(|(name, view)| {
            let values = match view.dtype() {
                Dtype::F32 => view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                Dtype::F16 => view
                    .data()
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => view
                    .data()
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                other => panic!("{name}: unexpected dtype {other:?}"),
            };
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

fn inputs() -> Vec<GuardInput> {
    vec![
        GuardInput::prompt("How do I bake bread?"),
        GuardInput::pair("How can I hurt someone?", "I cannot help with that."),
        GuardInput::prompt("a b c d e f g h i j k l m n o p"),
    ]
}

fn logits(guard: &Guard<TestBackend>) -> Vec<Vec<f32>> {
    let encoded: Vec<EncodedText> = inputs().iter().map(|i| guard.encode(i).unwrap()).collect();
    let rows: Vec<&EncodedText> = encoded.iter().collect();
    rows_of(guard.logits(&rows))
}

fn reload(dir: &Path, weights: &[u8]) -> Guard<TestBackend> {
    load_guard_with_weights(dir, weights, &LoadOptions::default())
}

fn round_trip(name: &str) {
    let dir = fixture(name);
    let guard = load_guard(&dir, &LoadOptions::default());
    let saved =
        checkpoint::to_safetensors(guard.model(), &guard.parts().names, StoredDtype::F32).unwrap();

    let original = tensors(&std::fs::read(dir.join("model.safetensors")).unwrap());
    let written = tensors(&saved);
    assert_eq!(
        original.keys().collect::<Vec<_>>(),
        written.keys().collect::<Vec<_>>(),
        "{name}: tensor names"
    );
    for (key, (shape, values)) in &original {
        let (saved_shape, saved_values) = &written[key];
        assert_eq!(shape, saved_shape, "{name}: shape of {key}");
        assert_eq!(values, saved_values, "{name}: values of {key}");
    }

    let diff = max_abs_diff(&logits(&reload(&dir, &saved)), &logits(&guard));
    assert_eq!(diff, 0.0, "{name}: reloaded logits differ by {diff:e}");
}

#[test]
fn bert_saves_what_it_loaded() {
    round_trip("bert-tiny-f32");
    // f16 weights are widened on load and saved as f32: the same numbers.
    round_trip("bert-tiny-f16");
}

#[test]
fn deberta_saves_what_it_loaded() {
    round_trip("deberta-tiny-b256");
    round_trip("deberta-tiny-b8");
}

#[test]
fn bare_minilm_is_saved_with_the_bert_prefix_and_its_fresh_classifier() {
    let dir = minilm_dir();
    let guard = load_guard(&dir, &LoadOptions::default());
    let saved =
        checkpoint::to_safetensors(guard.model(), &guard.parts().names, StoredDtype::F32).unwrap();
    let original = tensors(&std::fs::read(dir.join("model.safetensors")).unwrap());
    let written = tensors(&saved);
    for (key, (_, values)) in &original {
        let prefixed = format!("bert.{key}");
        let (_, saved_values) = written
            .get(&prefixed)
            .unwrap_or_else(|| panic!("{prefixed} missing from the saved checkpoint"));
        assert_eq!(values, saved_values, "values of {key}");
    }
    assert!(written.contains_key("classifier.weight") && written.contains_key("classifier.bias"));
    assert!(
        written
            .keys()
            .all(|k| k.starts_with("bert.") || k.starts_with("classifier.")),
        "{:?}",
        written.keys().collect::<Vec<_>>()
    );
    // The saved checkpoint, with the prefix, reloads to the same model.
    let diff = max_abs_diff(&logits(&reload(&dir, &saved)), &logits(&guard));
    assert_eq!(diff, 0.0);
}
