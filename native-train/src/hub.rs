//! The Hugging Face Hub: model repositories by id (`--model OWNER/NAME[@REVISION]` or
//! `hf://OWNER/NAME[@REVISION]`) and single files (`hf://OWNER/REPO/FILE.gguf`), downloaded
//! into `huggingface_hub`'s own cache layout, so a cache that Python filled is reused and the
//! other way round:
//!
//! ```text
//! $HF_HUB_CACHE/models--OWNER--NAME/blobs/<etag>              the bytes, once per content
//!                                  /refs/<revision>           the commit a branch or tag resolved to
//!                                  /snapshots/<commit>/<file> → ../../blobs/<etag>
//! ```
//!
//! Environment, as `huggingface_hub` reads it: `HF_ENDPOINT` (mirrors), `HF_TOKEN` (else the file
//! `$HF_HOME/token`), `HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE`. Downloads go to
//! `blobs/<etag>.incomplete`, resume with a `Range` request (after a dropped connection, and
//! in a later run after a kill), and are checked against the ETag before they are renamed into
//! place: the SHA-256 of large (LFS) files, the git blob hash of small ones.
//!
//! Written on ureq rather than the `hf-hub` crate, which needs ureq 2 beside our ureq 3 and
//! has neither offline mode, resumable blocking downloads nor hash checks.

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// A model repository and the revision (branch, tag or commit) wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoId {
    pub owner: String,
    pub name: String,
    pub revision: String,
}

impl RepoId {
    /// `OWNER/NAME[@REVISION]`, with or without `hf://`; `None` when `spec` is not shaped like
    /// a repository id (a path such as `./model` or `a/b/c`).
    pub fn parse(spec: &str) -> Option<Self> {
        let spec = spec.strip_prefix("hf://").unwrap_or(spec);
        let (id, revision) = match spec.split_once('@') {
            Some((id, revision)) if !revision.is_empty() => (id, revision),
            Some(_) => return None,
            None => (spec, "main"),
        };
        let (owner, name) = id.split_once('/')?;
        let valid = |part: &str| {
            !part.is_empty()
                && !part.starts_with(['.', '-'])
                && !part.contains("..")
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        let revision_ok = !revision.contains("..") && !revision.starts_with('/');
        (valid(owner) && valid(name) && revision_ok).then(|| Self {
            owner: owner.to_string(),
            name: name.to_string(),
            revision: revision.to_string(),
        })
    }

    fn at(&self, revision: &str) -> Self {
        Self {
            revision: revision.to_string(),
            ..self.clone()
        }
    }

    fn folder(&self) -> String {
        format!("models--{}--{}", self.owner, self.name)
    }
}

impl std::fmt::Display for RepoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)?;
        if self.revision != "main" {
            write!(f, "@{}", self.revision)?;
        }
        Ok(())
    }
}

/// What the Hub says about one file at one revision (the answer to `HEAD …/resolve/…`).
struct RemoteFile {
    commit: String,
    etag: String,
    size: Option<u64>,
    /// Where the bytes are: the resolve URL itself, or the CDN it redirects large files to.
    location: String,
}

/// A Hub client over one endpoint and one cache directory.
pub struct Hub {
    endpoint: String,
    token: Option<String>,
    cache: PathBuf,
    /// Set by HF_HUB_OFFLINE, or once the Hub proved unreachable and the cache answered.
    offline: Cell<bool>,
    /// Redirects are read by hand: the first answer carries the file's metadata.
    agent: ureq::Agent,
}

/// Attempts per download; each one resumes where the last stopped.
const DOWNLOAD_ATTEMPTS: usize = 5;

