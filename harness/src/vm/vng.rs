//! `runner: vng` (or `KM_RUNNER=vng`): `exec` boots the kernel through virtme-ng
//! (`vng`, PyPI `virtme-ng`) instead of the harness's own QEMU line, for people
//! whose kernels and habits live there. vng shares the host's root with the guest
//! over virtiofs, as `exec --host-root` does, and runs the command there.
//!
//! What it takes on Debian's cloud kernels, measured with virtme-ng 1.42 (each
//! missing piece is refused here with what to install):
//! - the kernel's modules where vng looks for them, beside the image:
//!   `<dir>/boot/vmlinuz-<release>` and `<dir>/lib/modules/<release>` (vng walks up
//!   from the image to a directory with `lib/modules`), indexed by kmod's depmod
//!   (vng resolves modules with kmod's modprobe, which reads the binary index that
//!   busybox's depmod does not write), and `--force-initramfs`: Debian builds
//!   virtiofs and virtio-pci as modules, which vng can load only from an initramfs;
//!   without it the kernel panics (`VFS: Unable to mount root fs`);
//! - the Rust virtiofsd: vng does not use QEMU's C one and falls back to 9p, which
//!   Debian's kernels do not have;
//! - udev on the host: vng's init finds its script I/O ports through udev's
//!   `/dev/virtio-ports` links (the guest runs the host's udevd); without them it
//!   runs the command on the console, and the exit status is lost (vng exits 255).
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::images::KernelImage;

/// The oldest virtme-ng this was made to work with.
pub const MIN_VERSION: (u32, u32) = (1, 42);

/// The command line's room for the script: vng passes it on the kernel command
/// line (base64), which holds 2048 bytes on x86.
const MAX_SCRIPT: usize = 1024;

/// A usable virtme-ng and what it needs.
#[derive(Debug, Clone)]
pub struct Vng {
    pub bin: PathBuf,
    pub version: String,
    /// A directory with the Rust `virtiofsd`, put first on vng's PATH.
    virtiofsd_dir: PathBuf,
}

/// Where `cargo xtask setup` installs virtme-ng (a venv), under `$HOME`.
pub const SETUP_VENV: &str = ".local/share/kernel-matrix/virtme-ng";

