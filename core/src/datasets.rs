//! Labelled data sets in the public formats users download: a JSON array or JSONL, read from
//! bytes (no paths), the format detected from the first row's fields or named by the caller.
//!
//! | format | fields | unsafe when |
//! | --- | --- | --- |
//! | OpenAI Moderation (paper's file) | `prompt`, `toxicity` | `toxicity` = 1 |
//! | OpenAI Moderation (original `samples-1680`) | `prompt`, category flags `S H V HR SH S3 H2 V2` | any flag = 1 |
//! | ToxicChat | `user_input`, `toxicity` | `toxicity` = 1 |
//! | HarmBench classifier eval | `prompt`, `response`, `label` "safe"/"unsafe" | "unsafe" |
//! | WildGuardMix test | `prompt`, `response`, `response_harm_label` (or `prompt_harm_label` at prompt level) | "harmful"; null rows skipped and counted |
//! | BeaverTails | `prompt`, `response`, `is_safe` | `is_safe` false |
//! | generic | `prompt`, `response`?, `label` 0/1 or bool | 1 / true |

use serde_json::{Map, Value};

use crate::formats::{LineObject, RowError};
use crate::tokenize::GuardInput;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenAiModeration,
    OpenAiModerationCategories,
    ToxicChat,
    HarmBench,
    WildGuardMix,
    BeaverTails,
    Generic,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::OpenAiModeration => "openai-moderation",
            Format::OpenAiModerationCategories => "openai-moderation-categories",
            Format::ToxicChat => "toxicchat",
            Format::HarmBench => "harmbench",
            Format::WildGuardMix => "wildguardmix",
            Format::BeaverTails => "beavertails",
            Format::Generic => "generic",
        }
    }

    pub const ALL: [Format; 7] = [
        Format::OpenAiModeration,
        Format::OpenAiModerationCategories,
        Format::ToxicChat,
        Format::HarmBench,
        Format::WildGuardMix,
        Format::BeaverTails,
        Format::Generic,
    ];

    /// Picks the format from one row's fields.
    pub fn detect(fields: &Map<String, Value>) -> Option<Format> {
        let has = |key: &str| fields.contains_key(key);
        Some(if has("user_input") && has("toxicity") {
            Format::ToxicChat
        } else if has("is_safe") {
            Format::BeaverTails
        } else if has("response_harm_label") || has("prompt_harm_label") {
            Format::WildGuardMix
        } else if has("prompt") && has("toxicity") {
            Format::OpenAiModeration
        } else if has("prompt") && MODERATION_CATEGORIES.iter().any(|c| has(c)) {
            Format::OpenAiModerationCategories
        } else if has("label") && fields.get("label").is_some_and(Value::is_string) {
            Format::HarmBench
        } else if has("prompt") && has("label") {
            Format::Generic
        } else {
            return None;
        })
    }
}

/// Category flags of OpenAI's moderation-api-release `samples-1680.jsonl`.
const MODERATION_CATEGORIES: [&str; 8] = ["S", "H", "V", "HR", "SH", "S3", "H2", "V2"];

/// Which label of a WildGuardMix row to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    /// `response_harm_label` (the default; a prompt-only set falls back to the prompt label).
    #[default]
    Response,
    Prompt,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LabelledRow {
    pub line: usize,
    pub fields: Map<String, Value>,
    pub input: GuardInput,
    pub unsafe_label: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub format: Format,
    pub rows: Vec<LabelledRow>,
    /// Rows without a label (WildGuardMix's null labels), left out of `rows`.
    pub skipped: usize,
}

/// Parses a JSON array or JSONL; `format: None` detects it from the first row.
pub fn parse(bytes: &[u8], format: Option<Format>, level: Level) -> Result<Dataset, RowError> {
    let objects = objects(bytes)?;
    let format = match format {
        Some(f) => f,
        None => {
            let Some((line, first)) = objects.first() else {
                return Err(RowError {
                    line: 1,
                    message: "no rows".into(),
                });
            };
            Format::detect(first).ok_or_else(|| RowError {
                line: *line,
                message: format!(
                    "cannot tell the format from fields {:?}; name it with --format",
                    first.keys().collect::<Vec<_>>()
                ),
            })?
        }
    };
    let mut dataset = Dataset {
        format,
        rows: Vec::new(),
        skipped: 0,
    };
    for (line, fields) in objects {
        let error = |message: String| RowError { line, message };
        match row(format, level, &fields).map_err(error)? {
            Some((input, unsafe_label)) => dataset.rows.push(LabelledRow {
                line,
                fields,
                input,
                unsafe_label,
            }),
            None => dataset.skipped += 1,
        }
    }
    Ok(dataset)
}

