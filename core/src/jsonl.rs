//! Input rows for scoring: JSONL objects `{"prompt": str, "response": str|null?, ...}`.
//!
//! Parsed from bytes (no paths): errors carry the 1-based line so that callers can print
//! `file:line`. Extra fields are kept, in order, so that outputs can echo them.

use serde_json::{Map, Value};

use crate::tokenize::GuardInput;

/// One input row: the guard input and every field of the original object.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub line: usize,
    pub fields: Map<String, Value>,
    pub input: GuardInput,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct RowError {
    pub line: usize,
    pub message: String,
}

/// Parses every non-blank line; the first bad line is an error, so no partial result escapes.
pub fn parse_jsonl(bytes: &[u8]) -> Result<Vec<Row>, RowError> {
    jsonl_objects(bytes)?
        .into_iter()
        .map(|(line, fields)| {
            let input = guard_input(&fields).map_err(|message| RowError { line, message })?;
            Ok(Row {
                line,
                fields,
                input,
            })
        })
        .collect()
}

/// A JSON object and the 1-based line it starts on.
pub(crate) type LineObject = (usize, Map<String, Value>);

/// The JSON object on every non-blank line, with its 1-based line number.
pub(crate) fn jsonl_objects(bytes: &[u8]) -> Result<Vec<LineObject>, RowError> {
    jsonl_lines(bytes).collect()
}

/// Each non-blank line parsed on its own, so that a caller may skip bad lines.
pub(crate) fn jsonl_lines(bytes: &[u8]) -> impl Iterator<Item = Result<LineObject, RowError>> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter_map(|(index, raw)| {
            let line = index + 1;
            let error = |message: String| RowError { line, message };
            let text = match std::str::from_utf8(raw) {
                Ok(text) => text.trim(),
                Err(e) => {
                    let at = e.valid_up_to();
                    return Some(Err(error(format!(
                        "invalid UTF-8 at byte {at} of the line"
                    ))));
                }
            };
            if text.is_empty() {
                return None;
            }
            Some(match serde_json::from_str(text) {
                Ok(Value::Object(fields)) => Ok((line, fields)),
                Ok(_) => Err(error("expected a JSON object".into())),
                Err(e) => Err(error(format!("malformed JSON: {e}"))),
            })
        })
}

fn guard_input(fields: &Map<String, Value>) -> Result<GuardInput, String> {
    let prompt = match fields.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("field `prompt` must be a string".into()),
        None => return Err("missing field `prompt`".into()),
    };
    let response = match fields.get("response") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("field `response` must be a string or null".into()),
    };
    Ok(GuardInput { prompt, response })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_fields_and_reads_pairs() {
        let rows = parse_jsonl(
            b"{\"id\": 7, \"prompt\": \"hi\"}\n\n{\"prompt\": \"q\", \"response\": \"a\"}\r\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].fields["id"], 7);
        assert_eq!(rows[0].input, GuardInput::prompt("hi"));
        assert_eq!(rows[1].line, 3);
        assert_eq!(rows[1].input, GuardInput::pair("q", "a"));
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse_jsonl(b"{\"prompt\": \"ok\"}\n{\"text\": \"no prompt\"}\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("missing field `prompt`"));
        let err = parse_jsonl(b"{\"prompt\": \"ok\"}\n{\"prompt\": \n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("malformed JSON"));
        let err = parse_jsonl(b"{\"prompt\": \"\xff\"}").unwrap_err();
        assert!(err.message.contains("invalid UTF-8"), "{}", err.message);
        let err = parse_jsonl(b"{\"prompt\": 3}").unwrap_err();
        assert!(err.message.contains("must be a string"));
    }
}
