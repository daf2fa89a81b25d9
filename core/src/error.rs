use thiserror::Error;

/// Everything that can go wrong while turning checkpoint bytes and text into scores.
///
/// Each variant names the file (or part) at fault, because core only sees bytes: the caller
/// knows the path and prefixes it where useful.
#[derive(Debug, Error)]
pub enum Error {
    #[error("config.json: {0}")]
    Config(String),
    #[error("model.safetensors: {0}")]
    Checkpoint(String),
    #[error("manifest.json: {0}")]
    Manifest(String),
    #[error("tokenizer.json: {0}")]
    Tokenizer(String),
    #[error("tokenizer_config.json: {0}")]
    TokenizerConfig(String),
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("backend: {0}")]
    Backend(String),
}

pub type Result<T> = std::result::Result<T, Error>;
