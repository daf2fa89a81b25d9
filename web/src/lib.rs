//! harmaug in the browser: core's [`Guard`] behind a wasm-bindgen API, on WebGPU (burn-wgpu) or
//! the wasm CPU backend (burn-flex, SIMD128).
//!
//! This crate only adapts: the model, tokenisation, pair encoding and scoring are core's, the
//! same code the native CLI runs. Downloading, checking and caching the bundle, the Web Worker
//! and the `HarmGuard` class web developers use live in `web/js/` (see web/README.md).
//!
//! Only built for wasm32: on other targets the crate is empty.
#![cfg(target_arch = "wasm32")]

use std::cell::Cell;
use std::rc::Rc;

use burn::backend::{WebGpu, wgpu};
use harmaug_core::bundle::{self, Manifest};
use harmaug_core::tokenize::LongInput;
use harmaug_core::{Guard, GuardInput, LoadOptions, ModelFiles, Scores};
use wasm_bindgen::prelude::*;

/// The wasm CPU fallback.
type CpuBackend = burn_flex::Flex<f32>;
/// WebGPU computes in f32: browsers' software adapters lack `shader-f16` (bundles may store f16).
type GpuBackend = WebGpu<f32, i32>;

/// Rows per forward pass: enough to keep WebGPU busy, small enough for the CPU's cache.
const BATCH_SIZE: usize = 16;

/// Runs `$body` with `$guard` bound to the loaded guard, whichever backend holds it.
macro_rules! on_backend {
    ($loaded:expr, $guard:ident => $body:expr) => {
        match $loaded {
            Loaded::Gpu($guard) => $body,
            Loaded::Cpu($guard) => $body,
        }
    };
}

// One per page, behind an Rc: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Loaded {
    Gpu(Guard<GpuBackend>),
    Cpu(Guard<CpuBackend>),
}

/// A loaded guard. Construct it with [`WasmGuard::load`]; JS keeps it until `free()`.
#[wasm_bindgen]
pub struct WasmGuard {
    // Shared with the futures that `score_batch` returns, which outlive the `&self` borrow.
    guard: Rc<Loaded>,
}

#[wasm_bindgen]
impl WasmGuard {
    /// Loads a model from the bundle's files (`tokenizer_config_json` only if the bundle has
    /// one). `backend`: "webgpu" or "cpu" (the JS wrapper chooses, and falls back to "cpu" when
    /// WebGPU fails). `max_length`: 0 = the model's. `long_input`: "truncate" (the default)
    /// or "chunk" (windows of the max length, the highest P(unsafe), as the CLI's
    /// `--long-input chunk`).
    pub async fn load(
        config_json: String,
        tokenizer_json: Vec<u8>,
        tokenizer_config_json: Option<String>,
        weights: Vec<u8>,
        backend: String,
        max_length: usize,
        long_input: Option<String>,
    ) -> Result<WasmGuard, JsError> {
        console_error_panic_hook::set_once();
        let files = ModelFiles {
            config_json: &config_json,
            weights: vec![&weights],
            tokenizer_json: &tokenizer_json,
            tokenizer_config_json: tokenizer_config_json.as_deref(),
            release_weights: None,
        };
        let options = LoadOptions {
            max_length: (max_length > 0).then_some(max_length),
            long_input: parse_long_input(long_input.as_deref())?,
            ..LoadOptions::default()
        };
        let guard = match backend.as_str() {
            "webgpu" => Loaded::Gpu(Guard::load(&files, &options, &webgpu_device().await)?),
            "cpu" => Loaded::Cpu(Guard::load(&files, &options, &Default::default())?),
            other => {
                return Err(JsError::new(&format!(
                    "unknown backend {other:?}: expected \"webgpu\" or \"cpu\""
                )));
            }
        };
        if has_untrained_head(&guard) {
            return Err(JsError::new(
                "this model has no trained classifier head (config.json/model.safetensors lack \
                 it): export a fine-tuned guard with `harmaug export`",
            ));
        }
        Ok(WasmGuard {
            guard: Rc::new(guard),
        })
    }

    /// "webgpu" or "cpu".
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        match *self.guard {
            Loaded::Gpu(_) => "webgpu".into(),
            Loaded::Cpu(_) => "cpu".into(),
        }
    }

    /// Truncation length in tokens.
    #[wasm_bindgen(getter, js_name = maxLength)]
    pub fn max_length(&self) -> usize {
        on_backend!(&*self.guard, guard => guard.max_length())
    }

    /// The labels whose probabilities `scoreBatch` reports, as the CLI's `scores` object: every
    /// label of a multi-label model or one with more than two; empty for a binary guard.
    #[wasm_bindgen(getter)]
    pub fn labels(&self) -> Vec<String> {
        on_backend!(&*self.guard, guard => guard.labels().reported_names().unwrap_or_default().to_vec())
    }

    /// Scores each (prompt, response) row, in order; an empty response = none, as natively.
    /// Resolves to `{scores, labelProbabilities}`: `scores` a `Float32Array` of P(unsafe);
    /// `labelProbabilities` a `Float32Array` of `labels.length` values per row (row-major),
    /// present only when `labels` is not empty.
    #[wasm_bindgen(js_name = scoreBatch)]
    pub fn score_batch(&self, prompts: Vec<String>, responses: Vec<String>) -> js_sys::Promise {
        let guard = Rc::clone(&self.guard);
        let reported = !self.labels().is_empty();
        wasm_bindgen_futures::future_to_promise(async move {
            let scores = score_rows(&guard, prompts, responses).await?;
            let result = js_sys::Object::new();
            let set = |key: &str, values: &[f32]| {
                js_sys::Reflect::set(&result, &key.into(), &js_sys::Float32Array::from(values))
            };
            set("scores", &scores.scores)?;
            if reported {
                set("labelProbabilities", &scores.label_probabilities)?;
            }
            Ok(result.into())
        })
    }
}

