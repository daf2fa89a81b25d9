//! `model.safetensors` bytes ↔ burn tensors and the basic modules built from them.
//!
//! Tensors may be stored as f32, f16, bf16 or f64; they are widened to f32 because every
//! backend computes in f32 here. Architectures name the keys; this file only knows the
//! PyTorch conventions (`weight`/`bias`, `[out, in]` linear weights).
//!
//! Architectures read their modules through [`Weights`] scopes, which record each parameter's
//! full HF name ([`ParamNames`]), so that a trained model is written back ([`to_safetensors`])
//! under the same names without a second list of keys.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::{Embedding, LayerNormConfig, Linear};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use crate::kernels::{self, Int8Linear};
use crate::models::norm::Norm;
use crate::models::projection::Projection;
use crate::{Error, Result};

/// Told when a tensor's bytes have been converted and will not be read again, so that a
/// memory-mapped checkpoint can drop those pages: loading then needs about one model's worth of
/// memory instead of two (the mapped file plus the converted tensors).
pub trait ReleasePages {
    fn release(&self, bytes: &[u8]);
}

pub struct Checkpoint<'a> {
    /// One per file: transformers splits large checkpoints into shards
    /// (`model-00001-of-00002.safetensors`, …); each tensor lives in exactly one.
    shards: Vec<SafeTensors<'a>>,
    release: Option<&'a dyn ReleasePages>,
    /// Int8 matrices also packed for the int8 kernels ([`crate::LoadOptions::int8_kernels`]).
    int8_kernels: bool,
    /// Every parameter built so far and the key it was read from (or is to be saved under).
    names: RefCell<Vec<(ParamId, TensorKey)>>,
}

/// The HF name of a parameter and how its values are laid out relative to PyTorch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorKey {
    pub name: String,
    /// Linear weights are stored `[in, out]` in burn and `[out, in]` in PyTorch.
    pub transposed: bool,
}

/// Parameter id → HF key, for every parameter of a loaded model. Ids survive training
/// (autodiff, optimiser steps and `valid()` keep them), so a trained model saves by them.
pub type ParamNames = HashMap<ParamId, TensorKey>;

/// safetensors refuses a tensor whose bytes disagree with its dtype and shape without naming
/// it; the header (already checked to be JSON within the file) says which one and why.
fn tensor_of_wrong_size(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Info {
        dtype: Dtype,
        shape: Vec<usize>,
        data_offsets: (usize, usize),
    }
    let header_len = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header = bytes.get(8..8usize.checked_add(header_len)?)?;
    let tensors: BTreeMap<String, serde_json::Value> = serde_json::from_slice(header).ok()?;
    tensors.into_iter().find_map(|(name, info)| {
        let info: Info = serde_json::from_value(info).ok()?;
        let elements = info.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let needed = elements.and_then(|n| n.checked_mul(info.dtype.bitsize()));
        let (start, end) = info.data_offsets;
        let span = end.checked_sub(start);
        (needed.map(|bits| bits / 8) != span).then(|| {
            let needed =
                needed.map_or("more than usize::MAX".into(), |bits| (bits / 8).to_string());
            format!(
                "tensor `{name}`: dtype {:?} and shape {:?} need {needed} bytes, but its \
                 data_offsets {:?} span {}",
                info.dtype,
                info.shape,
                info.data_offsets,
                span.map_or("a negative length".into(), |n| n.to_string())
            )
        })
    })
}

impl<'a> Checkpoint<'a> {
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self> {
        Self::from_shards(&[bytes])
    }

