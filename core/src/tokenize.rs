//! Text, or a (prompt, response) pair, → token ids, with transformers' `truncation=True`
//! (longest-first) and dynamic padding.
//!
//! The checkpoint's `tokenizer.json` may carry its own padding/truncation settings (MiniLM's
//! pads every input to 128); they are replaced, because the guard pads per batch and truncates
//! to its own `max_length`.

use tokenizers::{
    Encoding, PostProcessor, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::{Error, Result};

/// One thing to score: a user prompt, optionally with the assistant's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardInput {
    pub prompt: String,
    pub response: Option<String>,
}

impl GuardInput {
    pub fn prompt(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            response: None,
        }
    }

    pub fn pair(prompt: impl Into<String>, response: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            response: Some(response.into()),
        }
    }
}

/// One encoded input, already truncated, not padded.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedText {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// Whether truncation cut tokens off.
    pub truncated: bool,
}

/// Rows padded to the longest one, flattened row-major as `[batch_size, seq_len]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedBatch {
    pub input_ids: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub batch_size: usize,
    pub seq_len: usize,
}

impl EncodedBatch {
    pub fn pad(rows: &[&EncodedText], pad_id: u32) -> Self {
        let seq_len = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
        let cells = rows.len() * seq_len;
        let mut batch = Self {
            input_ids: Vec::with_capacity(cells),
            token_type_ids: Vec::with_capacity(cells),
            attention_mask: Vec::with_capacity(cells),
            batch_size: rows.len(),
            seq_len,
        };
        for row in rows {
            let pad = seq_len - row.ids.len();
            let widen = |v: &u32| i64::from(*v);
            batch.input_ids.extend(row.ids.iter().map(widen));
            batch
                .input_ids
                .extend(std::iter::repeat_n(i64::from(pad_id), pad));
            batch.token_type_ids.extend(row.type_ids.iter().map(widen));
            batch.token_type_ids.extend(std::iter::repeat_n(0, pad));
            batch
                .attention_mask
                .extend(std::iter::repeat_n(1, row.ids.len()));
            batch.attention_mask.extend(std::iter::repeat_n(0, pad));
        }
        batch
    }
}

/// What happens to an input longer than the max length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LongInput {
    /// Cut to the max length as transformers' `truncation=True` does (longest first).
    #[default]
    Truncate,
    /// Score overlapping windows of the max length and keep the highest P(unsafe): a payload
    /// past the max length is still read. See [`TextEncoder::encode_windows`].
    Chunk,
}

/// A checkpoint's tokenizer with the guard's truncation.
#[derive(Clone)]
pub struct TextEncoder {
    tokenizer: Tokenizer,
    /// The same tokenizer without truncation, to cut windows from whole texts.
    whole: Tokenizer,
    max_length: usize,
    pad_id: u32,
    /// Whether the model gets the tokenizer's segment ids (see [`passes_token_type_ids`]);
    /// without them every token is segment 0, as when transformers passes no `token_type_ids`.
    segment_ids: bool,
    long_input: LongInput,
}

/// Whether transformers' tokenizer for this model returns `token_type_ids`, read from the
/// model's `tokenizer_config.json` (`None`: the file is absent): its `model_input_names` when
/// listed, else the default of its `tokenizer_class`. transformers 5's generic
/// `TokenizersBackend` — which `PreTrainedTokenizerFast` configs also load as — returns none;
/// the architectures' own tokenizers (BERT, DeBERTa-v2), which load when no class is named,
/// return them. A model that gets none sees segment 0 for the response too.
pub fn passes_token_type_ids(tokenizer_config_json: Option<&str>) -> Result<bool> {
    #[derive(serde::Deserialize)]
    struct TokenizerConfig {
        model_input_names: Option<Vec<String>>,
        tokenizer_class: Option<String>,
    }
    let Some(json) = tokenizer_config_json else {
        return Ok(true);
    };
    let config: TokenizerConfig =
        serde_json::from_str(json).map_err(|e| Error::TokenizerConfig(e.to_string()))?;
    Ok(
        match (config.model_input_names, config.tokenizer_class.as_deref()) {
            (Some(names), _) => names.iter().any(|n| n == "token_type_ids"),
            (None, Some("TokenizersBackend" | "PreTrainedTokenizerFast")) => false,
            (None, _) => true,
        },
    )
}

