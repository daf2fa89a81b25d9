//! DeBERTa-v2 and -v3 (`model_type: "deberta-v2"`) with transformers'
//! `DebertaV2ForSequenceClassification` semantics (dropout where transformers has it, active only
//! on autodiff backends, i.e. while training). This is the HarmAug student:
//! disentangled attention adds content→position (c2p) and position→content (p2c) terms from
//! shared relative-position embeddings with log-bucketed distances.

use std::cell::OnceCell;
use std::sync::Arc;

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Embedding};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
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
use crate::kernels::{self, AttentionInputs, RelativeTerms};
use crate::{Error, Result};

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

impl ArchitectureConfig for DebertaV2Config {
    const MODEL_TYPE: &'static str = "deberta-v2";
    const HF_CLASS: &'static str = "DebertaV2ForSequenceClassification";

    /// Parses and checks a `config.json` whose `model_type` is `deberta-v2` (DeBERTa-v3 too).
    fn from_json(json: &str) -> Result<Self> {
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
        Ok(config)
    }

    /// Relative positions extend to any length; absolute ones (`position_biased_input`, off in
    /// DeBERTa-v3) are a learned table.
    fn can_extend_positions(&self) -> bool {
        !self.position_biased_input
    }

    fn max_positions(&self) -> usize {
        self.max_position_embeddings
    }

