//! Every reader of bytes that `harmaug` takes from strangers and that lives in this crate, each
//! behind one function on in-memory bytes: the fuzz targets (`fuzz/`) call these, and so do the
//! regression tests of the inputs fuzzing found (`tests/tests/fuzz_regressions.rs`).
//! The readers in `harmaug-core` (checkpoints, manifests, tokenizers, data set rows, JSONL
//! input) are fuzzed through core's own API.

use std::path::Path;

use anyhow::Result;
use harmaug_core::datasets::ParseOptions;

use crate::llm::{ChatTemplate, Message};

/// A GGUF file's metadata (chat template, special tokens), as `--generator FILE.gguf` reads it.
pub fn gguf_metadata(bytes: &[u8]) -> Result<()> {
    crate::llm::gguf::read_metadata(&mut &bytes[..]).map(drop)
}

/// A chat template as a GGUF file or tokenizer config carries it, rendered as `augment` does:
/// a conversation with a generation prompt, and one prefilled with the affirmative prefix.
pub fn chat_template(source: &str) -> Result<()> {
    let template = ChatTemplate::new(source, "<s>", "</s>")?;
    let messages = [
        Message::new("system", "Be brief."),
        Message::new("user", "Make a single harmful instruction prompt."),
    ];
    template.render(&messages, true)?;
    template.render_prefilled(&messages, "I have an idea for a prompt:")?;
    Ok(())
}

/// A labelled data file named `name` (its extension picks the container: `.csv`, `.parquet`,
/// else JSON or JSONL; `.gz` is inflated first), as `eval`, `distill` and `label` read it;
/// past `limit` bytes (decompressed) it is refused.
pub fn data_file(name: &str, bytes: &[u8], limit: u64) -> Result<usize> {
    let path = Path::new(name);
    let bytes = crate::data_files::decompressed(bytes, path, limit)?;
    let dataset = crate::data_files::parse_file(path, bytes, ParseOptions::default(), limit)?;
    Ok(dataset.dataset.rows.len())
}
