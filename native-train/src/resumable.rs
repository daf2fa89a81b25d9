//! What long LLM jobs share: append-only JSONL outputs that a restarted job resumes from (rows
//! carry ids; done ids are skipped), and a pool of threads keeping N requests in flight while
//! one thread writes the results; and the reader of their input rows.
//!
//! A kill -9 loses at most the requests in flight: every finished row is written and flushed
//! when it completes, and a row torn by the kill is cut off when the file is reopened.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

/// An append-only JSONL file of rows.
pub struct JsonlOutput {
    file: File,
    path: PathBuf,
}

impl JsonlOutput {
    /// Opens (or creates) `path` for appending and returns the rows already in it.
    pub fn open(path: &Path) -> Result<(Self, Vec<Map<String, Value>>)> {
        let mut rows = Vec::new();
        if path.exists() {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            if complete < bytes.len() {
                tracing::warn!(
                    "{}: dropping a torn last line ({} bytes) left by an interrupted run",
                    path.display(),
                    bytes.len() - complete
                );
                let file = OpenOptions::new().write(true).open(path)?;
                file.set_len(complete as u64)?;
            }
            for (n, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice::<Value>(line) {
                    Ok(Value::Object(row)) => rows.push(row),
                    _ => bail!("{}:{}: not a JSON object", path.display(), n + 1),
                }
            }
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok((
            Self {
                file,
                path: path.to_path_buf(),
            },
            rows,
        ))
    }

    /// Appends one row and hands it to the kernel at once.
    pub fn append(&mut self, row: &Map<String, Value>) -> Result<()> {
        let mut line = serde_json::to_vec(row)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// The ids of `rows` (field `id`).
pub fn ids(rows: &[Map<String, Value>]) -> impl Iterator<Item = &str> {
    rows.iter()
        .filter_map(|r| r.get("id").and_then(Value::as_str))
}

/// Runs `work` on the items on `concurrency` threads and hands each result to `done`, on the
/// calling thread, in completion order. When `done` returns false no new item is started (those
/// in flight still finish and are handed over).
pub fn run_pool<T, R>(
    concurrency: usize,
    items: impl Iterator<Item = T> + Send,
    work: impl Fn(&T) -> R + Sync,
    mut done: impl FnMut(T, R) -> Result<bool>,
) -> Result<()>
where
    T: Send,
    R: Send,
{
    let items = Mutex::new(items);
    let stop = AtomicBool::new(false);
    // A rendezvous channel: a worker takes its next item only after its result is handed
    // over, so stopping leaves at most about two items per worker unstarted-but-done.
    let (sender, receiver) = mpsc::sync_channel::<(T, R)>(0);
    std::thread::scope(|scope| {
        for _ in 0..concurrency.max(1) {
            let sender = sender.clone();
            let (items, stop, work) = (&items, &stop, &work);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(item) = items.lock().map(|mut i| i.next()).ok().flatten() else {
                        break;
                    };
                    let result = work(&item);
                    if sender.send((item, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sender);
        let mut outcome = Ok(());
        for (item, result) in receiver {
            if outcome.is_err() {
                continue;
            }
            match done(item, result) {
                Ok(true) => {}
                Ok(false) => stop.store(true, Ordering::Relaxed),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    outcome = Err(e);
                }
            }
        }
        outcome
    })
}

/// `(id, row)` for every input row; rows without an `id` get `<file stem>:<line>`.
pub fn read_prompts(path: &Path) -> Result<Vec<(String, Map<String, Value>)>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let bytes = crate::data_files::read_jsonl_input(
        std::io::BufReader::new(file),
        &path.display().to_string(),
    )?;
    let stem = path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let mut rows = Vec::new();
    let mut ids = HashSet::new();
    let parsed = harmaug_core::jsonl::parse_jsonl(&bytes)
        .map_err(|e| anyhow::anyhow!("{}:{}: {}", path.display(), e.line, e.message))?;
    for harmaug_core::jsonl::Row {
        line, fields: row, ..
    } in parsed
    {
        let id = match row.get("id") {
            Some(Value::String(id)) => id.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => format!("{stem}:{line}"),
        };
        if !ids.insert(id.clone()) {
            bail!("{}:{line}: id {id:?} appears twice", path.display());
        }
        rows.push((id, row));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_cut_and_rows_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(
            &path,
            "{\"id\": \"a\"}\n{\"id\": \"b\"}\n{\"id\": \"c\", \"te",
        )
        .unwrap();
        let (mut out, rows) = JsonlOutput::open(&path).unwrap();
        assert_eq!(ids(&rows).collect::<Vec<_>>(), ["a", "b"]);
        let mut row = Map::new();
        row.insert("id".into(), "c".into());
        out.append(&row).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"id\": \"a\"}\n{\"id\": \"b\"}\n{\"id\":\"c\"}\n");
    }

    #[test]
    fn a_broken_row_is_named_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "{\"id\": \"a\"}\n[1]\n").unwrap();
        let error = JsonlOutput::open(&path).err().unwrap();
        assert!(
            format!("{error}").ends_with("out.jsonl:2: not a JSON object"),
            "{error}"
        );
    }

    #[test]
    fn the_pool_runs_every_item_and_stops_when_told() {
        let mut seen = Vec::new();
        run_pool(
            3,
            0..100,
            |&i| i * 2,
            |i, r| {
                assert_eq!(r, i * 2);
                seen.push(i);
                Ok(true)
            },
        )
        .unwrap();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());

        let mut count = 0;
        run_pool(
            2,
            0..1000,
            |&i| i,
            |_, _| {
                count += 1;
                Ok(count < 10)
            },
        )
        .unwrap();
        assert!((10..=14).contains(&count), "{count}");
    }
}
