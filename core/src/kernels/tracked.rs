//! The kernels inside training. `Autodiff<Flex>` records a backward step for every op it runs,
//! so a kernel there must be an autodiff op of its own: forward and backward both run as
//! kernels on burn-flex's buffers (the backend-extension pattern of burn's custom-kernel guide,
//! chosen by type like the inference kernels). With burn's ops, GELU's libm `erf` (forward and
//! backward) and softmax's scalar `exp` were 16% of a MiniLM training step (perf,
//! docs/BENCHMARKS.md).

use core::any::TypeId;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::nn::{Dropout, LayerNorm, Linear};
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive, backend::Backend};
use burn_flex::{Flex, FlexTensor};

use super::as_backend;
use super::attention::{AttentionInputs, Shape, kernel_shape, training};
use super::dropout::Mask;
use super::softmax::{self, Broadcast};

/// The backend the kernels below specialise: burn-flex under autodiff, as `distill` trains
/// on the CPU.
type Training = Autodiff<Flex>;
type TrainingTensor = burn::tensor::ops::FloatTensor<Training>;

/// GELU of `x` as a recorded op when `B` is the training backend, or `x` back.
pub(super) fn gelu<B: Backend, const D: usize>(
    x: Tensor<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    #[derive(Debug)]
    struct GeluBackward;

    impl Backward<Flex, 1> for GeluBackward {
        /// The input.
        type State = FlexTensor;

        fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let input = ops.state;
            unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
                zip_rows(grad, &input, 1, |grad, input, _| {
                    super::gelu::gelu_derivative_times(grad, input)
                })
            });
        }
    }

    map_training(x, |x| {
        let input = contiguous(x.primitive.clone());
        let output = map_values(&input, super::gelu::gelu_rows);
        match GeluBackward
            .prepare::<NoCheckpointing>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(input, output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    })
}

/// `x·W + b` for `layer` as a recorded op when `B` is the training backend and the layer has a
/// bias (every layer of the models here), or `x` back. Forward and backward are
/// kernels/linear.rs's GEMMs.
pub(super) fn linear<B: Backend>(
    layer: &Linear<B>,
    x: Tensor<B, 2>,
) -> Result<Tensor<B, 2>, Tensor<B, 2>> {
    #[derive(Debug)]
    struct LinearBackward;

    impl Backward<Flex, 3> for LinearBackward {
        /// The input and the weights.
        type State = (FlexTensor, FlexTensor);

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [x_node, weight_node, bias_node] = ops.parents;
            let grad = grads.consume::<Flex>(&ops.node);
            let (x, weight) = ops.state;
            if let Some(node) = x_node {
                grads.register::<Flex>(node.id, super::linear::input_grad(&grad, &weight));
            }
            if let Some(node) = weight_node {
                grads.register::<Flex>(node.id, super::linear::weight_grad(&x, &grad));
            }
            if let Some(node) = bias_node {
                grads.register::<Flex>(node.id, super::linear::bias_grad(&grad));
            }
        }
    }

    let (weight, bias) = match &layer.bias {
        Some(bias) if is_training::<B>() => (layer.weight.val(), bias.val()),
        _ => return Err(x),
    };
    if weight.dtype() != DType::F32 || bias.dtype() != DType::F32 {
        return Err(x);
    }
    let (weight, bias) = (autodiff_tensor(weight), autodiff_tensor(bias));
    map_training(x, |x| {
        let output = super::linear::forward(&x.primitive, &weight.primitive, Some(&bias.primitive));
        let parents = [x.node.clone(), weight.node.clone(), bias.node.clone()];
        match LinearBackward
            .prepare::<NoCheckpointing>(parents)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((x.primitive, weight.primitive), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    })
}

