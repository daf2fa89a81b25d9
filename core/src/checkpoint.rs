//! `model.safetensors` bytes → burn tensors and the basic modules built from them.
//!
//! Tensors may be stored as f32, f16, bf16 or f64; they are widened to f32 because every
//! backend computes in f32 here. Architectures name the keys; this file only knows the
//! PyTorch conventions (`weight`/`bias`, `[out, in]` linear weights).

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use safetensors::{Dtype, SafeTensors};

use crate::{Error, Result};

/// Told when a tensor's bytes have been converted and will not be read again, so that a
/// memory-mapped checkpoint can drop those pages: loading then needs about one model's worth of
/// memory instead of two (the mapped file plus the converted tensors).
pub trait ReleasePages {
    fn release(&self, bytes: &[u8]);
}

pub struct Checkpoint<'a> {
    tensors: SafeTensors<'a>,
    release: Option<&'a dyn ReleasePages>,
}

impl<'a> Checkpoint<'a> {
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self> {
        let tensors = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::Checkpoint(format!("not a valid safetensors file: {e}")))?;
        Ok(Self {
            tensors,
            release: None,
        })
    }

    pub fn with_release(mut self, release: Option<&'a dyn ReleasePages>) -> Self {
        self.release = release;
        self
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.tensor(name).is_ok()
    }

    /// Returns `prefix` if the checkpoint stores the base model under it (`bert.embeddings…`,
    /// as `*ForSequenceClassification` saves), or "" if it stores it bare (`embeddings…`, as
    /// base models such as sentence-transformers' MiniLM do).
    pub fn base_prefix<'p>(&self, prefix: &'p str, probe: &str) -> &'p str {
        if self.contains(&format!("{prefix}{probe}")) {
            prefix
        } else {
            ""
        }
    }

    /// The tensor `name`, checked against the `shape` the config implies.
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let values = self.values(name, &shape)?;
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// The values of tensor `name` as f32, row-major, after checking its shape.
    fn values(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let view = self
            .tensors
            .tensor(name)
            .map_err(|_| Error::Checkpoint(format!("missing tensor `{name}`")))?;
        if view.shape() != shape {
            return Err(Error::Checkpoint(format!(
                "tensor `{name}` has shape {:?}, but config.json implies {shape:?}",
                view.shape()
            )));
        }
        let values = to_f32(name, view.dtype(), view.data())?;
        if let Some(release) = self.release {
            release.release(view.data());
        }
        Ok(values)
    }

    /// A PyTorch `nn.Linear` (`weight` `[out, in]`, `bias` `[out]`) as a burn `Linear`
    /// (`weight` `[in, out]`).
    pub fn linear<B: Backend>(
        &self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
    ) -> Result<Linear<B>> {
        let bias = self.tensor::<B, 1>(&format!("{prefix}.bias"), [d_out], device)?;
        Ok(Linear {
            weight: self.linear_weight(prefix, d_in, d_out, device)?,
            bias: Some(Param::from_tensor(bias)),
        })
    }

    /// A PyTorch `nn.Linear(..., bias=False)`.
    pub fn linear_without_bias<B: Backend>(
        &self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
    ) -> Result<Linear<B>> {
        Ok(Linear {
            weight: self.linear_weight(prefix, d_in, d_out, device)?,
            bias: None,
        })
    }

    /// The transpose to burn's `[in, out]` happens here, once, on the host: a transposed view
    /// would be copied back to contiguous memory by CPU backends on every forward call.
    fn linear_weight<B: Backend>(
        &self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
    ) -> Result<Param<Tensor<B, 2>>> {
        let pytorch = self.values(&format!("{prefix}.weight"), &[d_out, d_in])?;
        let mut weight = vec![0.0f32; pytorch.len()];
        for (o, row) in pytorch.chunks_exact(d_in).enumerate() {
            for (i, &w) in row.iter().enumerate() {
                weight[i * d_out + o] = w;
            }
        }
        let weight = Tensor::from_data(TensorData::new(weight, [d_in, d_out]), device);
        Ok(Param::from_tensor(weight))
    }

    pub fn layer_norm<B: Backend>(
        &self,
        prefix: &str,
        d: usize,
        epsilon: f64,
        device: &B::Device,
    ) -> Result<LayerNorm<B>> {
        let mut norm = LayerNormConfig::new(d).with_epsilon(epsilon).init(device);
        norm.gamma = Param::from_tensor(self.tensor(&format!("{prefix}.weight"), [d], device)?);
        norm.beta = Some(Param::from_tensor(self.tensor(
            &format!("{prefix}.bias"),
            [d],
            device,
        )?));
        Ok(norm)
    }

    pub fn embedding<B: Backend>(
        &self,
        name: &str,
        rows: usize,
        d: usize,
        device: &B::Device,
    ) -> Result<Embedding<B>> {
        Ok(Embedding {
            weight: Param::from_tensor(self.tensor(name, [rows, d], device)?),
        })
    }
}

fn to_f32(name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    // Checkpoint bytes are little-endian and not necessarily aligned, so decode element-wise.
    let values = match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        other => {
            return Err(Error::Checkpoint(format!(
                "tensor `{name}` has dtype {other:?}; expected F32, F16, BF16 or F64"
            )));
        }
    };
    Ok(values)
}
