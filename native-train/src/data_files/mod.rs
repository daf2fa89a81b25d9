//! Labelled data files on disk → `harmaug_core::datasets`: picks the container by extension
//! (`.csv`, `.parquet`, anything else JSON or JSONL), decompresses `.gz`, and reports skipped
//! and invalid rows once per file.

use std::io::{BufRead, Read};
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use harmaug_core::datasets::{self, Container, Dataset, ParseOptions};

mod parquet;

/// A data set and the name reports use for it (the file name without extensions).
pub struct NamedDataset {
    pub name: String,
    pub dataset: Dataset,
}

/// The most bytes one data file may hold, after decompression: data sets are read whole, so a
/// gzip bomb (1 MB that inflates to 10 GB) must be refused, not followed. 4 GiB by default;
/// `HARMAUG_MAX_DATA_BYTES` changes it.
fn max_data_bytes() -> Result<u64> {
    byte_limit("HARMAUG_MAX_DATA_BYTES", 4 << 30)
}

/// A byte count from the environment variable `name`, else `default`.
fn byte_limit(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .with_context(|| format!("{name}={value:?} is not a byte count")),
        Err(_) => Ok(default),
    }
}

/// The file's bytes, decompressed if it ends in `.gz`, refused past [`max_data_bytes`].
fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let limit = max_data_bytes()?;
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    if file.metadata()?.len() > limit {
        return Err(too_large(path, limit));
    }
    decompressed(file, path, limit)
}

/// `reader`'s bytes, inflated if `path` ends in `.gz`, refused once past `limit` (a gzip bomb
/// stops there instead of filling memory).
pub(crate) fn decompressed(reader: impl Read, path: &Path, limit: u64) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let reader: Box<dyn Read> = if has_extension(path, "gz") {
        Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(
            reader,
        )))
    } else {
        Box::new(reader)
    };
    reader
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(path, limit));
    }
    Ok(bytes)
}

fn too_large(path: &Path, limit: u64) -> anyhow::Error {
    anyhow!(
        "{}: more than {limit} bytes{} (the limit for one data file; split it or set \
         HARMAUG_MAX_DATA_BYTES)",
        path.display(),
        if has_extension(path, "gz") {
            " once decompressed"
        } else {
            ""
        }
    )
}

/// The most bytes one JSONL input row may hold (`score --input`, `label`, `augment`): a row
/// is held whole while it is parsed, so one 1 GB line must be refused before it is read, not
/// after. 256 MiB by default (a 100 MB prompt scores in ~350 MB); `HARMAUG_MAX_ROW_BYTES`
/// changes it.
fn max_row_bytes() -> Result<u64> {
    byte_limit("HARMAUG_MAX_ROW_BYTES", 256 << 20)
}

/// The bytes of a JSONL input (`name` for messages: a path or `<stdin>`), read line by line
/// so that a line past [`max_row_bytes`] stops the read with `NAME:LINE` named, and the whole
/// past [`max_data_bytes`].
pub fn read_jsonl_input(reader: impl std::io::BufRead, name: &str) -> Result<Vec<u8>> {
    let (row_limit, total_limit) = (max_row_bytes()?, max_data_bytes()?);
    let mut reader = reader;
    let mut bytes = Vec::new();
    for line in 1.. {
        let start = bytes.len();
        let read = (&mut reader)
            .take(row_limit + 1)
            .read_until(b'\n', &mut bytes)
            .with_context(|| format!("reading {name}"))?;
        if read == 0 {
            break;
        }
        let row = &bytes[start..];
        if row.len() as u64 > row_limit && row.last() != Some(&b'\n') {
            anyhow::bail!(
                "{name}:{line}: a row longer than {row_limit} bytes (the limit for one input \
                 row; set HARMAUG_MAX_ROW_BYTES to raise it)"
            );
        }
        if bytes.len() as u64 > total_limit {
            anyhow::bail!(
                "{name}: more than {total_limit} bytes (the limit for one input file; split it \
                 or set HARMAUG_MAX_DATA_BYTES)"
            );
        }
    }
    Ok(bytes)
}

pub fn read(path: &Path, options: ParseOptions) -> Result<NamedDataset> {
    parse_file(path, read_bytes(path)?, options, max_data_bytes()?)
}

/// The (decompressed) bytes of data file `path` as a data set: the container by extension.
/// `limit` bounds the rows a Parquet file expands to, as it bounds a gzip file's bytes.
pub(crate) fn parse_file(
    path: &Path,
    mut bytes: Vec<u8>,
    mut options: ParseOptions,
    limit: u64,
) -> Result<NamedDataset> {
    let stem = if has_extension(path, "gz") {
        path.with_extension("")
    } else {
        path.to_path_buf()
    };
    if has_extension(&stem, "csv") {
        options.container = Container::Csv;
    } else if has_extension(&stem, "parquet") {
        // One JSON object per row and line, so that "line N" in errors is row N.
        bytes = parquet::as_jsonl(bytes, limit)
            .with_context(|| format!("reading {}", path.display()))?;
        options.container = Container::Json;
    }
    let dataset = datasets::parse(&bytes, &options)
        .map_err(|e| anyhow!("{}:{}: {}", path.display(), e.line, e.message))?;
    if dataset.skipped > 0 {
        tracing::warn!(
            "{}: skipped {} rows without a label",
            path.display(),
            dataset.skipped
        );
    }
    if !dataset.invalid.is_empty() {
        let first: Vec<String> = dataset
            .invalid
            .iter()
            .take(3)
            .map(|e| format!("{}:{}: {}", path.display(), e.line, e.message))
            .collect();
        tracing::warn!(
            "{}: left out {} invalid rows (--skip-invalid), first: {}",
            path.display(),
            dataset.invalid.len(),
            first.join("; ")
        );
    }
    let name = stem.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    tracing::info!(
        "{name}: {} rows as {} ({} unsafe)",
        dataset.rows.len(),
        dataset.format.name(),
        dataset.rows.iter().filter(|r| r.unsafe_label).count()
    );
    Ok(NamedDataset { name, dataset })
}

fn has_extension(path: &Path, extension: &str) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case(extension))
}