impl Hub {
    /// The client the environment describes (see the module documentation).
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let home = match var("HF_HOME") {
            Some(home) => PathBuf::from(home),
            None => match var("XDG_CACHE_HOME") {
                Some(xdg) => PathBuf::from(xdg).join("huggingface"),
                None => PathBuf::from(var("HOME").context("HOME is not set")?)
                    .join(".cache/huggingface"),
            },
        };
        let cache = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map_or_else(|| home.join("hub"), PathBuf::from);
        let token = var("HF_TOKEN").or_else(|| {
            let path = var("HF_TOKEN_PATH").map_or_else(|| home.join("token"), PathBuf::from);
            fs::read_to_string(path)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        });
        let offline = var("HF_HUB_OFFLINE")
            .is_some_and(|v| ["1", "true", "yes", "on"].contains(&v.to_lowercase().as_str()));
        let endpoint = var("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".into());
        let agent = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            // A stalled read fails (and the download resumes); a slow but live one does not.
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build()
            .into();
        Ok(Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
            cache,
            offline: Cell::new(offline),
            agent,
        })
    }

    /// The local path of `file` in `repo`, downloaded first unless the cache has it;
    /// `None` when the repository has no such file.
    pub fn file(&self, repo: &RepoId, file: &str) -> Result<Option<PathBuf>> {
        if file.split('/').any(|part| part.is_empty() || part == "..") {
            bail!("{repo}: `{file}` is not a file name");
        }
        if self.offline.get() {
            return self.cached(repo, file).map(Some).with_context(|| {
                format!(
                    "HF_HUB_OFFLINE is set and {repo}'s {file} is not in {}",
                    self.cache.display()
                )
            });
        }
        let remote = match self.metadata(repo, file) {
            Ok(remote) => remote,
            Err(e) => {
                // As huggingface_hub: an unreachable Hub falls back to the cache.
                if let Some(path) = self.cached(repo, file).filter(|_| e.is::<Unreachable>()) {
                    tracing::warn!("{e}; using the cache ({})", path.display());
                    self.offline.set(true);
                    return Ok(Some(path));
                }
                return Err(e);
            }
        };
        let Some(remote) = remote else {
            return Ok(None);
        };
        let folder = self.cache.join(repo.folder());
        let blob = folder.join("blobs").join(&remote.etag);
        if !blob.is_file() {
            self.download(&remote, &blob, &format!("{repo} {file}"))?;
        }
        if repo.revision != remote.commit {
            let refs = folder.join("refs").join(&repo.revision);
            fs::create_dir_all(refs.parent().context("refs path")?)?;
            fs::write(&refs, &remote.commit)
                .with_context(|| format!("writing {}", refs.display()))?;
        }
        let snapshot = folder.join("snapshots").join(&remote.commit).join(file);
        link_blob(&blob, &snapshot)?;
        Ok(Some(snapshot))
    }

    /// `file` at `repo`'s revision as the cache last saw it.
    fn cached(&self, repo: &RepoId, file: &str) -> Option<PathBuf> {
        let folder = self.cache.join(repo.folder());
        let commit = if is_commit(&repo.revision) {
            repo.revision.clone()
        } else {
            fs::read_to_string(folder.join("refs").join(&repo.revision)).ok()?
        };
        let path = folder.join("snapshots").join(commit.trim()).join(file);
        path.is_file().then_some(path)
    }

    /// As huggingface_hub quotes them: the revision whole (`refs/pr/1` → `refs%2Fpr%2F1`), the
    /// file name with its slashes kept.
    fn resolve_url(&self, repo: &RepoId, file: &str) -> String {
        format!(
            "{}/{}/{}/resolve/{}/{}",
            self.endpoint,
            repo.owner,
            repo.name,
            quote(&repo.revision, ""),
            quote(file, "/")
        )
    }

    fn with_auth<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        }
    }

    /// `HEAD …/resolve/REVISION/FILE`: commit, ETag, size and where the bytes are. Relative
    /// redirects (a renamed repository) are followed; an absolute one is the CDN holding a
    /// large file, and its answer already carries the metadata.
    fn metadata(&self, repo: &RepoId, file: &str) -> Result<Option<RemoteFile>> {
        let mut url = self.resolve_url(repo, file);
        for _ in 0..5 {
            let request = self
                .with_auth(self.agent.head(&url))
                .header("Accept-Encoding", "identity");
            let response = request
                .call()
                .map_err(|e| Unreachable(format!("HEAD {url}: {e}")))?;
            let status = response.status().as_u16();
            let header = |name: &str| {
                let value = response.headers().get(name)?.to_str().ok()?;
                Some(value.to_string())
            };
            let location = header("location");
            if (300..400).contains(&status)
                && let Some(next) = location.as_deref().filter(|l| l.starts_with('/'))
            {
                url = format!("{}{next}", self.endpoint);
                continue;
            }
            if !(200..400).contains(&status) {
                return self.refusal(repo, file, status, header("x-error-code"));
            }
            let etag = header("x-linked-etag")
                .or_else(|| header("etag"))
                .map(|e| e.trim_start_matches("W/").trim_matches('"').to_string())
                .filter(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_alphanumeric()))
                .with_context(|| {
                    format!("{url}: no ETag in the answer (is {} a Hub?)", self.endpoint)
                })?;
            let commit = header("x-repo-commit")
                .filter(|c| is_commit(c))
                .with_context(|| {
                    format!(
                        "{url}: no X-Repo-Commit in the answer (is {} a Hub?)",
                        self.endpoint
                    )
                })?;
            let size = header("x-linked-size")
                .or_else(|| header("content-length"))
                .and_then(|s| s.parse().ok());
            return Ok(Some(RemoteFile {
                commit,
                etag,
                size,
                location: location.unwrap_or(url),
            }));
        }
        bail!("{url}: too many redirects")
    }

    /// A refused `HEAD`, as a clear error (or `None` for a file the repository lacks).
    fn refusal(
        &self,
        repo: &RepoId,
        file: &str,
        status: u16,
        code: Option<String>,
    ) -> Result<Option<RemoteFile>> {
        let token_hint = match &self.token {
            Some(_) => "the token in HF_TOKEN was sent but does not give access",
            None => "no token was sent: set HF_TOKEN",
        };
        match (status, code.as_deref()) {
            (404, Some("EntryNotFound")) => Ok(None),
            (404, Some("RevisionNotFound")) => {
                bail!(
                    "{repo}: revision `{}` not found on {}",
                    repo.revision,
                    self.endpoint
                )
            }
            (401 | 403, Some("GatedRepo")) => bail!(
                "{repo} is gated: accept its conditions on the Hub with your account ({token_hint})"
            ),
            (401 | 403 | 404, _) => bail!(
                "{repo}: repository not found on {} (HTTP {status}; if it is private, {token_hint})",
                self.endpoint
            ),
            (429, _) => bail!("{repo}: the Hub is rate-limiting requests (HTTP 429); retry later"),
            _ => bail!("{repo}: HTTP {status} for {file} from {}", self.endpoint),
        }
    }

    /// The bytes of `remote` into `blob`, through `blob.incomplete`, resumed after dropped
    /// connections and checked against the ETag.
    fn download(&self, remote: &RemoteFile, blob: &Path, what: &str) -> Result<()> {
        fs::create_dir_all(blob.parent().context("blob path")?)?;
        let partial = blob.with_extension("incomplete");
        let bar = crate::progress::bytes_bar(remote.size, what)?;
        let mut last_error = None;
        for attempt in 1..=DOWNLOAD_ATTEMPTS {
            match self.download_once(remote, &partial, &bar) {
                Ok(()) => {
                    last_error = None;
                    break;
                }
                Err(e) => {
                    tracing::warn!("{what}: attempt {attempt} of {DOWNLOAD_ATTEMPTS}: {e:#}");
                    last_error = Some(e);
                    std::thread::sleep(Duration::from_millis(250 << attempt.min(5)));
                }
            }
        }
        bar.finish_and_clear();
        if let Some(e) = last_error {
            return Err(e.context(format!(
                "{what}: download failed; {} is kept and a rerun resumes it",
                partial.display()
            )));
        }
        verify(&partial, remote).with_context(|| format!("{what} ({})", remote.location))?;
        fs::rename(&partial, blob)?;
        Ok(())
    }

    /// One `GET`, from where `partial` ends.
    fn download_once(
        &self,
        remote: &RemoteFile,
        partial: &Path,
        bar: &indicatif::ProgressBar,
    ) -> Result<()> {
        let have = fs::metadata(partial).map_or(0, |m| m.len());
        if remote.size.is_some_and(|size| have >= size) && have > 0 {
            return Ok(());
        }
        let mut request = self.agent.get(&remote.location);
        // The token goes to the Hub only, never to the CDN host a large file redirects to.
        if same_host(&remote.location, &self.endpoint) {
            request = self.with_auth(request);
        }
        if have > 0 {
            request = request.header("Range", format!("bytes={have}-"));
        }
        let mut response = request
            .config()
            .max_redirects(5)
            .build()
            .call()
            .with_context(|| format!("GET {}", remote.location))?;
        let status = response.status().as_u16();
        let mut out = match status {
            206 => OpenOptions::new().append(true).open(partial)?,
            200 => File::create(partial)?,
            _ => bail!("GET {}: HTTP {status}", remote.location),
        };
        bar.set_position(if status == 206 { have } else { 0 });
        let mut body = response.body_mut().with_config().limit(u64::MAX).reader();
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = body.read(&mut buffer).context("reading the download")?;
            if n == 0 {
                break;
            }
            out.write_all(&buffer[..n])?;
            bar.inc(n as u64);
        }
        out.sync_all()?;
        let got = fs::metadata(partial)?.len();
        match remote.size {
            Some(size) if got < size => bail!("the connection ended at {got} of {size} bytes"),
            _ => Ok(()),
        }
    }
}

