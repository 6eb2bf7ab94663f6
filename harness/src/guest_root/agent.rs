//! The guest agent binary (crate `km-agent`), built optimised and without debug
//! info by harness/build.rs and embedded here, so a `kernel-matrix` binary carries
//! the exact agent it was built with, wherever it is installed.
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use km_protocol::Arch;

static AGENT: &[u8] = include_bytes!(env!("KM_AGENT_BIN"));
/// The agent cross-built for arm64 guests; empty when the harness was built
/// without the cross toolchain (harness/build.rs).
static AGENT_ARM64: &[u8] = include_bytes!(env!("KM_AGENT_BIN_ARM64"));

/// The agent as a file, `cache/agents/<sha256 prefix>/km-agent`, written once
/// (atomically) per agent build. `KM_AGENT` names another binary instead (a
/// developer's own build of `agent/`, for guests of the host's architecture).
pub fn path(cache: &Path, arch: Arch) -> anyhow::Result<PathBuf> {
    if arch == Arch::host() {
        if let Some(p) = &crate::settings::try_get()?.agent {
            return Ok(p.clone());
        }
    }
    let bytes = match arch {
        a if a == Arch::host() => AGENT,
        Arch::Arm64 => AGENT_ARM64,
        Arch::X86_64 => &[],
    };
    anyhow::ensure!(
        !bytes.is_empty(),
        "this kernel-matrix was built without a guest agent for {arch} (its build found no cross toolchain: run `cargo xtask setup`, then rebuild)"
    );
    use sha2::Digest as _;
    let digest = hex::encode(sha2::Sha256::digest(bytes));
    let dest = cache.join("agents").join(&digest[..16]).join("km-agent");
    if !dest.exists() {
        crate::images::fetch::write_atomic_mode(&dest, bytes, Some(0o755))
            .context("writing the guest agent into the cache")?;
    }
    Ok(dest)
}

/// Size of the embedded agent in bytes.
pub fn size() -> usize {
    AGENT.len()
}
