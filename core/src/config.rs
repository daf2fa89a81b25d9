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
    DebertaV2(DebertaV2Config),
}

impl ArchConfig {
    pub fn max_position_embeddings(&self) -> usize {
        match self {
            ArchConfig::Bert(c) => c.max_position_embeddings,
            ArchConfig::DebertaV2(c) => c.max_position_embeddings,
        }
    }

    pub fn pad_token_id(&self) -> u32 {
        match self {
            ArchConfig::Bert(c) => c.pad_token_id,
            ArchConfig::DebertaV2(c) => c.pad_token_id,
        }
    }
}

/// `BertConfig` fields that change the forward pass (dropout only while training).
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
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Before the classifier; `None` means `hidden_dropout_prob`.
    pub classifier_dropout: Option<f64>,
}

fn default_dropout() -> f64 {
    0.1
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

/// `DebertaV2Config` fields that change the forward pass (`model_type: "deberta-v2"`, which
/// DeBERTa-v3 checkpoints use). Defaults are transformers' (`getattr(config, ..., default)`).
#[derive(Debug, Clone, Deserialize)]
pub struct DebertaV2Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub type_vocab_size: usize,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: Activation,
    #[serde(default = "default_deberta_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: u32,
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// Width of the word embeddings when it differs from `hidden_size` (then projected).
    pub embedding_size: Option<usize>,
    #[serde(default = "default_true")]
    pub position_biased_input: bool,
    #[serde(default)]
    pub relative_attention: bool,
    /// -1 (or absent) means `max_position_embeddings`.
    #[serde(default = "default_minus_one")]
    pub max_relative_positions: i64,
    /// -1 (or absent) means no log-bucketing.
    #[serde(default = "default_minus_one")]
    pub position_buckets: i64,
    #[serde(default)]
    pub pos_att_type: PosAttType,
    #[serde(default)]
    pub share_att_key: bool,
    /// "layer_norm" normalises the relative embeddings ("none" by default; "|"-separated).
    #[serde(default = "default_norm_rel_ebd")]
    pub norm_rel_ebd: String,
    #[serde(default)]
    pub conv_kernel_size: usize,
    pub attention_head_size: Option<usize>,
    pub pooler_hidden_size: Option<usize>,
    #[serde(default = "default_hidden_act")]
    pub pooler_hidden_act: Activation,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// On the [CLS] state before the ContextPooler's dense layer.
    #[serde(default)]
    pub pooler_dropout: f64,
    /// Before the classifier; `None` means `hidden_dropout_prob`.
    pub cls_dropout: Option<f64>,
}

/// `pos_att_type`: a list (`["p2c", "c2p"]`) or, in older configs, a string (`"p2c|c2p"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PosAttType {
    pub c2p: bool,
    pub p2c: bool,
}

impl<'de> Deserialize<'de> for PosAttType {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            List(Vec<String>),
            Joined(String),
            Null(()),
        }
        let names: Vec<String> = match Raw::deserialize(deserializer)? {
            Raw::List(list) => list,
            Raw::Joined(joined) => joined.split('|').map(str::to_string).collect(),
            Raw::Null(()) => Vec::new(),
        };
        let mut kinds = PosAttType::default();
        for name in names {
            match name.trim().to_lowercase().as_str() {
                "c2p" => kinds.c2p = true,
                "p2c" => kinds.p2c = true,
                "" => {}
                other => {
                    return Err(serde::de::Error::custom(format!(
                        "pos_att_type {other:?} is not supported (c2p, p2c)"
                    )));
                }
            }
        }
        Ok(kinds)
    }
}

impl DebertaV2Config {
    pub fn embedding_size(&self) -> usize {
        self.embedding_size.unwrap_or(self.hidden_size)
    }

    pub fn head_size(&self) -> usize {
        self.attention_head_size
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    pub fn pooler_hidden_size(&self) -> usize {
        self.pooler_hidden_size.unwrap_or(self.hidden_size)
    }

    /// Largest relative distance before bucketing (`max_relative_positions` < 1 → positions).
    pub fn max_relative_positions(&self) -> usize {
        if self.max_relative_positions < 1 {
            self.max_position_embeddings
        } else {
            self.max_relative_positions as usize
        }
    }

    /// Half the number of relative embeddings: the buckets, or the distances if unbucketed.
    pub fn attention_span(&self) -> usize {
        if self.position_buckets > 0 {
            self.position_buckets as usize
        } else {
            self.max_relative_positions()
        }
    }

    pub fn norm_rel_embeddings(&self) -> bool {
        self.norm_rel_ebd
            .to_lowercase()
            .split('|')
            .any(|s| s.trim() == "layer_norm")
    }
}

fn default_deberta_layer_norm_eps() -> f64 {
    1e-7
}
fn default_true() -> bool {
    true
}
fn default_minus_one() -> i64 {
    -1
}
fn default_norm_rel_ebd() -> String {
    "none".into()
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
                check_heads(config.hidden_size, config.num_attention_heads)?;
                check_dropout("hidden_dropout_prob", config.hidden_dropout_prob)?;
                check_dropout(
                    "attention_probs_dropout_prob",
                    config.attention_probs_dropout_prob,
                )?;
                if let Some(p) = config.classifier_dropout {
                    check_dropout("classifier_dropout", p)?;
                }
                ArchConfig::Bert(config)
            }
            "deberta-v2" => {
                let config: DebertaV2Config = parse(json)?;
                check_heads(config.hidden_size, config.num_attention_heads)?;
                if config.conv_kernel_size > 0 {
                    return Err(Error::Unsupported(format!(
                        "deberta-v2 with conv_kernel_size {} (the DeBERTa-v2-xlarge ConvLayer)",
                        config.conv_kernel_size
                    )));
                }
                check_dropout("hidden_dropout_prob", config.hidden_dropout_prob)?;
                check_dropout(
                    "attention_probs_dropout_prob",
                    config.attention_probs_dropout_prob,
                )?;
                check_dropout("pooler_dropout", config.pooler_dropout)?;
                if let Some(p) = config.cls_dropout {
                    check_dropout("cls_dropout", p)?;
                }
                ArchConfig::DebertaV2(config)
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "model_type {other:?} (supported: \"bert\", \"deberta-v2\")"
                )));
            }
        };
        let labels = Labels::from_id2label(header.id2label.as_ref())?;
        Ok(Self { arch, labels })
    }
}

/// burn's dropout panics outside [0, 1]; 1 would zero everything.
fn check_dropout(key: &str, p: f64) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::Config(format!("`{key}` must be in [0, 1), not {p}")));
    }
    Ok(())
}

fn check_heads(hidden: usize, heads: usize) -> Result<()> {
    if heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(Error::Config(format!(
            "hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
        )));
    }
    Ok(())
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