/// The Hub could not be reached at all (as opposed to answering no).
#[derive(Debug)]
struct Unreachable(String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (set HF_HUB_OFFLINE=1 to use the cache only)", self.0)
    }
}

impl std::error::Error for Unreachable {}

/// `text` percent-encoded except for URL-unreserved characters and those in `keep`.
fn quote(text: &str, keep: &str) -> String {
    text.bytes()
        .map(|b| {
            let c = b as char;
            if c.is_ascii_alphanumeric() || "-_.~".contains(c) || keep.contains(c) {
                c.to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Whether two URLs name the same scheme, host and port.
fn same_host(a: &str, b: &str) -> bool {
    let origin = |url: &str| {
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        format!("{scheme}://{}", host.to_ascii_lowercase())
    };
    origin(a) == origin(b)
}

fn is_commit(revision: &str) -> bool {
    revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit())
}

/// The downloaded file against its ETag: a SHA-256 for LFS files, the git blob hash
/// (SHA-1 of `blob <len>\0` + content) for the rest; sizes too when the Hub sent one.
fn verify(path: &Path, remote: &RemoteFile) -> Result<()> {
    let len = fs::metadata(path)?.len();
    if let Some(size) = remote.size
        && len != size
    {
        fs::remove_file(path)?;
        bail!("downloaded {len} bytes where the Hub announced {size}; removed, rerun to retry");
    }
    let digest = match remote.etag.len() {
        64 => hash_file::<Sha256>(path, None)?,
        40 => hash_file::<Sha1>(path, Some(format!("blob {len}\0")))?,
        _ => return Ok(()), // an ETag that is no content hash (a mirror): sizes only
    };
    if !digest.eq_ignore_ascii_case(&remote.etag) {
        fs::remove_file(path)?;
        bail!(
            "content hash {digest} does not match the Hub's ETag {}; removed, rerun to retry",
            remote.etag
        );
    }
    Ok(())
}

fn hash_file<D: Digest>(path: &Path, prefix: Option<String>) -> Result<String> {
    let mut hasher = D::new();
    if let Some(prefix) = prefix {
        hasher.update(prefix.as_bytes());
    }
    let mut file = File::open(path)?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// `snapshot` → `blob` as huggingface_hub links them: a relative symlink (a copy where
/// symlinks are not available).
fn link_blob(blob: &Path, snapshot: &Path) -> Result<()> {
    if snapshot.is_file() {
        return Ok(());
    }
    let parent = snapshot.parent().context("snapshot path")?;
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    #[cfg(unix)]
    {
        // snapshots/<commit>/<file with d slashes> → ../../(../)^d blobs/<etag>
        let cache_folder = blob.parent().and_then(Path::parent).context("blob path")?;
        let depth = snapshot
            .strip_prefix(cache_folder)
            .map(|p| p.components().count() - 1)
            .unwrap_or(2);
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(blob.file_name().context("blob name")?);
        let _ = fs::remove_file(snapshot); // a dangling link from an earlier, removed blob
        std::os::unix::fs::symlink(&target, snapshot)
            .with_context(|| format!("linking {}", snapshot.display()))?;
    }
    #[cfg(not(unix))]
    fs::copy(blob, snapshot).with_context(|| format!("copying to {}", snapshot.display()))?;
    Ok(())
}

/// The files harmaug reads from a model repository: the local snapshot directory that holds
/// them, downloaded first where needed. One commit for all (the revision is resolved by the
/// first file), so a push in between cannot mix two versions.
pub fn model_snapshot(repo: &RepoId) -> Result<PathBuf> {
    let hub = Hub::from_env()?;
    let config = hub
        .file(repo, "config.json")?
        .with_context(|| format!("{repo} has no config.json: not a transformers model"))?;
    let snapshot = config.parent().context("snapshot path")?.to_path_buf();
    if hub.offline.get() {
        // Whatever the snapshot holds is what was downloaded (optional files may be absent).
        return Ok(snapshot);
    }
    let commit = snapshot
        .file_name()
        .and_then(|c| c.to_str())
        .context("snapshot path")?;
    let pinned = repo.at(commit);
    hub.file(&pinned, "tokenizer.json")?.with_context(|| {
        format!("{repo} has no tokenizer.json (a fast tokenizer file is needed; save one with transformers' AutoTokenizer)")
    })?;
    for optional in ["tokenizer_config.json", "manifest.json"] {
        hub.file(&pinned, optional)?;
    }
    if hub.file(&pinned, "model.safetensors")?.is_none() {
        let index = hub.file(&pinned, SHARD_INDEX)?.with_context(|| {
            format!(
                "{repo} has neither model.safetensors nor {SHARD_INDEX} (PyTorch .bin \
                 weights are not read: convert them to safetensors)"
            )
        })?;
        for shard in shard_files(&index)? {
            hub.file(&pinned, &shard)?.with_context(|| {
                format!("{repo}: shard {shard} listed in {SHARD_INDEX} is missing")
            })?;
        }
    }
    Ok(snapshot)
}

/// `hf://OWNER/REPO[@REVISION]/FILE`: one file of a repository (a GGUF model), from the cache
/// or downloaded into it.
#[cfg(feature = "embedded-llm")] // Only the in-process LLM opens such files.
pub fn single_file(spec: &str) -> Result<PathBuf> {
    let usage = || format!("{spec}: expected hf://OWNER/REPO[@REVISION]/FILE");
    let rest = spec.strip_prefix("hf://").with_context(usage)?;
    let mut parts = rest.splitn(3, '/');
    let (Some(owner), Some(name), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
        bail!(usage());
    };
    let repo = RepoId::parse(&format!("{owner}/{name}")).with_context(usage)?;
    Hub::from_env()?
        .file(&repo, file)?
        .with_context(|| format!("{repo} has no file {file}"))
}

/// The index of a checkpoint transformers saved in shards.
pub const SHARD_INDEX: &str = "model.safetensors.index.json";

/// The shard files an index names, each once, in order.
pub fn shard_files(index: &Path) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let text = fs::read_to_string(index).with_context(|| format!("reading {}", index.display()))?;
    let index_json: Index =
        serde_json::from_str(&text).with_context(|| format!("{}", index.display()))?;
    let mut files: Vec<String> = index_json.weight_map.into_values().collect();
    files.sort();
    files.dedup();
    if let Some(bad) = files
        .iter()
        .find(|f| f.contains('/') || f.contains("..") || f.is_empty())
    {
        bail!("{}: shard name `{bad}` is not a file name", index.display());
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::RepoId;

    #[test]
    fn revisions_and_file_names_are_quoted() {
        assert_eq!(super::quote("refs/pr/1", ""), "refs%2Fpr%2F1");
        assert_eq!(
            super::quote("onnx/model q.onnx", "/"),
            "onnx/model%20q.onnx"
        );
    }

    #[test]
    fn the_token_stays_with_the_hub() {
        let hub = "https://huggingface.co";
        assert!(super::same_host(
            "https://huggingface.co/a/b/resolve/main/x",
            hub
        ));
        assert!(!super::same_host(
            "https://cdn-lfs.hf.co/repos/x?sig=1",
            hub
        ));
        assert!(!super::same_host("http://huggingface.co/x", hub));
        assert!(!super::same_host("https://huggingface.co.evil.com/x", hub));
    }

    #[test]
    fn repository_ids_parse_and_paths_do_not() {
        let id = RepoId::parse("hf://owner/name@v1.0").unwrap();
        assert_eq!(
            (id.owner.as_str(), id.name.as_str(), id.revision.as_str()),
            ("owner", "name", "v1.0")
        );
        assert_eq!(RepoId::parse("owner/name").unwrap().revision, "main");
        for path in [
            "./model", "../a", "a/b/c", "/abs/x", "name", "a/", "/b", "a/b@", "a/../b",
        ] {
            assert_eq!(RepoId::parse(path), None, "{path}");
        }
    }
}
