//! The browser package. For now it only proves that `harmaug-core` builds for
//! `wasm32-unknown-unknown`; the wasm-bindgen API (WebGPU + CPU fallback) comes with the web
//! issue.

pub use harmaug_core as core;
