//! The wire format: OpenAI's moderation request and response, our extensions to its `input`, and
//! OpenAI's error shape. Pure functions of bytes and values, so every rule is testable here.
//!
//! `input` is a string, an array of strings, an array of OpenAI's multi-modal parts
//! (`{"type": "text", "text"}`: one input of joined text), or — our extensions — an array whose
//! items may be `{"prompt", "response"?}` objects or OpenAI chat `{"messages": [...]}`.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use harmaug_core::GuardInput;
use serde::Serialize;
use serde_json::{Map, Value, json};

/// The one category our binary guard reports: its score is P(harmful), whatever the kind of harm.
pub const CATEGORY: &str = "harmful";

/// A parsed moderation request.
#[derive(Debug)]
pub struct ModerationRequest {
    pub inputs: Vec<GuardInput>,
    pub model: Option<String>,
}

/// An error answer in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds for a `Retry-After` header (429 and 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// A 400 about one field of the request.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.into()),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// Parses a request body; at most `max_inputs` inputs.
pub fn parse_request(body: &[u8], max_inputs: usize) -> Result<ModerationRequest, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(mut fields) = value else {
        return Err(ApiError::invalid("", "the body must be a JSON object"));
    };
    let model = match fields.remove("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name),
        Some(_) => return Err(ApiError::invalid("model", "`model` must be a string")),
    };
    let input = fields
        .remove("input")
        .ok_or_else(|| ApiError::invalid("input", "`input` is required"))?;
    let inputs = parse_input(input, max_inputs)?;
    Ok(ModerationRequest { inputs, model })
}

fn parse_input(input: Value, max_inputs: usize) -> Result<Vec<GuardInput>, ApiError> {
    let items = match input {
        Value::String(text) => return Ok(vec![prompt(text, "input")?]),
        Value::Array(items) => items,
        _ => {
            return Err(ApiError::invalid(
                "input",
                "`input` must be a string or an array",
            ));
        }
    };
    if items.is_empty() {
        return Err(ApiError::invalid("input", "`input` is an empty array"));
    }
    if items.len() > max_inputs {
        return Err(ApiError::invalid(
            "input",
            format!(
                "`input` has {} items; this server takes at most {max_inputs} per request",
                items.len()
            ),
        ));
    }
    if items.iter().any(|item| item.get("type").is_some()) {
        return Ok(vec![multi_modal_parts(items)?]);
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| parse_item(item, &format!("input[{i}]")))
        .collect()
}

fn parse_item(item: Value, param: &str) -> Result<GuardInput, ApiError> {
    match item {
        Value::String(text) => prompt(text, param),
        Value::Object(mut fields) if fields.contains_key("messages") => {
            let messages = fields.remove("messages").unwrap_or(Value::Null);
            chat(messages, &format!("{param}.messages"))
        }
        Value::Object(fields) => prompt_response(fields, param),
        _ => Err(ApiError::invalid(
            param,
            "each input must be a string, a {\"prompt\", \"response\"} object or a \
             {\"messages\"} object",
        )),
    }
}

fn prompt(text: String, param: &str) -> Result<GuardInput, ApiError> {
    non_empty(&text, param)?;
    Ok(GuardInput::prompt(text))
}

fn non_empty(text: &str, param: &str) -> Result<(), ApiError> {
    if text.is_empty() {
        return Err(ApiError::invalid(
            param,
            format!("`{param}` is an empty string"),
        ));
    }
    Ok(())
}

/// `{"prompt": "...", "response": "..."}`: prompt + response moderation (response optional).
fn prompt_response(mut fields: Map<String, Value>, param: &str) -> Result<GuardInput, ApiError> {
    let prompt_param = format!("{param}.prompt");
    let Some(Value::String(prompt)) = fields.remove("prompt") else {
        return Err(ApiError::invalid(
            &prompt_param,
            "`prompt` must be a string",
        ));
    };
    non_empty(&prompt, &prompt_param)?;
    match fields.remove("response") {
        None | Some(Value::Null) => Ok(GuardInput::prompt(prompt)),
        Some(Value::String(response)) => Ok(GuardInput::pair(prompt, response)),
        Some(_) => Err(ApiError::invalid(
            format!("{param}.response"),
            "`response` must be a string",
        )),
    }
}

