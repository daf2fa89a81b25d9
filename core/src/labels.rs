//! What a classifier head's outputs mean: the label names (`id2label`), how logits become
//! probabilities (transformers' `problem_type`: softmax for single-label heads, a sigmoid per
//! label for multi-label ones), and which labels count as unsafe. A guard's one score,
//! P(unsafe), is made from those labels' probabilities.

use std::collections::BTreeMap;

use crate::{Error, Result};

/// How a head's logits become probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// Exclusive classes: softmax over the labels (transformers' default).
    SingleLabel,
    /// Independent labels: a sigmoid per label (`multi_label_classification`).
    MultiLabel,
}

/// Class names, the head kind, and which labels make P(unsafe).
#[derive(Debug, Clone, PartialEq)]
pub struct Labels {
    pub names: Vec<String>,
    pub kind: HeadKind,
    /// The labels whose probabilities make P(unsafe), ascending, never empty.
    pub unsafe_indices: Vec<usize>,
}

/// Label names that mean "this is harmful", compared case-insensitively.
const UNSAFE_NAMES: [&str; 4] = ["unsafe", "harmful", "toxic", "toxicity"];
/// Label names that mean "nothing wrong here".
const SAFE_NAMES: [&str; 13] = [
    "safe",
    "unharmful",
    "harmless",
    "benign",
    "neutral",
    "normal",
    "ok",
    "clean",
    "none",
    "non-toxic",
    "non_toxic",
    "not_toxic",
    "nontoxic",
];

fn normalised(name: &str) -> String {
    name.trim().to_lowercase()
}

/// Whether a label named `name` is an "unsafe" class.
pub fn is_unsafe_name(name: &str) -> bool {
    UNSAFE_NAMES.contains(&normalised(name).as_str())
}

fn is_safe_name(name: &str) -> bool {
    SAFE_NAMES.contains(&normalised(name).as_str())
}

impl Labels {
    /// From HF `id2label` (`{"0": "safe", "1": "unsafe"}`; `None` means the default binary
    /// pair) and `problem_type`, with the default choice of unsafe labels
    /// ([`default_unsafe`]).
    pub fn from_config(
        id2label: Option<&BTreeMap<String, String>>,
        problem_type: Option<&str>,
    ) -> Result<Self> {
        let kind = match problem_type {
            None | Some("single_label_classification") => HeadKind::SingleLabel,
            Some("multi_label_classification") => HeadKind::MultiLabel,
            Some(other) => {
                return Err(Error::Config(format!(
                    "problem_type {other:?} is not a classifier head (single_label_classification \
                     or multi_label_classification)"
                )));
            }
        };
        let names = match id2label {
            None => Self::binary().names,
            Some(map) => names_from_id2label(map)?,
        };
        let fewest = if kind == HeadKind::MultiLabel { 1 } else { 2 };
        if names.len() < fewest {
            return Err(Error::Config(format!(
                "id2label has {} label(s); a {kind:?} head needs at least {fewest} (one \
                 single label is transformers' regression head)",
                names.len()
            )));
        }
        let unsafe_indices = default_unsafe(&names, kind);
        Ok(Self {
            names,
            kind,
            unsafe_indices,
        })
    }

    /// The convention for checkpoints without names: label 0 safe, label 1 unsafe.
    pub fn binary() -> Self {
        Self {
            names: vec!["safe".into(), "unsafe".into()],
            kind: HeadKind::SingleLabel,
            unsafe_indices: vec![1],
        }
    }

    /// The same head with the unsafe labels chosen by the user: names (case-insensitive) or
    /// indices.
    pub fn with_unsafe_labels(mut self, chosen: &[String]) -> Result<Self> {
        if chosen.is_empty() {
            return Err(Error::Unsupported("no unsafe labels given".into()));
        }
        let mut indices = chosen
            .iter()
            .map(|label| self.index_of(label))
            .collect::<Result<Vec<_>>>()?;
        indices.sort_unstable();
        indices.dedup();
        self.unsafe_indices = indices;
        Ok(self)
    }

    fn index_of(&self, label: &str) -> Result<usize> {
        let by_name = self
            .names
            .iter()
            .position(|name| normalised(name) == normalised(label));
        let by_index = label
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&i| i < self.len());
        by_name.or(by_index).ok_or_else(|| {
            Error::Unsupported(format!(
                "unsafe label {label:?} is not one of the model's labels {:?} (or their indices)",
                self.names
            ))
        })
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The unsafe logit of a binary softmax head (the head that distillation trains).
    pub fn binary_unsafe_index(&self) -> Option<usize> {
        match (self.kind, self.len(), self.unsafe_indices.as_slice()) {
            (HeadKind::SingleLabel, 2, &[index]) => Some(index),
            _ => None,
        }
    }

    /// Whether outputs list every label's probability: more than two labels, or multi-label
    /// (for a binary softmax head P(unsafe) says it all).
    pub fn reports_every_label(&self) -> bool {
        self.kind == HeadKind::MultiLabel || self.len() > 2
    }

    /// The label names when outputs list every label's probability ([`Self::reports_every_label`]).
    pub fn reported_names(&self) -> Option<&[String]> {
        self.reports_every_label().then_some(self.names.as_slice())
    }

