//! Kernel images on disk: fetched, verified, extracted and cached.
//!
//! Cache layout (under `KM_CACHE_DIR`, default `$XDG_CACHE_HOME/kernel-matrix`):
//! `debs/<sha256>.deb` and `rpms/<sha256>.rpm` (content-addressed downloads) and `kernels/<sha256>/`
//! (`vmlinuz`, `vmlinux`, `release`), each directory made under a temporary name
//! and renamed into place, so an interrupted run never leaves half an entry.
use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};

pub mod build;
pub mod bzimage;
pub mod cache_gc;
pub mod debian;
pub mod debug_symbols;
pub mod fetch;
pub mod kconfig;
pub mod lock;
pub mod mainline;
pub mod mirror;
pub mod modules;
pub mod nearest;
pub mod oci;
pub mod pin;
pub mod rpm;
pub mod ubuntu;

use crate::config::{LocalSource, Origin};
use lock::{LockedFile, LockedKernel};
use mirror::Mirrors;

/// A bootable kernel.
#[derive(Debug, Clone)]
pub struct KernelImage {
    /// The compressed image (always bootable).
    pub bzimage: PathBuf,
    /// The uncompressed ELF, when extraction worked (faster under TCG).
    pub vmlinux: Option<PathBuf>,
    /// Whether QEMU can boot `vmlinux` itself: an x86 ELF needs the PVH entry
    /// note (CONFIG_PVH); without it QEMU refuses it ("Error loading uncompressed
    /// kernel without PVH ELF Note") and the compressed image boots instead.
    pub vmlinux_boots: bool,
    /// `uname -r` of the kernel, from the package's file names.
    pub release: String,
    /// The kernel's build configuration (`/boot/config-*` of its package), when
    /// the package carries one (Debian's 7.x image packages do not).
    pub config: Option<PathBuf>,
    /// The kernel's own modules as a disk for its guests ([`modules`]), where its
    /// packages have modules.
    pub modules: Option<modules::ModulesDisk>,
}

impl KernelImage {
    /// What to hand to QEMU's `-kernel`.
    pub fn boot_file(&self) -> &Path {
        match &self.vmlinux {
            Some(v) if self.vmlinux_boots => v,
            _ => &self.bzimage,
        }
    }
}

/// The marker a cache entry holds when its `vmlinux` has no PVH note.
const NO_PVH: &str = "vmlinux.no-pvh";

pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = &crate::settings::get().cache_dir {
        return d.clone();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("kernel-matrix")
}

/// A kernel as a package holds it, before it enters the cache.
pub struct Extracted {
    /// `uname -r` of the kernel, as the package names it.
    pub release: String,
    /// The image (a bzImage, or an ELF on arm64).
    pub vmlinuz: Vec<u8>,
    /// Its `.config`, where the package ships one.
    pub config: Option<Vec<u8>>,
}

/// The pinned kernel of `locked` if the cache already holds it extracted (touches
/// nothing, fetches nothing).
pub fn cached_archive(cache: &Path, locked: &LockedKernel) -> anyhow::Result<Option<KernelImage>> {
    read_entry(&entry_dir(cache, locked))
}

/// The cache directory of a pinned kernel (`kernels/<key>`).
pub fn entry_dir(cache: &Path, locked: &LockedKernel) -> PathBuf {
    cache.join("kernels").join(entry_key(locked))
}

/// The cache entry of a pinned kernel: its image package's sha256, or an OCI
/// image's manifest digest (layers may be shared between images).
pub fn entry_key(locked: &LockedKernel) -> &str {
    match &locked.digest {
        Some(d) => d.strip_prefix("sha256:").unwrap_or(d),
        None => &locked.files[0].sha256,
    }
}

