//! AdamW as PyTorch's `torch.optim.AdamW`, the linear warm-up/decay schedule as transformers'
//! `get_linear_schedule_with_warmup`, gradient accumulation and global-norm clipping as
//! `clip_grad_norm_`.
//!
//! Written here rather than taken from burn's optimisers because the paper's recipe needs three
//! things they do not offer: weight decay on some parameters only, clipping by the norm of all
//! gradients together (burn clips each tensor alone), and optimiser state saved under the
//! model's HF parameter names so that a resumed run finds it whatever the new parameter ids.

use std::collections::HashMap;

use anyhow::{Result, bail};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::Device;
use burn::tensor::{ElementConversion, Tensor};
use harmaug_core::checkpoint::{Checkpoint, HostTensors, ParamNames};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    /// Applied to weight matrices and embeddings only; see [`decays`].
    pub weight_decay: f64,
}

/// Whether a parameter of rank `rank` gets weight decay. transformers' Trainer exempts biases
/// and LayerNorm weights; in BERT and DeBERTa those are exactly the rank-1 parameters, and every
/// matrix (linear weights, word/position/relative embeddings) decays.
pub fn decays(rank: usize) -> bool {
    rank >= 2
}

/// Peak `lr` reached linearly over `warmup` updates, then linear decay to 0 at `total`. Update
/// `step` (0-based) uses `lr(step)`, as transformers' scheduler: the first update has lr 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinearSchedule {
    pub peak: f64,
    pub warmup: usize,
    pub total: usize,
}

impl LinearSchedule {
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.peak * step as f64 / self.warmup.max(1) as f64;
        }
        let remaining = self.total.saturating_sub(step) as f64;
        self.peak * (remaining / self.total.saturating_sub(self.warmup).max(1) as f64).max(0.0)
    }
}

/// Gradients summed over the micro-batches of one update, flattened, on the inner backend.
pub struct GradientSum<B: Backend> {
    grads: HashMap<ParamId, Tensor<B, 1>>,
}

impl<B: Backend> Default for GradientSum<B> {
    fn default() -> Self {
        Self {
            grads: HashMap::new(),
        }
    }
}

impl<B: Backend> GradientSum<B> {
    /// Adds the gradients of `module`'s parameters found in `grads` (one backward pass).
    pub fn add<AB, M>(&mut self, module: &M, grads: &AB::Gradients)
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: Module<AB>,
    {
        module.visit(&mut Accumulate { sum: self, grads });
    }

    /// Adds another sum (another device's), moving its tensors to this sum's devices.
    pub fn merge(&mut self, other: GradientSum<B>) {
        for (id, grad) in other.grads {
            let total = match self.grads.remove(&id) {
                Some(previous) => {
                    let device = previous.device();
                    previous + grad.to_device(&device)
                }
                None => grad,
            };
            self.grads.insert(id, total);
        }
    }

    /// √(Σ‖g‖²) over every parameter, as `clip_grad_norm_` computes it.
    pub fn global_norm(&self) -> f64 {
        let squares = self
            .grads
            .values()
            .map(|g| g.clone().powi_scalar(2).sum())
            .reduce(|a, b| a + b);
        squares.map_or(0.0, |s| s.into_scalar().elem::<f64>().sqrt())
    }
}

struct Accumulate<'a, AB: AutodiffBackend> {
    sum: &'a mut GradientSum<AB::InnerBackend>,
    grads: &'a AB::Gradients,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for Accumulate<'_, AB> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let Some(grad) = param.val().grad(self.grads) else {
            return;
        };
        let n = grad.shape().num_elements();
        let grad = grad.reshape([n]);
        let total = match self.sum.grads.remove(&param.id) {
            Some(previous) => {
                let device = previous.device();
                previous + grad.to_device(&device)
            }
            None => grad,
        };
        self.sum.grads.insert(param.id, total);
    }
}

/// AdamW's running moments, by parameter.
pub struct AdamW<B: Backend> {
    config: AdamWConfig,
    moments: HashMap<ParamId, Moments<B>>,
    /// Updates applied so far (PyTorch's per-parameter `step`, the same for all here).
    pub updates: u64,
}

struct Moments<B: Backend> {
    exp_avg: Tensor<B, 1>,
    exp_avg_sq: Tensor<B, 1>,
}

