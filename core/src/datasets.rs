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
//! | generic | `prompt`, `response`?, `label` 0/1 or bool and/or `teacher_score` | 1 / true, else `teacher_score` > 0.5 |
//!
//! Any row may carry `teacher_score` (a teacher's P(unsafe) in [0, 1], written by `harmaug
//! label`): the soft label distillation learns from.

use serde_json::{Map, Value};

use crate::jsonl::{LineObject, RowError};
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
    /// Every format, in the order the CLI lists them (its `--format` choices come from here).
    pub const ALL: [Format; 7] = [
        Format::OpenAiModeration,
        Format::OpenAiModerationCategories,
        Format::ToxicChat,
        Format::HarmBench,
        Format::WildGuardMix,
        Format::BeaverTails,
        Format::Generic,
    ];

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
        } else if has("prompt") && (has("label") || has("teacher_score")) {
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
    /// A teacher's P(unsafe), when the row carries one.
    pub teacher_score: Option<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub format: Format,
    pub rows: Vec<LabelledRow>,
    /// Rows without a label (WildGuardMix's null labels), left out of `rows`.
    pub skipped: usize,
    /// Rows left out because they were invalid (only with `skip_invalid`).
    pub invalid: Vec<RowError>,
}

/// How the bytes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Container {
    /// A JSON array of objects, or JSONL (told apart by the first character).
    #[default]
    Json,
    /// CSV with a header row (cells arrive as strings).
    Csv,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ParseOptions {
    pub container: Container,
    /// `None` detects the format from the first row.
    pub format: Option<Format>,
    pub level: Level,
    /// Leave invalid rows out and count them instead of failing on the first.
    pub skip_invalid: bool,
}

/// Parses a labelled data set.
pub fn parse(bytes: &[u8], options: &ParseOptions) -> Result<Dataset, RowError> {
    let (objects, mut invalid) = match options.container {
        Container::Json => objects(bytes, options.skip_invalid)?,
        Container::Csv => csv_objects(bytes, options.skip_invalid)?,
    };
    let (format, level) = (options.format, options.level);
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
        invalid: Vec::new(),
    };
    for (line, fields) in objects {
        let parsed = teacher_score(&fields)
            .and_then(|score| Ok(row(format, level, &fields, score)?.map(|r| (r, score))));
        match parsed {
            Ok(Some(((input, unsafe_label), teacher_score))) => dataset.rows.push(LabelledRow {
                line,
                fields,
                input,
                unsafe_label,
                teacher_score,
            }),
            Ok(None) => dataset.skipped += 1,
            Err(message) if options.skip_invalid => invalid.push(RowError { line, message }),
            Err(message) => return Err(RowError { line, message }),
        }
    }
    invalid.sort_by_key(|e| e.line);
    dataset.invalid = invalid;
    Ok(dataset)
}

/// Header-keyed records of a CSV file, every cell a string, with 1-based line numbers.
fn csv_objects(bytes: &[u8], skip_invalid: bool) -> ObjectsAndInvalid {
    let mut reader = csv::ReaderBuilder::new().from_reader(bytes);
    let header = reader
        .headers()
        .map_err(|e| RowError {
            line: 1,
            message: format!("CSV header: {e}"),
        })?
        .clone();
    let (mut objects, mut invalid) = (Vec::new(), Vec::new());
    for record in reader.records() {
        match record {
            Ok(record) => {
                let line = record.position().map_or(0, |p| p.line() as usize);
                let fields = header
                    .iter()
                    .zip(record.iter())
                    .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                    .collect();
                objects.push((line, fields));
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                let error = RowError {
                    line,
                    message: format!("malformed CSV: {e}"),
                };
                if !skip_invalid {
                    return Err(error);
                }
                invalid.push(error);
            }
        }
    }
    Ok((objects, invalid))
}

/// Parsed objects and, with `skip_invalid`, the rows left out.
type ObjectsAndInvalid = Result<(Vec<LineObject>, Vec<RowError>), RowError>;

/// Objects with their 1-based line numbers (for a JSON array, the line each object starts on),
/// and, with `skip_invalid`, the JSONL lines that were not objects. A malformed JSON array
/// cannot be resynchronised, so it is an error either way.
fn objects(bytes: &[u8], skip_invalid: bool) -> ObjectsAndInvalid {
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
        let (mut objects, mut invalid) = (Vec::new(), Vec::new());
        for line in crate::jsonl::jsonl_lines(bytes) {
            match line {
                Ok(object) => objects.push(object),
                Err(e) if skip_invalid => invalid.push(e),
                Err(e) => return Err(e),
            }
        }
        return Ok((objects, invalid));
    }
    // Walk the array one element at a time so that rows and errors keep their line numbers.
    let line_of = |at: usize| 1 + text[..at].matches('\n').count();
    let mut objects = Vec::new();
    let mut at = text.len() - body.len() + 1;
    loop {
        let rest = &text[at..];
        let element = at + rest.len() - rest.trim_start().len();
        if text[element..].starts_with(']') {
            return Ok((objects, Vec::new()));
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
            Some(']') => return Ok((objects, Vec::new())),
            _ => {
                return Err(RowError {
                    line: line_of(after),
                    message: "expected `,` or `]` in the JSON array".into(),
                });
            }
        }
    }
}

/// `teacher_score`, if present: a probability.
fn teacher_score(fields: &Map<String, Value>) -> Result<Option<f32>, String> {
    match fields.get("teacher_score") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_f64().is_some_and(|p| (0.0..=1.0).contains(&p)) => {
            Ok(n.as_f64().map(|p| p as f32))
        }
        Some(Value::String(s))
            if s.trim()
                .parse::<f64>()
                .is_ok_and(|p| (0.0..=1.0).contains(&p)) =>
        {
            Ok(s.trim().parse::<f64>().ok().map(|p| p as f32))
        }
        Some(other) => Err(format!(
            "field `teacher_score` must be a probability in [0, 1], not {other}"
        )),
    }
}

/// The guard input and label of one row, or `None` for a row without a label. A generic row
/// without `label` takes its hard label from `teacher_score`.
fn row(
    format: Format,
    level: Level,
    fields: &Map<String, Value>,
    teacher_score: Option<f32>,
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
        // CSV cells are strings.
        Some(Value::String(s)) if matches!(s.trim(), "1" | "1.0" | "true" | "True") => Ok(true),
        Some(Value::String(s)) if matches!(s.trim(), "0" | "0.0" | "false" | "False") => Ok(false),
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
        Format::Generic => match (fields.get("label"), teacher_score) {
            (None | Some(Value::Null), Some(score)) => pair(score > 0.5),
            (None | Some(Value::Null), None) => {
                Err("missing field `label` (or a `teacher_score`)".into())
            }
            _ => pair(flag("label")?),
        },
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

#[cfg(test)]
mod tests {
    use super::Format;

    #[test]
    fn all_lists_every_format_once() {
        // A new variant breaks this match: give it the next number and add it to `Format::ALL`.
        let position = |format| match format {
            Format::OpenAiModeration => 0,
            Format::OpenAiModerationCategories => 1,
            Format::ToxicChat => 2,
            Format::HarmBench => 3,
            Format::WildGuardMix => 4,
            Format::BeaverTails => 5,
            Format::Generic => 6,
        };
        for (i, &format) in Format::ALL.iter().enumerate() {
            assert_eq!(position(format), i, "{}", format.name());
        }
    }
}