/// `norm` (with its `epsilon`) over `x`'s last dimension as a recorded op when `B` is the
/// training backend and the norm has a bias (every one in the models here), or `x` back.
pub(super) fn layer_norm<B: Backend, const D: usize>(
    norm: &LayerNorm<B>,
    epsilon: f64,
    x: Tensor<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    #[derive(Debug)]
    struct LayerNormBackward;

    impl Backward<Flex, 3> for LayerNormBackward {
        /// The normalised input x̂, each row's 1/σ, and γ.
        type State = (FlexTensor, Vec<f32>, FlexTensor);

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [x_node, gamma_node, beta_node] = ops.parents;
            let (normalized, inv_std, gamma) = ops.state;
            let mut grad = contiguous(grads.consume::<Flex>(&ops.node));
            let x_hat = normalized.as_slice::<f32>().unwrap_or_default();
            let gamma = gamma.as_slice::<f32>().unwrap_or_default();
            let d = gamma.len();
            if gamma_node.is_some() || beta_node.is_some() {
                let grad = grad.as_slice::<f32>().unwrap_or_default();
                let (gamma_grad, beta_grad) = super::layer_norm::parameter_grads(grad, x_hat, d);
                for (node, values) in [(gamma_node, gamma_grad), (beta_node, beta_grad)] {
                    if let Some(node) = node {
                        let values = FlexTensor::from_data(TensorData::new(values, [d]));
                        grads.register::<Flex>(node.id, values);
                    }
                }
            }
            if let Some(node) = x_node {
                super::layer_norm::backward_rows(grad.storage_mut::<f32>(), x_hat, &inv_std, gamma);
                grads.register::<Flex>(node.id, grad);
            }
        }
    }

    let (gamma, beta) = match &norm.beta {
        Some(beta) if is_training::<B>() => (norm.gamma.val(), beta.val()),
        _ => return Err(x),
    };
    let d = gamma.dims()[0];
    if gamma.dtype() != DType::F32 || beta.dtype() != DType::F32 || x.dims()[D - 1] != d {
        return Err(x);
    }
    let (gamma, beta) = (autodiff_tensor(gamma), autodiff_tensor(beta));
    map_training(x, |x| {
        let input = contiguous(x.primitive.clone());
        let mut normalized = input.as_slice::<f32>().unwrap_or_default().to_vec();
        let mut output = vec![0f32; normalized.len()];
        let mut inv_std = vec![0f32; normalized.len() / d.max(1)];
        let gamma_values = gamma.primitive.to_contiguous();
        let beta_values = beta.primitive.to_contiguous();
        super::layer_norm::normalize_rows(
            &mut normalized,
            &mut output,
            &mut inv_std,
            gamma_values.as_slice::<f32>().unwrap_or_default(),
            beta_values.as_slice::<f32>().unwrap_or_default(),
            epsilon as f32,
        );
        let shape = input.layout().shape().clone();
        let output = FlexTensor::from_data(TensorData::new(output, shape.clone()));
        let parents = [x.node.clone(), gamma.node.clone(), beta.node.clone()];
        match LayerNormBackward
            .prepare::<NoCheckpointing>(parents)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let normalized = FlexTensor::from_data(TensorData::new(normalized, shape));
                prep.finish((normalized, inv_std, gamma_values), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    })
}