    /// A checkpoint stored as one or more safetensors files.
    pub fn from_shards(shards: &[&'a [u8]]) -> Result<Self> {
        let shards = shards
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                SafeTensors::deserialize(bytes).map_err(|e| {
                    let which = if shards.len() > 1 {
                        format!(" (shard {} of {})", i + 1, shards.len())
                    } else {
                        String::new()
                    };
                    let detail = match e {
                        SafeTensorError::TensorInvalidInfo => {
                            tensor_of_wrong_size(bytes).unwrap_or_else(|| e.to_string())
                        }
                        e => e.to_string(),
                    };
                    Error::Checkpoint(format!("not a valid safetensors file{which}: {detail}"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            shards,
            release: None,
            int8_kernels: false,
            names: RefCell::default(),
        })
    }

    /// Tensor `name` from whichever shard holds it.
    fn view(&self, name: &str) -> Option<TensorView<'a>> {
        self.shards.iter().find_map(|shard| shard.tensor(name).ok())
    }

    pub fn with_release(mut self, release: Option<&'a dyn ReleasePages>) -> Self {
        self.release = release;
        self
    }

    /// Packs the int8 matrices of linear layers for the int8 kernels too, where the backend
    /// runs them (see [`crate::LoadOptions::int8_kernels`]).
    pub fn with_int8_kernels(mut self, int8_kernels: bool) -> Self {
        self.int8_kernels = int8_kernels;
        self
    }

    /// Notes that `param` is saved as `name` (`transposed` for linear weights).
    fn record<const D: usize, B: Backend>(
        &self,
        param: &Param<Tensor<B, D>>,
        name: &str,
        transposed: bool,
    ) {
        let key = TensorKey {
            name: name.to_string(),
            transposed,
        };
        self.names.borrow_mut().push((param.id, key));
    }

    /// The names of every parameter built from this checkpoint.
    pub fn param_names(&self) -> ParamNames {
        self.names.borrow().iter().cloned().collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.view(name).is_some()
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
            .view(name)
            .ok_or_else(|| Error::Checkpoint(format!("missing tensor `{name}`")))?;
        if view.shape() != shape {
            return Err(Error::Checkpoint(format!(
                "tensor `{name}` has shape {:?}, but config.json implies {shape:?}",
                view.shape()
            )));
        }
        let values = if view.dtype() == Dtype::I8 {
            self.dequantize(name, shape, view.data())?
        } else {
            to_f32(name, view.dtype(), view.data())?
        };
        if let Some(release) = self.release {
            release.release(view.data());
        }
        Ok(values)
    }

    /// The int8 matrix `name` as stored (row-major `shape`) with its per-row scales, or `None`
    /// when the checkpoint stores it in another dtype.
    fn int8_matrix(&self, name: &str, shape: [usize; 2]) -> Result<Option<(Vec<i8>, Vec<f32>)>> {
        match self.view(name) {
            Some(view) if view.dtype() == Dtype::I8 && view.shape() == shape => {
                let scales = self.values(&format!("{name}{INT8_SCALE_SUFFIX}"), &[shape[0]])?;
                let weight = view.data().iter().map(|&b| b as i8).collect();
                Ok(Some((weight, scales)))
            }
            _ => Ok(None),
        }
    }

    /// An int8 matrix (as [`to_safetensors`] writes with [`StoredDtype::Int8`]) times its
    /// per-row scales `<name>.int8_scale`.
    fn dequantize(&self, name: &str, shape: &[usize], bytes: &[u8]) -> Result<Vec<f32>> {
        let rows = shape.first().copied().unwrap_or(1);
        let scales = self.values(&format!("{name}{INT8_SCALE_SUFFIX}"), &[rows])?;
        let per_row = bytes.len() / rows.max(1);
        Ok(bytes
            .chunks_exact(per_row.max(1))
            .zip(&scales)
            .flat_map(|(row, &scale)| row.iter().map(move |&q| f32::from(q as i8) * scale))
            .collect())
    }
}

/// A scope in the checkpoint's key tree, as candle's `VarBuilder::pp`: modules are read from
/// `read + name` and each parameter is recorded under `save + name`, its full HF name, so a
/// trained model saves under the names it came from. The two differ only for a base model stored
/// bare (`embeddings.…`, as sentence-transformers' MiniLM is): it is read bare and saved under
/// `bert.`/`deberta.` like the `*ForSequenceClassification` checkpoints transformers expects.
#[derive(Clone)]
pub struct Weights<'c, 'a> {
    checkpoint: &'c Checkpoint<'a>,
    read: String,
    save: String,
}

impl<'c, 'a> Weights<'c, 'a> {
    /// The top of the checkpoint (no prefix).
    pub fn root(checkpoint: &'c Checkpoint<'a>) -> Self {
        Self {
            checkpoint,
            read: String::new(),
            save: String::new(),
        }
    }

    /// The scope `name` below this one: `pp("encoder").pp("layer.3")` reads `encoder.layer.3.…`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        Self {
            checkpoint: self.checkpoint,
            read: format!("{}{name}.", self.read),
            save: format!("{}{name}.", self.save),
        }
    }

    /// The base model's scope, saved under `prefix` (`bert`, `deberta`): read from there when
    /// the checkpoint has `prefix.probe`, else from the bare keys.
    pub fn base_model(&self, prefix: &str, probe: &str) -> Self {
        let nested = self.pp(prefix);
        if self.checkpoint.contains(&nested.read_name(probe)) {
            nested
        } else {
            Self {
                read: self.read.clone(),
                ..nested
            }
        }
    }

    fn read_name(&self, name: &str) -> String {
        format!("{}{name}", self.read)
    }

    fn save_name(&self, name: &str) -> String {
        format!("{}{name}", self.save)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.checkpoint.contains(&self.read_name(name))
    }