impl<B: Backend> AdamW<B> {
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            moments: HashMap::new(),
            updates: 0,
        }
    }

    /// One update of `module` with the summed gradients scaled by `grad_scale` (1 / rows of
    /// the effective batch, times the clipping coefficient). Parameters without a gradient are
    /// left alone, moments and decay included, as PyTorch does.
    pub fn step<AB, M>(&mut self, module: M, grads: GradientSum<B>, lr: f64, grad_scale: f64) -> M
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: Module<AB>,
    {
        self.updates += 1;
        let mut update = Update {
            adamw: self,
            grads: grads.grads,
            lr,
            grad_scale,
        };
        module.map(&mut update)
    }

    /// The moments as host tensors named `exp_avg.<param>` and `exp_avg_sq.<param>`.
    pub fn state<AB: AutodiffBackend<InnerBackend = B>, M: Module<AB>>(
        &self,
        module: &M,
        names: &ParamNames,
    ) -> Result<HostTensors> {
        let mut state = HostTensors::new();
        let mut missing = Vec::new();
        module.visit(&mut ForEachParam::<AB, _>::new(|id, _, _| {
            let (Some(moments), Some(key)) = (self.moments.get(&id), names.get(&id)) else {
                missing.push(id);
                return;
            };
            for (prefix, tensor) in [
                ("exp_avg", &moments.exp_avg),
                ("exp_avg_sq", &moments.exp_avg_sq),
            ] {
                let values = tensor
                    .to_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .unwrap_or_default();
                state.insert(
                    format!("{prefix}.{}", key.name),
                    (vec![values.len()], values),
                );
            }
        }));
        if self.updates > 0 && !missing.is_empty() {
            bail!(
                "{} parameters have no optimiser state or name",
                missing.len()
            );
        }
        Ok(state)
    }

    /// Restores moments saved by [`Self::state`] for `module`'s parameters.
    pub fn load_state<AB: AutodiffBackend<InnerBackend = B>, M: Module<AB>>(
        &mut self,
        module: &M,
        names: &ParamNames,
        saved: &Checkpoint<'_>,
        updates: u64,
    ) -> Result<()> {
        let mut failure = None;
        let mut moments = HashMap::new();
        module.visit(&mut ForEachParam::<AB, _>::new(
            |id, n, device: B::Device| {
                let Some(key) = names.get(&id) else { return };
                let read = |prefix: &str| {
                    saved.tensor::<B, 1>(&format!("{prefix}.{}", key.name), [n], &device)
                };
                match (read("exp_avg"), read("exp_avg_sq")) {
                    (Ok(exp_avg), Ok(exp_avg_sq)) => {
                        moments.insert(
                            id,
                            Moments {
                                exp_avg,
                                exp_avg_sq,
                            },
                        );
                    }
                    (Err(e), _) | (_, Err(e)) => failure = Some(e),
                }
            },
        ));
        if let Some(e) = failure {
            bail!("optimizer state: {e}");
        }
        self.moments = moments;
        self.updates = updates;
        Ok(())
    }
}

struct Update<'a, B: Backend> {
    adamw: &'a mut AdamW<B>,
    grads: HashMap<ParamId, Tensor<B, 1>>,
    lr: f64,
    grad_scale: f64,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for Update<'_, AB::InnerBackend> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove(&id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let c = self.adamw.config;
        let require_grad = tensor.is_require_grad();
        let dims = tensor.dims();
        let weights = tensor.inner();
        let n = weights.shape().num_elements();
        let weights = weights.reshape([n]);
        let grad = grad.to_device(&weights.device()) * self.grad_scale;

        let (exp_avg, exp_avg_sq) = match self.adamw.moments.remove(&id) {
            Some(m) => (m.exp_avg, m.exp_avg_sq),
            None => (grad.zeros_like(), grad.zeros_like()),
        };
        let exp_avg = exp_avg * c.beta1 + grad.clone() * (1.0 - c.beta1);
        let exp_avg_sq = exp_avg_sq * c.beta2 + grad.powi_scalar(2) * (1.0 - c.beta2);
        let t = self.adamw.updates as i32;
        let correction1 = 1.0 - c.beta1.powi(t);
        let correction2 = 1.0 - c.beta2.powi(t);
        let denominator = exp_avg_sq.clone().sqrt() / correction2.sqrt() + c.epsilon;
        let mut weights = weights;
        if decays(D) {
            weights = weights * (1.0 - self.lr * c.weight_decay);
        }
        let weights = weights - exp_avg.clone() / denominator * (self.lr / correction1);
        self.adamw.moments.insert(
            id,
            Moments {
                exp_avg,
                exp_avg_sq,
            },
        );

        let mut tensor = Tensor::<AB, D>::from_inner(weights.reshape(dims));
        if require_grad {
            tensor = tensor.require_grad();
        }
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Calls `f(id, element count, device)` for every float parameter.
struct ForEachParam<AB, F> {
    f: F,
    backend: std::marker::PhantomData<AB>,
}