/// softmax(q·kᵀ/√d + bias)·v with `probs_dropout` on the probabilities as one recorded op when
/// `B` is the training backend (BERT's attention: no position terms; the bias a constant
/// padding mask), or the inputs back. Forward and backward are kernels/attention's per-pair
/// products (attention/training.rs).
pub(super) fn attention<B: Backend>(
    inputs: AttentionInputs<B>,
    heads: usize,
    probs_dropout: &Dropout,
) -> Result<Tensor<B, 3>, AttentionInputs<B>> {
    #[derive(Debug)]
    struct AttentionBackward;

    impl Backward<Flex, 3> for AttentionBackward {
        /// q, k, v and the probabilities.
        type State = ([FlexTensor; 3], training::Saved);

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let grad = contiguous(grads.consume::<Flex>(&ops.node));
            let (inputs, saved) = ops.state;
            let values = inputs
                .each_ref()
                .map(|x| x.as_slice::<f32>().unwrap_or_default());
            let grad_values = grad.as_slice::<f32>().unwrap_or_default();
            let shape = grad.layout().shape().clone();
            let input_grads = training::backward(&saved, values, grad_values);
            for (node, values) in ops.parents.into_iter().zip(input_grads) {
                if let Some(node) = node {
                    let grad = FlexTensor::from_data(TensorData::new(values, shape.clone()));
                    grads.register::<Flex>(node.id, grad);
                }
            }
        }
    }

    let Some((shape, bias)) = training_attention_shape(&inputs, heads) else {
        return Err(inputs);
    };
    let dims = inputs.q.dims();
    let device = inputs.q.device();
    let dropout = (probs_dropout.prob > 0.0)
        .then(|| Mask::new(probs_dropout.prob, super::dropout::mask_seed::<B>(&device)));
    let [q, k, v] = [inputs.q, inputs.k, inputs.v].map(autodiff_tensor);
    let primitives = [&q, &k, &v].map(|x| contiguous(x.primitive.clone()));
    let values = primitives
        .each_ref()
        .map(|x| x.as_slice::<f32>().unwrap_or_default());
    let (context, saved) = training::forward(values, shape, bias.as_ref(), dropout);
    let output = FlexTensor::from_data(TensorData::new(context, dims));
    let parents = [q.node.clone(), k.node.clone(), v.node.clone()];
    let output = match AttentionBackward
        .prepare::<NoCheckpointing>(parents)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((primitives, saved), output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    Ok(from_training(output))
}

/// The pairs' shape and bias (see `kernel_shape`) when the attention op can record `inputs`:
/// the training backend, BERT's attention (no position terms) over a non-empty padded batch, a
/// constant bias, and what the inference kernel takes too.
fn training_attention_shape<B: Backend>(
    inputs: &AttentionInputs<B>,
    heads: usize,
) -> Option<(Shape, Option<Broadcast>)> {
    let [batch, seq, _] = inputs.q.dims();
    // Training's kernel computes every query row (its backward assumes q shaped like k).
    let fits = is_training::<B>()
        && inputs.relative.is_none()
        && inputs.packed.is_none()
        && inputs.q.dims() == inputs.k.dims()
        && batch * seq > 0
        && inputs.bias.as_ref().is_none_or(|bias| !is_tracked(bias));
    fits.then(|| kernel_shape(inputs, heads)).flatten()
}

/// Attention scores and their optional additive bias, handed back where no kernel runs.
pub(super) type ScoresAndBias<B> = (Tensor<B, 4>, Option<Tensor<B, 4>>);

