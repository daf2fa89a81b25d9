//! Language models for synthesis and labelling, behind one trait: embedded (a GGUF file run in
//! process by llama.cpp) or served (any OpenAI-compatible `/v1` endpoint: vLLM, llama.cpp's
//! llama-server, TGI). Prompts are always rendered here with the model's chat template, so
//! every back end sees the same text.

#[cfg(feature = "embedded-llm")]
pub mod embedded;
pub mod gguf;
pub mod served;
pub mod template;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::Serialize;

pub use template::{ChatTemplate, Message};

/// Sampling parameters of one completion request (vLLM's name; not distill's row `Sampling`).
#[derive(Debug, Clone, Serialize)]
pub struct SamplingParams {
    pub temperature: f64,
    pub top_p: f64,
    pub max_new_tokens: usize,
    /// Per-request seed (servers that honour it make the request repeatable).
    pub seed: Option<u64>,
}

/// A model that continues prompt text.
pub trait TextModel: Send + Sync {
    /// Names the model in provenance fields.
    fn name(&self) -> &str;
    fn template(&self) -> &ChatTemplate;
    /// The continuation of `prompt` (already rendered with the chat template).
    fn complete(&self, prompt: &str, sampling: &SamplingParams) -> Result<String>;
    /// Log-probabilities that the first generated token is the first token of each of `words`
    /// as the model's tokenizer encodes it ("unsafe" may be "uns" + "afe": then "uns"). This is
    /// how HarmAug reads a guard's verdict.
    fn first_token_logprobs(&self, prompt: &str, words: &[&str]) -> Result<Vec<f64>>;
    /// Retries made so far (for the run summary).
    fn retries(&self) -> u64 {
        0
    }
    /// First-token logprobs that were bounded rather than exact (a served model returned only
    /// its top tokens and the word's token was not among them).
    fn approximations(&self) -> u64 {
        0
    }
}

/// Connection settings shared by the commands that talk to LLMs.
#[derive(Debug, Clone, clap::Args)]
pub struct LlmOptions {
    /// More OpenAI-compatible endpoints serving the same model, used round-robin.
    #[arg(long = "endpoint")]
    pub endpoints: Vec<String>,
    /// The chat template: a `.gguf` file (its metadata), a `tokenizer_config.json`, or a Jinja
    /// file. Default: asked from the server (llama-server's `/props`).
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
    /// Model name sent with requests (default: the server's first `/v1/models` entry).
    #[arg(long)]
    pub model_name: Option<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Seconds before a request is abandoned (and retried).
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    /// Retries of a request after timeouts, 5xx answers and broken connections, with
    /// exponential backoff (0.5 s, 1 s, 2 s, … up to 30 s).
    #[arg(long, default_value_t = 6)]
    pub retries: u32,
    /// Labelling through a server: how many top first-token log-probabilities to ask for. The
    /// verdict tokens must be among them for an exact score (a real guard puts them first;
    /// llama-server accepts the whole vocabulary, vLLM caps this at `--max-logprobs`).
    #[arg(long, default_value_t = 20)]
    pub top_logprobs: usize,
}

/// Opens `spec`: an `http(s)://…/v1` URL (plus `--endpoint`s) of a served model, or a GGUF file
/// to run in process: a path, or `hf://OWNER/REPO[@REVISION]/FILE.gguf` on the Hugging Face Hub.
pub fn open(spec: &str, options: &LlmOptions) -> Result<Box<dyn TextModel>> {
    if spec.starts_with("http://") || spec.starts_with("https://") {
        let mut endpoints = vec![spec.to_string()];
        endpoints.extend(options.endpoints.iter().cloned());
        let template = match &options.chat_template {
            Some(path) => Some(template_from_file(path)?),
            None => None,
        };
        return Ok(Box::new(served::Served::connect(
            endpoints, template, options,
        )?));
    }
    if spec.ends_with(".gguf") {
        #[cfg(feature = "embedded-llm")]
        {
            let path = if spec.starts_with("hf://") {
                crate::hub::single_file(spec)?
            } else {
                PathBuf::from(spec)
            };
            return Ok(Box::new(embedded::Embedded::open(&path, options)?));
        }
        #[cfg(not(feature = "embedded-llm"))]
        bail!(
            "{spec}: this build has no in-process LLM (feature `embedded-llm`); serve the file \
             with llama.cpp (`llama-server -m {spec} --port 8080`) and pass \
             http://127.0.0.1:8080/v1"
        );
    }
    bail!(
        "{spec}: expected a .gguf file or an http(s)://host:port/v1 URL of an OpenAI-compatible server"
    );
}

/// A chat template from a GGUF file's metadata, a HF `tokenizer_config.json`, or a Jinja file.
pub fn template_from_file(path: &std::path::Path) -> Result<ChatTemplate> {
    let name = path.display();
    if path.extension().is_some_and(|e| e == "gguf") {
        let metadata = gguf::Metadata::read(path)?;
        let source = metadata
            .string("tokenizer.chat_template")
            .with_context(|| format!("{name}: no tokenizer.chat_template in its metadata"))?;
        let bos = metadata.special_token("bos").unwrap_or_default();
        let eos = metadata.special_token("eos").unwrap_or_default();
        return ChatTemplate::new(source, bos, eos).with_context(|| format!("{name}"));
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?;
    if path.extension().is_some_and(|e| e == "json") {
        let config: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {name}"))?;
        let token = |key: &str| match &config[key] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(o) => o
                .get("content")
                .and_then(|c| c.as_str())
                .unwrap_or_default()
                .to_string(),
            _ => String::new(),
        };
        let source = config["chat_template"]
            .as_str()
            .with_context(|| format!("{name}: no `chat_template` string"))?;
        return ChatTemplate::new(source, &token("bos_token"), &token("eos_token"))
            .with_context(|| format!("{name}"));
    }
    ChatTemplate::new(text, "", "").with_context(|| format!("{name}"))
}
