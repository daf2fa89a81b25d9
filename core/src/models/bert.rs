//! BERT (and MiniLM, which is BERT-shaped) with transformers' `BertForSequenceClassification`
//! semantics: post-LayerNorm residual blocks, tanh pooler on [CLS]. Dropout sits where
//! transformers puts it and acts only on autodiff backends, i.e. while training.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Embedding};
use burn::tensor::{Int, Tensor, backend::Backend};
use serde::Deserialize;

use super::activation::Activation;
use super::head::{ClassificationHead, HeadSpec};
use super::norm::Norm;
use super::post_attention::{PostAttention, PostAttentionSpec};
use super::projection::Projection;
use super::{
    ArchitectureConfig, BatchTensors, Classifier, FreshParts, Layout, Rows, merge_heads,
    position_ids, project, split_heads,
};
use crate::checkpoint::{Checkpoint, Weights};
use crate::config::{
    check_dropout, check_heads, default_dropout, default_hidden_act, default_initializer_range,
    parse,
};
use crate::kernels::AttentionInputs;
use crate::{Error, Result};

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

impl ArchitectureConfig for BertConfig {
    const MODEL_TYPE: &'static str = "bert";
    const HF_CLASS: &'static str = "BertForSequenceClassification";

    /// Parses and checks a `config.json` whose `model_type` is `bert`.
    fn from_json(json: &str) -> Result<Self> {
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
        Ok(config)
    }

    /// Learned absolute positions: a longer input needs a table the checkpoint lacks.
    fn can_extend_positions(&self) -> bool {
        false
    }

    fn max_positions(&self) -> usize {
        self.max_position_embeddings
    }

    fn pad_token(&self) -> u32 {
        self.pad_token_id
    }
}

fn default_type_vocab_size() -> usize {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_position_embedding_type() -> String {
    "absolute".into()
}

#[derive(Module, Debug)]
pub struct BertEmbeddings<B: Backend> {
    word: Embedding<B>,
    position: Embedding<B>,
    token_type: Embedding<B>,
    norm: Norm<B>,
    dropout: Dropout,
}

impl<B: Backend> BertEmbeddings<B> {
    fn load(config: &BertConfig, w: &Weights<'_, '_>, device: &B::Device) -> Result<Self> {
        let hidden = config.hidden_size;
        Ok(Self {
            word: w.embedding("word_embeddings", config.vocab_size, hidden, device)?,
            position: w.embedding(
                "position_embeddings",
                config.max_position_embeddings,
                hidden,
                device,
            )?,
            token_type: w.embedding(
                "token_type_embeddings",
                config.type_vocab_size,
                hidden,
                device,
            )?,
            norm: w.layer_norm("LayerNorm", hidden, config.layer_norm_eps, device)?,
            dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
        })
    }

    fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        token_type_ids: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        let [batch, seq] = input_ids.dims();
        let positions = position_ids::<B>(batch, seq, &input_ids.device());
        let x = self.word.forward(input_ids)
            + self.token_type.forward(token_type_ids)
            + self.position.forward(positions);
        crate::kernels::dropout(&self.dropout, self.norm.forward(x))
    }
}

#[derive(Module, Debug)]
pub struct BertLayer<B: Backend> {
    query: Projection<B>,
    key: Projection<B>,
    value: Projection<B>,
    /// On the attention probabilities.
    attention_dropout: Dropout,
    num_heads: usize,
    post_attention: PostAttention<B>,
}

impl<B: Backend> BertLayer<B> {
    fn load(config: &BertConfig, w: &Weights<'_, '_>, device: &B::Device) -> Result<Self> {
        let hidden = config.hidden_size;
        let spec = PostAttentionSpec {
            context: hidden,
            hidden,
            intermediate: config.intermediate_size,
            layer_norm_eps: config.layer_norm_eps,
            dropout: config.hidden_dropout_prob,
            activation: config.hidden_act,
        };
        Ok(Self {
            query: w.projection("attention.self.query", hidden, hidden, device)?,
            key: w.projection("attention.self.key", hidden, hidden, device)?,
            value: w.projection("attention.self.value", hidden, hidden, device)?,
            attention_dropout: DropoutConfig::new(config.attention_probs_dropout_prob).init(),
            num_heads: config.num_attention_heads,
            post_attention: PostAttention::load(&spec, w, device)?,
        })
    }

