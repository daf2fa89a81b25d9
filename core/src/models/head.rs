//! The sequence-classification head every architecture shares: the [CLS] state through a
//! dense pooler and an activation, then the classifier. Parts a checkpoint lacks (a base model
//! has no classifier) are initialised from a seed, deterministically on every backend and
//! target: the numbers come from our own generator, not the backend's RNG, so a seed means the
//! same head natively and on the web.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::{Tensor, TensorData, backend::Backend};

use super::FreshParts;
use super::activation::Activation;
use crate::Result;
use crate::checkpoint::Weights;
use crate::rng::SplitMix64;

#[derive(Module, Debug)]
pub struct ClassificationHead<B: Backend> {
    /// On the [CLS] state before the pooler (DeBERTa's `pooler_dropout`; 0 for BERT).
    pooler_dropout: Dropout,
    pooler: Linear<B>,
    #[module(skip)]
    activation: Activation,
    classifier_dropout: Dropout,
    classifier: Linear<B>,
}

/// Where a head's weights live and how fresh parts are drawn.
pub struct HeadSpec {
    pub activation: Activation,
    pub hidden: usize,
    pub num_labels: usize,
    /// Standard deviation of fresh weights (the config's `initializer_range`).
    pub init_std: f64,
    pub seed: u64,
    /// Dropout on the [CLS] state and on the pooled state (training only).
    pub pooler_dropout: f64,
    pub classifier_dropout: f64,
}

impl<B: Backend> ClassificationHead<B> {
    /// Loads the pooler (`dense` in scope `pooler`: `bert.pooler` or DeBERTa's `pooler`) and
    /// `classifier` (in scope `classifier`); a missing part is drawn from the seed and named in
    /// `fresh`.
    pub fn load(
        spec: &HeadSpec,
        pooler: &Weights<'_, '_>,
        classifier: &Weights<'_, '_>,
        fresh: &mut FreshParts,
        device: &B::Device,
    ) -> Result<Self> {
        let hidden = spec.hidden;
        let mut part = |name: &'static str, scope: &Weights<'_, '_>, key: &str, d_out, seed| {
            if scope.contains(&format!("{key}.weight")) {
                scope.linear(key, hidden, d_out, device)
            } else {
                fresh.names.push(name);
                let linear = seeded_linear(hidden, d_out, spec.init_std, seed, device);
                scope.record_linear(key, &linear);
                Ok(linear)
            }
        };
        let dropout = |prob: f64| DropoutConfig::new(prob).init();
        Ok(Self {
            pooler_dropout: dropout(spec.pooler_dropout),
            pooler: part("pooler", pooler, "dense", hidden, spec.seed)?,
            activation: spec.activation,
            classifier_dropout: dropout(spec.classifier_dropout),
            classifier: part(
                "classifier",
                classifier,
                "classifier",
                spec.num_labels,
                spec.seed.wrapping_add(1),
            )?,
        })
    }

    /// Logits `[batch, num_labels]` from last hidden states `[batch, seq, hidden]`.
    pub fn forward(&self, hidden: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, _, h] = hidden.dims();
        let cls = hidden.slice([0..b, 0..1]).reshape([b, h]);
        let cls = crate::kernels::dropout(&self.pooler_dropout, cls);
        let pooled = self
            .activation
            .forward(crate::kernels::linear(&self.pooler, cls));
        let pooled = crate::kernels::dropout(&self.classifier_dropout, pooled);
        crate::kernels::linear(&self.classifier, pooled)
    }
}

/// A `Linear` with weights ~ N(0, std²) and zero bias, as transformers' `_init_weights` does.
pub fn seeded_linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    std: f64,
    seed: u64,
    device: &B::Device,
) -> Linear<B> {
    let mut rng = SplitMix64(seed);
    let weights: Vec<f32> = (0..d_in * d_out)
        .map(|_| (rng.standard_normal() * std) as f32)
        .collect();
    let weight = Tensor::from_data(TensorData::new(weights, [d_in, d_out]), device);
    Linear {
        weight: Param::from_tensor(weight),
        bias: Some(Param::from_tensor(Tensor::zeros([d_out], device))),
    }
}
