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

/// `json` as a `T`; a value of the wrong type is reported with the key that holds it
/// (`hidden_size: invalid value: integer -5, expected usize at line 1 column 279`), which
/// serde_json alone leaves out.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    json: &str,
) -> std::result::Result<T, String> {
    let deserializer = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        match path.as_str() {
            "." => error.into_inner().to_string(),
            _ => format!("{path}: {}", error.into_inner()),
        }
    })
}