/// softmax(scores + bias) over the last dimension as a recorded op when `B` is the training
/// backend and the bias is a constant (a padding mask, as in every model here), or the inputs
/// back. The bias is added row by row inside the kernel, as in inference.
pub(super) fn softmax_with_bias<B: Backend>(
    scores: Tensor<B, 4>,
    bias: Option<Tensor<B, 4>>,
) -> Result<Tensor<B, 4>, ScoresAndBias<B>> {
    #[derive(Debug)]
    struct SoftmaxBackward;

    impl Backward<Flex, 1> for SoftmaxBackward {
        /// The output (the probabilities) and the row length.
        type State = (FlexTensor, usize);

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (probs, cols) = ops.state;
            unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
                zip_rows(grad, &probs, cols, |grad, probs, _| {
                    softmax::softmax_backward_rows(grad, probs, cols)
                })
            });
        }
    }

    let dims = scores.dims();
    if !is_training::<B>() || dims.contains(&0) {
        return Err((scores, bias));
    }
    let broadcast = match &bias {
        Some(b) if is_tracked(b) => return Err((scores, bias)),
        Some(b) => match Broadcast::over(dims, b.clone()) {
            Some(broadcast) => Some(broadcast),
            None => return Err((scores, bias)),
        },
        None => None,
    };
    let cols = dims[3];
    map_training(scores, |scores| {
        let input = contiguous(scores.primitive.clone());
        let output = map_values(&input, |values| match &broadcast {
            Some(bias) => softmax::biased_softmax_rows(values, dims, bias),
            None => softmax::softmax_rows(values, cols),
        });
        match SoftmaxBackward
            .prepare::<NoCheckpointing>([scores.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((output.clone(), cols), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    })
    .map_err(|scores| (scores, bias))
}

/// `x`'s autodiff tensor; `B` must be the training backend (checked by the caller).
fn autodiff_tensor<B: Backend, const D: usize>(x: Tensor<B, D>) -> TrainingTensor {
    let Ok(x) = as_backend::<Training, _, D>(x) else {
        unreachable!("B is the training backend")
    };
    match x.into_primitive() {
        TensorPrimitive::Float(x) => x,
        TensorPrimitive::QFloat(_) => unreachable!("f32, checked by the caller"),
    }
}

fn is_training<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<Training>()
}

/// Whether autodiff records `x`'s ops (a constant built from data is not tracked).
fn is_tracked<B: Backend, const D: usize>(x: &Tensor<B, D>) -> bool {
    match as_backend::<Training, _, D>(x.clone()) {
        Ok(x) => match x.into_primitive() {
            TensorPrimitive::Float(x) => x.is_tracked(),
            TensorPrimitive::QFloat(_) => true,
        },
        Err(_) => false,
    }
}

/// `op` on `x`'s autodiff tensor when `B` is the training backend and `x` holds f32, or `x`
/// back. The type is checked first, so the downcasts below cannot fail.
fn map_training<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    op: impl FnOnce(TrainingTensor) -> TrainingTensor,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    if !is_training::<B>() || x.dtype() != DType::F32 {
        return Err(x);
    }
    let Ok(x) = as_backend::<Training, _, D>(x) else {
        unreachable!("B is the training backend")
    };
    match x.into_primitive() {
        TensorPrimitive::Float(x) => Ok(from_training(op(x))),
        quantized => Err(from_training_tensor(Tensor::from_primitive(quantized))),
    }
}

/// An autodiff tensor as `B`'s; `B` must be the training backend (checked by the caller).
fn from_training<B: Backend, const D: usize>(x: TrainingTensor) -> Tensor<B, D> {
    from_training_tensor(Tensor::<Training, D>::from_primitive(
        TensorPrimitive::Float(x),
    ))
}

fn from_training_tensor<B: Backend, const D: usize>(x: Tensor<Training, D>) -> Tensor<B, D> {
    let Ok(x) = as_backend::<B, _, D>(x) else {
        unreachable!("B is the training backend")
    };
    x
}

/// `x` with its values as its whole buffer, in order (a view into a larger buffer is copied).
fn contiguous(x: FlexTensor) -> FlexTensor {
    let whole = x.as_slice::<f32>().map(<[f32]>::len) == Some(x.storage::<f32>().len());
    if whole { x } else { x.to_contiguous() }
}

/// A new tensor of `input`'s shape: its values copied, then the inference kernel `kernel` on
/// them in place (the input stays: the backward step keeps it).
fn map_values(input: &FlexTensor, kernel: impl FnOnce(&mut [f32])) -> FlexTensor {
    let mut values = input.as_slice::<f32>().unwrap_or_default().to_vec();
    kernel(&mut values);
    FlexTensor::from_data(TensorData::new(values, input.layout().shape().clone()))
}

/// `grad` updated in place (copied first if shared) by `kernel(grad rows, the same rows of
/// other, first_row)`, in whole rows of `row` values.
fn zip_rows(
    grad: FlexTensor,
    other: &FlexTensor,
    row: usize,
    kernel: impl Fn(&mut [f32], &[f32], usize) + Sync,
) -> FlexTensor {
    let mut grad = contiguous(grad);
    let other = other.as_slice::<f32>().unwrap_or_default();
    let values = grad.storage_mut::<f32>();
    assert_eq!(values.len(), other.len(), "a gradient of its op's shape");
    super::for_each_rows(values, row, |chunk, first_row| {
        let start = first_row * row;
        kernel(chunk, &other[start..start + chunk.len()], first_row)
    });
    grad
}