    /// `key_bias`: see [`BatchTensors::attention_bias`]; `rows`: the positions to compute.
    fn forward(
        &self,
        x: Tensor<B, 3>,
        key_bias: Option<Tensor<B, 4>>,
        rows: Rows,
        layout: &Layout<B>,
    ) -> Tensor<B, 3> {
        let queries = layout.queries(x.clone(), rows);
        let inputs = AttentionInputs {
            q: project(&self.query, queries.clone()),
            k: project(&self.key, x.clone()),
            v: project(&self.value, x),
            bias: None,
            relative: None,
            packed: None,
        };
        let attention = (self.num_heads, &self.attention_dropout);
        let context = layout.attend(inputs, rows, key_bias, attention, |inputs| {
            let heads = |t: Tensor<B, 3>| split_heads(t, self.num_heads);
            merge_heads(scaled_dot_product(
                heads(inputs.q),
                heads(inputs.k),
                heads(inputs.v),
                inputs.bias,
                &self.attention_dropout,
            ))
        });
        self.post_attention.forward(context, queries)
    }
}

/// softmax(q·kᵀ/√d + bias)·v over `[batch, heads, seq, head_dim]`, as transformers' eager
/// attention. Written as batched matmuls rather than burn's fused `attention` op: on the CPU
/// backends the fused op runs one head at a time, the matmuls run in parallel.
pub(crate) fn scaled_dot_product<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    bias: Option<Tensor<B, 4>>,
    probs_dropout: &Dropout,
) -> Tensor<B, 4> {
    let [.., head_dim] = q.dims();
    let scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (head_dim as f64).sqrt());
    let probs = crate::kernels::softmax_last_with_bias(scores, bias);
    crate::kernels::dropout(probs_dropout, probs).matmul(v)
}

/// The encoder: embeddings and the layer stack (HF `BertModel` without the pooler).
#[derive(Module, Debug)]
pub struct Bert<B: Backend> {
    embeddings: BertEmbeddings<B>,
    layers: Vec<BertLayer<B>>,
    num_heads: usize,
}

impl<B: Backend> Bert<B> {
    fn load(config: &BertConfig, w: &Weights<'_, '_>, device: &B::Device) -> Result<Self> {
        let embeddings = BertEmbeddings::load(config, &w.pp("embeddings"), device)?;
        let layers_scope = w.pp("encoder").pp("layer");
        let layers = (0..config.num_hidden_layers)
            .map(|n| BertLayer::load(config, &layers_scope.pp(n), device))
            .collect::<Result<_>>()?;
        Ok(Self {
            embeddings,
            layers,
            num_heads: config.num_attention_heads,
        })
    }

    /// Last hidden states, `[batch, seq, hidden]`, or `[batch, 1, hidden]` (the first token's)
    /// when `last` is [`Rows::First`].
    pub fn forward(&self, batch: &BatchTensors<B>, last: Rows) -> Tensor<B, 3> {
        let key_bias = batch.attention_bias(self.num_heads, false);
        let layout = Layout::for_batch(batch, last);
        let mut x = layout.pack(
            self.embeddings
                .forward(batch.input_ids.clone(), batch.token_type_ids.clone()),
        );
        for (n, layer) in self.layers.iter().enumerate() {
            let rows = Rows::for_layer(n, self.layers.len(), last);
            x = layer.forward(x, key_bias.clone(), rows, &layout);
        }
        layout.first_tokens(x)
    }
}

#[derive(Module, Debug)]
pub struct BertForSequenceClassification<B: Backend> {
    pub bert: Bert<B>,
    head: ClassificationHead<B>,
}

impl<B: Backend> Classifier<B> for BertForSequenceClassification<B> {
    type Config = BertConfig;

    /// Loads `bert.*` (or bare base-model keys), `bert.pooler.dense.*` and `classifier.*`.
    /// Parts the checkpoint lacks (pooler, classifier) are initialised from `head_seed`.
    fn load(
        config: &BertConfig,
        num_labels: usize,
        checkpoint: &Checkpoint<'_>,
        head_seed: u64,
        device: &B::Device,
    ) -> Result<(Self, FreshParts)> {
        let root = Weights::root(checkpoint);
        let base = root.base_model("bert", "embeddings.word_embeddings.weight");
        let spec = HeadSpec {
            activation: Activation::Tanh,
            hidden: config.hidden_size,
            num_labels,
            init_std: config.initializer_range,
            seed: head_seed,
            pooler_dropout: 0.0,
            classifier_dropout: config
                .classifier_dropout
                .unwrap_or(config.hidden_dropout_prob),
        };
        let mut fresh = FreshParts::default();
        let head = ClassificationHead::load(&spec, &base.pp("pooler"), &root, &mut fresh, device)?;
        let bert = Bert::load(config, &base, device)?;
        Ok((Self { bert, head }, fresh))
    }

    fn logits(&self, batch: &BatchTensors<B>) -> Tensor<B, 2> {
        self.head.forward(self.bert.forward(batch, Rows::First))
    }

    fn hidden_states(&self, batch: &BatchTensors<B>) -> Tensor<B, 3> {
        self.bert.forward(batch, Rows::All)
    }
}
