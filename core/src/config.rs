//! HF `config.json` → typed configuration.
//!
//! Shape keys (sizes, layer counts) are required: a checkpoint whose config lacks one cannot be
//! loaded correctly, so the error names the key. Everything else takes transformers' defaults,
//! and unknown keys are ignored, as transformers does.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::models::activation::Activation;
use crate::{Error, Result};

/// A parsed `config.json`: which architecture, its hyper-parameters and the label mapping.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: ArchConfig,
    pub labels: Labels,
}

#[derive(Debug, Clone)]
pub enum ArchConfig {
    Bert(BertConfig),
}

impl ArchConfig {
    pub fn max_position_embeddings(&self) -> usize {
        match self {
            ArchConfig::Bert(c) => c.max_position_embeddings,
        }
    }

    pub fn pad_token_id(&self) -> u32 {
        match self {
            ArchConfig::Bert(c) => c.pad_token_id,
        }
    }
}

/// `BertConfig` fields that change the forward pass (dropout is irrelevant in eval mode).
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: Activation,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: u32,
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
}

fn default_type_vocab_size() -> usize {
    2
}
fn default_hidden_act() -> Activation {
    Activation::Gelu
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_position_embedding_type() -> String {
    "absolute".into()
}
fn default_initializer_range() -> f64 {
    0.02
}

/// Class names and which logit is "unsafe".
#[derive(Debug, Clone, PartialEq)]
pub struct Labels {
    pub names: Vec<String>,
    pub unsafe_index: usize,
}

/// Label names that mean "this is harmful", compared case-insensitively.
const UNSAFE_NAMES: [&str; 4] = ["unsafe", "harmful", "toxic", "toxicity"];

impl Labels {
    /// From HF `id2label` (`{"0": "safe", "1": "unsafe"}`); `None` means the default binary pair.
    pub fn from_id2label(id2label: Option<&BTreeMap<String, String>>) -> Result<Self> {
        let Some(map) = id2label else {
            return Ok(Self::binary());
        };
        let mut names = vec![String::new(); map.len()];
        for (id, name) in map {
            let index: usize = id
                .parse()
                .ok()
                .filter(|&i| i < map.len())
                .ok_or_else(|| Error::Config(format!("id2label has an invalid id {id:?}")))?;
            names[index] = name.clone();
        }
        if names.len() < 2 {
            return Err(Error::Config(format!(
                "id2label has {} label(s); a guard needs at least 2",
                names.len()
            )));
        }
        let unsafe_index = names
            .iter()
            .position(|n| UNSAFE_NAMES.contains(&n.trim().to_lowercase().as_str()))
            .unwrap_or(1);
        Ok(Self {
            names,
            unsafe_index,
        })
    }

    /// The convention for checkpoints without names: label 0 safe, label 1 unsafe.
    pub fn binary() -> Self {
        Self {
            names: vec!["safe".into(), "unsafe".into()],
            unsafe_index: 1,
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The keys every architecture shares.
#[derive(Deserialize)]
struct Header {
    model_type: Option<String>,
    id2label: Option<BTreeMap<String, String>>,
}

impl ModelConfig {
    pub fn from_json(json: &str) -> Result<Self> {
        let header: Header = parse(json)?;
        let model_type = header
            .model_type
            .ok_or_else(|| Error::Config("missing field `model_type`".into()))?;
        let arch = match model_type.as_str() {
            "bert" => {
                let config: BertConfig = parse(json)?;
                if config.position_embedding_type != "absolute" {
                    return Err(Error::Unsupported(format!(
                        "bert with position_embedding_type {:?} (only \"absolute\")",
                        config.position_embedding_type
                    )));
                }
                if config.num_attention_heads == 0
                    || !config
                        .hidden_size
                        .is_multiple_of(config.num_attention_heads)
                {
                    return Err(Error::Config(format!(
                        "hidden_size {} is not a multiple of num_attention_heads {}",
                        config.hidden_size, config.num_attention_heads
                    )));
                }
                ArchConfig::Bert(config)
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "model_type {other:?} (supported: \"bert\")"
                )));
            }
        };
        let labels = Labels::from_id2label(header.id2label.as_ref())?;
        Ok(Self { arch, labels })
    }
}

fn parse<T: DeserializeOwned>(json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| Error::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"model_type": "bert", "vocab_size": 10, "hidden_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
        "max_position_embeddings": 32, "some_unknown_key": [1, 2]}"#;

    #[test]
    fn defaults_match_transformers() {
        let config = ModelConfig::from_json(MINIMAL).unwrap();
        let ArchConfig::Bert(bert) = config.arch;
        assert_eq!(bert.type_vocab_size, 2);
        assert_eq!(bert.layer_norm_eps, 1e-12);
        assert_eq!(bert.hidden_act, Activation::Gelu);
        assert_eq!(config.labels, Labels::binary());
    }

    #[test]
    fn missing_shape_key_is_named() {
        let json = MINIMAL.replace(r#""hidden_size": 8,"#, "");
        let err = ModelConfig::from_json(&json).unwrap_err().to_string();
        assert!(err.contains("missing field `hidden_size`"), "{err}");
        assert!(err.starts_with("config.json:"), "{err}");
    }

    #[test]
    fn unknown_activation_is_named() {
        let json = MINIMAL.replace(
            "\"hidden_size\"",
            "\"hidden_act\": \"swiglu9\", \"hidden_size\"",
        );
        let err = ModelConfig::from_json(&json).unwrap_err().to_string();
        assert!(err.contains("swiglu9"), "{err}");
    }

    #[test]
    fn unsafe_index_comes_from_label_names() {
        let mut map = BTreeMap::new();
        map.insert("0".to_string(), "UNSAFE".to_string());
        map.insert("1".to_string(), "safe".to_string());
        assert_eq!(Labels::from_id2label(Some(&map)).unwrap().unsafe_index, 0);
        map.insert("0".to_string(), "LABEL_0".to_string());
        map.insert("1".to_string(), "LABEL_1".to_string());
        assert_eq!(Labels::from_id2label(Some(&map)).unwrap().unsafe_index, 1);
        map.insert("1".to_string(), "harmful".to_string());
        map.insert("0".to_string(), "unharmful".to_string());
        assert_eq!(Labels::from_id2label(Some(&map)).unwrap().unsafe_index, 1);
    }

    #[test]
    fn other_architectures_are_refused_by_name() {
        let json = MINIMAL.replace("\"bert\"", "\"gpt2\"");
        let err = ModelConfig::from_json(&json).unwrap_err().to_string();
        assert!(err.contains("gpt2"), "{err}");
    }
}
