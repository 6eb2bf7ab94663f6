//! The guest agent binary (crate `km-agent`), built optimised and without debug
//! info by harness/build.rs and embedded here, so a `kernel-matrix` binary carries
//! the exact agent it was built with, wherever it is installed.
use std::path::{Path, PathBuf};

use anyhow::Context as _;

static AGENT: &[u8] = include_bytes!(env!("KM_AGENT_BIN"));

/// The agent as a file, `cache/agents/<sha256 prefix>/km-agent`, written once
/// (atomically) per agent build. `KM_AGENT` names another binary instead (a
/// developer's own build of `agent/`).
pub fn path(cache: &Path) -> anyhow::Result<PathBuf> {
    if let Some(p) = &crate::settings::try_get()?.agent {
        return Ok(p.clone());
    }
    use sha2::Digest as _;
    let digest = hex::encode(sha2::Sha256::digest(AGENT));
    let dest = cache.join("agents").join(&digest[..16]).join("km-agent");
    if !dest.exists() {
        crate::images::fetch::write_atomic_mode(&dest, AGENT, Some(0o755))
            .context("writing the guest agent into the cache")?;
    }
    Ok(dest)
}

/// Size of the embedded agent in bytes.
pub fn size() -> usize {
    AGENT.len()
}
