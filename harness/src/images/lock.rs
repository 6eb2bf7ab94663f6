//! `kernels.lock`: every archive kernel of the matrix (Debian, Ubuntu, Ubuntu
//! mainline, RPM repositories, OCI images) pinned to exact files by sha256.
//!
//! Written only by `kernel-matrix lock --update` (an explicit step, because sid and
//! experimental move daily); read and enforced by every run.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use km_protocol::Arch;

use crate::config::{ArchiveSource, Origin};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub kernels: BTreeMap<String, LockedKernel>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedKernel {
    /// The archive (absent: Debian, so earlier locks stay valid).
    #[serde(default, skip_serializing_if = "is_debian")]
    pub origin: Origin,
    /// The kernels.yaml source this entry was resolved from; a changed source makes
    /// the entry stale rather than silently wrong.
    pub suite: String,
    pub series: String,
    pub flavour: String,
    pub abi: String,
    pub files: Vec<LockedFile>,
    /// A kernel of another architecture than x86_64 (absent: x86_64, so locks
    /// written before architectures existed stay valid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<Arch>,
    /// A foreign architecture's guest root takes its static busybox from this
    /// package (same suite as the kernel), pinned like the kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busybox: Option<LockedFile>,
    /// The suite `busybox` came from (security suites carry no busybox: their
    /// release's suite does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busybox_suite: Option<String>,
    /// Where the busybox comes from when that is not the kernel's own archive
    /// (kernels of sources without one: Debian's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busybox_origin: Option<Origin>,
    /// An OCI kernel's manifest digest (`sha256:...`): the image as pinned; `files`
    /// are its layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

fn is_debian(o: &Origin) -> bool {
    *o == Origin::Debian
}

impl LockedKernel {
    pub fn arch(&self) -> Arch {
        self.arch.unwrap_or(Arch::X86_64)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedFile {
    pub package: String,
    pub version: String,
    /// Path inside the archive (`pool/...`; for mainline builds `v<version>/<arch>/...`).
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// Why a kernel could not be taken from the lock; callers show it as the trial's failure.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("kernel {0:?} is not in {1}; run `kernel-matrix lock --update`")]
    Missing(String, PathBuf),
    #[error("kernel {0:?} in {1} was resolved from another source ({2}); run `kernel-matrix lock --update`")]
    Stale(String, PathBuf, String),
}

impl Lock {
    pub fn path_for(config: &Path) -> PathBuf {
        config.with_extension("lock")
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        if !path.exists() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_norway::from_str(&text).map_err(|e| {
            let at = e.location().map(|l| format!(":{}:{}", l.line(), l.column())).unwrap_or_default();
            anyhow::anyhow!("{}{at}: {e}", path.display())
        })
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let body = serde_norway::to_string(self)?;
        let text = format!(
            "# Written by `kernel-matrix lock --update`: every archive kernel pinned by sha256.\n# Do not edit by hand.\n{body}"
        );
        crate::images::fetch::write_atomic(path, text.as_bytes())
    }

    pub fn get(&self, name: &str, src: &ArchiveSource, arch: Arch, path: &Path) -> Result<&LockedKernel, LockError> {
        let k = self.kernels.get(name).ok_or_else(|| LockError::Missing(name.into(), path.into()))?;
        if k.origin != src.origin
            || k.suite != src.suite
            || k.series != src.series
            || k.flavour != src.flavour
            || k.arch() != arch
        {
            return Err(LockError::Stale(
                name.into(),
                path.into(),
                format!("{} {} {} {} {}", k.origin, k.suite, k.series, k.flavour, k.arch()),
            ));
        }
        Ok(k)
    }
}