/// The operating threshold of files given without a manifest: core's default.
#[wasm_bindgen(js_name = defaultThreshold)]
pub fn default_threshold() -> f64 {
    bundle::operating_threshold(None)
}

/// A bundle's `manifest.json`, checked by the rules the native CLI applies (core's
/// [`Manifest`]): format and version, the files every bundle lists, the threshold's range; then
/// each downloaded file against its listed size and sha256. The worker keeps no rules of its own.
#[wasm_bindgen]
pub struct BundleManifest {
    manifest: Manifest,
}

#[wasm_bindgen]
impl BundleManifest {
    #[wasm_bindgen(constructor)]
    pub fn new(json: &str) -> Result<BundleManifest, JsError> {
        Ok(Self {
            manifest: Manifest::parse(json)?,
        })
    }

    /// The files to download, in the manifest's order.
    #[wasm_bindgen(getter, js_name = fileNames)]
    pub fn file_names(&self) -> Vec<String> {
        self.manifest.files.iter().map(|f| f.name.clone()).collect()
    }

    /// The size the manifest lists for `name` (download progress), if it lists it.
    #[wasm_bindgen(js_name = fileBytes)]
    pub fn file_bytes(&self, name: &str) -> Option<usize> {
        Some(self.manifest.file(name)?.bytes)
    }

    /// The sha256 the manifest lists for `name`: the key of a cached copy.
    #[wasm_bindgen(js_name = fileSha256)]
    pub fn file_sha256(&self, name: &str) -> Option<String> {
        Some(self.manifest.file(name)?.sha256.clone())
    }

    /// The score at and above which the bundle calls an input unsafe.
    #[wasm_bindgen(getter)]
    pub fn threshold(&self) -> f64 {
        bundle::operating_threshold(Some(&self.manifest))
    }

    /// Throws, naming the file, when `bytes` differ from what the manifest lists for `name`.
    pub fn check(&self, name: &str, bytes: &[u8]) -> Result<(), JsError> {
        Ok(self.manifest.check_file(name, bytes)?)
    }
}

thread_local! {
    static WEBGPU_READY: Cell<bool> = const { Cell::new(false) };
}

/// The WebGPU device, set up on first use. On the web a device can only be created
/// asynchronously (burn's synchronous default would panic), and only once per thread.
async fn webgpu_device() -> wgpu::WgpuDevice {
    let device = wgpu::WgpuDevice::default();
    if !WEBGPU_READY.get() {
        wgpu::init_setup_async::<wgpu::graphics::WebGpu>(&device, Default::default()).await;
        WEBGPU_READY.set(true);
    }
    device
}

/// Natively a missing head is seeded with a warning (fine-tuning starts there); a web page
/// would show meaningless scores, so it is refused.
fn has_untrained_head(guard: &Loaded) -> bool {
    on_backend!(guard, guard => !guard.fresh_parts().names.is_empty())
}

/// JS's `longInput` option → core's [`LongInput`]; absent = truncate, as transformers does.
fn parse_long_input(name: Option<&str>) -> Result<LongInput, JsError> {
    match name {
        None | Some("truncate") => Ok(LongInput::Truncate),
        Some("chunk") => Ok(LongInput::Chunk),
        Some(other) => Err(JsError::new(&format!(
            "longInput {other:?}: expected \"truncate\" or \"chunk\""
        ))),
    }
}

async fn score_rows(
    guard: &Loaded,
    prompts: Vec<String>,
    responses: Vec<String>,
) -> Result<Scores, JsValue> {
    if responses.len() != prompts.len() && !responses.is_empty() {
        return Err(JsError::new(&format!(
            "{} prompts but {} responses: give one response per prompt (\"\" for none)",
            prompts.len(),
            responses.len()
        ))
        .into());
    }
    let inputs: Vec<GuardInput> = prompts
        .into_iter()
        .enumerate()
        .map(|(i, prompt)| GuardInput {
            prompt,
            response: responses.get(i).filter(|r| !r.is_empty()).cloned(),
        })
        .collect();
    on_backend!(guard, guard => guard.score_async(&inputs, BATCH_SIZE).await)
        .map_err(|e| JsError::new(&e.to_string()).into())
}