/// OpenAI chat messages: the last user turn, with the assistant's answer when the conversation
/// ends in one (prompt + response moderation).
fn chat(messages: Value, param: &str) -> Result<GuardInput, ApiError> {
    let Value::Array(messages) = messages else {
        return Err(ApiError::invalid(param, "`messages` must be an array"));
    };
    let turns: Vec<(String, String)> = messages
        .iter()
        .enumerate()
        .map(|(i, message)| chat_turn(message, &format!("{param}[{i}]")))
        .collect::<Result<_, _>>()?;
    let last_user = turns.iter().rposition(|(role, _)| role == "user");
    let Some(user) = last_user else {
        return Err(ApiError::invalid(param, "`messages` has no user message"));
    };
    let prompt = turns[user].1.clone();
    non_empty(&prompt, &format!("{param}[{user}].content"))?;
    match turns.last() {
        Some((role, answer)) if role == "assistant" => Ok(GuardInput::pair(prompt, answer.clone())),
        _ => Ok(GuardInput::prompt(prompt)),
    }
}

/// One chat message's role and text (string content, or the text of its content parts).
fn chat_turn(message: &Value, param: &str) -> Result<(String, String), ApiError> {
    let role = message.get("role").and_then(Value::as_str);
    let Some(role) = role else {
        return Err(ApiError::invalid(
            format!("{param}.role"),
            "`role` must be a string",
        ));
    };
    let text = match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => text_of_parts(parts, &format!("{param}.content"))?,
        None | Some(Value::Null) => String::new(),
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{param}.content"),
                "`content` must be a string or an array of text parts",
            ));
        }
    };
    Ok((role.to_string(), text))
}

/// OpenAI's multi-modal `input`: one input whose text parts are joined by newlines.
fn multi_modal_parts(parts: Vec<Value>) -> Result<GuardInput, ApiError> {
    let text = text_of_parts(&parts, "input")?;
    prompt(text, "input")
}

fn text_of_parts(parts: &[Value], param: &str) -> Result<String, ApiError> {
    let mut texts = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let param = format!("{param}[{i}]");
        match (part.get("type").and_then(Value::as_str), part.get("text")) {
            (Some("text"), Some(Value::String(text))) => texts.push(text.as_str()),
            (Some("text"), _) => {
                return Err(ApiError::invalid(
                    param,
                    "a text part needs a string `text`",
                ));
            }
            (Some(other), _) => {
                return Err(ApiError::invalid(
                    param,
                    format!("input type `{other}` is not supported: this guard reads text only"),
                ));
            }
            (None, _) => return Err(ApiError::invalid(param, "each part needs a `type`")),
        }
    }
    Ok(texts.join("\n"))
}

/// OpenAI's moderation response.
#[derive(Debug, Serialize)]
pub struct ModerationResponse {
    pub id: String,
    pub model: String,
    pub results: Vec<ModerationResult>,
}

#[derive(Debug, Serialize)]
pub struct ModerationResult {
    pub flagged: bool,
    pub categories: BTreeMap<String, bool>,
    pub category_scores: BTreeMap<String, f32>,
    pub category_applied_input_types: BTreeMap<String, Vec<&'static str>>,
}

