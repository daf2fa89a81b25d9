//! Chat templates: the model's own Jinja template (from GGUF metadata, a tokenizer config, a file,
//! or llama-server's `/props`) rendered client-side with minijinja, so that a request can end
//! inside the assistant's turn (HarmAug's affirmative prefix) and so that every back end sees
//! the very same prompt text.

use anyhow::{Context, Result};
use minijinja::{Environment, Error, ErrorKind, Value, context};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    pub fn new(source: impl Into<String>, bos_token: &str, eos_token: &str) -> Result<Self> {
        let template = Self {
            source: source.into(),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        };
        // Fail now, naming the template, rather than on the first request.
        template
            .render(&[Message::new("user", "hi")], true)
            .context("the chat template does not render")?;
        Ok(template)
    }

    /// The conversation as the model's prompt text; with `add_generation_prompt` it ends where
    /// the assistant's reply starts.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let mut env = Environment::new();
        // HF templates are written against Python's Jinja: `.strip()`, `.startswith()`, …
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_function("strftime_now", |_format: String| "2026-01-01".to_string());
        env.add_template("chat", &self.source)?;
        let rendered = env.get_template("chat")?.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })?;
        Ok(rendered)
    }

    /// The conversation followed by the start of the assistant's reply, `assistant_prefix`,
    /// which the model will continue.
    pub fn render_prefilled(&self, messages: &[Message], assistant_prefix: &str) -> Result<String> {
        Ok(self.render(messages, true)? + assistant_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-Instruct's template (ChatML with a default system prompt), as in its GGUF.
    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_with_a_prefilled_reply() {
        let template = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
        let prompt = template
            .render_prefilled(&[Message::new("user", "Say hi.")], "I have an idea:")
            .unwrap();
        assert_eq!(
            prompt,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
             Face<|im_end|>\n<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\nI have an idea:"
        );
    }

    #[test]
    fn python_string_methods_and_raise_exception_work() {
        let source = "{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}{% endif %}{{ bos_token }}{{ messages[0].content.strip() }}";
        let template = ChatTemplate::new(source, "<s>", "</s>").unwrap();
        assert_eq!(
            template
                .render(&[Message::new("user", "  x ")], false)
                .unwrap(),
            "<s>x"
        );
        let error = template
            .render(&[Message::new("system", "x")], false)
            .unwrap_err();
        assert!(format!("{error:#}").contains("user first"), "{error:#}");
    }
}