/// The decoders tokenizers 0.23 knows by their `type` tag.
const DECODER_TYPES: [&str; 10] = [
    "BPEDecoder",
    "ByteLevel",
    "WordPiece",
    "Metaspace",
    "CTC",
    "Sequence",
    "Replace",
    "Fuse",
    "Strip",
    "ByteFallback",
];

/// tokenizers panics (an `expect` in its decoder deserialiser) on a `decoder` it cannot read,
/// where every other part of the file gets an error; found by fuzzing (fuzz/regressions/
/// tokenizer). So a decoder must be null or tagged with a type it knows, nested ones too.
fn check_decoder(decoder: &serde_json::Value, path: &str) -> std::result::Result<(), String> {
    if decoder.is_null() {
        return Ok(());
    }
    let kind = decoder.get("type").and_then(serde_json::Value::as_str);
    if !kind.is_some_and(|kind| DECODER_TYPES.contains(&kind)) {
        return Err(format!(
            "{path} is not a decoder: an object whose \"type\" is one of {DECODER_TYPES:?}"
        ));
    }
    let nested = decoder
        .get("decoders")
        .and_then(serde_json::Value::as_array);
    for (i, inner) in nested.into_iter().flatten().enumerate() {
        check_decoder(inner, &format!("{path}.decoders[{i}]"))?;
    }
    Ok(())
}

/// tokenizers reads a `TemplateProcessing` post-processor without checking it, then panics
/// while encoding when a template names a special token the processor does not define, or one
/// whose ids and tokens differ in number (found by fuzzing, fuzz/regressions/tokenizer). Its
/// post-processors are an untagged enum ("serde does not validate tags"): an object with
/// templates is read as one whatever its `type` says, or without one, so every object with
/// templates is checked.
fn check_post_processor(
    processor: &serde_json::Value,
    path: &str,
) -> std::result::Result<(), String> {
    let nested = processor
        .get("processors")
        .and_then(serde_json::Value::as_array);
    for (i, inner) in nested.into_iter().flatten().enumerate() {
        check_post_processor(inner, &format!("{path}.processors[{i}]"))?;
    }
    if ["single", "pair", "special_tokens"]
        .iter()
        .all(|key| processor.get(key).is_none())
    {
        return Ok(());
    }
    let defined = processor
        .get("special_tokens")
        .and_then(serde_json::Value::as_object);
    for (name, token) in defined.into_iter().flatten() {
        let count = |key| {
            token
                .get(key)
                .and_then(serde_json::Value::as_array)
                .map(Vec::len)
        };
        if count("ids") != count("tokens") {
            return Err(format!(
                "{path}.special_tokens.{name}: ids and tokens differ in number"
            ));
        }
    }
    for template in ["single", "pair"] {
        let pieces = processor
            .get(template)
            .and_then(serde_json::Value::as_array);
        for (i, piece) in pieces.into_iter().flatten().enumerate() {
            let id = piece
                .pointer("/SpecialToken/id")
                .and_then(serde_json::Value::as_str);
            if let Some(id) = id
                && !defined.is_some_and(|tokens| tokens.contains_key(id))
            {
                return Err(format!(
                    "{path}.{template}[{i}] names special token {id:?}, which \
                     {path}.special_tokens does not define"
                ));
            }
        }
    }
    Ok(())
}