impl ModerationResult {
    /// The verdict for one score: flagged when `score ≥ threshold` (as `harmaug score`). A
    /// model with more than two labels, or a multi-label one, also reports each label as a
    /// category (`labels`: names and this input's probabilities).
    pub fn new(score: f32, threshold: f32, labels: Option<(&[String], &[f32])>) -> Self {
        let flagged = score >= threshold;
        let mut result = Self {
            flagged,
            categories: BTreeMap::from([(CATEGORY.to_string(), flagged)]),
            category_scores: BTreeMap::from([(CATEGORY.to_string(), score)]),
            category_applied_input_types: BTreeMap::from([(CATEGORY.to_string(), vec!["text"])]),
        };
        for (name, &p) in labels.into_iter().flat_map(|(n, p)| n.iter().zip(p)) {
            result.categories.insert(name.clone(), p >= threshold);
            result.category_scores.insert(name.clone(), p);
            result
                .category_applied_input_types
                .insert(name.clone(), vec!["text"]);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Vec<GuardInput>, ApiError> {
        parse_request(body.as_bytes(), 4).map(|r| r.inputs)
    }

    fn param_of(body: &str) -> Option<String> {
        parse(body).expect_err(body).param
    }

    #[test]
    fn reads_strings_arrays_pairs_and_chats() {
        assert_eq!(
            parse(r#"{"input": "hi"}"#).unwrap(),
            [GuardInput::prompt("hi")]
        );
        let body = r#"{"input": ["a", {"prompt": "p", "response": "r"}, {"prompt": "q"},
            {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                          {"role": "assistant", "content": [{"type": "text", "text": "x"}]}]}]}"#;
        let expected = [
            GuardInput::prompt("a"),
            GuardInput::pair("p", "r"),
            GuardInput::prompt("q"),
            GuardInput::pair("u", "x"),
        ];
        assert_eq!(parse(body).unwrap(), expected);
        let ends_in_user = r#"{"input": [{"messages": [{"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]}]}"#;
        assert_eq!(parse(ends_in_user).unwrap(), [GuardInput::prompt("c")]);
        let parts = r#"{"input": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}"#;
        assert_eq!(parse(parts).unwrap(), [GuardInput::prompt("a\nb")]);
    }

    #[test]
    fn echoes_the_model_name() {
        let request = parse_request(br#"{"input": "x", "model": "m"}"#, 1).unwrap();
        assert_eq!(request.model.as_deref(), Some("m"));
    }

    #[test]
    fn names_the_field_at_fault() {
        assert_eq!(param_of(r#"{"model": "m"}"#).as_deref(), Some("input"));
        assert_eq!(param_of(r#"{"input": []}"#).as_deref(), Some("input"));
        assert_eq!(param_of(r#"{"input": ""}"#).as_deref(), Some("input"));
        assert_eq!(
            param_of(r#"{"input": ["a", ""]}"#).as_deref(),
            Some("input[1]")
        );
        assert_eq!(param_of(r#"{"input": [1]}"#).as_deref(), Some("input[0]"));
        assert_eq!(param_of(r#"{"input": 7}"#).as_deref(), Some("input"));
        assert_eq!(
            param_of(r#"{"input": "a", "model": 3}"#).as_deref(),
            Some("model")
        );
        assert_eq!(
            param_of(r#"{"input": ["a","b","c","d","e"]}"#).as_deref(),
            Some("input")
        );
        let no_user = r#"{"input": [{"messages": [{"role": "assistant", "content": "b"}]}]}"#;
        assert_eq!(param_of(no_user).as_deref(), Some("input[0].messages"));
        let image = r#"{"input": [{"type": "image_url", "image_url": {"url": "x"}}]}"#;
        assert_eq!(param_of(image).as_deref(), Some("input[0]"));
        let response = r#"{"input": [{"prompt": "p", "response": 1}]}"#;
        assert_eq!(param_of(response).as_deref(), Some("input[0].response"));
    }

    #[test]
    fn malformed_json_is_a_400_without_a_param() {
        for body in ["{", "[1]", "\"x\"", "{\"input\": \"\u{0}\\ud800\"}"] {
            let error = parse(body).expect_err(body);
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{body}");
        }
    }

    #[test]
    fn flags_at_the_threshold() {
        assert!(ModerationResult::new(0.5, 0.5, None).flagged);
        assert!(!ModerationResult::new(0.499, 0.5, None).flagged);
        let binary = ModerationResult::new(0.25, 0.5, None);
        assert_eq!(binary.category_scores.len(), 1);
        assert_eq!(binary.category_scores[CATEGORY], 0.25);
        let names = ["toxic".to_string(), "threat".to_string()];
        let result = ModerationResult::new(0.75, 0.5, Some((&names, &[0.75, 0.25])));
        assert_eq!(result.category_scores["threat"], 0.25);
        let verdicts = (result.categories["toxic"], result.categories["threat"]);
        assert_eq!(verdicts, (true, false));
    }
}