/// `KM_VNG`, else `vng` on PATH, else the one set-up installs, checked with
/// everything it needs.
pub fn find() -> anyhow::Result<Vng> {
    let s = crate::settings::get();
    let installed = std::env::var_os("HOME").map(|h| Path::new(&h).join(SETUP_VENV).join("bin/vng"));
    let bin = s
        .vng
        .clone()
        .or_else(|| which("vng"))
        .or_else(|| installed.filter(|p| p.exists()))
        .unwrap_or_else(|| PathBuf::from("vng"));
    let out = Command::new(&bin).arg("--version").output().map_err(|e| {
        anyhow::anyhow!(
            "virtme-ng ({}) is not installed ({e}): `pip install 'virtme-ng>={}.{}'` (`cargo xtask setup` does), or point KM_VNG at one",
            bin.display(),
            MIN_VERSION.0,
            MIN_VERSION.1
        )
    })?;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let version = said.rsplit(' ').next().unwrap_or_default().to_string();
    match parse_version(&version) {
        Some(v) if v >= MIN_VERSION => {}
        _ => bail!(
            "{} says {said:?}: virtme-ng {}.{} or newer is needed (`pip install --upgrade virtme-ng`)",
            bin.display(),
            MIN_VERSION.0,
            MIN_VERSION.1
        ),
    }
    let virtiofsd = match std::env::var_os("KM_VIRTIOFSD") {
        Some(p) => PathBuf::from(p),
        None => which("virtiofsd").context(
            "virtme-ng needs the Rust virtiofsd (QEMU's C one it does not use): `cargo install virtiofsd` (`cargo xtask setup` does), or point KM_VIRTIOFSD at one",
        )?,
    };
    let virtiofsd_dir = virtiofsd.parent().context("virtiofsd's directory")?.to_path_buf();
    if !["/lib/systemd/systemd-udevd", "/usr/lib/systemd/systemd-udevd"].iter().any(|p| Path::new(p).exists()) {
        bail!("virtme-ng's guest needs the host's udevd to find its I/O ports (else the exit status is lost): install udev");
    }
    if which("depmod").is_none() && !Path::new("/sbin/depmod").exists() {
        bail!("virtme-ng resolves modules with kmod's modprobe and depmod: install kmod");
    }
    Ok(Vng { bin, version, virtiofsd_dir })
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut it = v.split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// The image as vng wants it: `<entry>/vng/boot/vmlinuz-<release>`, with the
/// kernel's modules at `<entry>/vng/lib/modules/<release>` (taken out of its
/// modules disk with e2fsprogs' debugfs, indexed with kmod's depmod), made once.
pub fn kernel_image(image: &KernelImage) -> anyhow::Result<PathBuf> {
    let entry = image.bzimage.parent().context("a kernel in a cache entry")?;
    let dir = entry.join("vng");
    let kimg = dir.join("boot").join(format!("vmlinuz-{}", image.release));
    if kimg.exists() {
        return Ok(kimg);
    }
    let staging = crate::images::fetch::tmp_path(&dir);
    let made = (|| -> anyhow::Result<()> {
        std::fs::create_dir_all(staging.join("boot"))?;
        std::fs::copy(&image.bzimage, staging.join("boot").join(format!("vmlinuz-{}", image.release)))?;
        if let Some(m) = &image.modules {
            let modules = staging.join("lib/modules");
            std::fs::create_dir_all(&modules)?;
            crate::images::modules::copy_out(m, &image.release, &modules)?;
            let depmod = which("depmod").unwrap_or_else(|| PathBuf::from("/sbin/depmod"));
            let out = Command::new(&depmod)
                .arg("-b")
                .arg(&staging)
                .arg(&image.release)
                .output()
                .with_context(|| format!("running {}", depmod.display()))?;
            anyhow::ensure!(out.status.success(), "kmod's depmod: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&staging, &dir)?;
        Ok(())
    })();
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    made.with_context(|| format!("laying out {} for virtme-ng", image.release))?;
    Ok(kimg)
}

/// The vng command that runs `script` (shell words) in `kimg` (from
/// [`kernel_image`]) under `accel`, with `memory_mb` of RAM, in `cwd`.
pub fn command(
    vng: &Vng,
    kimg: &Path,
    script: &str,
    accel: super::accel::Accel,
    memory_mb: u32,
    cwd: &Path,
) -> anyhow::Result<Command> {
    if script.len() > MAX_SCRIPT {
        bail!(
            "the command is {} bytes as a script and virtme-ng passes it on the kernel command line (at most {MAX_SCRIPT} here): put it in a script file",
            script.len()
        );
    }
    let mut c = Command::new(&vng.bin);
    c.arg("-r").arg(kimg);
    if accel == super::accel::Accel::Tcg {
        c.arg("--disable-kvm");
    }
    c.args(["--force-initramfs", "--memory", &format!("{memory_mb}M")]).arg("--cwd").arg(cwd).args(["--exec", script]);
    // vng runs its virtme-run from its own directory (a venv's bin), then finds
    // virtiofsd, modprobe and depmod on PATH.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let own = vng.bin.parent().filter(|d| !d.as_os_str().is_empty()).map(Path::to_path_buf);
    let dirs = own.into_iter().chain([vng.virtiofsd_dir.clone(), PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")]);
    c.env("PATH", std::env::join_paths(dirs.into_iter().chain(std::env::split_paths(&path)))?);
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_numbers() {
        assert_eq!(parse_version("1.42"), Some((1, 42)));
        assert!(parse_version("1.9").unwrap() < MIN_VERSION);
        assert!(parse_version("2.0").unwrap() > MIN_VERSION);
        assert_eq!(parse_version("dev"), None);
    }
}
