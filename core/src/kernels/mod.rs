//! Hand-written CPU kernels for ops where the CPU backend's own is the bottleneck (issue #14;
//! measured in docs/BENCHMARKS.md). Each sits behind a backend-generic function: on burn-flex
//! (inference, f32) the kernel runs on the tensor's buffer; on `Autodiff<Flex>` (training) the
//! linear layers, layer norms, GELU, BERT attention and the attention softmax are autodiff ops
//! of their own (tracked.rs: forward and backward both kernels); on every other backend (GPUs)
//! burn's own op runs. The choice is by type, so it costs nothing at run time and cannot change
//! which values a GPU computes.
//!
//! Kernels are written so the compiler vectorises them: no libm calls, no branches in the
//! inner loop. With the `threads` feature (native builds) their rows are split over rayon's
//! pool; in the browser they run on the calling thread (a Web Worker).

mod attention;
mod dropout;
mod gelu;
mod int8_linear;
#[cfg(feature = "autodiff")]
mod layer_norm;
#[cfg(feature = "flex")]
mod linear;
#[cfg(feature = "flex")]
mod matmul;
mod simd;
mod softmax;
#[cfg(feature = "autodiff")]
mod tracked;

pub use attention::{AttentionInputs, Packed, RelativeTerms, attention};
pub use dropout::{dropout, seed_dropout};
pub use gelu::gelu;
pub use int8_linear::Int8Linear;
#[cfg(feature = "flex")]
pub use linear::{linear, linear_add, linear_gelu};
pub use softmax::{softmax_last, softmax_last_with_bias};

use burn::tensor::{Tensor, backend::Backend};

/// `work()` on a thread of the kernels' pool (rayon's global pool) when `B` is burn-flex and
/// the build has `threads` (native); elsewhere on this thread (the browser, GPU backends, whose
/// devices stay with their callers). Called from outside the pool, each op that the kernels
/// (and burn-flex) split over the cores injects its halves into the pool, wakes its threads
/// and sleeps until they finish; from inside, the calling thread runs one half itself and the
/// other thread takes the rest. Those wake-ups were ~20% of a one-text forward pass (perf,
/// docs/BENCHMARKS.md).
pub fn on_kernel_threads<B: Backend, R: Send>(work: impl FnOnce() -> R + Send) -> R {
    #[cfg(feature = "threads")]
    if is_flex_device::<B>() {
        return rayon::scope(|_| work());
    }
    work()
}

/// `x` `[rows, d_in]` through `layer` in int8 on burn-flex (f32 activations), or `x` back
/// where `layer` cannot run (another backend or dtype: the caller runs its f32 layer).
pub fn int8_linear<B: Backend>(
    layer: &Int8Linear,
    x: Tensor<B, 2>,
) -> Result<Tensor<B, 2>, Tensor<B, 2>> {
    if !is_flex::<B>() || x.dtype() != burn::tensor::DType::F32 {
        return Err(x);
    }
    let [rows, _] = x.dims();
    let device = x.device();
    let data = x.into_data();
    match data.as_slice::<f32>() {
        Ok(values) => {
            let y = layer.forward(values);
            Ok(Tensor::from_data(
                burn::tensor::TensorData::new(y, [rows, layer.d_out()]),
                &device,
            ))
        }
        Err(_) => Err(Tensor::from_data(data, &device)),
    }
}

