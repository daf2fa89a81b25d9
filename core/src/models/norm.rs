//! A layer norm as the encoders call it: burn's `LayerNorm` (which trains, saves and runs on
//! every backend) and its epsilon, which burn keeps private, so that training on the CPU can
//! run core's kernel ([`kernels::layer_norm`](crate::kernels::layer_norm)) with the same one.

use burn::module::Module;
use burn::nn::LayerNorm;
use burn::tensor::{Tensor, backend::Backend};

#[derive(Module, Debug)]
pub struct Norm<B: Backend> {
    layer: LayerNorm<B>,
    epsilon: f64,
}

impl<B: Backend> Norm<B> {
    pub fn new(layer: LayerNorm<B>, epsilon: f64) -> Self {
        Self { layer, epsilon }
    }

    /// Normalised over the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        crate::kernels::layer_norm(&self.layer, self.epsilon, x)
    }
}