    /// The tensor `name` as a parameter, recorded under its full name.
    fn param<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Param<Tensor<B, D>>> {
        let values = self.checkpoint.values(&self.read_name(name), &shape)?;
        let param = Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device));
        self.checkpoint.record(&param, &self.save_name(name), false);
        Ok(param)
    }

    /// A PyTorch `nn.Linear` (`name.weight` `[out, in]`, `name.bias` `[out]`) as a burn
    /// `Linear` (`weight` `[in, out]`).
    pub fn linear<B: Backend>(
        &self,
        name: &str,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
    ) -> Result<Linear<B>> {
        let bias = self.param::<B, 1>(&format!("{name}.bias"), [d_out], device)?;
        Ok(Linear {
            weight: self.linear_weight(name, d_in, d_out, device)?,
            bias: Some(bias),
        })
    }

    /// A PyTorch `nn.Linear(..., bias=False)`.
    pub fn linear_without_bias<B: Backend>(
        &self,
        name: &str,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
    ) -> Result<Linear<B>> {
        Ok(Linear {
            weight: self.linear_weight(name, d_in, d_out, device)?,
            bias: None,
        })
    }

    /// A linear layer of an encoder: [`linear`](Self::linear), plus its int8 matrix packed for
    /// the int8 kernels when the checkpoint stores one and they are asked for and run on `B`.
    pub fn projection<B: Backend>(
        &self,
        name: &str,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
    ) -> Result<Projection<B>> {
        let linear = self.linear(name, d_in, d_out, device)?;
        Ok(Projection::new(
            linear,
            self.int8_linear::<B>(name, d_in, d_out)?,
        ))
    }

    fn int8_linear<B: Backend>(
        &self,
        name: &str,
        d_in: usize,
        d_out: usize,
    ) -> Result<Option<Int8Linear>> {
        if !self.checkpoint.int8_kernels || !kernels::runs_int8::<B>() {
            return Ok(None);
        }
        let key = self.read_name(&format!("{name}.weight"));
        let Some((weight, scales)) = self.checkpoint.int8_matrix(&key, [d_out, d_in])? else {
            return Ok(None);
        };
        let bias_key = self.read_name(&format!("{name}.bias"));
        let bias = self.checkpoint.values(&bias_key, &[d_out])?;
        Ok(Some(Int8Linear::new(
            &weight,
            &scales,
            Some(&bias),
            d_out,
            d_in,
        )))
    }

    /// The transpose to burn's `[in, out]` happens here, once, on the host: a transposed view
    /// would be copied back to contiguous memory by CPU backends on every forward call.
    fn linear_weight<B: Backend>(
        &self,
        name: &str,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
    ) -> Result<Param<Tensor<B, 2>>> {
        let key = format!("{name}.weight");
        let pytorch = self
            .checkpoint
            .values(&self.read_name(&key), &[d_out, d_in])?;
        let weight = transposed(&pytorch, d_out, d_in);
        let weight = Tensor::from_data(TensorData::new(weight, [d_in, d_out]), device);
        let param = Param::from_tensor(weight);
        self.checkpoint.record(&param, &self.save_name(&key), true);
        Ok(param)
    }

    /// Records a linear layer built elsewhere (a freshly initialised head) as `name`.
    pub fn record_linear<B: Backend>(&self, name: &str, linear: &Linear<B>) {
        let save = self.save_name(name);
        self.checkpoint
            .record(&linear.weight, &format!("{save}.weight"), true);
        if let Some(bias) = &linear.bias {
            self.checkpoint.record(bias, &format!("{save}.bias"), false);
        }
    }

    /// A PyTorch `nn.LayerNorm` (`name.weight`, `name.bias`).
    pub fn layer_norm<B: Backend>(
        &self,
        name: &str,
        d: usize,
        epsilon: f64,
        device: &B::Device,
    ) -> Result<Norm<B>> {
        let mut norm = LayerNormConfig::new(d).with_epsilon(epsilon).init(device);
        norm.gamma = self.param(&format!("{name}.weight"), [d], device)?;
        norm.beta = Some(self.param(&format!("{name}.bias"), [d], device)?);
        Ok(Norm::new(norm, epsilon))
    }

    /// A PyTorch `nn.Embedding` (`name.weight`, `[rows, d]`).
    pub fn embedding<B: Backend>(
        &self,
        name: &str,
        rows: usize,
        d: usize,
        device: &B::Device,
    ) -> Result<Embedding<B>> {
        Ok(Embedding {
            weight: self.param(&format!("{name}.weight"), [rows, d], device)?,
        })
    }
}