    fn pad_token(&self) -> u32 {
        self.pad_token_id
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

#[derive(Module, Debug)]
pub struct DebertaV2Embeddings<B: Backend> {
    word: Embedding<B>,
    /// Absolute positions, only when `position_biased_input` (DeBERTa-v3 has none).
    position: Option<Embedding<B>>,
    /// Token types, only when `type_vocab_size > 0` (DeBERTa-v3 has none).
    token_type: Option<Embedding<B>>,
    /// `embedding_size` → `hidden_size`, only when they differ.
    projection: Option<Projection<B>>,
    norm: Norm<B>,
    dropout: Dropout,
}

impl<B: Backend> DebertaV2Embeddings<B> {
    fn load(config: &DebertaV2Config, w: &Weights<'_, '_>, device: &B::Device) -> Result<Self> {
        let e = config.embedding_size();
        let position = config
            .position_biased_input
            .then(|| {
                w.embedding(
                    "position_embeddings",
                    config.max_position_embeddings,
                    e,
                    device,
                )
            })
            .transpose()?;
        let token_type = (config.type_vocab_size > 0)
            .then(|| w.embedding("token_type_embeddings", config.type_vocab_size, e, device))
            .transpose()?;
        let projection = (e != config.hidden_size)
            .then(|| w.linear_without_bias("embed_proj", e, config.hidden_size, device))
            .transpose()?
            // Rare (only when embedding_size ≠ hidden_size) and once per pass: kept in f32.
            .map(|linear| Projection::new(linear, None));
        Ok(Self {
            word: w.embedding("word_embeddings", config.vocab_size, e, device)?,
            position,
            token_type,
            projection,
            norm: w.layer_norm(
                "LayerNorm",
                config.hidden_size,
                config.layer_norm_eps,
                device,
            )?,
            dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
        })
    }

    /// `mask`: `[batch, seq]`, 1.0 for real tokens; padded positions come out as zeros.
    fn forward(&self, batch: &BatchTensors<B>, mask: Tensor<B, 2>) -> Tensor<B, 3> {
        let [b, seq] = batch.input_ids.dims();
        let mut x = self.word.forward(batch.input_ids.clone());
        if let Some(position) = &self.position {
            let positions = position_ids::<B>(b, seq, &x.device());
            x = x + position.forward(positions);
        }
        if let Some(token_type) = &self.token_type {
            x = x + token_type.forward(batch.token_type_ids.clone());
        }
        if let Some(projection) = &self.projection {
            x = project(projection, x);
        }
        crate::kernels::dropout(&self.dropout, self.norm.forward(x) * mask.unsqueeze_dim(2))
    }
}

/// Relative-position inputs shared by every layer of one forward pass.
struct RelativePositions<B: Backend> {
    /// `[2·span, hidden]`, already layer-normalised when the config asks for it.
    embeddings: Tensor<B, 2>,
    /// `[seq, seq]`: the position row query i and key j meet at (c2p's index; see
    /// [`RelativeTerms::index`]).
    index: Arc<[u32]>,
    batch: usize,
    heads: usize,
    /// The c2p and p2c index tensors of burn's composition, built by the first layer that runs
    /// it and shared by the rest (the kernel needs only `index`).
    index_tensors: OnceCell<[Tensor<B, 4, Int>; 2]>,
}

impl<B: Backend> RelativePositions<B> {
    /// `[batch, heads, seq, seq]` indices into the c2p scores' last axis, and into the p2c
    /// scores' last axis before transposing: c2p's transposed, since the bucketed distance is
    /// odd.
    fn index_tensors(&self) -> &[Tensor<B, 4, Int>; 2] {
        self.index_tensors.get_or_init(|| {
            [
                self.index_tensor(|seq, i, j| self.index[i * seq + j]),
                self.index_tensor(|seq, i, j| self.index[j * seq + i]),
            ]
        })
    }

    fn index_tensor(&self, at: impl Fn(usize, usize, usize) -> u32) -> Tensor<B, 4, Int> {
        let seq = self.index.len().isqrt();
        let values: Vec<i64> = (0..seq * seq)
            .map(|n| i64::from(at(seq, n / seq, n % seq)))
            .collect();
        let device = self.embeddings.device();
        Tensor::<B, 4, Int>::from_data(TensorData::new(values, [1, 1, seq, seq]), &device)
            .expand([self.batch, self.heads, seq, seq])
    }
}

#[derive(Module, Debug)]
pub struct DisentangledSelfAttention<B: Backend> {
    query: Projection<B>,
    key: Projection<B>,
    value: Projection<B>,
    /// Separate projections of the relative embeddings, only without `share_att_key`.
    pos_key: Option<Projection<B>>,
    pos_query: Option<Projection<B>>,
    /// On the attention probabilities.
    probs_dropout: Dropout,
    /// On the relative embeddings before they are projected.
    position_dropout: Dropout,
    num_heads: usize,
    head_size: usize,
    relative: bool,
    c2p: bool,
    p2c: bool,
}

impl<B: Backend> DisentangledSelfAttention<B> {
    fn load(config: &DebertaV2Config, w: &Weights<'_, '_>, device: &B::Device) -> Result<Self> {
        let (hidden, all) = (
            config.hidden_size,
            config.num_attention_heads * config.head_size(),
        );
        let relative = config.relative_attention;
        let separate = relative && !config.share_att_key;
        let pos_key = (separate && config.pos_att_type.c2p)
            .then(|| w.projection("pos_key_proj", hidden, all, device))
            .transpose()?;
        let pos_query = (separate && config.pos_att_type.p2c)
            .then(|| w.projection("pos_query_proj", hidden, all, device))
            .transpose()?;
        Ok(Self {
            query: w.projection("query_proj", hidden, all, device)?,
            key: w.projection("key_proj", hidden, all, device)?,
            value: w.projection("value_proj", hidden, all, device)?,
            pos_key,
            pos_query,
            probs_dropout: DropoutConfig::new(config.attention_probs_dropout_prob).init(),
            position_dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
            num_heads: config.num_attention_heads,
            head_size: config.head_size(),
            relative,
            c2p: relative && config.pos_att_type.c2p,
            p2c: relative && config.pos_att_type.p2c,
        })
    }

    /// `queries`: the rows of `x` to attend from (`rows` of it, in `layout`).
    fn forward(
        &self,
        [queries, x]: [Tensor<B, 3>; 2],
        bias: Option<Tensor<B, 4>>,
        relative: Option<&RelativePositions<B>>,
        (rows, layout): (Rows, &Layout<B>),
    ) -> Tensor<B, 3> {
        let relative = relative.filter(|_| self.relative);
        let inputs = AttentionInputs {
            q: project(&self.query, queries),
            k: project(&self.key, x.clone()),
            v: project(&self.value, x),
            bias: None,
            relative: relative.map(|rel| self.position_terms(rel)),
            packed: None,
        };
        let attention = (self.num_heads, &self.probs_dropout);
        layout.attend(inputs, rows, bias, attention, |inputs| {
            self.composed(inputs, relative)
        })
    }

    /// The relative embeddings projected like content, `[2·span, heads·d]` per term.
    fn position_terms(&self, rel: &RelativePositions<B>) -> RelativeTerms<B> {
        let embeddings = kernels::dropout(&self.position_dropout, rel.embeddings.clone());
        let project = |linear: &Projection<B>| linear.forward(embeddings.clone());
        RelativeTerms {
            pos_key: self
                .c2p
                .then(|| project(self.pos_key.as_ref().unwrap_or(&self.key))),
            pos_query: self
                .p2c
                .then(|| project(self.pos_query.as_ref().unwrap_or(&self.query))),
            index: rel.index.clone(),
        }
    }

    /// burn's composition, where the attention kernel does not run (training, GPUs): the
    /// position terms as `[batch, heads, seq, 2·span]` products gathered by index tensors.
    fn composed(
        &self,
        inputs: AttentionInputs<B>,
        relative: Option<&RelativePositions<B>>,
    ) -> Tensor<B, 3> {
        let heads = |t: Tensor<B, 3>| split_heads(t, self.num_heads);
        let (q, k, v) = (heads(inputs.q), heads(inputs.k), heads(inputs.v));
        // Each attention term is scaled by 1/√(d · number of terms), as in the paper.
        let terms = 1 + usize::from(self.c2p) + usize::from(self.p2c);
        let scale = 1.0 / ((self.head_size * terms) as f64).sqrt();
        let mut scores = q.clone().matmul(k.clone().swap_dims(2, 3)) * scale;
        // [2·span, width] → [heads, 2·span, d].
        let per_head = |projected: Tensor<B, 2>| {
            let [rows, width] = projected.dims();
            projected
                .reshape([rows, self.num_heads, width / self.num_heads])
                .swap_dims(0, 1)
        };
        if let (Some(terms), Some(rel)) = (inputs.relative, relative) {
            let [mut c2p_index, mut p2c_index] = rel.index_tensors().clone();
            let [batch, heads, queries, _] = q.dims();
            let [.., keys, _] = k.dims();
            if queries < keys {
                // The last layer of a classifier: its queries are the first rows, whose indices
                // are the first rows of c2p's and the first columns of p2c's (before its
                // transpose). Other layers keep the shared tensors as they are (burn has no
                // shortcut for a full-range slice: it would be one more op per layer).
                c2p_index = c2p_index.slice([0..batch, 0..heads, 0..queries, 0..keys]);
                p2c_index = p2c_index.slice([0..batch, 0..heads, 0..keys, 0..queries]);
            }
            if let Some(pos_key) = terms.pos_key {
                let c2p = against_positions(q, per_head(pos_key)).gather(3, c2p_index);
                scores = scores + c2p * scale;
            }
            if let Some(pos_query) = terms.pos_query {
                let p2c = against_positions(k, per_head(pos_query))
                    .gather(3, p2c_index)
                    .swap_dims(2, 3);
                scores = scores + p2c * scale;
            }
        }
        let probs = kernels::softmax_last_with_bias(scores, inputs.bias);
        let probs = kernels::dropout(&self.probs_dropout, probs);
        merge_heads(probs.matmul(v))
    }
}

/// `[batch, heads, seq, d]` against a per-head table `[heads, rows, d]` → `[batch, heads, seq,
/// rows]`, as one matmul per head over all `batch·seq` rows. Not with the table expanded over
/// the batch: burn-wgpu 0.21 computes a wrong gradient for such an operand
/// (tests/tests/backend_ops.rs), which trained DeBERTa's position weights on noise there (a
/// copy repeated over the batch failed the same training test, native-train/tests/cli_wgpu.rs).
fn against_positions<B: Backend>(x: Tensor<B, 4>, table: Tensor<B, 3>) -> Tensor<B, 4> {
    let [batch, heads, seq, d] = x.dims();
    let [_, rows, _] = table.dims();
    x.swap_dims(0, 1)
        .reshape([heads, batch * seq, d])
        .matmul(table.swap_dims(1, 2))
        .reshape([heads, batch, seq, rows])
        .swap_dims(0, 1)
}

#[derive(Module, Debug)]
pub struct DebertaV2Layer<B: Backend> {
    attention: DisentangledSelfAttention<B>,
    post_attention: PostAttention<B>,
}

impl<B: Backend> DebertaV2Layer<B> {
    fn load(config: &DebertaV2Config, w: &Weights<'_, '_>, device: &B::Device) -> Result<Self> {
        let spec = PostAttentionSpec {
            context: config.num_attention_heads * config.head_size(),
            hidden: config.hidden_size,
            intermediate: config.intermediate_size,
            layer_norm_eps: config.layer_norm_eps,
            dropout: config.hidden_dropout_prob,
            activation: config.hidden_act,
        };
        Ok(Self {
            attention: DisentangledSelfAttention::load(
                config,
                &w.pp("attention").pp("self"),
                device,
            )?,
            post_attention: PostAttention::load(&spec, w, device)?,
        })
    }

    fn forward(
        &self,
        x: Tensor<B, 3>,
        bias: Option<Tensor<B, 4>>,
        relative: Option<&RelativePositions<B>>,
        (rows, layout): (Rows, &Layout<B>),
    ) -> Tensor<B, 3> {
        let queries = layout.queries(x.clone(), rows);
        let context = self
            .attention
            .forward([queries.clone(), x], bias, relative, (rows, layout));
        self.post_attention.forward(context, queries)
    }
}

/// The encoder (HF `DebertaV2Model`): embeddings, layers and the relative embeddings.
#[derive(Module, Debug)]
pub struct DebertaV2<B: Backend> {
    embeddings: DebertaV2Embeddings<B>,
    layers: Vec<DebertaV2Layer<B>>,
    rel_embeddings: Option<Embedding<B>>,
    rel_norm: Option<Norm<B>>,
    num_heads: usize,
    /// Log-bucket count (0 = unbucketed) and the largest relative distance.
    position_buckets: usize,
    max_relative_positions: usize,
    span: usize,
}

impl<B: Backend> DebertaV2<B> {
    fn load(config: &DebertaV2Config, w: &Weights<'_, '_>, device: &B::Device) -> Result<Self> {
        let hidden = config.hidden_size;
        let embeddings = DebertaV2Embeddings::load(config, &w.pp("embeddings"), device)?;
        let encoder = w.pp("encoder");
        let layers = (0..config.num_hidden_layers)
            .map(|n| DebertaV2Layer::load(config, &encoder.pp("layer").pp(n), device))
            .collect::<Result<_>>()?;
        let rel_embeddings = config
            .relative_attention
            .then(|| {
                encoder.embedding(
                    "rel_embeddings",
                    2 * config.attention_span(),
                    hidden,
                    device,
                )
            })
            .transpose()?;
        let rel_norm = (config.relative_attention && config.norm_rel_embeddings())
            .then(|| w.layer_norm("encoder.LayerNorm", hidden, config.layer_norm_eps, device))
            .transpose()?;
        Ok(Self {
            embeddings,
            layers,
            rel_embeddings,
            rel_norm,
            num_heads: config.num_attention_heads,
            position_buckets: config.position_buckets.max(0) as usize,
            max_relative_positions: config.max_relative_positions(),
            span: config.attention_span(),
        })
    }

    /// Last hidden states, `[batch, seq, hidden]`, or `[batch, 1, hidden]` (the first token's)
    /// when `last` is [`Rows::First`].
    pub fn forward(&self, batch: &BatchTensors<B>, last: Rows) -> Tensor<B, 3> {
        let mask = batch.attention_mask.clone().float();
        let layout = Layout::for_batch(batch, last);
        let mut x = layout.pack(self.embeddings.forward(batch, mask));
        let bias = batch.attention_bias(self.num_heads, true);
        let relative = self.relative_positions(batch);
        for (n, layer) in self.layers.iter().enumerate() {
            let rows = Rows::for_layer(n, self.layers.len(), last);
            x = layer.forward(x, bias.clone(), relative.as_ref(), (rows, &layout));
        }
        layout.first_tokens(x)
    }

    fn relative_positions(&self, batch: &BatchTensors<B>) -> Option<RelativePositions<B>> {
        let table = self.rel_embeddings.as_ref()?;
        let embeddings = match &self.rel_norm {
            Some(norm) => norm.forward(table.weight.val()),
            None => table.weight.val(),
        };
        let [b, seq] = batch.input_ids.dims();
        let span = self.span as i64;
        let index = (0..(seq * seq) as i64)
            .map(|n| {
                let (i, j) = (n / seq as i64, n % seq as i64);
                let r =
                    relative_position(i - j, self.position_buckets, self.max_relative_positions);
                (r + span).clamp(0, 2 * span - 1) as u32
            })
            .collect();
        Some(RelativePositions {
            embeddings,
            index,
            batch: b,
            heads: self.num_heads,
            index_tensors: OnceCell::new(),
        })
    }
}

/// transformers' `make_log_bucket_position`: distances up to half the buckets stay exact,
/// longer ones share logarithmically wider buckets. Computed in f32 like torch, so that bucket
/// boundaries fall in the same places (the parity fixture checks every distance).
pub fn relative_position(distance: i64, buckets: usize, max_position: usize) -> i64 {
    if buckets == 0 || max_position == 0 {
        return distance;
    }
    let mid = (buckets / 2) as i64;
    let abs = if distance < mid && distance > -mid {
        mid - 1
    } else {
        distance.abs()
    };
    if abs <= mid {
        return distance;
    }
    let ratio =
        (abs as f32 / mid as f32).ln() / (((max_position - 1) as f64 / mid as f64) as f32).ln();
    let log_pos = (ratio * (mid - 1) as f32).ceil() + mid as f32;
    log_pos as i64 * distance.signum()
}

#[derive(Module, Debug)]
pub struct DebertaV2ForSequenceClassification<B: Backend> {
    pub deberta: DebertaV2<B>,
    head: ClassificationHead<B>,
}

impl<B: Backend> Classifier<B> for DebertaV2ForSequenceClassification<B> {
    type Config = DebertaV2Config;

    /// Loads `deberta.*` (or bare base-model keys), `pooler.dense.*` (the ContextPooler) and
    /// `classifier.*`; a missing pooler or classifier is initialised from `head_seed`.
    fn load(
        config: &DebertaV2Config,
        num_labels: usize,
        checkpoint: &Checkpoint<'_>,
        head_seed: u64,
        device: &B::Device,
    ) -> Result<(Self, FreshParts)> {
        let root = Weights::root(checkpoint);
        let base = root.base_model("deberta", "embeddings.word_embeddings.weight");
        let spec = HeadSpec {
            activation: config.pooler_hidden_act,
            hidden: config.pooler_hidden_size(),
            num_labels,
            init_std: config.initializer_range,
            seed: head_seed,
            pooler_dropout: config.pooler_dropout,
            classifier_dropout: config.cls_dropout.unwrap_or(config.hidden_dropout_prob),
        };
        let mut fresh = FreshParts::default();
        // The ContextPooler sits beside the base model, not in it.
        let head = ClassificationHead::load(&spec, &root.pp("pooler"), &root, &mut fresh, device)?;
        let deberta = DebertaV2::load(config, &base, device)?;
        Ok((Self { deberta, head }, fresh))
    }

    fn logits(&self, batch: &BatchTensors<B>) -> Tensor<B, 2> {
        self.head.forward(self.deberta.forward(batch, Rows::First))
    }

    fn hidden_states(&self, batch: &BatchTensors<B>) -> Tensor<B, 3> {
        self.deberta.forward(batch, Rows::All)
    }
}
