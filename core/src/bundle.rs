//! `manifest.json`, the description `harmaug export` writes beside a bundle's files: what the
//! files are (sizes, sha256 for the web loader to check), how the weights are stored, and the
//! guard's operating threshold. Plain HF model directories have no manifest.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// The `format` a manifest names; anything else is not a harmaug bundle.
pub const FORMAT: &str = "harmaug-bundle";

/// The newest `format_version` this harmaug reads (and the one `harmaug export` writes).
pub const FORMAT_VERSION: u32 = 1;

/// The files every bundle holds, so every manifest lists them (with sizes and sha256): a
/// manifest that leaves one out would leave it unchecked.
pub const REQUIRED_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// Where `unsafe` starts when a model names no threshold of its own.
pub const DEFAULT_THRESHOLD: f64 = 0.5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub harmaug_version: String,
    /// How `model.safetensors` stores the weights: "f32", "f16" or "int8".
    pub dtype: String,
    pub max_length: usize,
    /// The first of the labels that make P(unsafe) (all of them: `unsafe_labels`).
    pub unsafe_index: usize,
    pub labels: Vec<String>,
    /// The labels whose probabilities make P(unsafe), as chosen at export; absent in bundles
    /// of binary guards written before it existed (the default choice by name applies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsafe_labels: Vec<String>,
    pub files: Vec<BundleFile>,
    /// The score at and above which the guard calls an input unsafe, chosen when the bundle was
    /// exported (e.g. the best-F1 threshold on validation data). Balanced training pushes
    /// scores up, so 0.5 is rarely the right operating point. Absent: 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<Threshold>,
    /// Score drift of the stored weights against the original model, per data set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleFile {
    pub name: String,
    pub bytes: usize,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub value: f64,
    /// How the value was chosen, for people reading the manifest.
    pub chosen_by: String,
}

impl Manifest {
    /// Parses and checks a `manifest.json`.
    pub fn parse(json: &str) -> Result<Self> {
        let manifest: Manifest = crate::error::from_json(json).map_err(Error::Manifest)?;
        if manifest.format != FORMAT {
            return Err(Error::Manifest(format!(
                "format is {:?}, not {FORMAT:?}",
                manifest.format
            )));
        }
        if manifest.format_version > FORMAT_VERSION {
            return Err(Error::Manifest(format!(
                "format_version {} is newer than this harmaug reads ({FORMAT_VERSION}): upgrade \
                 harmaug",
                manifest.format_version
            )));
        }
        if let Some(missing) = REQUIRED_FILES
            .iter()
            .find(|name| manifest.file(name).is_none())
        {
            return Err(Error::Manifest(format!("files lacks {missing}")));
        }
        if let Some(threshold) = &manifest.threshold
            && !is_valid_threshold(threshold.value)
        {
            return Err(Error::Manifest(format!(
                "threshold {} is not strictly between 0 and 1",
                threshold.value
            )));
        }
        Ok(manifest)
    }
}

impl Manifest {
    /// What the manifest lists for file `name`, if it lists it.
    pub fn file(&self, name: &str) -> Option<&BundleFile> {
        self.files.iter().find(|f| f.name == name)
    }

    /// `bytes` against the size and sha256 the manifest lists for file `name` (files it does
    /// not list pass): a damaged or altered bundle is refused, never scored.
    pub fn check_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let Some(listed) = self.file(name) else {
            return Ok(());
        };
        let damaged = |what: String| {
            Error::Manifest(format!(
                "{name}: {what}: the bundle is damaged or was altered"
            ))
        };
        if listed.bytes != bytes.len() {
            let what = format!(
                "{} bytes where the manifest lists {}",
                bytes.len(),
                listed.bytes
            );
            return Err(damaged(what));
        }
        let digest = sha256_hex(bytes);
        if !digest.eq_ignore_ascii_case(&listed.sha256) {
            let what = format!("sha256 {digest} where the manifest lists {}", listed.sha256);
            return Err(damaged(what));
        }
        Ok(())
    }
}