/// Makes sure the pinned files of `locked` are in the cache and extracted.
/// Returns without touching the network when they already are.
pub fn ensure_archive(
    cache: &Path,
    mirrors: &Mirrors,
    locked: &LockedKernel,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<KernelImage> {
    let image_file = &locked.files[0];
    let dir = entry_dir(cache, locked);
    // Ubuntu keeps /boot/config-* in the modules package (`explain` wants it).
    let ubuntu_modules =
        locked.files.get(1).filter(|_| matches!(locked.origin, Origin::Ubuntu | Origin::UbuntuMainline));
    if let Some(img) = read_entry(&dir)? {
        // An entry made before the config was taken from there gets it once (the
        // modules package then sits in the cache, config or not).
        let tried = |m: &LockedFile| cache.join("debs").join(format!("{}.deb", m.sha256)).exists();
        match ubuntu_modules.filter(|m| img.config.is_none() && !tried(m)) {
            None => return Ok(img),
            Some(m) => {
                let base = mirrors.base(locked.origin, &locked.suite, locked.arch())?;
                if let Some(c) = config_from_modules(cache, base, m, &mut progress)? {
                    fetch::write_atomic(&dir.join("config"), &c)?;
                }
                return Ok(read_entry(&dir)?.expect("the entry just read"));
            }
        }
    }
    let base = mirrors.base(locked.origin, &locked.suite, locked.arch())?;
    crate::images::cache_gc::remove_stale(&cache.join("kernels"));
    if locked.origin == Origin::Oci {
        // The first layer that holds a kernel (ci-kernels have one layer).
        for file in &locked.files {
            progress(&format!("downloading {} ({:.1} MB)", file.package, file.size as f64 / 1e6));
            let layer = oci::fetch_layer(cache, base, locked, file)?;
            if let Some(k) = oci::kernel_from_layer(&layer)? {
                return make_entry(&dir, &k.release, &k.vmlinuz, k.config.as_deref());
            }
        }
        bail!("{}:{}: no layer holds a kernel (vmlinuz, vmlinuz-*, bzImage)", locked.suite, locked.series);
    }
    // Only the package carrying /boot/vmlinuz is needed to boot; modules packages
    // stay pinned in the lock for the checks that will need them (except Ubuntu's,
    // below, for the config).
    progress(&format!("downloading {} ({:.1} MB)", image_file.package, image_file.size as f64 / 1e6));
    let bar = crate::progress::Step::download(&image_file.package, image_file.size);
    let (deb, _) = fetch_pinned(cache, base, locked, image_file, |n| bar.set_position(n))
        .with_context(|| format!("downloading {} {}", image_file.package, image_file.version))?;
    bar.done("downloaded, sha256 verified");
    progress(&format!("extracting {}", image_file.package));
    let mut k = if locked.origin == Origin::Rpm {
        rpm::kernel_from_rpm(&deb)?
    } else {
        let (release, vmlinuz) = vmlinuz_from_deb(&deb)?;
        Extracted { release, vmlinuz, config: config_of_deb(&deb)? }
    };
    if let (None, Some(m)) = (&k.config, ubuntu_modules) {
        k.config = config_from_modules(cache, base, m, &mut progress)?;
    }
    make_entry(&dir, &k.release, &k.vmlinuz, k.config.as_deref())
}

/// Gives `image` (the pinned kernel of `locked`) its modules disk ([`modules`]),
/// made once from every pinned package of the kernel (the image package holds
/// the modules up to Debian's 6.x; a modules package from 7.x and at Ubuntu's;
/// RPM kernels in `kernel-core`; OCI kernels in their layers).
pub fn ensure_archive_modules(
    cache: &Path,
    mirrors: &Mirrors,
    locked: &LockedKernel,
    image: &mut KernelImage,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<()> {
    let entry = entry_dir(cache, locked);
    image.modules = modules::ensure(&entry, &image.release, || {
        let base = mirrors.base(locked.origin, &locked.suite, locked.arch())?;
        progress(&format!("indexing the kernel's modules for its guests ({} packages)", locked.files.len()));
        locked
            .files
            .iter()
            .map(|f| {
                fetch_pinned(cache, base, locked, f, |_| {})
                    .with_context(|| format!("downloading {} {}", f.package, f.version))
            })
            .collect()
    })?;
    Ok(())
}

/// One pinned file of `locked` from `base`, in the cache and verified, and what
/// kind of package it is: the one place that knows how each origin ships them.
fn fetch_pinned(
    cache: &Path,
    base: &str,
    locked: &LockedKernel,
    f: &LockedFile,
    progress: impl FnMut(u64),
) -> anyhow::Result<(PathBuf, modules::PackageKind)> {
    let url = format!("{base}/{}", f.path);
    Ok(match locked.origin {
        Origin::Oci => (oci::fetch_layer(cache, base, locked, f)?, modules::PackageKind::Layer),
        Origin::Rpm => (fetch_package(cache, "rpm", &url, &f.package, &f.sha256, progress)?, modules::PackageKind::Rpm),
        Origin::Debian | Origin::Ubuntu | Origin::UbuntuMainline => {
            (fetch_deb(cache, &url, &f.package, &f.sha256, progress)?, modules::PackageKind::Deb)
        }
    })
}

/// The `boot/config-*` of a .deb, if it has one.
fn config_of_deb(deb: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    Ok(file_from_deb(deb, |p| p.starts_with("boot/config-").then_some(()))?.map(|(_, c)| c))
}

/// The config in a pinned modules package (Ubuntu's), downloaded and verified.
fn config_from_modules(
    cache: &Path,
    base: &str,
    m: &LockedFile,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<Option<Vec<u8>>> {
    progress(&format!("downloading {} for the kernel's config ({:.1} MB)", m.package, m.size as f64 / 1e6));
    let deb = fetch_deb(cache, &format!("{base}/{}", m.path), &m.package, &m.sha256, |_| {})
        .with_context(|| format!("downloading {} {}", m.package, m.version))?;
    config_of_deb(&deb)
}

/// The package at `url` in the cache as `debs/<sha256>.deb`, downloaded only if it
/// is not there yet with that hash (kernels, and any other pinned package such as
/// the headers the robustness tests build a module against).
pub fn fetch_deb(
    cache: &Path,
    url: &str,
    package: &str,
    sha256: &str,
    progress: impl FnMut(u64),
) -> anyhow::Result<PathBuf> {
    fetch_package(cache, "deb", url, package, sha256, progress)
}

/// The package at `url` in the cache as `<kind>s/<sha256>.<kind>` (`deb`, `rpm`),
/// downloaded only if it is not there yet with that hash.
pub fn fetch_package(
    cache: &Path,
    kind: &str,
    url: &str,
    package: &str,
    sha256: &str,
    progress: impl FnMut(u64),
) -> anyhow::Result<PathBuf> {
    let dir = cache.join(format!("{kind}s"));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::images::cache_gc::remove_stale(&dir);
    let file = dir.join(format!("{sha256}.{kind}"));
    fetch::fetch_verified(url, package, sha256, &file, progress)?;
    Ok(file)
}

/// A user's own kernel: used in place; the ELF is extracted into the cache once.
pub fn ensure_local(
    cache: &Path,
    local: &LocalSource,
    resolve: impl Fn(&Path) -> PathBuf,
) -> anyhow::Result<KernelImage> {
    let path = resolve(&local.kernel);
    let data = fs::read(&path).with_context(|| format!("reading local kernel {}", path.display()))?;
    let mut image = if data.starts_with(b"\x7fELF") {
        if !crate::images::bzimage::has_pvh_note(&data) {
            anyhow::bail!(
                "local kernel {}: this vmlinux has no PVH ELF note (built without CONFIG_PVH), so QEMU cannot boot it directly; give its bzImage (arch/x86/boot/bzImage) instead",
                path.display()
            );
        }
        KernelImage {
            bzimage: path.clone(),
            vmlinux: Some(path),
            vmlinux_boots: true,
            release: "local".into(),
            config: None,
            modules: None,
        }
    } else {
        let sha = fetch::sha256_file(&path)?;
        let dir = cache.join("kernels").join(&sha);
        match read_entry(&dir)? {
            Some(img) => img,
            None => make_entry(&dir, "local", &data, None)?,
        }
    };
    if let Some(m) = &local.modules {
        let release =
            crate::images::bzimage::release(&data).or_else(|| crate::images::bzimage::release_in_banner(&data));
        image.modules = modules::ensure_dir(cache, &resolve(m), release.as_deref())?;
    }
    Ok(image)
}

pub(crate) fn read_entry(dir: &Path) -> anyhow::Result<Option<KernelImage>> {
    let release = dir.join("release");
    if !release.exists() {
        return Ok(None);
    }
    let vmlinux = dir.join("vmlinux");
    Ok(Some(KernelImage {
        bzimage: dir.join("vmlinuz"),
        vmlinux: vmlinux.exists().then_some(vmlinux),
        vmlinux_boots: !dir.join(NO_PVH).exists(),
        release: fs::read_to_string(release)?.trim().to_string(),
        config: Some(dir.join("config")).filter(|c| c.exists()),
        modules: modules::ModulesDisk::of(dir),
    }))
}

pub(crate) fn make_entry(
    dir: &Path,
    release: &str,
    vmlinuz: &[u8],
    config: Option<&[u8]>,
) -> anyhow::Result<KernelImage> {
    let parent = dir.parent().context("cache entry without parent")?;
    fs::create_dir_all(parent)?;
    let tmp = fetch::tmp_path(dir);
    let written = (|| -> std::io::Result<()> {
        fs::create_dir_all(&tmp)?;
        fs::write(tmp.join("vmlinuz"), vmlinuz)?;
        // A kernel whose payload we cannot unpack still boots, only slower.
        if let Ok(elf) = crate::images::bzimage::extract_vmlinux(vmlinuz) {
            // Kept for its BTF (`explain`) even where QEMU cannot boot it.
            if !crate::images::bzimage::has_pvh_note(&elf) {
                fs::write(tmp.join(NO_PVH), "")?;
            }
            fs::write(tmp.join("vmlinux"), elf)?;
        }
        if let Some(c) = config {
            fs::write(tmp.join("config"), c)?;
        }
        fs::write(tmp.join("release"), release)
    })();
    if let Err(e) = written {
        // A full disk (or any write error) leaves nothing behind.
        let _ = fs::remove_dir_all(&tmp);
        return Err(e).with_context(|| format!("extracting the kernel into {}", tmp.display()));
    }
    match fs::rename(&tmp, dir) {
        Ok(()) => {}
        // Another run finished the same entry first: theirs is as good as ours.
        Err(_) if dir.join("release").exists() => {
            let _ = fs::remove_dir_all(&tmp);
        }
        Err(e) => return Err(e).with_context(|| format!("renaming into {}", dir.display())),
    }
    Ok(read_entry(dir)?.expect("entry just written"))
}

/// Reads the kernel image out of a .deb (ar archive holding data.tar.{xz,zst,gz}).
pub fn vmlinuz_from_deb(deb: &Path) -> anyhow::Result<(String, Vec<u8>)> {
    // Up to 6.x: boot/vmlinuz-<release>; from 7.x: usr/lib/modules/<release>/vmlinuz.
    let found = file_from_deb(deb, |path| {
        path.strip_prefix("boot/vmlinuz-").map(str::to_string).or_else(|| {
            let rest = path.strip_prefix("usr/lib/modules/")?;
            Some(rest.strip_suffix("/vmlinuz")?.to_string())
        })
    })?;
    found.with_context(|| {
        format!("{}: no kernel image (boot/vmlinuz-* or usr/lib/modules/*/vmlinuz) inside", deb.display())
    })
}

/// The first file of a .deb's data whose path (without `./`) `pick` accepts,
/// with what `pick` made of the path.
pub fn file_from_deb<T>(deb: &Path, mut pick: impl FnMut(&str) -> Option<T>) -> anyhow::Result<Option<(T, Vec<u8>)>> {
    let f = fs::File::open(deb).with_context(|| format!("opening {}", deb.display()))?;
    let mut ar = ar::Archive::new(f);
    while let Some(entry) = ar.next_entry() {
        let entry = entry?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        if !name.starts_with("data.tar") {
            continue;
        }
        let reader: Box<dyn Read> = match name.as_str() {
            "data.tar.xz" => Box::new(liblzma::read::XzDecoder::new(entry)),
            "data.tar.zst" => Box::new(zstd::stream::read::Decoder::new(entry)?),
            "data.tar.gz" => Box::new(flate2::read::GzDecoder::new(entry)),
            "data.tar" => Box::new(entry),
            other => bail!("{}: unsupported member {other}", deb.display()),
        };
        let mut tar = tar::Archive::new(reader);
        for file in tar.entries()? {
            let mut file = file?;
            let path = file.path()?.into_owned();
            if let Some(t) = pick(path.to_string_lossy().trim_start_matches("./")) {
                let mut data = Vec::new();
                file.read_to_end(&mut data)?;
                return Ok(Some((t, data)));
            }
        }
        return Ok(None);
    }
    bail!("{}: not a Debian package (no data.tar member)", deb.display())
}

/// The static busybox of a foreign architecture's guest root, from its pinned
/// package: `cache/busybox/<sha256 of the package>/busybox`, extracted once.
pub fn ensure_busybox(cache: &Path, mirrors: &Mirrors, locked: &LockedKernel) -> anyhow::Result<PathBuf> {
    let file = locked.busybox.as_ref().with_context(|| {
        format!("no busybox-static for {} pinned in the lock; run `kernel-matrix lock --update`", locked.arch())
    })?;
    let dest = cache.join("busybox").join(&file.sha256).join("busybox");
    if dest.exists() {
        return Ok(dest);
    }
    let suite = locked.busybox_suite.as_ref().unwrap_or(&locked.suite);
    let base = mirrors.base(locked.busybox_origin.unwrap_or(locked.origin), suite, locked.arch())?;
    let deb = fetch_deb(cache, &format!("{base}/{}", file.path), &file.package, &file.sha256, |_| {})
        .with_context(|| format!("downloading {} {}", file.package, file.version))?;
    let (_, data) = file_from_deb(&deb, |p| (p == "bin/busybox").then_some(()))?
        .with_context(|| format!("{}: no bin/busybox inside", deb.display()))?;
    fetch::write_atomic_mode(&dest, &data, Some(0o755))?;
    Ok(dest)
}