    /// P(unsafe) from one input's label probabilities: the unsafe labels' sum for exclusive
    /// classes (the probability of any of them), their largest for independent labels (so that
    /// `score ≥ t` is "some unsafe label ≥ t").
    pub fn unsafe_probability(&self, probabilities: &[f32]) -> f32 {
        let unsafe_probabilities = self.unsafe_indices.iter().map(|&i| probabilities[i]);
        match self.kind {
            HeadKind::SingleLabel => unsafe_probabilities.sum(),
            HeadKind::MultiLabel => unsafe_probabilities.fold(0.0, f32::max),
        }
    }
}

fn names_from_id2label(map: &BTreeMap<String, String>) -> Result<Vec<String>> {
    let mut names = vec![None; map.len()];
    for (id, name) in map {
        let index: usize = id
            .parse()
            .ok()
            .filter(|&i: &usize| i < map.len() && names[i].is_none())
            .ok_or_else(|| Error::Config(format!("id2label has an invalid id {id:?}")))?;
        names[index] = Some(name.clone());
    }
    // len distinct ids below len: every index was filled once.
    Ok(names.into_iter().map(Option::unwrap_or_default).collect())
}

/// Which labels are unsafe when the user does not say: labels named like harm (`unsafe`,
/// `harmful`, `toxic`) if a single-label head has any; else every label not named like safety
/// (`safe`, `benign`, `neutral`, …) — for a multi-label head each label is a kind of harm;
/// else label 1 of a binary head, or every label but 0 (the usual negative class).
fn default_unsafe(names: &[String], kind: HeadKind) -> Vec<usize> {
    let all = 0..names.len();
    let named_unsafe: Vec<usize> = all.clone().filter(|&i| is_unsafe_name(&names[i])).collect();
    let not_safe: Vec<usize> = all.clone().filter(|&i| !is_safe_name(&names[i])).collect();
    match kind {
        HeadKind::MultiLabel if not_safe.is_empty() => all.collect(),
        HeadKind::MultiLabel => not_safe,
        HeadKind::SingleLabel if !named_unsafe.is_empty() => named_unsafe,
        HeadKind::SingleLabel if !not_safe.is_empty() && not_safe.len() < names.len() => not_safe,
        HeadKind::SingleLabel => (1..names.len()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(names: &[&str], problem_type: Option<&str>) -> Labels {
        let map = names
            .iter()
            .enumerate()
            .map(|(i, n)| (i.to_string(), n.to_string()))
            .collect();
        Labels::from_config(Some(&map), problem_type).unwrap()
    }

    #[test]
    fn the_default_unsafe_labels_follow_the_names() {
        let single = |names: &[&str]| labels(names, None).unsafe_indices;
        assert_eq!(single(&["UNSAFE", "safe"]), [0]);
        assert_eq!(single(&["LABEL_0", "LABEL_1"]), [1]);
        assert_eq!(single(&["unharmful", "harmful"]), [1]);
        assert_eq!(single(&["malicious", "benign"]), [0]);
        assert_eq!(single(&["BENIGN", "INJECTION", "JAILBREAK"]), [1, 2]);
        assert_eq!(single(&["a", "b", "c"]), [1, 2]);
        let multi =
            |names: &[&str]| labels(names, Some("multi_label_classification")).unsafe_indices;
        assert_eq!(multi(&["toxic", "severe_toxic", "threat"]), [0, 1, 2]);
        assert_eq!(multi(&["neutral", "hate", "violence"]), [1, 2]);
        assert_eq!(multi(&["spam"]), [0]);
    }

    #[test]
    fn p_unsafe_is_the_sum_of_exclusive_labels_and_the_max_of_independent_ones() {
        let prompt_guard = labels(&["BENIGN", "INJECTION", "JAILBREAK"], None);
        assert!((prompt_guard.unsafe_probability(&[0.5, 0.2, 0.3]) - 0.5).abs() < 1e-7);
        let multi = labels(&["toxic", "threat"], Some("multi_label_classification"));
        assert_eq!(multi.unsafe_probability(&[0.25, 0.75]), 0.75);
        assert!(multi.reports_every_label() && prompt_guard.reports_every_label());
        assert!(!Labels::binary().reports_every_label());
        assert_eq!(Labels::binary().binary_unsafe_index(), Some(1));
        assert_eq!(prompt_guard.binary_unsafe_index(), None);
    }

    #[test]
    fn the_user_picks_unsafe_labels_by_name_or_index() {
        let prompt_guard = labels(&["BENIGN", "INJECTION", "JAILBREAK"], None);
        let chosen = prompt_guard
            .clone()
            .with_unsafe_labels(&["jailbreak".into()])
            .unwrap();
        assert_eq!(chosen.unsafe_indices, [2]);
        let chosen = prompt_guard
            .clone()
            .with_unsafe_labels(&["2".into(), "1".into()])
            .unwrap();
        assert_eq!(chosen.unsafe_indices, [1, 2]);
        let error = prompt_guard
            .with_unsafe_labels(&["SPAM".into()])
            .unwrap_err();
        assert!(error.to_string().contains("INJECTION"), "{error}");
    }

    #[test]
    fn refuses_regression_and_single_label_heads_with_one_label() {
        let one: BTreeMap<_, _> = [("0".to_string(), "score".to_string())].into();
        assert!(Labels::from_config(Some(&one), None).is_err());
        assert!(Labels::from_config(Some(&one), Some("regression")).is_err());
        assert!(Labels::from_config(Some(&one), Some("multi_label_classification")).is_ok());
        let gap: BTreeMap<_, _> = [("0", "a"), ("2", "b")]
            .map(|(i, n)| (i.to_string(), n.to_string()))
            .into();
        assert!(Labels::from_config(Some(&gap), None).is_err());
    }
}
