//! A GGUF model run in process by llama.cpp (through the `llama-cpp-2` bindings): the same
//! engine as llama-server, without a server. Prompts come rendered with the chat template from
//! the GGUF's own metadata, like the served path, so both see the same text.
//!
//! llama.cpp contexts are not `Send`: each request gets its own context (cheap for the models
//! this path is for) and the CPU threads are shared out among `--concurrency` requests.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use super::{ChatTemplate, LlmOptions, SamplingParams, TextModel, gguf, template_from_file};

pub struct Embedded {
    backend: &'static LlamaBackend,
    /// Leaked on purpose: contexts borrow the model, and it lives as long as the process.
    model: &'static LlamaModel,
    name: String,
    template: ChatTemplate,
    threads: i32,
}

/// llama.cpp's backend may be initialised once per process.
fn backend() -> Result<&'static LlamaBackend> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(
                llama_cpp_2::LogOptions::default().with_logs_enabled(false),
            );
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| anyhow!("initialising llama.cpp: {e}"))
}

impl Embedded {
    pub fn open(path: &Path, options: &LlmOptions) -> Result<Self> {
        if !path.is_file() {
            bail!("{}: no such GGUF file", path.display());
        }
        let template = match &options.chat_template {
            Some(file) => template_from_file(file)?,
            None => template_from_file(path)?,
        };
        let name = gguf::Metadata::read(path)?
            .string("general.name")
            .map(str::to_string)
            .unwrap_or_else(|| {
                path.file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into()
            });
        let backend = backend()?;
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
            .map_err(|e| anyhow!("{}: loading with llama.cpp: {e}", path.display()))?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Self {
            backend,
            model: Box::leak(Box::new(model)),
            name,
            template,
            threads: (cores / options.concurrency.max(1)).max(1) as i32,
        })
    }

    /// A fresh context holding `prompt`, with the logits of its last token computed; also
    /// returns the prompt's length in tokens.
    fn prefill(&self, prompt: &str, room: usize) -> Result<(LlamaContext<'static>, usize)> {
        let tokens = self.model.vocab().tokenize(prompt.as_bytes(), true, true);
        if tokens.is_empty() {
            bail!("empty prompt");
        }
        let n_ctx = (tokens.len() + room).max(64) as u32;
        let train = self.model.n_ctx_train();
        if n_ctx > train {
            bail!(
                "prompt of {} tokens + {room} new ones exceeds the model's context of {train}",
                tokens.len()
            );
        }
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(n_ctx)
            .with_n_threads(self.threads)
            .with_n_threads_batch(self.threads);
        let mut context = self
            .model
            .new_context(self.backend, params)
            .map_err(|e| anyhow!("creating a llama.cpp context: {e}"))?;
        let mut batch = LlamaBatch::new(tokens.len(), 1);
        let last = tokens.len() - 1;
        for (i, &token) in tokens.iter().enumerate() {
            batch.add(token, i as i32, &[0], i == last)?;
        }
        context
            .decode(&mut batch)
            .map_err(|e| anyhow!("llama.cpp decode: {e}"))?;
        Ok((context, tokens.len()))
    }

    /// The first token of `word` as the tokenizer encodes it.
    fn first_token(&self, word: &str) -> Result<LlamaToken> {
        self.model
            .vocab()
            .tokenize(word.as_bytes(), false, false)
            .first()
            .copied()
            .with_context(|| format!("{word:?} encodes to no token"))
    }
}

impl TextModel for Embedded {
    fn name(&self) -> &str {
        &self.name
    }

    fn template(&self) -> &ChatTemplate {
        &self.template
    }

    fn complete(&self, prompt: &str, sampling: &SamplingParams) -> Result<String> {
        let (mut context, mut position) = self.prefill(prompt, sampling.max_new_tokens)?;
        let seed = sampling.seed.unwrap_or(0) as u32;
        let mut sampler = if sampling.temperature <= 0.0 {
            LlamaSampler::greedy()
        } else {
            // llama-server's default chain (top-k 40, min-p 0.05 around the requested top-p
            // and temperature): the same sampling either way, and top-k first spares sorting
            // the whole vocabulary at every token.
            LlamaSampler::chain_simple([
                LlamaSampler::top_k(40),
                LlamaSampler::top_p(sampling.top_p as f32, 1),
                LlamaSampler::min_p(0.05, 1),
                LlamaSampler::temp(sampling.temperature as f32),
                LlamaSampler::dist(seed),
            ])
        };
        let vocab = self.model.vocab();
        let mut bytes = Vec::new();
        let mut batch = LlamaBatch::new(1, 1);
        for _ in 0..sampling.max_new_tokens {
            // -1: the logits of the last token decoded.
            let token = sampler.sample(&context, -1);
            if vocab.is_eog(token) {
                break;
            }
            bytes.extend(vocab.token_to_piece(token, false, None));
            batch.clear();
            batch.add(token, position as i32, &[0], true)?;
            position += 1;
            context
                .decode(&mut batch)
                .map_err(|e| anyhow!("llama.cpp decode: {e}"))?;
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn first_token_logprobs(&self, prompt: &str, words: &[&str]) -> Result<Vec<f64>> {
        let (context, _) = self.prefill(prompt, 1)?;
        let logits = context.get_logits_ith(-1);
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let log_z = f64::from(max)
            + logits
                .iter()
                .map(|&l| f64::from(l - max).exp())
                .sum::<f64>()
                .ln();
        words
            .iter()
            .map(|word| {
                let token = self.first_token(word)?;
                let logit = logits
                    .get(token.0 as usize)
                    .with_context(|| format!("token {} outside the logits", token.0))?;
                tracing::trace!(
                    "{word:?} → token {}: logprob {}",
                    token.0,
                    f64::from(*logit) - log_z
                );
                Ok(f64::from(*logit) - log_z)
            })
            .collect()
    }
}
