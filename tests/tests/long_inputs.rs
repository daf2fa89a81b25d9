//! `--long-input chunk`: windows of a long prompt equal transformers' overflowing windows
//! (`return_overflowing_tokens=True`, stride = max length / 4), and the score is the highest
//! window's P(unsafe) (fixtures/windows.json from make_fixtures.py). Pairs keep both sides in
//! every window.

use harmaug_core::tokenize::LongInput;
use harmaug_core::{GuardInput, LoadOptions};
use harmaug_tests::{fixture, load_guard};
use serde::Deserialize;

#[derive(Deserialize)]
struct Windows {
    max_length: usize,
    rows: Vec<Row>,
}

#[derive(Deserialize)]
struct Row {
    prompt: String,
    input_ids: Vec<Vec<u32>>,
    logits: Vec<Vec<f32>>,
}

fn reference() -> Windows {
    serde_json::from_slice(&std::fs::read(fixture("windows.json")).unwrap()).unwrap()
}

fn options(max_length: usize, long_input: LongInput) -> LoadOptions {
    LoadOptions {
        max_length: Some(max_length),
        long_input,
        ..LoadOptions::default()
    }
}

#[test]
fn prompt_windows_and_scores_match_transformers() {
    let reference = reference();
    let guard = load_guard(
        &fixture("bert-tiny-f32"),
        &options(reference.max_length, LongInput::Chunk),
    );
    let inputs: Vec<GuardInput> = reference
        .rows
        .iter()
        .map(|r| GuardInput::prompt(r.prompt.clone()))
        .collect();
    let all = guard.encode_inputs(&inputs).unwrap();
    let ids: Vec<Vec<u32>> = all.rows().iter().map(|e| e.ids.clone()).collect();
    let expected: Vec<Vec<u32>> = reference
        .rows
        .iter()
        .flat_map(|r| r.input_ids.clone())
        .collect();
    assert_eq!(ids, expected, "windows differ from transformers'");
    let scored = guard.score(&inputs, 7, |_| {}).unwrap();
    for (row, got) in reference.rows.iter().zip(&scored.scores) {
        let best = row
            .logits
            .iter()
            .map(|l| {
                let exp: Vec<f32> = l.iter().map(|x| x.exp()).collect();
                exp[1] / exp.iter().sum::<f32>()
            })
            .fold(0.0, f32::max);
        assert!(
            (got - best).abs() < 1e-5,
            "{got} vs the best window's {best}"
        );
    }
    assert_eq!(
        scored.truncated, 2,
        "two of the three prompts are past the max length"
    );
    // Truncation scores the first window only.
    let truncating = load_guard(
        &fixture("bert-tiny-f32"),
        &options(reference.max_length, LongInput::Truncate),
    );
    let first = truncating.score(&inputs, 7, |_| {}).unwrap();
    let windows = guard.score(&inputs, 7, |_| {}).unwrap();
    assert!(
        first
            .scores
            .iter()
            .zip(&windows.scores)
            .all(|(t, c)| t <= &(c + 1e-6))
    );
}

