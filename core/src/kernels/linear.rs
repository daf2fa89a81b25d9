//! `x·W + b` (burn's `Linear`, weights `[d_in, d_out]`) on burn-flex's buffers: one GEMM into
//! an output that already holds the bias rows. burn-flex's own op allocates every matmul
//! output as zeroed bytes and copies them into an aligned buffer (`FlexTensor::empty`), then
//! adds the bias through a broadcast into a third buffer; with the page faults of those fresh
//! buffers that was ~20% of a MiniLM training step (perf, docs/BENCHMARKS.md). Training
//! (`Autodiff<Flex>`) records the same forward with the backward below (kernels/tracked.rs).
//! Native and in the browser (wasm, one thread).

use burn::nn::Linear;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive, backend::Backend};
use burn_flex::{Flex, FlexTensor};

use super::matmul::{Matrix, Product, View, matmul};

/// `layer` on `x` `[rows, d_in]` → `[rows, d_out]`: the kernel on burn-flex (inference) and
/// burn-flex under autodiff (training), burn's op elsewhere.
pub fn linear<B: Backend>(layer: &Linear<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    let x = match on_flex(layer, x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    #[cfg(feature = "autodiff")]
    let x = match super::tracked::linear(layer, x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    layer.forward(x)
}

fn on_flex<B: Backend>(layer: &Linear<B>, x: Tensor<B, 2>) -> Result<Tensor<B, 2>, Tensor<B, 2>> {
    let weight = layer.weight.val();
    let bias = layer.bias.as_ref().map(|b| b.val());
    let f32_bias = bias.as_ref().is_none_or(|b| b.dtype() == DType::F32);
    if !super::is_flex::<B>()
        || x.dtype() != DType::F32
        || weight.dtype() != DType::F32
        || !f32_bias
    {
        return Err(x);
    }
    let bias = bias.map(flex_primitive);
    let y = forward(&flex_primitive(x), &flex_primitive(weight), bias.as_ref());
    let y = Tensor::<Flex, 2>::from_primitive(TensorPrimitive::Float(y));
    let Ok(y) = super::as_backend::<B, _, 2>(y) else {
        unreachable!("B is burn-flex")
    };
    Ok(y)
}

/// `x`'s burn-flex tensor; `B` must be burn-flex (checked by the caller).
fn flex_primitive<B: Backend, const D: usize>(x: Tensor<B, D>) -> FlexTensor {
    let Ok(x) = super::as_backend::<Flex, _, D>(x) else {
        unreachable!("B is burn-flex")
    };
    x.into_primitive().tensor()
}

/// `x·weight + bias`: `[m, k]·[k, n]` → `[m, n]`.
pub(super) fn forward(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
) -> FlexTensor {
    let (x, weight) = (readable(x), readable(weight));
    let ((x, m, k), (weight, k_w, n)) = (view(&x), view(&weight));
    assert_eq!(k, k_w, "x·W: inner dimensions");
    let mut out = match bias {
        Some(bias) => {
            let bias = bias.to_contiguous();
            let row = bias.as_slice::<f32>().expect("an f32 bias");
            assert_eq!(row.len(), n, "one bias per output");
            row.repeat(m)
        }
        None => vec![0f32; m * n],
    };
    let how = Product {
        accumulate: bias.is_some(),
        parallel: true,
        ..Product::PLAIN
    };
    matmul(output(&mut out, m, n), x, weight, k, how);
    FlexTensor::from_data(TensorData::new(out, [m, n]))
}

/// The gradient of `x`: `grad·weightᵀ`, `[m, n]·[n, k]` → `[m, k]`.
#[cfg(feature = "autodiff")]
pub(super) fn input_grad(grad: &FlexTensor, weight: &FlexTensor) -> FlexTensor {
    let (grad, weight) = (readable(grad), readable(weight));
    let ((grad, m, n), (weight, k, _)) = (view(&grad), view(&weight));
    new_product(grad, weight.transposed(), [m, n, k])
}

/// The gradient of the weights: `xᵀ·grad`, `[k, m]·[m, n]` → `[k, n]`.
#[cfg(feature = "autodiff")]
pub(super) fn weight_grad(x: &FlexTensor, grad: &FlexTensor) -> FlexTensor {
    let (x, grad) = (readable(x), readable(grad));
    let ((x, m, k), (grad, _, n)) = (view(&x), view(&grad));
    new_product(x.transposed(), grad, [k, m, n])
}

/// `lhs·rhs` as a new `[rows, cols]` tensor, for `[rows, inner, cols]`, split over the cores.
#[cfg(feature = "autodiff")]
fn new_product(lhs: View<'_>, rhs: View<'_>, [rows, inner, cols]: [usize; 3]) -> FlexTensor {
    let how = Product {
        parallel: true,
        ..Product::PLAIN
    };
    let out = super::matmul::product([rows, cols], lhs, rhs, inner, how);
    FlexTensor::from_data(TensorData::new(out, [rows, cols]))
}

/// The gradient of the bias: `grad`'s column sums, `[m, n]` → `[n]`.
#[cfg(feature = "autodiff")]
pub(super) fn bias_grad(grad: &FlexTensor) -> FlexTensor {
    let grad = grad.to_contiguous();
    let n = grad.layout().shape()[1];
    let mut sums = vec![0f32; n];
    if n > 0 {
        for row in grad
            .as_slice::<f32>()
            .expect("f32 gradients")
            .chunks_exact(n)
        {
            sums.iter_mut().zip(row).for_each(|(sum, g)| *sum += g);
        }
    }
    FlexTensor::from_data(TensorData::new(sums, [n]))
}

fn output(values: &mut [f32], rows: usize, cols: usize) -> Matrix<'_> {
    Matrix {
        values,
        rows,
        cols,
        row_stride: cols,
    }
}

/// A 2-D tensor read in place, with its (rows, cols).
fn view(x: &FlexTensor) -> (View<'_>, usize, usize) {
    let (rows, cols, row_stride, col_stride) = x.layout().as_2d_strides().expect("a 2-D tensor");
    let view = View {
        values: &x.storage::<f32>()[x.layout().start_offset()..],
        row_stride: usize::try_from(row_stride).expect("see `readable`"),
        col_stride: usize::try_from(col_stride).expect("see `readable`"),
    };
    (view, rows, cols)
}

/// `x` as [`view`] reads it: copied to a plain layout if a stride is negative (a flip).
fn readable(x: &FlexTensor) -> FlexTensor {
    if x.layout().has_positive_strides() {
        x.clone()
    } else {
        x.to_contiguous()
    }
}
