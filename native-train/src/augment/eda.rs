//! `harmaug augment eda`: the simple augmentation baseline HarmAug is compared with — EDA-style
//! word edits (Wei & Zou, 2019) of labelled prompts. Each variant applies one of random
//! insertion (a word of the same prompt at a random place), random swap and random deletion,
//! to a share `--alpha` of the words. EDA's synonym replacement needs WordNet, which harmaug
//! does not ship, so it is left out. Variants keep their row's label and response.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use harmaug_core::datasets::ParseOptions;
use harmaug_core::rng::SplitMix64;
use serde_json::{Map, Value, json};

use crate::data_files;
use crate::resumable::JsonlOutput;

#[derive(Debug, Args)]
pub struct EdaArgs {
    /// Labelled rows (repeatable): JSONL `{prompt, response?, label}` or any format `harmaug
    /// eval` reads.
    #[arg(long, required = true)]
    input: Vec<PathBuf>,
    /// Variants (JSONL `{id, prompt, response?, label, eda_of, eda_op}`), written afresh.
    #[arg(long)]
    out: PathBuf,
    /// Variants per row.
    #[arg(long, default_value_t = 1)]
    per_row: usize,
    /// Share of a prompt's words each edit touches (at least one).
    #[arg(long, default_value_t = 0.1)]
    alpha: f64,
    /// Augment only the rows labelled unsafe (the minority class HarmAug also targets).
    #[arg(long)]
    only_unsafe: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// One EDA edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    Insert,
    Swap,
    Delete,
}

impl Edit {
    const ALL: [Edit; 3] = [Edit::Insert, Edit::Swap, Edit::Delete];

    fn name(self) -> &'static str {
        match self {
            Edit::Insert => "insert",
            Edit::Swap => "swap",
            Edit::Delete => "delete",
        }
    }
}

pub fn run(args: EdaArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&args.alpha) {
        bail!("--alpha must be within [0, 1], got {}", args.alpha);
    }
    // Variants are a pure function of the inputs and seed: rewrite rather than resume.
    if args.out.exists() {
        std::fs::remove_file(&args.out)?;
    }
    let (mut out, _) = JsonlOutput::open(&args.out)?;
    let mut rng = SplitMix64(args.seed);
    let (mut rows, mut variants) = (0usize, 0usize);
    for path in &args.input {
        let named = data_files::read(path, ParseOptions::default())?;
        for row in &named.dataset.rows {
            if args.only_unsafe && !row.unsafe_label {
                continue;
            }
            rows += 1;
            for k in 0..args.per_row {
                let edit = Edit::ALL[rng.below(3) as usize];
                let Some(prompt) = edit_words(&row.input.prompt, edit, args.alpha, &mut rng) else {
                    continue;
                };
                let mut variant = Map::new();
                variant.insert(
                    "id".into(),
                    json!(format!("eda:{}:{}:{k}", named.name, row.line)),
                );
                variant.insert("prompt".into(), json!(prompt));
                if let Some(response) = &row.input.response {
                    variant.insert("response".into(), json!(response));
                }
                variant.insert("label".into(), json!(u8::from(row.unsafe_label)));
                variant.insert(
                    "eda_of".into(),
                    json!(format!("{}:{}", named.name, row.line)),
                );
                variant.insert("eda_op".into(), Value::from(edit.name()));
                out.append(&variant)?;
                variants += 1;
            }
        }
    }
    tracing::info!(
        "{variants} EDA variants of {rows} rows in {}",
        args.out.display()
    );
    Ok(())
}

/// `text` with one EDA edit applied to `max(1, alpha · words)` words; `None` when the text is
/// too short for the edit to change it (fewer than two words).
pub fn edit_words(text: &str, edit: Edit, alpha: f64, rng: &mut SplitMix64) -> Option<String> {
    let mut words: Vec<&str> = text.split_whitespace().collect();
    if words.len() < 2 {
        return None;
    }
    let times = ((alpha * words.len() as f64).round() as usize).max(1);
    match edit {
        Edit::Insert => {
            for _ in 0..times {
                let word = words[rng.below(words.len() as u64) as usize];
                let at = rng.below(words.len() as u64 + 1) as usize;
                words.insert(at, word);
            }
        }
        Edit::Swap => {
            for _ in 0..times {
                let i = rng.below(words.len() as u64) as usize;
                let j = rng.below(words.len() as u64) as usize;
                words.swap(i, j);
            }
        }
        Edit::Delete => {
            // Each word goes with probability alpha; at least one word always stays.
            let kept: Vec<&str> = words
                .iter()
                .copied()
                .filter(|_| rng.unit() >= alpha)
                .collect();
            words = if kept.is_empty() {
                vec![words[rng.below(words.len() as u64) as usize]]
            } else {
                kept
            };
        }
    }
    Some(words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "explain how to pick a lock on a front door quickly";

    fn sorted(text: &str) -> Vec<&str> {
        let mut words: Vec<&str> = text.split_whitespace().collect();
        words.sort_unstable();
        words
    }

    #[test]
    fn swap_keeps_the_words_and_changes_their_order() {
        let mut rng = SplitMix64(3);
        let swapped = edit_words(TEXT, Edit::Swap, 0.2, &mut rng).unwrap();
        assert_eq!(sorted(&swapped), sorted(TEXT));
        assert_ne!(swapped, TEXT);
    }

    #[test]
    fn insert_adds_words_of_the_same_text() {
        let mut rng = SplitMix64(5);
        let inserted = edit_words(TEXT, Edit::Insert, 0.2, &mut rng).unwrap();
        let words: Vec<&str> = inserted.split_whitespace().collect();
        assert_eq!(words.len(), 11 + 2);
        assert!(
            words
                .iter()
                .all(|w| TEXT.split_whitespace().any(|t| t == *w))
        );
    }

    #[test]
    fn delete_drops_some_words_but_never_all() {
        let mut rng = SplitMix64(7);
        let deleted = edit_words(TEXT, Edit::Delete, 0.3, &mut rng).unwrap();
        let words = deleted.split_whitespace().count();
        assert!((1..11).contains(&words), "{deleted}");
        let all_gone = edit_words("two words", Edit::Delete, 1.0, &mut rng).unwrap();
        assert_eq!(all_gone.split_whitespace().count(), 1);
    }

    #[test]
    fn one_word_is_left_alone_and_seeds_repeat() {
        assert_eq!(
            edit_words("hello", Edit::Swap, 0.5, &mut SplitMix64(1)),
            None
        );
        let a = edit_words(TEXT, Edit::Insert, 0.1, &mut SplitMix64(9));
        assert_eq!(a, edit_words(TEXT, Edit::Insert, 0.1, &mut SplitMix64(9)));
    }
}