/// `norm` with its `epsilon` over `x`'s last dimension: while training on burn-flex an autodiff
/// op of core's (kernels/tracked.rs), else burn's op (burn-flex's is fused already).
pub fn layer_norm<B: Backend, const D: usize>(
    norm: &burn::nn::LayerNorm<B>,
    epsilon: f64,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    #[cfg(feature = "autodiff")]
    let x = match tracked::layer_norm(norm, epsilon, x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let _ = epsilon;
    norm.forward(x)
}

/// `layer` on `x` `[rows, d_in]`: burn's op (builds without burn-flex).
#[cfg(not(feature = "flex"))]
pub fn linear<B: Backend>(layer: &burn::nn::Linear<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    layer.forward(x)
}

/// `gelu(layer(x))` in one pass: without burn-flex, never (`x` back for the composition).
#[cfg(not(feature = "flex"))]
pub fn linear_gelu<B: Backend>(
    _: &burn::nn::Linear<B>,
    x: Tensor<B, 2>,
) -> Result<Tensor<B, 2>, Tensor<B, 2>> {
    Err(x)
}

/// `layer(x) + residual` in one pass: without burn-flex, never (the inputs back).
#[cfg(not(feature = "flex"))]
pub fn linear_add<B: Backend>(
    _: &burn::nn::Linear<B>,
    x: Tensor<B, 2>,
    residual: Tensor<B, 2>,
) -> Result<Tensor<B, 2>, [Tensor<B, 2>; 2]> {
    Err([x, residual])
}

/// Whether [`int8_linear`] runs on `B` (so loading packs int8 weights for it).
pub fn runs_int8<B: Backend>() -> bool {
    is_flex::<B>()
}

/// Whether the attention kernel takes packed sequences ([`Packed`]) on `B`: burn-flex
/// inference (training records BERT attention as an op of its own, over padded batches).
pub fn packs_sequences<B: Backend>() -> bool {
    is_flex::<B>()
}

/// Whether [`softmax_last_with_bias`] adds a broadcast bias inside its kernel on `B`. Where it
/// does not, callers pass a full-size bias: burn-flex adds broadcast operands through a slow
/// strided path (a third of a forward pass once), which also holds while training.
pub fn broadcasts_attention_bias<B: Backend>() -> bool {
    is_flex::<B>()
}

// Without burn-flex compiled in no backend is flex, and `B` has nothing to be compared with.
#[cfg_attr(not(feature = "flex"), allow(clippy::extra_unused_type_parameters))]
fn is_flex<B: Backend>() -> bool {
    #[cfg(feature = "flex")]
    return core::any::TypeId::of::<B>() == core::any::TypeId::of::<burn_flex::Flex>();
    #[cfg(not(feature = "flex"))]
    false
}

/// `x` as a tensor of backend `T` when `B` is `T` (the same value: a type check, no
/// conversion), or `x` back. How a kernel specialised for one backend reaches its tensors from
/// the generic models.
#[cfg(feature = "flex")]
fn as_backend<T: Backend, B: Backend, const D: usize>(
    x: Tensor<B, D>,
) -> Result<Tensor<T, D>, Tensor<B, D>> {
    let any: Box<dyn core::any::Any> = Box::new(x);
    match any.downcast::<Tensor<T, D>>() {
        Ok(x) => Ok(*x),
        Err(any) => Err(*any
            .downcast::<Tensor<B, D>>()
            .expect("the value boxed above")),
    }
}

/// Whether `B` keeps its tensors in host memory through burn-flex: burn-flex itself and
/// `Autodiff<Flex>` (training), whose device is burn-flex's.
#[cfg_attr(not(feature = "flex"), allow(clippy::extra_unused_type_parameters))]
fn is_flex_device<B: Backend>() -> bool {
    #[cfg(feature = "flex")]
    return core::any::TypeId::of::<B::Device>()
        == core::any::TypeId::of::<burn_flex::FlexDevice>();
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

/// Work below which a kernel stays on the calling thread (a split costs microseconds).
#[cfg(feature = "threads")]
const PARALLEL_MIN_VALUES: usize = 1 << 15;

/// `kernel(rows, first_row)` over `values` cut into whole rows of `row` values: in chunks on
/// rayon's pool (feature `threads`) when there is enough work, in one call otherwise. Every
/// kernel works row by row, so its results do not depend on the split.
fn for_each_rows(values: &mut [f32], row: usize, kernel: impl Fn(&mut [f32], usize) + Sync) {
    debug_assert!(
        row > 0 && values.len().is_multiple_of(row),
        "whole rows of {row}"
    );
    #[cfg(feature = "threads")]
    if values.len() >= 2 * PARALLEL_MIN_VALUES {
        use rayon::prelude::*;
        // A few chunks per thread, so one slow thread does not hold the rest up.
        let target = values.len() / (4 * rayon::current_num_threads());
        let rows = target.max(PARALLEL_MIN_VALUES).div_ceil(row);
        values
            .par_chunks_mut(rows * row)
            .enumerate()
            .for_each(|(i, chunk)| kernel(chunk, i * rows));
        return;
    }
    kernel(values, 0)
}

#[cfg(all(test, feature = "threads"))]
mod tests {
    /// The work runs on a pool thread, where the kernels' splits fork instead of waking the pool
    /// from outside; its result comes back.
    #[test]
    fn work_runs_on_a_kernel_thread() {
        assert_eq!(
            rayon::current_thread_index(),
            None,
            "the test thread is outside the pool"
        );
        let on_flex = super::on_kernel_threads::<burn_flex::Flex, _>(|| {
            (rayon::current_thread_index(), 2 + 2)
        });
        assert!(on_flex.0.is_some(), "ran outside the pool");
        assert_eq!(on_flex.1, 4);
    }
}
