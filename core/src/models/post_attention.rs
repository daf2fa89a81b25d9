//! What follows self-attention in a post-LayerNorm encoder layer, the same in BERT and DeBERTa
//! (transformers' `*SelfOutput`, `*Intermediate` and `*Output`): project the attention context,
//! add the residual and normalise; then the feed-forward block, its residual and a second norm.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{Tensor, backend::Backend};

use super::activation::Activation;
use super::norm::Norm;
use super::projection::Projection;
use super::{project_activated, project_add};
use crate::Result;
use crate::checkpoint::Weights;

/// The sizes and settings of a [`PostAttention`], from an architecture's config.
pub(crate) struct PostAttentionSpec {
    /// Width of the attention context (heads × head size; DeBERTa may differ from `hidden`).
    pub context: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layer_norm_eps: f64,
    /// `hidden_dropout_prob`.
    pub dropout: f64,
    pub activation: Activation,
}

#[derive(Module, Debug)]
pub struct PostAttention<B: Backend> {
    attention_out: Projection<B>,
    attention_norm: Norm<B>,
    intermediate: Projection<B>,
    output: Projection<B>,
    output_norm: Norm<B>,
    /// On each sub-layer's output, before the residual sum.
    dropout: Dropout,
    #[module(skip)]
    activation: Activation,
}

impl<B: Backend> PostAttention<B> {
    /// From the tensors in a layer's scope `w` (`attention.output.*`, `intermediate.*`,
    /// `output.*`).
    pub(crate) fn load(
        spec: &PostAttentionSpec,
        w: &Weights<'_, '_>,
        device: &B::Device,
    ) -> Result<Self> {
        let (hidden, eps) = (spec.hidden, spec.layer_norm_eps);
        let norm = |name: &str| w.layer_norm(name, hidden, eps, device);
        Ok(Self {
            attention_out: w.projection("attention.output.dense", spec.context, hidden, device)?,
            attention_norm: norm("attention.output.LayerNorm")?,
            intermediate: w.projection("intermediate.dense", hidden, spec.intermediate, device)?,
            output: w.projection("output.dense", spec.intermediate, hidden, device)?,
            output_norm: norm("output.LayerNorm")?,
            dropout: DropoutConfig::new(spec.dropout).init(),
            activation: spec.activation,
        })
    }

    /// `context`: the attention's output with its heads merged; `x`: the layer's input.
    pub(crate) fn forward(&self, context: Tensor<B, 3>, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let dropout = |y| crate::kernels::dropout(&self.dropout, y);
        let x = project_add(&self.attention_out, context, x, dropout);
        let x = self.attention_norm.forward(x);
        let inner = project_activated(&self.intermediate, x.clone(), self.activation);
        self.output_norm
            .forward(project_add(&self.output, inner, x, dropout))
    }
}
