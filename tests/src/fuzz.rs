//! The bodies of the fuzz targets (`fuzz/fuzz_targets/`, one per reader of untrusted bytes),
//! kept here so that `tests/tests/fuzz_regressions.rs` replays the seed corpora and every input
//! fuzzing ever found through the very same code on stable Rust.
//!
//! A body returns normally for any input: a refused input is an `Err` it drops. It panics only
//! where harmaug would (a crash to fix), or where an invariant that a user relies on breaks.

use std::cell::Cell;
use std::sync::{Once, OnceLock};

use harmaug_core::bundle::Manifest;
use harmaug_core::datasets::{self, Container, Format, Level, ParseOptions};
use harmaug_core::tokenize::{LongInput, TextEncoder};
use harmaug_core::{Guard, GuardInput, LoadOptions, ModelFiles};

use crate::TestBackend;

/// A target's body: any bytes in, no panic out.
pub type Body = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/NAME.rs` and corpus folder.
pub const TARGETS: [(&str, Body); 9] = [
    ("checkpoint", checkpoint),
    ("manifest", manifest),
    ("tokenizer", tokenizer),
    ("text", text),
    ("dataset", dataset),
    ("jsonl", jsonl),
    ("data_file", data_file),
    ("gguf", gguf),
    ("chat_template", chat_template),
];

const CONFIG: &str = include_str!("../fixtures/bert-tiny-f32/config.json");
const WEIGHTS: &[u8] = include_bytes!("../fixtures/bert-tiny-f32/model.safetensors");
const WORDPIECE: &[u8] = include_bytes!("../fixtures/bert-tiny-f32/tokenizer.json");
const SENTENCEPIECE: &[u8] = include_bytes!("../fixtures/deberta-tiny-b8/tokenizer.json");

/// Checkpoint loading (config.json, the safetensors header and tensor table, the shapes the
/// config implies), then scoring with whatever loaded. The first byte picks what is fuzzed:
/// the weights beside the fixture's config, the config beside its weights, or both.
pub fn checkpoint(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let (config, weights) = match which % 3 {
        0 => (CONFIG.into(), rest),
        1 => (lossy(rest), WEIGHTS),
        _ => {
            let cut = rest.len().min(usize::from(which) * 8);
            (lossy(&rest[..cut]), &rest[cut..])
        }
    };
    let files = ModelFiles {
        config_json: &config,
        weights: vec![weights],
        tokenizer_json: WORDPIECE,
        tokenizer_config_json: None,
        release_weights: None,
    };
    let options = LoadOptions::default();
    let Ok(guard) = Guard::<TestBackend>::load(&files, &options, &Default::default()) else {
        return;
    };
    let inputs = [GuardInput::prompt("hello"), GuardInput::pair("a", "b")];
    let scores = guard
        .score(&inputs, 2, |_| {})
        .expect("a loaded guard scores");
    assert_eq!(scores.scores.len(), inputs.len());
}

fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// A bundle's manifest.json, then each file it lists checked against some bytes.
pub fn manifest(data: &[u8]) {
    let Ok(manifest) = Manifest::parse(&lossy(data)) else {
        return;
    };
    for file in &manifest.files {
        let _ = manifest.check_file(&file.name, data);
    }
}

/// A tokenizer.json, then encoding a prompt and a pair with it.
pub fn tokenizer(data: &[u8]) {
    let Ok(encoder) = TextEncoder::from_bytes(data, 32, 0) else {
        return;
    };
    for input in [
        GuardInput::prompt("hello world"),
        GuardInput::pair("a", "b"),
    ] {
        if let Ok(encoded) = encoder.encode(&input) {
            assert!(encoded.ids.len() <= 32, "{} ids", encoded.ids.len());
        }
    }
}

/// Any text (a prompt, and after a tab a response) through both real tokenizers, truncated and
/// by windows: it always encodes, within the model's length.
pub fn text(data: &[u8]) {
    let text = lossy(data);
    let input = match text.split_once('\t') {
        Some((prompt, response)) => GuardInput::pair(prompt, response),
        None => GuardInput::prompt(text.as_ref()),
    };
    for encoder in text_encoders() {
        let encoded = encoder
            .encode_for_scoring(&input)
            .expect("any text encodes");
        assert!(!encoded.is_empty());
        for row in &encoded {
            assert!(row.ids.len() <= 16 && row.ids.len() == row.type_ids.len());
        }
    }
}

/// Both fixture tokenizers, truncating and by windows, at max length 16: loaded once.
fn text_encoders() -> &'static [TextEncoder] {
    static ENCODERS: OnceLock<Vec<TextEncoder>> = OnceLock::new();
    ENCODERS.get_or_init(|| {
        let mut encoders = Vec::new();
        for tokenizer in [WORDPIECE, SENTENCEPIECE] {
            for long_input in [LongInput::Truncate, LongInput::Chunk] {
                let encoder =
                    TextEncoder::from_bytes(tokenizer, 16, 0).expect("the fixture tokenizer loads");
                encoders.push(encoder.with_long_input(long_input));
            }
        }
        encoders
    })
}

/// A labelled data set (JSON, JSONL or CSV rows of every known format); the first byte picks
/// the parse options.
pub fn dataset(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let format = usize::from(which >> 3) % (Format::ALL.len() + 1);
    let options = ParseOptions {
        container: if which & 1 == 0 {
            Container::Json
        } else {
            Container::Csv
        },
        format: Format::ALL.get(format).copied(),
        level: if which & 2 == 0 {
            Level::Response
        } else {
            Level::Prompt
        },
        skip_invalid: which & 4 != 0,
    };
    let _ = datasets::parse(rest, &options);
}

/// The JSONL input of `harmaug score --input` and of `label`/`augment`.
pub fn jsonl(data: &[u8]) {
    let _ = harmaug_core::jsonl::parse_jsonl(data);
}

/// A data file as `eval` reads it from disk: the first byte picks its name (the extension
/// chooses the container, `.gz` inflates), capped at 16 MiB decompressed.
pub fn data_file(data: &[u8]) {
    const NAMES: [&str; 7] = [
        "set.jsonl",
        "set.json",
        "set.csv",
        "set.parquet",
        "set.jsonl.gz",
        "set.csv.gz",
        "set.parquet.gz",
    ];
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let name = NAMES[usize::from(which) % NAMES.len()];
    with_caught_panics_allowed(|| harmaug::untrusted::data_file(name, rest, 16 << 20)).ok();
}

thread_local! {
    static CAUGHT_PANICS_ALLOWED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` letting through libFuzzer's panic hook the panics that harmaug catches itself (the
/// parquet crate asserts on crafted files; `data_files` catches those): the hook aborts on any
/// panic, caught or not. A panic that escapes harmaug still fails the target, since
/// libfuzzer-sys aborts on an input that panicked.
fn with_caught_panics_allowed<T>(f: impl FnOnce() -> T) -> T {
    static WRAP_HOOK: Once = Once::new();
    WRAP_HOOK.call_once(|| {
        let outer = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CAUGHT_PANICS_ALLOWED.get() {
                outer(info);
            }
        }));
    });
    CAUGHT_PANICS_ALLOWED.set(true);
    let result = f();
    CAUGHT_PANICS_ALLOWED.set(false);
    result
}

/// A GGUF file's metadata (`augment --generator FILE.gguf`).
pub fn gguf(data: &[u8]) {
    let _ = harmaug::untrusted::gguf_metadata(data);
}

/// A chat template from a GGUF file or tokenizer config, rendered as `augment` renders it.
pub fn chat_template(data: &[u8]) {
    let _ = harmaug::untrusted::chat_template(&lossy(data));
}