impl TextEncoder {
    pub fn from_bytes(tokenizer_json: &[u8], max_length: usize, pad_id: u32) -> Result<Self> {
        let cannot_parse = |e: serde_json::Error| Error::Tokenizer(format!("cannot parse: {e}"));
        let json: serde_json::Value =
            serde_json::from_slice(tokenizer_json).map_err(cannot_parse)?;
        let part = |key: &str| json.get(key).unwrap_or(&serde_json::Value::Null);
        check_decoder(part("decoder"), "decoder").map_err(Error::Tokenizer)?;
        check_post_processor(part("post_processor"), "post_processor").map_err(Error::Tokenizer)?;
        let mut whole: Tokenizer = serde_json::from_value(json).map_err(cannot_parse)?;
        whole.with_padding(None);
        whole
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut tokenizer = whole.clone();
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                direction: TruncationDirection::Right,
                stride: 0,
            }))
            .map_err(|e| Error::Tokenizer(format!("max length {max_length}: {e}")))?;
        Ok(Self {
            tokenizer,
            whole,
            max_length,
            pad_id,
            segment_ids: true,
            long_input: LongInput::Truncate,
        })
    }

    /// With `false`, every token gets segment id 0 (see [`passes_token_type_ids`]).
    pub fn with_segment_ids(mut self, segment_ids: bool) -> Self {
        self.segment_ids = segment_ids;
        self
    }

    pub fn with_long_input(mut self, long_input: LongInput) -> Self {
        self.long_input = long_input;
        self
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// What scoring feeds the model for `input`: one truncated encoding, or its windows
    /// (by [`LongInput`]).
    pub fn encode_for_scoring(&self, input: &GuardInput) -> Result<Vec<EncodedText>> {
        match self.long_input {
            LongInput::Truncate => Ok(vec![self.encode(input)?]),
            LongInput::Chunk => self.encode_windows(input),
        }
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub fn encode(&self, input: &GuardInput) -> Result<EncodedText> {
        let (prompt, response, cut) = self.raw_input(input, self.max_length)?;
        self.truncated(prompt, response, cut)
    }

    /// The model's encoding of raw token sequences, truncated as transformers truncates
    /// (`tokenizer.encode` is exactly this after encoding each side).
    fn truncated(
        &self,
        prompt: Encoding,
        response: Option<Encoding>,
        cut: bool,
    ) -> Result<EncodedText> {
        let encoding = self
            .tokenizer
            .post_process(prompt, response, true)
            .map_err(|e| Error::Tokenizer(format!("cannot encode input: {e}")))?;
        let truncated = cut || !encoding.get_overflowing().is_empty();
        Ok(self.encoded(&encoding, truncated))
    }

    /// Both sides of `input` as raw tokens (no special tokens), each read only as far as
    /// `needed` tokens (see [`Self::raw`]); and whether text was left unread. An empty
    /// response is no response, as transformers has it (`if text_pair`), so that scores match
    /// models trained with it.
    fn raw_input(
        &self,
        input: &GuardInput,
        needed: usize,
    ) -> Result<(Encoding, Option<Encoding>, bool)> {
        let (prompt, prompt_cut) = self.raw(&input.prompt, needed)?;
        match input.response.as_deref() {
            None | Some("") => Ok((prompt, None, prompt_cut)),
            Some(response) => {
                let (mut response, response_cut) = self.raw(response, needed)?;
                // Segment 1, as tokenizers' own pair encoding marks it (post-processors that
                // set segments themselves overwrite this).
                response.set_type_ids(vec![1; response.len()]);
                Ok((prompt, Some(response), prompt_cut || response_cut))
            }
        }
    }

    /// `text` as raw tokens. Past [`PIECE_BYTES`] it is tokenised piece by piece, cut at
    /// whitespace, until `needed` tokens are read: tokenizers' memory grows ~200× the text
    /// (a 100 MB prompt took 21 GB), and no model reads further anyway. Whitespace already
    /// separates words for BERT's and SentencePiece's pre-tokenisers, so the pieces' tokens
    /// are the whole text's; only a single "word" longer than a piece is split (a run of
    /// 64 KB without a space is one `[UNK]` for WordPiece either way).
    fn raw(&self, text: &str, needed: usize) -> Result<(Encoding, bool)> {
        let encode = |piece: &str| {
            self.whole
                .encode(piece, false)
                .map_err(|e| Error::Tokenizer(format!("cannot encode input: {e}")))
        };
        if text.len() <= PIECE_BYTES {
            return Ok((encode(text)?, false));
        }
        let mut pieces = Vec::new();
        let (mut tokens, mut rest) = (0, text);
        while !rest.is_empty() && tokens < needed {
            let (piece, tail) = split_piece(rest, PIECE_BYTES);
            let encoding = encode(piece)?;
            tokens += encoding.len();
            pieces.push(encoding);
            rest = tail;
        }
        Ok((Encoding::merge(pieces, true), !rest.is_empty()))
    }

    fn encoded(&self, encoding: &Encoding, truncated: bool) -> EncodedText {
        let type_ids = if self.segment_ids {
            encoding.get_type_ids().to_vec()
        } else {
            vec![0; encoding.get_ids().len()]
        };
        EncodedText {
            ids: encoding.get_ids().to_vec(),
            type_ids,
            truncated,
        }
    }

    /// Tokens that consecutive windows share: a quarter of the max length, so that a phrase
    /// cut at one window's edge is whole in the next.
    pub fn window_overlap(&self) -> usize {
        self.max_length / 4
    }

    /// `input` as one encoding when it fits, else as overlapping windows of the max length
    /// (each marked `truncated`), each with the model's special tokens. A prompt alone is cut
    /// as transformers cuts it with `return_overflowing_tokens=True, stride=overlap`. For a
    /// pair, the longer side is windowed and the shorter kept whole up to half the budget (its
    /// start), so every window shows the model both sides, as it was trained.
    pub fn encode_windows(&self, input: &GuardInput) -> Result<Vec<EncodedText>> {
        let needed = MAX_WINDOWS * self.max_length;
        let (prompt, response, cut) = self.raw_input(input, needed)?;
        let added = self.added_tokens(response.is_some());
        let length = prompt.len() + response.as_ref().map_or(0, Encoding::len) + added;
        if length <= self.max_length && !cut {
            return Ok(vec![self.truncated(prompt, response, false)?]);
        }
        let windows = match response {
            None => {
                let budget = self.budget(false)?;
                windows_of(prompt, budget, self.window_overlap())
                    .into_iter()
                    .map(|w| (w, None))
                    .collect()
            }
            Some(response) => self.pair_windows(prompt, response)?,
        };
        windows
            .into_iter()
            .map(|(first, second)| {
                let encoding = self
                    .whole
                    .post_process(first, second, true)
                    .map_err(|e| Error::Tokenizer(format!("cannot encode input: {e}")))?;
                Ok(self.encoded(&encoding, true))
            })
            .collect()
    }

    /// Special tokens the post-processor adds to one sequence or a pair.
    fn added_tokens(&self, pair: bool) -> usize {
        self.whole
            .get_post_processor()
            .map_or(0, |processor| processor.added_tokens(pair))
    }

    /// Tokens of text a window holds once the special tokens are added.
    fn budget(&self, pair: bool) -> Result<usize> {
        let added = self.added_tokens(pair);
        match self.max_length.checked_sub(added) {
            Some(budget) if budget >= 2 => Ok(budget),
            _ => Err(Error::Tokenizer(format!(
                "max length {} leaves no room for text beside {added} special tokens",
                self.max_length
            ))),
        }
    }

    fn pair_windows(
        &self,
        prompt: Encoding,
        response: Encoding,
    ) -> Result<Vec<(Encoding, Option<Encoding>)>> {
        let budget = self.budget(true)?;
        let response_is_longer = response.len() >= prompt.len();
        let (mut kept, long) = if response_is_longer {
            (prompt, response)
        } else {
            (response, prompt)
        };
        kept.truncate(kept.len().min(budget / 2), 0, TruncationDirection::Right);
        kept.take_overflowing();
        let window = budget - kept.len();
        Ok(windows_of(long, window, self.window_overlap())
            .into_iter()
            .map(|w| {
                if response_is_longer {
                    (kept.clone(), Some(w))
                } else {
                    (w, Some(kept.clone()))
                }
            })
            .collect())
    }
}

/// Texts longer than this are tokenised in pieces of about this size, and only as far as the
/// model can read (see `TextEncoder::raw`).
pub const PIECE_BYTES: usize = 64 * 1024;

/// `text` split after at most `max` bytes: at the last whitespace (which starts the rest), else
/// at a character boundary.
fn split_piece(text: &str, max: usize) -> (&str, &str) {
    if text.len() <= max {
        return (text, "");
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text[..end]
        .rfind(char::is_whitespace)
        .filter(|&at| at > 0)
        .unwrap_or(end);
    text.split_at(cut)
}

/// Most windows of one input: scoring cost must stay bounded whatever a client sends (a 2 MB
/// request is ~500k tokens). 64 windows of 512 read the first ~24k tokens.
pub const MAX_WINDOWS: usize = 64;

/// `encoding` cut into windows of `window` tokens, consecutive ones sharing `overlap` (tokenizers'
/// own truncation with a stride: the first window, then its overflowing ones), at most
/// [`MAX_WINDOWS`].
fn windows_of(mut encoding: Encoding, window: usize, overlap: usize) -> Vec<Encoding> {
    let overlap = overlap.min(window.saturating_sub(1));
    encoding.truncate(window, overlap, TruncationDirection::Right);
    let rest = encoding.take_overflowing();
    std::iter::once(encoding)
        .chain(rest)
        .take(MAX_WINDOWS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tokenizers panics on these decoders; they must be refused with the decoder named.
    #[test]
    fn decoders_tokenizers_cannot_read_are_refused_by_path() {
        let refused = |decoder: &str| {
            let json = format!(r#"{{"model": {{"type": "WordPiece"}}, "decoder": {decoder}}}"#);
            match TextEncoder::from_bytes(json.as_bytes(), 8, 0) {
                Err(error) => error.to_string(),
                Ok(_) => panic!("{decoder} accepted"),
            }
        };
        assert!(refused("5").contains("decoder is not a decoder"));
        assert!(refused(r#"{"kind": "WordPiece"}"#).contains("decoder is not a decoder"));
        let nested = refused(r#"{"type": "Sequence", "decoders": [{"type": "Fuse"}, []]}"#);
        assert!(
            nested.contains("decoder.decoders[1] is not a decoder"),
            "{nested}"
        );
    }

    /// tokenizers panics while encoding with these post-processors; they are refused at load,
    /// whatever the template's `type` tag says (tokenizers reads an untagged enum).
    #[test]
    fn templates_naming_undefined_special_tokens_are_refused() {
        for tag in [
            r#""type": "TemplateProcessing","#,
            r#"")type": "TemplateProcessing","#,
            "",
        ] {
            let undefined = refused_template(tag, "{}").unwrap_or_default();
            let expected = r#"post_processor.processors[0].single[0] names special token "[CLS]""#;
            assert!(undefined.contains(expected), "{tag}: {undefined}");
        }
        let refused =
            |special_tokens| refused_template(r#""type": "TemplateProcessing","#, special_tokens);
        let uneven = r#"{"[CLS]": {"id": "[CLS]", "ids": [1, 1], "tokens": ["[CLS]"]}}"#;
        let uneven = refused(uneven).unwrap_or_default();
        assert!(
            uneven.contains("ids and tokens differ in number"),
            "{uneven}"
        );
        let fine = r#"{"[CLS]": {"id": "[CLS]", "ids": [1], "tokens": ["[CLS]"]}}"#;
        assert_eq!(refused(fine), None);
    }

    /// The fixture tokenizer with a template post-processor (`tag`: its `type` entry and
    /// comma, or none) naming `[CLS]` and defining `special_tokens`: the load error, if any.
    fn refused_template(tag: &str, special_tokens: &str) -> Option<String> {
        let mut json: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/bert-tiny-f32/tokenizer.json"
        ))
        .unwrap();
        let template = format!(
            r#"{{"type": "Sequence", "processors": [{{ {tag}
                "single": [{{"SpecialToken": {{"id": "[CLS]", "type_id": 0}}}},
                           {{"Sequence": {{"id": "A", "type_id": 0}}}}],
                "pair": [], "special_tokens": {special_tokens}}}]}}"#
        );
        json["post_processor"] = serde_json::from_str(&template).unwrap();
        TextEncoder::from_bytes(json.to_string().as_bytes(), 8, 0)
            .err()
            .map(|e| e.to_string())
    }

    #[test]
    fn padding_fills_ids_types_and_mask() {
        let a = EncodedText {
            ids: vec![5, 6, 7],
            type_ids: vec![0, 0, 1],
            truncated: false,
        };
        let b = EncodedText {
            ids: vec![5],
            type_ids: vec![0],
            truncated: false,
        };
        let batch = EncodedBatch::pad(&[&a, &b], 9);
        assert_eq!((batch.batch_size, batch.seq_len), (2, 3));
        assert_eq!(batch.input_ids, vec![5, 6, 7, 5, 9, 9]);
        assert_eq!(batch.token_type_ids, vec![0, 0, 1, 0, 0, 0]);
        assert_eq!(batch.attention_mask, vec![1, 1, 1, 1, 0, 0]);
    }

    #[test]
    fn token_type_ids_follow_tokenizer_config() {
        let passes = |json: Option<&str>| passes_token_type_ids(json).unwrap();
        assert!(passes(None));
        assert!(passes(Some("{}")));
        assert!(passes(Some(r#"{"tokenizer_class": "BertTokenizer"}"#)));
        assert!(!passes(Some(r#"{"tokenizer_class": "TokenizersBackend"}"#)));
        assert!(!passes(Some(
            r#"{"tokenizer_class": "PreTrainedTokenizerFast"}"#
        )));
        let listed = r#"{"tokenizer_class": "BertTokenizer", "model_input_names": ["input_ids", "attention_mask"]}"#;
        assert!(!passes(Some(listed)));
        let listed = r#"{"tokenizer_class": "TokenizersBackend", "model_input_names": ["input_ids", "token_type_ids"]}"#;
        assert!(passes(Some(listed)));
        let error = passes_token_type_ids(Some("{")).unwrap_err().to_string();
        assert!(error.contains("tokenizer_config.json"), "{error}");
    }
}
