//! `hf://OWNER/REPO/FILE.gguf`: a GGUF file from the Hugging Face Hub, downloaded once into
//! `~/.cache/harmaug/hub/OWNER/REPO/FILE` (through a `.part` file renamed when complete) and run
//! in process. `HF_ENDPOINT` overrides the Hub's address (mirrors), `HF_TOKEN` authenticates.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// The local path of `spec` (`hf://OWNER/REPO/FILE`), downloading it first if needed.
pub fn fetch(spec: &str) -> Result<PathBuf> {
    let path = spec
        .strip_prefix("hf://")
        .context("expected hf://OWNER/REPO/FILE")?;
    let parts: Vec<&str> = path.splitn(3, '/').collect();
    let [owner, repo, file] = parts.as_slice() else {
        bail!("{spec}: expected hf://OWNER/REPO/FILE");
    };
    if [owner, repo, file]
        .iter()
        .any(|p| p.is_empty() || p.contains(".."))
    {
        bail!("{spec}: expected hf://OWNER/REPO/FILE");
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let local = PathBuf::from(home)
        .join(".cache/harmaug/hub")
        .join(owner)
        .join(repo)
        .join(file);
    if local.is_file() {
        return Ok(local);
    }
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
    let url = format!(
        "{}/{owner}/{repo}/resolve/main/{file}",
        endpoint.trim_end_matches('/')
    );
    tracing::info!("downloading {url} → {}", local.display());
    let mut request = ureq::get(&url);
    if let Ok(token) = std::env::var("HF_TOKEN") {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request.call().with_context(|| format!("GET {url}"))?;
    let length = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bar = crate::progress::bytes_bar(length, file)?;
    let parent = local.parent().context("cache path")?;
    std::fs::create_dir_all(parent)?;
    let partial = local.with_extension("part");
    let mut out = std::fs::File::create(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut body = response.body_mut().with_config().limit(u64::MAX).reader();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = body
            .read(&mut buffer)
            .with_context(|| format!("reading {url}"))?;
        if n == 0 {
            break;
        }
        out.write_all(&buffer[..n])?;
        bar.inc(n as u64);
    }
    out.sync_all()?;
    bar.finish_and_clear();
    if let Some(expected) = length {
        let got = std::fs::metadata(&partial)?.len();
        if got != expected {
            bail!("{url}: got {got} of {expected} bytes; rerun to retry");
        }
    }
    std::fs::rename(&partial, &local)?;
    Ok(local)
}