/// Objects with their 1-based line numbers (for a JSON array, the line each object starts on).
fn objects(bytes: &[u8]) -> Result<Vec<LineObject>, RowError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        RowError {
            line,
            message: "invalid UTF-8".into(),
        }
    })?;
    let body = text.trim_start();
    if !body.starts_with('[') {
        return crate::formats::jsonl_objects(bytes);
    }
    // Walk the array one element at a time so that rows and errors keep their line numbers.
    let line_of = |at: usize| 1 + text[..at].matches('\n').count();
    let mut objects = Vec::new();
    let mut at = text.len() - body.len() + 1;
    loop {
        let rest = &text[at..];
        let element = at + rest.len() - rest.trim_start().len();
        if text[element..].starts_with(']') {
            return Ok(objects);
        }
        let line = line_of(element);
        let error = |message: String| RowError { line, message };
        let mut stream = serde_json::Deserializer::from_str(&text[element..]).into_iter::<Value>();
        match stream.next() {
            Some(Ok(Value::Object(fields))) => objects.push((line, fields)),
            Some(Ok(_)) => return Err(error("expected a JSON object".into())),
            Some(Err(e)) => {
                return Err(RowError {
                    line: line + e.line() - 1,
                    message: format!("malformed JSON: {e}"),
                });
            }
            None => return Err(error("unterminated JSON array".into())),
        }
        let after = element + stream.byte_offset();
        let tail = text[after..].trim_start();
        match tail.chars().next() {
            Some(',') => at = text.len() - tail.len() + 1,
            Some(']') => return Ok(objects),
            _ => {
                return Err(RowError {
                    line: line_of(after),
                    message: "expected `,` or `]` in the JSON array".into(),
                });
            }
        }
    }
}

/// The guard input and label of one row, or `None` for a row without a label.
fn row(
    format: Format,
    level: Level,
    fields: &Map<String, Value>,
) -> Result<Option<(GuardInput, bool)>, String> {
    let text = |key: &str| match fields.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("field `{key}` must be a string")),
        None => Err(format!("missing field `{key}`")),
    };
    let optional_text = |key: &str| match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("field `{key}` must be a string or null")),
    };
    let flag = |key: &str| match fields.get(key) {
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Number(n)) if n.as_f64() == Some(1.0) => Ok(true),
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => Ok(false),
        Some(other) => Err(format!(
            "field `{key}` must be 0/1 or a boolean, not {other}"
        )),
        None => Err(format!("missing field `{key}`")),
    };
    let named = |key: &str, unsafe_name: &str, safe_name: &str| match fields.get(key) {
        Some(Value::String(s)) if s == unsafe_name => Ok(Some(true)),
        Some(Value::String(s)) if s == safe_name => Ok(Some(false)),
        None | Some(Value::Null) => Ok(None),
        Some(other) => Err(format!(
            "field `{key}` must be {unsafe_name:?} or {safe_name:?}, not {other}"
        )),
    };
    let prompt_only = |prompt: String, label: bool| Some((GuardInput::prompt(prompt), label));
    let pair = |label: bool| -> Result<_, String> {
        Ok(Some((
            GuardInput {
                prompt: text("prompt")?,
                response: optional_text("response")?,
            },
            label,
        )))
    };
    match format {
        Format::OpenAiModeration => Ok(prompt_only(text("prompt")?, flag("toxicity")?)),
        Format::OpenAiModerationCategories => {
            let mut any = false;
            for category in MODERATION_CATEGORIES {
                if fields.contains_key(category) {
                    any |= flag(category)?;
                }
            }
            Ok(prompt_only(text("prompt")?, any))
        }
        Format::ToxicChat => Ok(prompt_only(text("user_input")?, flag("toxicity")?)),
        Format::BeaverTails => pair(!flag("is_safe")?),
        Format::Generic => pair(flag("label")?),
        Format::HarmBench => match named("label", "unsafe", "safe")? {
            Some(label) => pair(label),
            None => Err("missing field `label`".into()),
        },
        Format::WildGuardMix => {
            let key = match level {
                Level::Prompt => "prompt_harm_label",
                Level::Response if fields.contains_key("response_harm_label") => {
                    "response_harm_label"
                }
                Level::Response => "prompt_harm_label",
            };
            match named(key, "harmful", "unharmful")? {
                None => Ok(None),
                Some(label) if key == "prompt_harm_label" => {
                    Ok(prompt_only(text("prompt")?, label))
                }
                Some(label) => pair(label),
            }
        }
    }
}
