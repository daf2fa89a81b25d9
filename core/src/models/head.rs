//! The sequence-classification head every architecture shares: the [CLS] state through a
//! dense pooler and an activation, then the classifier. Parts a checkpoint lacks (a base model
//! has no classifier) are initialised from a seed, deterministically on every backend and
//! target: the numbers come from our own generator, not the backend's RNG, so a seed means the
//! same head natively and on the web.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Tensor, TensorData, backend::Backend};

use super::FreshParts;
use super::activation::Activation;
use crate::Result;
use crate::checkpoint::Checkpoint;

#[derive(Module, Debug)]
pub struct ClassificationHead<B: Backend> {
    pooler: Linear<B>,
    #[module(skip)]
    activation: Activation,
    classifier: Linear<B>,
}

/// Where a head's weights live and how fresh parts are drawn.
pub struct HeadSpec<'a> {
    /// Key of the pooler's dense layer, e.g. `bert.pooler.dense` or `pooler.dense`.
    pub pooler_key: &'a str,
    pub activation: Activation,
    pub hidden: usize,
    pub num_labels: usize,
    /// Standard deviation of fresh weights (the config's `initializer_range`).
    pub init_std: f64,
    pub seed: u64,
}

impl<B: Backend> ClassificationHead<B> {
    /// Loads the pooler and `classifier.*`; a missing part is drawn from the seed and named in
    /// `fresh`.
    pub fn load(
        spec: &HeadSpec<'_>,
        ckpt: &Checkpoint<'_>,
        fresh: &mut FreshParts,
        device: &B::Device,
    ) -> Result<Self> {
        let h = spec.hidden;
        let mut part = |name: &'static str, key: &str, d_out: usize, seed: u64| {
            if ckpt.contains(&format!("{key}.weight")) {
                ckpt.linear(key, h, d_out, device)
            } else {
                fresh.names.push(name);
                Ok(seeded_linear(h, d_out, spec.init_std, seed, device))
            }
        };
        Ok(Self {
            pooler: part("pooler", spec.pooler_key, h, spec.seed)?,
            activation: spec.activation,
            classifier: part(
                "classifier",
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
        let pooled = self.activation.forward(self.pooler.forward(cls));
        self.classifier.forward(pooled)
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

/// SplitMix64: tiny, well-mixed and identical on every platform.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never 0, so the logarithm below is finite.
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Box–Muller.
    fn standard_normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit(), self.unit());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_samples_have_the_right_moments() {
        let mut rng = SplitMix64(7);
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|_| rng.standard_normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
    }

    #[test]
    fn same_seed_same_head() {
        let (mut a, mut b) = (SplitMix64(42), SplitMix64(42));
        assert!((0..10).all(|_| a.next_u64() == b.next_u64()));
    }
}
