//! Hand-written CPU kernels for ops where the CPU backend's own is the bottleneck (issue #14),
//! not yet called by the models: wired in, they moved a score by one f32 ulp with the batch it
//! was scored in (docs/BENCHMARKS.md); they go back in once batch-invariant. Each sits behind
//! a backend-generic function: on burn-flex (inference, f32) the kernel runs on the
//! tensor's buffer in place; on every other backend — GPUs, and `Autodiff<Flex>` while
//! training, whose backward burn must record — burn's own op runs. The choice is by type, so it
//! costs nothing at run time and cannot change which values a GPU computes.
//!
//! Kernels are single-threaded (core runs in the browser too) and written so the compiler
//! vectorises them: no libm calls, no branches in the inner loop.

mod gelu;
mod softmax;

pub use gelu::gelu;
pub use softmax::{softmax_last, softmax_last_with_bias};

use burn::tensor::{Tensor, backend::Backend};

// Without burn-flex compiled in no backend is flex, and `B` has nothing to be compared with.
#[cfg_attr(not(feature = "flex"), allow(clippy::extra_unused_type_parameters))]
fn is_flex<B: Backend>() -> bool {
    #[cfg(feature = "flex")]
    return core::any::TypeId::of::<B>() == core::any::TypeId::of::<burn_flex::Flex>();
    #[cfg(not(feature = "flex"))]
    false
}

/// `x`'s f32 values handed to `kernel` in place when `B` is burn-flex (the buffer is taken
/// without a copy when `x` is its only owner, else copied), or `x` back for burn's op.
fn on_flex_f32<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    kernel: impl FnOnce(&mut [f32]),
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    if is_flex::<B>() && x.dtype() == burn::tensor::DType::F32 {
        let device = x.device();
        let mut data = x.into_data();
        return match data.as_mut_slice::<f32>() {
            Ok(values) => {
                kernel(values);
                Ok(Tensor::from_data(data, &device))
            }
            Err(_) => Err(Tensor::from_data(data, &device)),
        };
    }
    Err(x)
}