impl<AB, F> ForEachParam<AB, F> {
    fn new(f: F) -> Self {
        Self {
            f,
            backend: std::marker::PhantomData,
        }
    }
}

impl<AB, F> ModuleVisitor<AB> for ForEachParam<AB, F>
where
    AB: AutodiffBackend,
    F: FnMut(ParamId, usize, Device<AB::InnerBackend>),
{
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let tensor = param.val();
        (self.f)(
            param.id,
            tensor.shape().num_elements(),
            tensor.inner().device(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let s = LinearSchedule {
            peak: 3e-5,
            warmup: 100,
            total: 300,
        };
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(50) - 1.5e-5).abs() < 1e-12);
        assert!((s.lr(100) - 3e-5).abs() < 1e-12);
        assert!((s.lr(200) - 1.5e-5).abs() < 1e-12);
        assert_eq!(s.lr(300), 0.0);
        assert_eq!(s.lr(400), 0.0);
        // No warm-up: full rate from the first update.
        let flat = LinearSchedule { warmup: 0, ..s };
        assert!((flat.lr(0) - 3e-5).abs() < 1e-12);
    }

    #[test]
    fn only_matrices_decay() {
        assert!(!decays(1));
        assert!(decays(2));
    }

    use burn::backend::{Autodiff, Flex};
    use burn::nn::Linear;
    use burn::tensor::TensorData;

    type AB = Autodiff<Flex>;

    fn values<const D: usize>(t: Tensor<AB, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    /// y = x·W + b with x = [1, 0] and loss Σy: W's first row and b get gradient 1, W's second
    /// row gets 0. By hand, with m̂ = v̂ = g² = 1 at every step, an update moves a parameter
    /// by lr·g/(|g| + ε) ≈ lr, and decay multiplies a matrix by (1 − lr·wd) first.
    #[test]
    fn adamw_matches_the_hand_computed_update_and_spares_biases_from_decay() {
        let device = Default::default();

        let w0 = [0.5f32, -0.25, 1.0, 2.0];
        let mut linear = Linear::<AB> {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(w0.to_vec(), [2, 2]),
                &device,
            )),
            bias: Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![0.1f32, 0.2], [2]),
                &device,
            ))),
        };

        let (lr, wd) = (0.1, 0.5);
        let mut adamw = AdamW::<Flex>::new(AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            weight_decay: wd,
        });
        let mut expected_w: Vec<f64> = w0.iter().map(|&w| f64::from(w)).collect();
        let mut expected_b = vec![0.1f64, 0.2];
        for _ in 0..2 {
            let x = Tensor::<AB, 2>::from_data(TensorData::new(vec![1.0f32, 0.0], [1, 2]), &device);
            let grads = linear.forward(x).sum().backward();
            let mut sum = GradientSum::default();
            sum.add::<AB, _>(&linear, &grads);
            assert!(
                (sum.global_norm() - 4f64.sqrt()).abs() < 1e-6,
                "‖g‖ = √(1+1+1+1)"
            );
            linear = adamw.step::<AB, _>(linear, sum, lr, 1.0);
            let step = lr / (1.0 + 1e-8);
            for (i, w) in expected_w.iter_mut().enumerate() {
                *w *= 1.0 - lr * wd;
                if i < 2 {
                    *w -= step;
                }
            }
            for b in &mut expected_b {
                *b -= step; // no decay
            }
        }
        let w = values(linear.weight.val());
        let b = values(linear.bias.as_ref().unwrap().val());
        for (got, want) in w.iter().zip(&expected_w).chain(b.iter().zip(&expected_b)) {
            assert!(
                (f64::from(*got) - want).abs() < 1e-6,
                "{w:?} {b:?} vs {expected_w:?} {expected_b:?}"
            );
        }
    }
}