/// A file's sha256 as a manifest lists it (lower-case hex).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The operating threshold of a model: its manifest's, else [`DEFAULT_THRESHOLD`].
pub fn operating_threshold(manifest: Option<&Manifest>) -> f64 {
    manifest
        .and_then(|m| m.threshold.as_ref())
        .map_or(DEFAULT_THRESHOLD, |t| t.value)
}

/// A threshold must leave both verdicts possible: strictly between 0 and 1.
pub fn is_valid_threshold(value: f64) -> bool {
    value > 0.0 && value < 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"format": "harmaug-bundle", "format_version": 1,
        "harmaug_version": "0.1.0", "dtype": "int8", "max_length": 512, "unsafe_index": 1,
        "labels": ["safe", "unsafe"], "files": [
        {"name": "config.json", "bytes": 0, "sha256": ""},
        {"name": "tokenizer.json", "bytes": 0, "sha256": ""},
        {"name": "model.safetensors", "bytes": 3,
            "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}]"#;

    #[test]
    fn files_are_checked_against_their_size_and_sha256() {
        // MINIMAL lists model.safetensors as sha256("abc").
        let manifest = Manifest::parse(&format!("{MINIMAL}}}")).unwrap();
        manifest.check_file("model.safetensors", b"abc").unwrap();
        manifest.check_file("not-listed.json", b"anything").unwrap();
        let size = manifest
            .check_file("model.safetensors", b"abcd")
            .unwrap_err();
        assert!(
            size.to_string()
                .contains("4 bytes where the manifest lists 3"),
            "{size}"
        );
        let hash = manifest
            .check_file("model.safetensors", b"abd")
            .unwrap_err();
        assert!(
            hash.to_string().contains("damaged or was altered"),
            "{hash}"
        );
    }

    #[test]
    fn a_format_from_the_future_is_refused() {
        let future = MINIMAL.replace(r#""format_version": 1"#, r#""format_version": 2"#);
        let error = Manifest::parse(&format!("{future}}}"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("format_version 2 is newer"), "{error}");
    }

    #[test]
    fn a_manifest_without_a_threshold_means_one_half() {
        let manifest = Manifest::parse(&format!("{MINIMAL}}}")).unwrap();
        assert_eq!(manifest.threshold, None);
        assert_eq!(operating_threshold(Some(&manifest)), 0.5);
        assert_eq!(operating_threshold(None), 0.5);
    }

    #[test]
    fn the_threshold_is_read_and_checked() {
        let with = |value: &str| {
            Manifest::parse(&format!(
                r#"{MINIMAL}, "threshold": {{"value": {value}, "chosen_by": "test"}}}}"#
            ))
        };
        assert_eq!(operating_threshold(Some(&with("0.8").unwrap())), 0.8);
        let error = with("1.5").unwrap_err().to_string();
        assert!(
            error.contains("manifest.json") && error.contains("1.5"),
            "{error}"
        );
        assert!(with("0").is_err());
    }

    #[test]
    fn a_manifest_must_list_every_file_a_bundle_holds() {
        let without = MINIMAL.replace(r#""name": "tokenizer.json""#, r#""name": "vocab.txt""#);
        let error = Manifest::parse(&format!("{without}}}"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("files lacks tokenizer.json"), "{error}");
        let negative = MINIMAL.replace(r#""bytes": 3"#, r#""bytes": -3"#);
        let error = Manifest::parse(&format!("{negative}}}"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("files[2].bytes: invalid value"), "{error}");
    }

    #[test]
    fn another_format_is_refused_by_name() {
        let other = format!("{MINIMAL}}}").replace("harmaug-bundle", "other");
        let error = Manifest::parse(&other).unwrap_err().to_string();
        assert!(error.contains("\"other\""), "{error}");
    }
}
