//! `hidden_act` values of HF configs (transformers' `ACT2FN`), shared by every architecture.

use burn::tensor::{Tensor, activation, backend::Backend};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact GELU with erf, transformers' "gelu".
    Gelu,
    /// The tanh approximation: "gelu_new", "gelu_pytorch_tanh" and "gelu_fast" are the same
    /// formula written three ways.
    #[serde(alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluNew,
    /// x · sigmoid(1.702 x).
    QuickGelu,
    Relu,
    #[serde(alias = "swish")]
    Silu,
    Tanh,
}

impl Activation {
    pub fn forward<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::Gelu => crate::kernels::gelu(x),
            Activation::GeluNew => activation::gelu_approximate(x),
            Activation::QuickGelu => x.clone() * activation::sigmoid(x * 1.702),
            Activation::Relu => activation::relu(x),
            Activation::Silu => activation::silu(x),
            Activation::Tanh => activation::tanh(x),
        }
    }
}
