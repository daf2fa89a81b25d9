//! harmaug-core: the safety-guard model shared by the native CLI and the web package.
//!
//! Everything here works on bytes and tensors, generic over a burn `Backend`, so the same code
//! runs natively (CPU, CUDA, wgpu) and in the browser (WebGPU, wasm CPU). No file, thread or
//! network code belongs in this crate.
//!
//! The flow: [`config`] parses `config.json`, [`checkpoint`] reads `model.safetensors`,
//! [`models`] builds the architecture from them, [`tokenize`] turns text into id batches, and
//! [`guard::Guard`] ties it together into P(unsafe) scores. [`bundle`] describes an exported
//! bundle (files, dtype, operating threshold).

pub mod bundle;
pub mod checkpoint;
pub mod config;
pub mod datasets;
pub mod error;
pub mod guard;
pub mod jsonl;
pub mod kernels;
pub mod labels;
pub mod metrics;
pub mod models;
pub mod rng;
pub mod tokenize;

pub use error::{Error, Result};
pub use guard::{Guard, GuardInput, LoadOptions, ModelFiles, Scores};
