//! An int8 bundle's linear layers in int8 (`LoadOptions::int8_kernels`): the logits stay close
//! to the same bundle dequantised to f32, for both architectures; the option changes nothing for
//! an f32 checkpoint or on a backend without the kernels (wgpu).

use std::path::Path;

use harmaug_core::checkpoint::{self, StoredDtype};
use harmaug_core::kernels;
use harmaug_core::tokenize::EncodedText;
use harmaug_core::{Guard, GuardInput, LoadOptions};
use harmaug_tests::{
    TestBackend, fixture, load_guard, load_guard_with_weights, max_abs_diff, rows_of,
};

fn logits(guard: &Guard<TestBackend>) -> Vec<Vec<f32>> {
    let inputs = [
        GuardInput::prompt("How do I bake bread?"),
        GuardInput::pair("How can I hurt someone?", "I cannot help with that."),
        GuardInput::prompt("a b c d e f g h i j k l m n o p q r s t u v w x y z"),
    ];
    let encoded: Vec<EncodedText> = inputs.iter().map(|i| guard.encode(i).unwrap()).collect();
    rows_of(guard.logits(&encoded.iter().collect::<Vec<_>>()))
}

fn load(dir: &Path, weights: &[u8], int8_kernels: bool) -> Guard<TestBackend> {
    let options = LoadOptions {
        int8_kernels,
        ..LoadOptions::default()
    };
    load_guard_with_weights(dir, weights, &options)
}

/// Largest |Δlogit| of the int8 kernels against the dequantised bundle, and the logits' scale.
fn int8_drift(name: &str) -> (f32, f32) {
    let dir = fixture(name);
    let guard = load_guard(&dir, &LoadOptions::default());
    let int8 =
        checkpoint::to_safetensors(guard.model(), &guard.parts().names, StoredDtype::Int8).unwrap();
    let dequantised = logits(&load(&dir, &int8, false));
    let scale = dequantised
        .iter()
        .flatten()
        .fold(0f32, |m, v| m.max(v.abs()));
    (
        max_abs_diff(&logits(&load(&dir, &int8, true)), &dequantised),
        scale,
    )
}

fn check(name: &str) {
    let (drift, scale) = int8_drift(name);
    if kernels::runs_int8::<TestBackend>() {
        // The activations' 8-bit rounding moves the logits a little, never far.
        assert!(drift > 0.0, "{name}: the int8 kernels did not run");
        assert!(
            drift <= 0.05 * scale.max(1.0),
            "{name}: drift {drift} (logits up to {scale})"
        );
    } else {
        // The same f32 layers both times (a GPU backend may pick its kernels anew per load).
        assert!(
            drift <= 1e-6,
            "{name}: a backend without the kernels must run the f32 layers"
        );
    }
}

#[test]
fn bert_int8_layers_stay_close_to_the_dequantised_bundle() {
    check("bert-tiny-f32");
}

#[test]
fn deberta_int8_layers_stay_close_to_the_dequantised_bundle() {
    check("deberta-tiny-b8");
}

#[test]
fn an_f32_checkpoint_is_unchanged_by_the_option() {
    let dir = fixture("bert-tiny-f32");
    let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
    let diff = max_abs_diff(
        &logits(&load(&dir, &weights, true)),
        &logits(&load(&dir, &weights, false)),
    );
    assert!(diff <= 1e-6, "an f32 checkpoint moved by {diff:e}");
}
