//! HF `config.json` → typed configuration.
//!
//! Shape keys (sizes, layer counts) are required: a checkpoint whose config lacks one cannot be
//! loaded correctly, so the error names the key. Everything else takes transformers' defaults,
//! and unknown keys are ignored, as transformers does.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;

pub use crate::labels::{HeadKind, Labels, is_unsafe_name};
pub use crate::models::ArchConfig;
use crate::models::activation::Activation;
pub use crate::models::bert::BertConfig;
pub use crate::models::deberta_v2::{DebertaV2Config, PosAttType};
use crate::{Error, Result};

/// A parsed `config.json`: which architecture, its hyper-parameters and the label mapping.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: ArchConfig,
    pub labels: Labels,
}

/// transformers' defaults that both architectures share.
pub(crate) fn default_dropout() -> f64 {
    0.1
}
pub(crate) fn default_hidden_act() -> Activation {
    Activation::Gelu
}
pub(crate) fn default_initializer_range() -> f64 {
    0.02
}

/// The keys every architecture shares.
#[derive(Deserialize)]
struct Header {
    model_type: Option<String>,
    id2label: Option<BTreeMap<String, String>>,
    problem_type: Option<String>,
}

impl ModelConfig {
    pub fn from_json(json: &str) -> Result<Self> {
        let header: Header = parse(json)?;
        let model_type = header
            .model_type
            .ok_or_else(|| Error::Config("missing field `model_type`".into()))?;
        let arch = ArchConfig::from_json(&model_type, json)?;
        let labels = Labels::from_config(header.id2label.as_ref(), header.problem_type.as_deref())?;
        Ok(Self { arch, labels })
    }
}

/// burn's dropout panics outside [0, 1]; 1 would zero everything.
pub(crate) fn check_dropout(key: &str, p: f64) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::Config(format!("`{key}` must be in [0, 1), not {p}")));
    }
    Ok(())
}

pub(crate) fn check_heads(hidden: usize, heads: usize) -> Result<()> {
    if heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(Error::Config(format!(
            "hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
        )));
    }
    Ok(())
}

pub(crate) fn parse<T: DeserializeOwned>(json: &str) -> Result<T> {
    crate::error::from_json(json).map_err(Error::Config)
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
        let ArchConfig::Bert(bert) = config.arch else {
            panic!("expected bert")
        };
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
    fn deberta_v3_settings_parse() {
        let json = MINIMAL.replace("\"bert\"", "\"deberta-v2\"").replace(
            "\"some_unknown_key\"",
            r#""relative_attention": true, "position_buckets": 256, "pos_att_type": "p2c|c2p",
               "norm_rel_ebd": "layer_norm", "share_att_key": true, "position_biased_input": false,
               "max_relative_positions": -1, "other""#,
        );
        let ArchConfig::DebertaV2(c) = ModelConfig::from_json(&json).unwrap().arch else {
            panic!("expected deberta-v2")
        };
        assert_eq!(
            c.pos_att_type,
            PosAttType {
                c2p: true,
                p2c: true
            }
        );
        assert_eq!((c.attention_span(), c.max_relative_positions()), (256, 32));
        assert!(c.norm_rel_embeddings() && c.share_att_key && !c.position_biased_input);
        assert_eq!(
            (c.layer_norm_eps, c.type_vocab_size, c.head_size()),
            (1e-7, 0, 4)
        );
        let list = json.replace("\"p2c|c2p\"", "[\"c2p\"]");
        let ArchConfig::DebertaV2(c) = ModelConfig::from_json(&list).unwrap().arch else {
            panic!("expected deberta-v2")
        };
        assert_eq!(
            c.pos_att_type,
            PosAttType {
                c2p: true,
                p2c: false
            }
        );
        let conv = json.replace("\"other\"", "\"conv_kernel_size\": 3, \"other\"");
        let err = ModelConfig::from_json(&conv).unwrap_err().to_string();
        assert!(err.contains("conv_kernel_size"), "{err}");
    }

    #[test]
    fn other_architectures_are_refused_by_name() {
        let json = MINIMAL.replace("\"bert\"", "\"gpt2\"");
        let err = ModelConfig::from_json(&json).unwrap_err().to_string();
        assert!(err.contains("gpt2"), "{err}");
    }
}