#[test]
fn pair_windows_keep_both_sides_and_cover_the_long_one() {
    let max_length = 24;
    let guard = load_guard(
        &fixture("bert-tiny-f32"),
        &options(max_length, LongInput::Chunk),
    );
    let long = "the response goes on and on about lighthouses ".repeat(2);
    let short = "Tell me a story";
    // Whole texts, through a guard whose max length (the fixture's 64 positions) holds them.
    let wide = load_guard(&fixture("bert-tiny-f32"), &options(64, LongInput::Truncate));
    let whole = |text: &str| {
        let encoded = wide.encode(&GuardInput::prompt(text)).unwrap();
        assert!(!encoded.truncated);
        encoded.ids
    };
    for (input, long_side_is_response) in [
        (GuardInput::pair(short, long.as_str()), true),
        (GuardInput::pair(long.as_str(), short), false),
    ] {
        let windows = guard.encode_inputs(std::slice::from_ref(&input)).unwrap();
        let windows = windows.rows();
        assert!(windows.len() > 2, "{} windows", windows.len());
        // [CLS] short [SEP] … [SEP] or [CLS] … [SEP] short [SEP]: the short side, whole, in each.
        let short_ids = whole(short);
        let short_tokens = &short_ids[1..short_ids.len() - 1];
        for window in &windows {
            assert!(window.ids.len() <= max_length && window.truncated);
            let holds_short = window
                .ids
                .windows(short_tokens.len())
                .any(|w| w == short_tokens);
            assert!(holds_short, "a window lost the short side");
            let segments = window.type_ids.iter().filter(|&&t| t == 1).count();
            assert!(segments > 0, "the pair's second segment is marked");
        }
        // The long side's first and last tokens are in the first and last windows.
        let long_ids = whole(&long);
        let long_ids = &long_ids[1..long_ids.len() - 1];
        let contains = |ids: &[u32], part: &[u32]| ids.windows(part.len()).any(|w| w == part);
        assert!(contains(&windows[0].ids, &long_ids[..3]));
        assert!(contains(
            &windows[windows.len() - 1].ids,
            &long_ids[long_ids.len() - 3..]
        ));
        let first_segment_is_short = windows[0].ids[1..=short_tokens.len()] == *short_tokens;
        assert_eq!(first_segment_is_short, long_side_is_response);
    }
}

/// Scoring cost is bounded whatever the input: at most MAX_WINDOWS windows.
#[test]
fn windows_are_capped() {
    let guard = load_guard(&fixture("bert-tiny-f32"), &options(24, LongInput::Chunk));
    let huge = GuardInput::prompt("word ".repeat(5000));
    let windows = guard.encode_inputs(std::slice::from_ref(&huge)).unwrap();
    assert_eq!(windows.rows().len(), harmaug_core::tokenize::MAX_WINDOWS);
}

/// A text past `PIECE_BYTES` is tokenised in pieces cut at whitespace and only as far as the
/// model reads: the tokens are those of the whole text (tokenizers on the whole string, the
/// reference), for BERT's WordPiece and DeBERTa-v3's SentencePiece, truncated and windowed.
#[test]
fn huge_texts_tokenise_in_pieces_as_the_whole_text() {
    use harmaug_core::tokenize::{PIECE_BYTES, TextEncoder};
    // Varied whitespace (double spaces, newlines, tabs) at the piece edges, and non-ASCII.
    let text: String = (0..40_000)
        .map(|i| {
            [
                "Ünïcödé  lighthouse\t",
                "keeper's\nlog, ",
                "day 12 ",
                "東京 ",
            ][i % 4]
        })
        .collect();
    assert!(text.len() > 5 * PIECE_BYTES);
    let tokenizers = [
        std::fs::read(fixture("bert-tiny-f32/tokenizer.json")).unwrap(),
        std::fs::read(harmaug_tests::deberta_v3_tokenizer()).unwrap(),
    ];
    for json in tokenizers {
        let max_length = 512;
        let mut reference = tokenizers::Tokenizer::from_bytes(&json).unwrap();
        reference.with_padding(None);
        reference.with_truncation(None).unwrap();
        let whole = reference.encode(text.as_str(), false).unwrap();
        let encoder = TextEncoder::from_bytes(&json, max_length, 0).unwrap();
        let input = GuardInput::prompt(text.clone());
        // Truncated: [CLS] + the whole text's first tokens + [SEP].
        let encoded = encoder.encode(&input).unwrap();
        assert!(encoded.truncated);
        assert_eq!(
            encoded.ids[1..max_length - 1],
            whole.get_ids()[..max_length - 2]
        );
        // Windowed: the windows read the whole text's tokens, a quarter overlapping.
        let windowed = encoder
            .clone()
            .with_long_input(LongInput::Chunk)
            .encode_windows(&input)
            .unwrap();
        assert_eq!(windowed.len(), harmaug_core::tokenize::MAX_WINDOWS);
        let stride = (max_length - 2) - max_length / 4;
        for (k, window) in windowed.iter().enumerate() {
            let start = k * stride;
            let tokens = &window.ids[1..window.ids.len() - 1];
            assert_eq!(
                tokens,
                &whole.get_ids()[start..start + tokens.len()],
                "window {k}"
            );
        }
    }
}
