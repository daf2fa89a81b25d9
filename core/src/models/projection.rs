//! A linear layer as the encoders call it: burn's `Linear`, which trains, saves and runs on
//! every backend, and — for an int8 bundle loaded with
//! [`LoadOptions::int8_kernels`](crate::LoadOptions::int8_kernels) on the CPU backend — the
//! same int8 weights packed for [`Int8Linear`], which inference then runs instead.

use std::sync::Arc;

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Tensor, backend::Backend};

use super::activation::Activation;
use crate::kernels::{self, Int8Linear};

#[derive(Module, Debug)]
pub struct Projection<B: Backend> {
    pub linear: Linear<B>,
    /// Not a parameter: a packed copy of the bundle's int8 matrix, for inference only.
    #[module(skip)]
    int8: Option<Arc<Int8Linear>>,
}

impl<B: Backend> Projection<B> {
    pub fn new(linear: Linear<B>, int8: Option<Int8Linear>) -> Self {
        Self {
            linear,
            int8: int8.map(Arc::new),
        }
    }

    /// Whether this layer runs in int8.
    pub fn is_int8(&self) -> bool {
        self.int8.is_some()
    }

    /// `activation(x·W + b)`: exact GELU goes into the same pass as the bias on the CPU
    /// kernels' backend (f32 layers).
    pub fn forward_activated(&self, x: Tensor<B, 2>, activation: Activation) -> Tensor<B, 2> {
        let x = match (&self.int8, activation) {
            (None, Activation::Gelu) => match kernels::linear_gelu(&self.linear, x) {
                Ok(y) => return y,
                Err(x) => x,
            },
            _ => x,
        };
        activation.forward(self.forward(x))
    }

    /// `between(x·W + b) + residual`, `between` being what comes before the residual sum
    /// (dropout while training): one pass adds the bias and the residual on the CPU kernels'
    /// backend (f32 layers, inference, where dropout is the identity).
    pub fn forward_add(
        &self,
        x: Tensor<B, 2>,
        residual: Tensor<B, 2>,
        between: impl FnOnce(Tensor<B, 2>) -> Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let [x, residual] = match &self.int8 {
            None => match kernels::linear_add(&self.linear, x, residual) {
                Ok(y) => return y,
                Err(inputs) => inputs,
            },
            Some(_) => [x, residual],
        };
        between(self.forward(x)) + residual
    }

    /// `[rows, d_in]` → `[rows, d_out]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match &self.int8 {
            Some(int8) => {
                kernels::int8_linear(int8, x).unwrap_or_else(|x| kernels::linear(&self.linear, x))
            }
            None => kernels::linear(&self.linear, x),
        }
    }
}
