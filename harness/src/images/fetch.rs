//! Downloads that are verified before use and written atomically.
use std::{
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use sha2::{Digest, Sha256};

/// One HTTP agent for the process (connection reuse), with timeouts so a dead
/// network fails instead of hanging.
pub fn agent() -> ureq::Agent {
    static AGENT: std::sync::OnceLock<ureq::Agent> = std::sync::OnceLock::new();
    AGENT
        .get_or_init(|| {
            ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(20))
                .timeout_read(Duration::from_secs(60))
                .build()
        })
        .clone()
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: not found on the mirror (HTTP 404); the pinned package {package} may have been removed: run `kernel-matrix lock --update`")]
    NotFound { url: String, package: String },
    #[error("{url}: sha256 mismatch: expected {expected}, got {actual} ({size} bytes); the download was discarded")]
    HashMismatch { url: String, expected: String, actual: String, size: u64 },
    #[error("{url}: {message}")]
    Other { url: String, message: String },
}

/// Downloads `url` into `dest` if it is not already there with the right hash.
/// The file only appears at `dest` after its sha256 matched.
pub fn fetch_verified(url: &str, package: &str, sha256: &str, dest: &Path, mut progress: impl FnMut(u64)) -> Result<(), FetchError> {
    if dest.exists() {
        if let Ok(actual) = sha256_file(dest) {
            if actual.eq_ignore_ascii_case(sha256) {
                return Ok(());
            }
        }
        // A cached file that no longer matches (tampered, truncated): fetch again.
        let _ = fs::remove_file(dest);
    }
    let other = |message: String| FetchError::Other { url: url.to_string(), message };
    let resp = match agent().get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(404, _)) => {
            return Err(FetchError::NotFound { url: url.into(), package: package.into() })
        }
        // ureq's message repeats the URL; ours already starts with it.
        Err(e) => return Err(other(e.to_string().replace(&format!("{url}: "), ""))),
    };
    let tmp = tmp_path(dest);
    let result = (|| -> Result<(String, u64), FetchError> {
        let mut out = fs::File::create(&tmp).map_err(|e| other(format!("creating {}: {e}", tmp.display())))?;
        let mut reader = resp.into_reader();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(|e| other(format!("reading: {e}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| other(format!("writing {}: {e}", tmp.display())))?;
            total += n as u64;
            progress(total);
        }
        out.sync_all().map_err(|e| other(format!("sync: {e}")))?;
        Ok((hex::encode(hasher.finalize()), total))
    })();
    match result {
        Ok((actual, _)) if actual.eq_ignore_ascii_case(sha256) => {
            fs::rename(&tmp, dest).map_err(|e| other(format!("renaming into {}: {e}", dest.display())))
        }
        Ok((actual, size)) => {
            let _ = fs::remove_file(&tmp);
            Err(FetchError::HashMismatch { url: url.into(), expected: sha256.into(), actual, size })
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// A unique sibling path, so concurrent runs never write the same temporary file.
pub fn tmp_path(dest: &Path) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dest.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Writes through a temporary file and a rename: readers see all or nothing.
pub fn write_atomic(dest: &Path, data: &[u8]) -> anyhow::Result<()> {
    write_atomic_mode(dest, data, None)
}

/// [`write_atomic`] with the file's mode set before it appears under its name (an
/// executable is never seen half-written or not yet executable).
pub fn write_atomic_mode(dest: &Path, data: &[u8], mode: Option<u32>) -> anyhow::Result<()> {
    if let Some(dir) = dest.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = tmp_path(dest);
    fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", tmp.display()))?;
    }
    fs::rename(&tmp, dest).with_context(|| format!("renaming into {}", dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tampered_cache_file_is_not_trusted() {
        let dir = std::env::temp_dir().join(format!("km-fetch-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("f");
        fs::write(&dest, b"tampered").unwrap();
        // Unreachable URL: the stale file must be removed and the fetch must fail, not succeed.
        let err = fetch_verified("http://127.0.0.1:9/x.deb", "pkg", &"0".repeat(64), &dest, |_| {}).unwrap_err();
        assert!(matches!(err, FetchError::Other { .. }), "{err}");
        assert!(!dest.exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
