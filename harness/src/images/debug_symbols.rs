//! A kernel's debug symbols, for gdb on a running guest (`--gdb`) and for reading
//! a guest's memory dump (crash, drgn): the `vmlinux` with DWARF that Debian ships
//! in `linux-image-<release>-dbg`, the same build as the pinned image package.
//! Downloaded on request only (280 MB for a 6.1 cloud kernel), verified by the
//! sha256 of the suite's package index, and kept in the kernel's cache entry as
//! `vmlinux-dbg`.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use crate::{
    config::Origin,
    images::{debian, fetch, lock::LockedKernel, mirror::Mirrors},
};

/// The file in a kernel's cache entry.
pub const FILE: &str = "vmlinux-dbg";

/// The debug vmlinux of the pinned kernel `locked` (release `release`), fetched
/// once into `entry`.
pub fn ensure(
    entry: &Path,
    mirrors: &Mirrors,
    locked: &LockedKernel,
    release: &str,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<PathBuf> {
    let dest = entry.join(FILE);
    if dest.exists() {
        return Ok(dest);
    }
    if locked.origin != Origin::Debian {
        bail!(
            "debug symbols come from Debian's -dbg packages; this kernel is from {:?} (a `build:` kernel's own vmlinux has its symbols)",
            locked.origin
        );
    }
    let image = &locked.files[0];
    let name = format!("linux-image-{release}-dbg");
    let base = mirrors.base(locked.origin, &locked.suite, locked.arch())?;
    let index = debian::fetch_index(base, &locked.suite, locked.arch())?;
    let stanza = index
        .iter()
        .find(|s| s.get("Package") == Some(&name) && s.get("Version") == Some(&image.version))
        .with_context(|| format!("no {name} {} in suite {}", image.version, locked.suite))?;
    let file = debian::locked(stanza)?;
    progress(&format!("downloading {} ({:.1} MB)", file.package, file.size as f64 / 1e6));
    let bar = crate::progress::Step::download(&file.package, file.size);
    let deb = crate::images::fetch_deb(
        entry.parent().and_then(Path::parent).context("a kernel entry in the cache")?,
        &format!("{base}/{}", file.path),
        &file.package,
        &file.sha256,
        |n| bar.set_position(n),
    )?;
    bar.done("downloaded, sha256 verified");
    progress(&format!("extracting vmlinux from {}", file.package));
    let wanted = [format!("usr/lib/debug/boot/vmlinux-{release}"), format!("usr/lib/debug/vmlinux-{release}")];
    let (_, vmlinux) = crate::images::file_from_deb(&deb, |p| wanted.iter().any(|w| w == p).then_some(()))?
        .with_context(|| format!("{}: no {}", file.package, wanted[0]))?;
    fetch::write_atomic(&dest, &vmlinux)?;
    // The package was only the carrier: 280 MB less in the cache.
    let _ = std::fs::remove_file(&deb);
    Ok(dest)
}
