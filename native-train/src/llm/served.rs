//! An OpenAI-compatible server (vLLM, llama.cpp's llama-server, TGI) through `/v1/completions`:
//! prompts rendered client-side with the chat template (so a reply can be prefilled), several
//! endpoints round-robin, a timeout per request, and retries with exponential backoff on
//! timeouts, 5xx answers and broken connections, counted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use super::{ChatTemplate, LlmOptions, SamplingParams, TextModel};

pub struct Served {
    endpoints: Vec<String>,
    next: AtomicUsize,
    agent: ureq::Agent,
    model: String,
    template: ChatTemplate,
    max_retries: u32,
    retries: AtomicU64,
    top_logprobs: usize,
    /// First token (id, text) of each word asked about, from the server's tokenizer.
    first_tokens: Mutex<HashMap<String, FirstToken>>,
    /// Words not among the returned top tokens (their logprob is then bounded, not exact).
    outside_top: AtomicU64,
}

#[derive(Debug, Clone)]
struct FirstToken {
    id: Option<u64>,
    text: String,
}

/// Why a request failed: worth retrying or not.
enum Failure {
    Transient(anyhow::Error),
    Fatal(anyhow::Error),
}

impl Served {
    /// Connects to `endpoints` (each `…/v1`); the model name and, without `template`, the chat
    /// template are asked from the first.
    pub fn connect(
        endpoints: Vec<String>,
        template: Option<ChatTemplate>,
        options: &LlmOptions,
    ) -> Result<Self> {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|e| e.trim_end_matches('/').to_string())
            .collect();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs_f64(options.timeout)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut served = Self {
            endpoints,
            next: AtomicUsize::new(0),
            agent,
            model: options.model_name.clone().unwrap_or_default(),
            template: ChatTemplate::new("{{ messages[0].content }}", "", "")?,
            max_retries: options.retries,
            retries: AtomicU64::new(0),
            top_logprobs: options.top_logprobs.max(1),
            first_tokens: Mutex::default(),
            outside_top: AtomicU64::new(0),
        };
        if served.model.is_empty() {
            let models = served.get("/models")?;
            served.model = models["data"][0]["id"]
                .as_str()
                .context("GET /v1/models: no model id in the answer")?
                .to_string();
        }
        served.template = match template {
            Some(t) => t,
            None => served.template_from_props()?,
        };
        Ok(served)
    }

    /// llama-server publishes its chat template at `/props` (beside `/v1`).
    fn template_from_props(&self) -> Result<ChatTemplate> {
        let base = self.endpoints[0].trim_end_matches("/v1");
        let url = format!("{base}/props");
        let props: Value = self
            .agent
            .get(&url)
            .call()
            .and_then(|mut r| r.body_mut().read_json())
            .map_err(|e| anyhow!("GET {url}: {e}"))?;
        let source = props["chat_template"].as_str().with_context(|| {
            format!("{url} has no chat_template; pass --chat-template (a .gguf, tokenizer_config.json or Jinja file)")
        })?;
        let token = |key: &str| props[key].as_str().unwrap_or_default().to_string();
        ChatTemplate::new(source, &token("bos_token"), &token("eos_token"))
    }

    /// The first token of `word` by the server's tokenizer: llama-server's `/tokenize` (with
    /// pieces), else vLLM's `/tokenize` + `/detokenize`.
    fn first_token(&self, word: &str) -> Result<FirstToken> {
        if let Some(known) = self
            .first_tokens
            .lock()
            .ok()
            .and_then(|m| m.get(word).cloned())
        {
            return Ok(known);
        }
        let base = self.endpoints[0].trim_end_matches("/v1");
        let llama = self.post_to(
            &format!("{base}/tokenize"),
            &json!({"content": word, "with_pieces": true}),
        );
        let token = match llama {
            Ok(answer) if answer["tokens"][0]["piece"].is_string() => FirstToken {
                id: answer["tokens"][0]["id"].as_u64(),
                text: answer["tokens"][0]["piece"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            },
            _ => {
                let answer = self.post_to(
                    &format!("{base}/tokenize"),
                    &json!({"model": self.model, "prompt": word, "add_special_tokens": false}),
                )?;
                let id = answer["tokens"][0].as_u64().with_context(|| {
                    format!("{base}/tokenize: no token for {word:?}: {answer:.200}")
                })?;
                let text = self.post_to(
                    &format!("{base}/detokenize"),
                    &json!({"model": self.model, "tokens": [id]}),
                )?["prompt"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                FirstToken { id: Some(id), text }
            }
        };
        if let Ok(mut known) = self.first_tokens.lock() {
            known.insert(word.to_string(), token.clone());
        }
        Ok(token)
    }

    fn post_to(&self, url: &str, body: &Value) -> Result<Value> {
        self.with_retries(|_| answer(url, self.agent.post(url).send_json(body)))
    }

    fn get(&self, path: &str) -> Result<Value> {
        self.with_retries(|endpoint| {
            let url = format!("{endpoint}{path}");
            let response = self.agent.get(&url).call();
            answer(&url, response)
        })
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.with_retries(|endpoint| {
            let url = format!("{endpoint}{path}");
            let response = self.agent.post(&url).send_json(body);
            answer(&url, response)
        })
    }

    /// Runs `attempt` against the endpoints in turn until it succeeds, fails for good, or the
    /// retries are spent.
    fn with_retries(&self, attempt: impl Fn(&str) -> Result<Value, Failure>) -> Result<Value> {
        let mut delay = Duration::from_millis(500);
        let mut tries = 0;
        loop {
            let at = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
            match attempt(&self.endpoints[at]) {
                Ok(value) => return Ok(value),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient(e)) if tries >= self.max_retries => {
                    return Err(e.context(format!("gave up after {tries} retries")));
                }
                Err(Failure::Transient(e)) => {
                    tries += 1;
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("retrying in {delay:?}: {e:#}");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// Classifies a response: JSON on 2xx; 5xx, 429 and transport errors are transient.
fn answer(
    url: &str,
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Value, Failure> {
    let mut response = match response {
        Ok(r) => r,
        Err(
            e @ (ureq::Error::Timeout(_)
            | ureq::Error::Io(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Protocol(_)
            | ureq::Error::BodyStalled),
        ) => {
            return Err(Failure::Transient(anyhow!("{url}: {e}")));
        }
        Err(e) => return Err(Failure::Fatal(anyhow!("{url}: {e}"))),
    };
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string();
    match (status, body) {
        (200..=299, Ok(text)) => serde_json::from_str(&text)
            .map_err(|e| Failure::Fatal(anyhow!("{url}: answer is not JSON ({e}): {text:.200}"))),
        (200..=299, Err(e)) => Err(Failure::Transient(anyhow!(
            "{url}: reading the answer: {e}"
        ))),
        (429 | 500..=599, body) => Err(Failure::Transient(anyhow!(
            "{url}: HTTP {status}: {:.200}",
            body.unwrap_or_default()
        ))),
        (_, body) => Err(Failure::Fatal(anyhow!(
            "{url}: HTTP {status}: {:.300}",
            body.unwrap_or_default()
        ))),
    }
}

impl TextModel for Served {
    fn name(&self) -> &str {
        &self.model
    }

    fn template(&self) -> &ChatTemplate {
        &self.template
    }

    fn complete(&self, prompt: &str, sampling: &SamplingParams) -> Result<String> {
        let mut body = json!({
            "model": self.model,
            "prompt": prompt,
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        });
        if let Some(seed) = sampling.seed {
            body["seed"] = json!(seed);
        }
        let answer = self.post("/completions", &body)?;
        answer["choices"][0]["text"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("completion without choices[0].text: {answer:.300}"))
    }

    fn first_token_logprobs(&self, prompt: &str, words: &[&str]) -> Result<Vec<f64>> {
        let body = json!({
            "model": self.model,
            "prompt": prompt,
            "max_tokens": 1,
            "temperature": 0.0,
                        "logprobs": self.top_logprobs,
        });
        let tokens = words
            .iter()
            .map(|w| self.first_token(w))
            .collect::<Result<Vec<_>>>()?;
        if tokens.len() == 2 && tokens[0].text == tokens[1].text {
            bail!("{words:?} start with the same token {:?}", tokens[0].text);
        }
        let mut answer = self.post("/completions", &body)?;
        if answer["choices"][0]["logprobs"].is_null() {
            // llama-server holds back a token that is half a UTF-8 character, logprobs
            // included, until the character completes: let it generate a few more.
            let mut longer = body.clone();
            longer["max_tokens"] = json!(4);
            answer = self.post("/completions", &longer)?;
        }
        let top = top_logprobs(&answer["choices"][0]["logprobs"])
            .with_context(|| format!("completion without first-token logprobs: {answer:.300}"))?;
        tracing::trace!("first-token top logprobs: {top:?}");
        let floor = top.iter().map(|t| t.logprob).fold(f64::INFINITY, f64::min);
        tracing::trace!(
            "first tokens {tokens:?}; top 3 {:?}; usage {}",
            &top[..top.len().min(3)],
            answer["usage"]
        );
        Ok(tokens
            .iter()
            .map(|token| {
                let found = top.iter().find(|t| match (t.id, token.id) {
                    (Some(a), Some(b)) => a == b,
                    _ => t.text == token.text,
                });
                found.map_or_else(
                    || {
                        // Not among the top tokens: bounded by the last one's logprob.
                        self.outside_top.fetch_add(1, Ordering::Relaxed);
                        floor
                    },
                    |t| t.logprob,
                )
            })
            .collect())
    }

    fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    fn approximations(&self) -> u64 {
        self.outside_top.load(Ordering::Relaxed)
    }
}

/// One of the first token's top alternatives.
#[derive(Debug)]
struct TopToken {
    id: Option<u64>,
    text: String,
    logprob: f64,
}

/// The first token's top alternatives, from either the OpenAI completions layout
/// (`top_logprobs: [{token: logprob}]`) or the chat layout llama-server uses
/// (`content: [{top_logprobs: [{id, token, logprob}]}]`).
fn top_logprobs(logprobs: &Value) -> Option<Vec<TopToken>> {
    if let Some(first) = logprobs["top_logprobs"].get(0).and_then(Value::as_object) {
        return Some(
            first
                .iter()
                .filter_map(|(t, lp)| {
                    Some(TopToken {
                        id: None,
                        text: t.clone(),
                        logprob: lp.as_f64()?,
                    })
                })
                .collect(),
        );
    }
    let first = logprobs["content"].get(0)?;
    let list = first["top_logprobs"].as_array()?;
    Some(
        list.iter()
            .filter_map(|e| {
                Some(TopToken {
                    id: e["id"].as_u64(),
                    text: e["token"].as_str()?.to_string(),
                    logprob: e["logprob"].as_f64()?,
                })
            })
            .collect(),
    )
}
