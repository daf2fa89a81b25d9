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

use super::gelu::{gelu_rows, gelu_rows_with_bias};
use super::matmul::{Product, View, matmul_into};

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
    let Some((weight, bias)) = flex_parts(layer, &x) else {
        return Err(x);
    };
    Ok(from_flex(forward(
        &flex_primitive(x),
        &weight,
        bias.as_ref(),
    )))
}

/// `gelu(layer(x))` on burn-flex (inference, f32), in one pass over the product: it is
/// written without its bias, then the bias and GELU go in together, where `linear` would
/// first write `[rows, d_out]` bias rows (the feed-forward block's widest output) and GELU
/// read it all again. `x` back elsewhere.
pub fn linear_gelu<B: Backend>(
    layer: &Linear<B>,
    x: Tensor<B, 2>,
) -> Result<Tensor<B, 2>, Tensor<B, 2>> {
    let Some((weight, bias)) = flex_parts(layer, &x) else {
        return Err(x);
    };
    let (mut out, dims) = layer_product(&flex_primitive(x), &weight, None);
    match bias.map(|b| b.to_contiguous()) {
        Some(bias) => gelu_rows_with_bias(&mut out, bias_row(&bias, dims[1])),
        None => gelu_rows(&mut out),
    }
    Ok(from_flex(FlexTensor::from_data(TensorData::new(out, dims))))
}

/// `layer(x) + residual` on burn-flex (inference, f32), in one pass over the product: the
/// bias and the residual are added together, where `linear` would first write bias rows and
/// burn-flex's add make a third buffer. The inputs back elsewhere, or when `residual` is not
/// `[rows, d_out]` f32.
pub fn linear_add<B: Backend>(
    layer: &Linear<B>,
    x: Tensor<B, 2>,
    residual: Tensor<B, 2>,
) -> Result<Tensor<B, 2>, [Tensor<B, 2>; 2]> {
    let [rows, _] = x.dims();
    let [_, d_out] = layer.weight.dims();
    let parts = flex_parts(layer, &x)
        .filter(|_| residual.dtype() == DType::F32 && residual.dims() == [rows, d_out]);
    let Some((weight, bias)) = parts else {
        return Err([x, residual]);
    };
    let (mut out, dims) = layer_product(&flex_primitive(x), &weight, None);
    let residual = flex_primitive(residual).to_contiguous();
    let residual = residual.as_slice::<f32>().expect("f32, checked above");
    let bias = bias.map(|b| b.to_contiguous());
    add_rows(
        &mut out,
        bias.as_ref().map(|b| bias_row(b, d_out)),
        residual,
        d_out,
    );
    Ok(from_flex(FlexTensor::from_data(TensorData::new(out, dims))))
}

/// The layer's weight and bias on burn-flex, when `B` is burn-flex and they and `x` are f32.
fn flex_parts<B: Backend>(
    layer: &Linear<B>,
    x: &Tensor<B, 2>,
) -> Option<(FlexTensor, Option<FlexTensor>)> {
    let weight = layer.weight.val();
    let bias = layer.bias.as_ref().map(|b| b.val());
    let f32_bias = bias.as_ref().is_none_or(|b| b.dtype() == DType::F32);
    let fits = super::is_flex::<B>()
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && f32_bias;
    fits.then(|| (flex_primitive(weight), bias.map(flex_primitive)))
}

/// `x`'s burn-flex tensor; `B` must be burn-flex (checked by the caller).
fn flex_primitive<B: Backend, const D: usize>(x: Tensor<B, D>) -> FlexTensor {
    let Ok(x) = super::as_backend::<Flex, _, D>(x) else {
        unreachable!("B is burn-flex")
    };
    x.into_primitive().tensor()
}

/// A burn-flex result as a tensor of `B`, which is burn-flex (checked by the caller).
fn from_flex<B: Backend>(y: FlexTensor) -> Tensor<B, 2> {
    let y = Tensor::<Flex, 2>::from_primitive(TensorPrimitive::Float(y));
    let Ok(y) = super::as_backend::<B, _, 2>(y) else {
        unreachable!("B is burn-flex")
    };
    y
}

/// A contiguous bias's values, one per output.
fn bias_row(bias: &FlexTensor, n: usize) -> &[f32] {
    let row = bias.as_slice::<f32>().expect("an f32 bias");
    assert_eq!(row.len(), n, "one bias per output");
    row
}

/// `x·weight`, `[m, k]·[k, n]`, with its `[m, n]`: accumulated into rows of `bias`, or
/// without one written bare into a new buffer that is never zeroed or filled first.
fn layer_product(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
) -> (Vec<f32>, [usize; 2]) {
    let (x, weight) = (readable(x), readable(weight));
    let ((x, m, k), (weight, k_w, n)) = (view(&x), view(&weight));
    assert_eq!(k, k_w, "x·W: inner dimensions");
    let mut out = match bias.map(FlexTensor::to_contiguous) {
        Some(bias) => bias_row(&bias, n).repeat(m),
        None => Vec::with_capacity(m * n),
    };
    let how = Product {
        accumulate: bias.is_some(),
        parallel: true,
        ..Product::PLAIN
    };
    // SAFETY: the buffer holds m·n values: the bias rows, which gemm adds to, or spare
    // capacity, every value of which gemm writes (zeros when k is 0) and reads none without
    // `accumulate`; so the length covers only written values.
    unsafe {
        matmul_into(out.as_mut_ptr(), [m, n, n], x, weight, k, how);
        out.set_len(m * n);
    }
    (out, [m, n])
}

/// `values += bias + residual`, rows of `n` values (the bias per column), over the cores.
fn add_rows(values: &mut [f32], bias: Option<&[f32]>, residual: &[f32], n: usize) {
    if n == 0 {
        return;
    }
    super::for_each_rows(values, n, |chunk, first_row| {
        let residual = &residual[first_row * n..first_row * n + chunk.len()];
        super::simd::widest(
            #[inline(always)]
            || {
                for (row, residual) in chunk.chunks_exact_mut(n).zip(residual.chunks_exact(n)) {
                    if let Some(bias) = bias {
                        row.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
                    }
                    row.iter_mut().zip(residual).for_each(|(x, r)| *x += r);
                }
            },
        )
    });
}

/// `x·weight + bias`: `[m, k]·[k, n]` → `[m, n]`.
pub(super) fn forward(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
) -> FlexTensor {
    let (out, dims) = layer_product(x, weight, bias);
    FlexTensor::from_data(TensorData::new(out, dims))
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