/// How [`to_safetensors`] stores values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoredDtype {
    #[default]
    F32,
    F16,
    /// Every matrix (linear weights, embedding tables) as int8 with a symmetric f32 scale per
    /// row — per output channel for linear weights, per token for embeddings — stored as
    /// `<name>.int8_scale`; vectors (biases, norms) as f16. Not a transformers format:
    /// harmaug's own bundles (`harmaug export`), which it loads back.
    Int8,
}

/// Key suffix of the per-row scales of an int8 matrix.
pub const INT8_SCALE_SUFFIX: &str = ".int8_scale";

impl StoredDtype {
    /// The safetensors type and little-endian bytes of a plain (not int8) tensor.
    fn encode(self, values: &[f32]) -> (Dtype, Vec<u8>) {
        match self {
            StoredDtype::F32 => (
                Dtype::F32,
                values.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            StoredDtype::F16 | StoredDtype::Int8 => (
                Dtype::F16,
                values
                    .iter()
                    .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                    .collect(),
            ),
        }
    }
}

/// Symmetric per-row int8: each row scaled so that its largest |value| maps to 127.
fn quantize_rows(values: &[f32], row_len: usize) -> (Vec<u8>, Vec<f32>) {
    let mut quantized = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(values.len() / row_len.max(1));
    for row in values.chunks(row_len.max(1)) {
        let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        quantized.extend(
            row.iter()
                .map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8 as u8),
        );
        scales.push(scale);
    }
    (quantized, scales)
}

/// Writes every parameter of `module` as a safetensors file under its HF name (linear weights
/// transposed back to PyTorch's `[out, in]`), sorted by name, with `{"format": "pt"}` metadata
/// as transformers writes. A parameter without a recorded name is an error, not a silent gap.
pub fn to_safetensors<B: Backend, M: Module<B>>(
    module: &M,
    names: &ParamNames,
    dtype: StoredDtype,
) -> Result<Vec<u8>> {
    let mut collector = Collector {
        names,
        tensors: BTreeMap::new(),
        unnamed: 0,
    };
    module.visit(&mut collector);
    if collector.unnamed > 0 {
        return Err(Error::Checkpoint(format!(
            "{} parameters have no recorded name; cannot save them",
            collector.unnamed
        )));
    }
    let mut encoded = Vec::with_capacity(collector.tensors.len());
    for (name, (shape, values)) in collector.tensors {
        if dtype == StoredDtype::Int8 && shape.len() == 2 {
            let (quantized, scales) = quantize_rows(&values, shape[1]);
            let scale_name = format!("{name}{INT8_SCALE_SUFFIX}");
            let (scale_dtype, scale_bytes) = StoredDtype::F32.encode(&scales);
            encoded.push((scale_name, vec![shape[0]], scale_dtype, scale_bytes));
            encoded.push((name, shape, Dtype::I8, quantized));
        } else {
            let (stored, bytes) = dtype.encode(&values);
            encoded.push((name, shape, stored, bytes));
        }
    }
    write(encoded)
}

/// Host tensors: name → (shape, row-major values).
pub type HostTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Host tensors as a safetensors file (f32 or f16), with `{"format": "pt"}` metadata.
pub fn serialize(tensors: HostTensors, dtype: StoredDtype) -> Result<Vec<u8>> {
    write(
        tensors
            .into_iter()
            .map(|(name, (shape, values))| {
                let (stored, bytes) = dtype.encode(&values);
                (name, shape, stored, bytes)
            })
            .collect(),
    )
}

/// Encoded tensors (name, shape, type, bytes) as a safetensors file.
fn write(tensors: Vec<(String, Vec<usize>, Dtype, Vec<u8>)>) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(name, shape, dtype, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| Error::Checkpoint(format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::Checkpoint(format!("serialising: {e}")))
}

struct Collector<'n> {
    names: &'n ParamNames,
    /// In PyTorch's layout.
    tensors: HostTensors,
    unnamed: usize,
}

impl<B: Backend> ModuleVisitor<B> for Collector<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(key) = self.names.get(&param.id) else {
            self.unnamed += 1;
            return;
        };
        let tensor = param.val();
        let mut shape = tensor.dims().to_vec();
        let data = tensor.into_data().convert::<f32>();
        let mut values = data.into_vec::<f32>().unwrap_or_default();
        if key.transposed && shape.len() == 2 {
            values = transposed(&values, shape[0], shape[1]);
            shape.reverse();
        }
        self.tensors.insert(key.name.clone(), (shape, values));
    }
}

/// A row-major `[rows, cols]` matrix as row-major `[cols, rows]`: PyTorch's `[out, in]` linear
/// weights to burn's `[in, out]` on load, and back on save.
fn transposed(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; values.len()];
    for (r, row) in values.chunks_exact(cols.max(1)).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            out[c * rows + r] = v;
        }
    }
    out
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
