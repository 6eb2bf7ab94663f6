//! A kernel's own modules, for its guests: every `.ko` of the kernel's packages
//! (`lib/modules/<release>/`), indexed for `modprobe`, as a read-only disk image
//! (`kernels/<key>/modules.img`, ext2) that each VM of that kernel gets as an
//! NVMe disk. The guest mounts it on the first `modprobe` (vm-images/guest-mounts),
//! so a guest that loads no module pays nothing but the device probe.
//!
//! Why a disk and not the initramfs: the modules of a Debian cloud kernel are 24 MB
//! (1138 files) compressed; unpacked into every guest root they would cost every
//! boot their unpack time. NVMe because Debian's, Ubuntu's and Amazon's cloud
//! kernels build it in (`CONFIG_BLK_DEV_NVME=y`) while virtio-blk is a module,
//! and ext2 because every kernel's ext4 driver reads it (ext4 is built in
//! where NVMe is).
use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

/// The disk image in a kernel's cache entry.
pub const DISK: &str = "modules.img";
/// The modules the guest needs to read the disk, where the kernel has them as
/// modules rather than built in (its NVMe or ext4 driver: RHEL's kernels), in
/// the entry as `boot-modules/<name>.ko` with `boot-modules/order` (load order):
/// the guest root carries them (see `guest_root::with_boot_modules`).
pub const BOOT_MODULES: &str = "boot-modules";
/// What a guest needs to mount the disk: the block driver and the file system.
const DISK_DRIVERS: &[&str] = &["nvme", "ext4"];
/// Every module of the kernel (built in or not), one name a line, `-` read as `_`,
/// in the entry beside the disk: what [`ModulesDisk::lacks`] answers from.
const NAMES: &str = "modules.names";
/// Modules the kernel itself asks for while a guest boots: every mount of the BPF
/// file system calls `request_module("bpf_preload")` (kernel/bpf/inode.c, 5.10 on),
/// whether or not the kernel was configured with it. The guest's modprobe would
/// wait for the modules disk to answer that (0.15 s of 2.4 s on 6.1 under TCG);
/// told that the kernel has no such module (`km.nomod=`), it answers at once.
pub const ASKED_AT_BOOT: &[&str] = &["bpf_preload"];

/// A kernel's modules for its guests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModulesDisk {
    /// The ext2 image of `lib/modules/<release>`.
    pub disk: PathBuf,
    /// [`BOOT_MODULES`], when the kernel needs any.
    pub boot: Option<PathBuf>,
    /// Which of [`ASKED_AT_BOOT`] the kernel has neither built in nor as a module
    /// (empty when unknown: a disk made before the names were kept).
    pub lacks_at_boot: Vec<String>,
}

impl ModulesDisk {
    /// The disk of the kernel cached in `entry`, if it is made.
    pub fn of(entry: &Path) -> Option<Self> {
        let disk = entry.join(DISK);
        let boot = entry.join(BOOT_MODULES);
        let lacks_at_boot = match fs::read_to_string(entry.join(NAMES)) {
            Ok(names) => {
                let have: std::collections::BTreeSet<&str> = names.lines().collect();
                ASKED_AT_BOOT.iter().filter(|m| !have.contains(*m)).map(|m| m.to_string()).collect()
            }
            Err(_) => Vec::new(),
        };
        disk.exists().then(|| Self { disk, boot: boot.join("order").exists().then_some(boot), lacks_at_boot })
    }
}
/// The marker of a kernel whose packages hold no modules (nothing to retry).
const NONE: &str = "modules.none";
/// The NVMe serial (and file system label) the guest finds the disk by.
pub const SERIAL: &str = "km-modules";

/// What a package is, for walking its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageKind {
    Deb,
    Rpm,
    /// An OCI layer (a tar, maybe gzip or zstd compressed).
    Layer,
    /// A directory, as `make modules_install INSTALL_MOD_PATH=DIR` leaves it.
    Dir,
}

/// The modules disk of a tree a user installed (`local: { modules: DIR }`, as
/// `make modules_install INSTALL_MOD_PATH=DIR` leaves it: `DIR/lib/modules/<release>/`),
/// cached as `kernels/modules-<key>/` under a key of every file's path, size and
/// modification time, so rebuilt modules make a new disk. `kernel_release` (from the
/// kernel's image, where it says) must be the tree's release: the guest's modprobe
/// looks in `/lib/modules/$(uname -r)`.
pub fn ensure_dir(cache: &Path, dir: &Path, kernel_release: Option<&str>) -> anyhow::Result<Option<ModulesDisk>> {
    let base = dir.join("lib/modules");
    let mut releases = Vec::new();
    for e in fs::read_dir(&base).with_context(|| {
        format!(
            "local modules {}: no lib/modules/<release>/ inside (give the INSTALL_MOD_PATH of `make modules_install`)",
            dir.display()
        )
    })? {
        let e = e?;
        if e.file_type()?.is_dir() {
            releases.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    let release = match &releases[..] {
        [one] => one.clone(),
        [] => bail!("local modules {}: lib/modules/ holds no <release>/ directory", dir.display()),
        more => bail!(
            "local modules {}: lib/modules/ holds {} releases ({}); give a directory with one",
            dir.display(),
            more.len(),
            more.join(", ")
        ),
    };
    if let Some(k) = kernel_release.filter(|k| *k != release) {
        bail!("local modules {}: they are for {release}, the kernel is {k}; modprobe in the guest looks for /lib/modules/{k}", dir.display());
    }
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for e in regular_files(&base.join(&release))? {
        let m = e.metadata()?;
        let mtime = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        h.update(format!("{}\0{}\0{:?}\0", e.path().display(), m.len(), mtime).as_bytes());
    }
    let entry = cache.join("kernels").join(format!("modules-{}", &hex::encode(h.finalize())[..32]));
    fs::create_dir_all(&entry).with_context(|| format!("creating {}", entry.display()))?;
    ensure(&entry, &release, || Ok(vec![(dir.to_path_buf(), PackageKind::Dir)]))
}

/// The modules disk of the kernel cached in `entry` (`release` its `uname -r`),
/// made from `packages` the first time: `None` when they hold no module.
/// `packages` is called only when the disk is not made yet (it may download).
pub fn ensure(
    entry: &Path,
    release: &str,
    packages: impl FnOnce() -> anyhow::Result<Vec<(PathBuf, PackageKind)>>,
) -> anyhow::Result<Option<ModulesDisk>> {
    if let Some(made) = ModulesDisk::of(entry) {
        return Ok(Some(made));
    }
    let disk = entry.join(DISK);
    if entry.join(NONE).exists() {
        return Ok(None);
    }
    // A run killed while making the disk left its temporaries here.
    crate::images::cache_gc::remove_stale(entry);
    let staging = crate::images::fetch::tmp_path(&entry.join("modules"));
    let made = (|| -> anyhow::Result<bool> {
        let tree = staging.join("lib/modules").join(release);
        let mut n = 0;
        for (pkg, kind) in packages()? {
            n += take_modules(&pkg, kind, release, &tree).with_context(|| format!("reading {}", pkg.display()))?;
        }
        if n == 0 {
            return Ok(false);
        }
        depmod(&staging, release)?;
        fs::write(entry.join(NAMES), module_names(&tree)?)?;
        // Before the disk: a disk without its boot modules would look complete.
        let order = boot_modules(&fs::read_to_string(tree.join("modules.dep"))?, DISK_DRIVERS);
        if !order.is_empty() {
            let dir = staging.join(BOOT_MODULES);
            fs::create_dir_all(&dir)?;
            let mut names = String::new();
            for rel in &order {
                let name = rel.rsplit('/').next().expect("a path");
                fs::copy(tree.join(rel), dir.join(name)).with_context(|| format!("copying {rel}"))?;
                names.push_str(name);
                names.push('\n');
            }
            fs::write(dir.join("order"), names)?;
            let _ = fs::remove_dir_all(entry.join(BOOT_MODULES));
            fs::rename(&dir, entry.join(BOOT_MODULES))?;
        }
        make_disk(&staging.join("lib/modules"), &disk)?;
        Ok(true)
    })();
    let _ = fs::remove_dir_all(&staging);
    match made.with_context(|| format!("making the modules disk of {release}"))? {
        true => Ok(ModulesDisk::of(entry)),
        false => {
            fs::write(entry.join(NONE), "")?;
            Ok(None)
        }
    }
}

/// Copies the modules of `release` in one package into `tree`
/// (`.../lib/modules/<release>`), decompressed (`.ko.xz`, `.ko.zst`, `.ko.gz` to
/// `.ko`: busybox's modprobe reads no zstd, and a plain `.ko` needs no
/// decompressor in the kernel either), with the kernel's `modules.builtin*` and
/// `modules.order`. Returns how many modules it took.
fn take_modules(pkg: &Path, kind: PackageKind, release: &str, tree: &Path) -> anyhow::Result<usize> {
    let mut n = 0;
    each_file(pkg, kind, |path, content| {
        let rel = ["lib/modules/", "usr/lib/modules/"]
            .iter()
            .find_map(|p| path.strip_prefix(p)?.strip_prefix(release)?.strip_prefix('/'));
        let Some(rel) = rel else { return Ok(()) };
        let name = rel.rsplit('/').next().unwrap_or(rel);
        let (plain, reader): (&str, Box<dyn Read + '_>) = if let Some(p) = rel.strip_suffix(".ko.xz") {
            (p, Box::new(liblzma::read::XzDecoder::new(content)))
        } else if let Some(p) = rel.strip_suffix(".ko.zst") {
            (p, Box::new(zstd::stream::read::Decoder::new(content)?))
        } else if let Some(p) = rel.strip_suffix(".ko.gz") {
            (p, Box::new(flate2::read::GzDecoder::new(content)))
        } else if let Some(p) = rel.strip_suffix(".ko") {
            (p, Box::new(content))
        } else if name.starts_with("modules.builtin") || name == "modules.order" {
            let dest = tree.join(rel);
            fs::create_dir_all(tree)?;
            std::io::copy(content, &mut fs::File::create(&dest)?)?;
            return Ok(());
        } else {
            return Ok(());
        };
        let dest = tree.join(format!("{plain}.ko"));
        fs::create_dir_all(dest.parent().expect("a module path has a directory"))?;
        let mut reader = reader;
        std::io::copy(&mut reader, &mut fs::File::create(&dest)?).with_context(|| format!("unpacking {path}"))?;
        n += 1;
        Ok(())
    })?;
    Ok(n)
}

/// The name of every module in `tree` (`lib/modules/<release>`, indexed): those
/// `modules.dep` lists and those `modules.builtin` lists, one a line, `_` for `-`.
fn module_names(tree: &Path) -> anyhow::Result<String> {
    let dep = fs::read_to_string(tree.join("modules.dep")).context("reading modules.dep")?;
    let builtin = fs::read_to_string(tree.join("modules.builtin")).unwrap_or_default();
    let names: std::collections::BTreeSet<String> = dep
        .lines()
        .filter_map(|l| l.split(':').next())
        .chain(builtin.lines())
        .filter_map(|path| path.rsplit('/').next()?.split('.').next())
        .filter(|n| !n.is_empty())
        .map(|n| n.replace('-', "_"))
        .collect();
    Ok(names.into_iter().map(|n| n + "\n").collect())
}

/// The modules (paths as `modules.dep` has them) that `wanted` (module names) need,
/// dependencies first, in the order to load them; a wanted module that is not in
/// `modules.dep` is built in (or absent) and needs nothing.
fn boot_modules(modules_dep: &str, wanted: &[&str]) -> Vec<String> {
    let name = |path: &str| path.rsplit('/').next().unwrap_or(path).trim_end_matches(".ko").replace('-', "_");
    let deps: std::collections::BTreeMap<String, (String, Vec<String>)> = modules_dep
        .lines()
        .filter_map(|l| {
            let (m, d) = l.split_once(':')?;
            Some((name(m), (m.to_string(), d.split_whitespace().map(str::to_string).collect())))
        })
        .collect();
    fn visit(
        m: &str,
        deps: &std::collections::BTreeMap<String, (String, Vec<String>)>,
        name: &dyn Fn(&str) -> String,
        out: &mut Vec<String>,
    ) {
        let Some((path, ds)) = deps.get(m) else { return };
        if out.contains(path) {
            return;
        }
        for d in ds {
            visit(&name(d), deps, name, out);
        }
        if !out.contains(path) {
            out.push(path.clone());
        }
    }
    let mut out = Vec::new();
    for w in wanted {
        visit(w, &deps, &name, &mut out);
    }
    out
}

/// Calls `f` with the path (no leading `./` or `/`) and contents of every regular
/// file of a package: a .deb's data, an RPM's payload, an OCI layer's tar.
pub fn each_file(
    pkg: &Path,
    kind: PackageKind,
    mut f: impl FnMut(&str, &mut dyn Read) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let clean = |p: &str| p.trim_start_matches("./").trim_start_matches('/').to_string();
    let mut walk_tar = |reader: &mut dyn Read| -> anyhow::Result<()> {
        let mut tar = tar::Archive::new(reader);
        for entry in tar.entries()? {
            let mut entry = entry?;
            if entry.header().entry_type().is_file() {
                let path = clean(&entry.path()?.to_string_lossy());
                f(&path, &mut entry)?;
            }
        }
        Ok(())
    };
    match kind {
        PackageKind::Deb => {
            let mut ar = ar::Archive::new(fs::File::open(pkg)?);
            while let Some(entry) = ar.next_entry() {
                let entry = entry?;
                let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
                let mut reader: Box<dyn Read> = match name.as_str() {
                    "data.tar.xz" => Box::new(liblzma::read::XzDecoder::new(entry)),
                    "data.tar.zst" => Box::new(zstd::stream::read::Decoder::new(entry)?),
                    "data.tar.gz" => Box::new(flate2::read::GzDecoder::new(entry)),
                    "data.tar" => Box::new(entry),
                    _ => continue,
                };
                return walk_tar(&mut reader);
            }
            bail!("not a Debian package (no data.tar member)")
        }
        PackageKind::Layer => {
            let mut file = std::io::BufReader::new(fs::File::open(pkg)?);
            let magic = std::io::BufRead::fill_buf(&mut file)?.get(..4).unwrap_or_default().to_vec();
            let mut reader: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
                Box::new(flate2::read::GzDecoder::new(file))
            } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                Box::new(zstd::stream::read::Decoder::new(file)?)
            } else {
                Box::new(file)
            };
            walk_tar(&mut reader)
        }
        PackageKind::Dir => {
            for e in regular_files(pkg)? {
                let rel = e.path().strip_prefix(pkg).expect("walked from pkg").to_string_lossy().into_owned();
                f(&rel, &mut fs::File::open(e.path())?)?;
            }
            Ok(())
        }
        PackageKind::Rpm => {
            let rpm = rpm::Package::open(pkg)?;
            for file in rpm.files()? {
                let file = file?;
                let path = clean(&file.metadata.path().to_string_lossy());
                if let Some(content) = file.content() {
                    f(&path, &mut &content[..])?;
                }
            }
            Ok(())
        }
    }
}

/// `modules.dep`, `modules.alias` and `modules.symbols` for the tree under
/// `root/lib/modules/<release>`, written by busybox's own `depmod` (the host's
/// static busybox, which the guest roots carry anyway): the guest's modprobe is
/// busybox's, so its index is in exactly the format that modprobe reads. It reads
/// the modules' info strings, not their machine code, so an arm64 kernel's
/// modules are indexed on an x86_64 host alike.
fn depmod(root: &Path, release: &str) -> anyhow::Result<()> {
    // busybox depmod takes a release only if it reads as X.Y.Z (else it indexes
    // `uname -r`'s, as for 7.3-cloud-amd64): index the tree under such a name and
    // give it its own back, whatever depmod did.
    let (tree, indexed) = (root.join("lib/modules").join(release), root.join("lib/modules/0.0.0"));
    fs::rename(&tree, &indexed)?;
    let busybox = crate::guest_root::find_busybox();
    let out = busybox.and_then(|b| {
        Command::new(&b)
            .arg("depmod")
            .arg("-b")
            .arg(root)
            .arg("0.0.0")
            .output()
            .with_context(|| format!("running {} depmod", b.display()))
    });
    fs::rename(&indexed, &tree)?;
    let out = out?;
    if !out.status.success() || !tree.join("modules.dep").exists() {
        bail!("busybox depmod failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// An ext2 image of `dir` at `disk` (written under a temporary name, then renamed),
/// made by `mke2fs -d` (e2fsprogs, unprivileged): sized to the files plus a block
/// of slack per file and room for the file system's own tables.
fn make_disk(dir: &Path, disk: &Path) -> anyhow::Result<()> {
    let (mut bytes, mut files) = (0u64, 0u64);
    for e in regular_files(dir)? {
        bytes += e.metadata()?.len();
        files += 1;
    }
    let kib = (bytes + files * 4096) / 1024 * 11 / 10 + 8 * 1024;
    let tmp = crate::images::fetch::tmp_path(disk);
    let mke2fs = find_mke2fs()?;
    let out = Command::new(&mke2fs)
        .args(["-q", "-F", "-t", "ext2", "-m", "0", "-L", SERIAL, "-d"])
        .arg(dir)
        .arg(&tmp)
        .arg(format!("{kib}k"))
        .output()
        .with_context(|| format!("running {}", mke2fs.display()))?;
    if !out.status.success() {
        let _ = fs::remove_file(&tmp);
        bail!("{} failed ({}): {}", mke2fs.display(), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    fs::rename(&tmp, disk).with_context(|| format!("renaming into {}", disk.display()))
}

/// Every regular file under `dir`, in a stable order; symbolic links (`build`,
/// `source` in an installed modules tree) are not followed and not listed.
fn regular_files(dir: &Path) -> anyhow::Result<Vec<walkdir::DirEntry>> {
    let mut files = Vec::new();
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        if e.file_type().is_file() {
            files.push(e);
        }
    }
    Ok(files)
}

/// `mke2fs` from e2fsprogs (Debian: essential), which an unprivileged PATH may
/// not list (`/sbin`).
fn find_mke2fs() -> anyhow::Result<PathBuf> {
    find_e2fsprogs("mke2fs")
}

fn find_e2fsprogs(tool: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.exists())
        .with_context(|| format!("{tool} not found: install e2fsprogs (the guests' modules disk is made with it)"))
}

/// Copies the kernel's modules tree out of its disk into `dest` (as
/// `dest/<release>/...`, with e2fsprogs' debugfs: no mount, no root).
pub fn copy_out(disk: &ModulesDisk, release: &str, dest: &Path) -> anyhow::Result<()> {
    let debugfs = find_e2fsprogs("debugfs")?;
    let out = Command::new(&debugfs)
        .args(["-R", &format!("rdump /{release} \"{}\"", dest.display())])
        .arg(&disk.disk)
        .output()
        .with_context(|| format!("running {}", debugfs.display()))?;
    anyhow::ensure!(
        dest.join(release).join("modules.dep").exists(),
        "debugfs could not copy {release}'s modules out of {}: {}",
        disk.disk.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// What a guest saved for `exec --snapshot` needs to read its disks, which are
/// virtio-blk there (NVMe does not migrate): the virtio PCI transport and block
/// driver, and ext4 for the modules disk, where the kernel has them as modules.
const SNAPSHOT_DRIVERS: &[&str] = &["virtio_pci", "virtio_blk", "ext4"];

/// The boot modules of a snapshot guest ([`SNAPSHOT_DRIVERS`] with their
/// dependencies, a [`BOOT_MODULES`]-style directory `snapshot-modules/` beside the
/// disk, taken out of the disk image with e2fsprogs' `debugfs` once), or `None`
/// when the kernel has no virtio_blk at all.
pub fn snapshot_boot_modules(disk: &ModulesDisk, release: &str) -> anyhow::Result<Option<PathBuf>> {
    let entry = disk.disk.parent().context("a modules disk in a directory")?;
    let (dir, none) = (entry.join("snapshot-modules"), entry.join("snapshot-modules.none"));
    if dir.join("order").exists() {
        return Ok(Some(dir));
    }
    if none.exists() {
        return Ok(None);
    }
    let debugfs = find_e2fsprogs("debugfs")?;
    let run = |request: String| -> anyhow::Result<std::process::Output> {
        Command::new(&debugfs)
            .args(["-R", &request])
            .arg(&disk.disk)
            .output()
            .with_context(|| format!("running {}", debugfs.display()))
    };
    let cat = |file: &str| -> anyhow::Result<String> {
        Ok(String::from_utf8_lossy(&run(format!("cat /{release}/{file}"))?.stdout).into_owned())
    };
    let dep = cat("modules.dep")?;
    let builtin = cat("modules.builtin")?;
    let order = boot_modules(&dep, SNAPSHOT_DRIVERS);
    if !order.iter().any(|p| p.ends_with("/virtio_blk.ko")) && !builtin.lines().any(|l| l.ends_with("/virtio_blk.ko")) {
        fs::write(&none, "")?;
        return Ok(None);
    }
    let staging = crate::images::fetch::tmp_path(&dir);
    fs::create_dir_all(&staging)?;
    let made = (|| -> anyhow::Result<()> {
        let mut names = String::new();
        for rel in &order {
            let name = rel.rsplit('/').next().expect("a path");
            let out = run(format!("dump /{release}/{rel} \"{}\"", staging.join(name).display()))?;
            anyhow::ensure!(
                staging.join(name).exists(),
                "debugfs could not take {rel} out of {}: {}",
                disk.disk.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            names.push_str(name);
            names.push('\n');
        }
        fs::write(staging.join("order"), names)?;
        let _ = fs::remove_dir_all(&dir);
        fs::rename(&staging, &dir)?;
        Ok(())
    })();
    if made.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    made.with_context(|| format!("taking the snapshot guest's boot modules out of {}", disk.disk.display()))?;
    Ok(Some(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A .deb with `files`, made with the real dpkg-deb.
    fn deb(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
        let root = dir.join("pkg");
        for (p, data) in files {
            let f = root.join(p);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(f, data).unwrap();
        }
        fs::create_dir_all(root.join("DEBIAN")).unwrap();
        fs::write(
            root.join("DEBIAN/control"),
            "Package: t\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n",
        )
        .unwrap();
        let out = dir.join("t.deb");
        let st = Command::new("dpkg-deb").args(["-Zxz", "--build"]).arg(&root).arg(&out).output().unwrap();
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
        out
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        liblzma::read::XzEncoder::new(data, 6).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn modules_of_the_release_only_decompressed() {
        let dir = std::env::temp_dir().join(format!("km-modules-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let pkg = deb(
            &dir,
            &[
                ("lib/modules/6.1.0-t/kernel/net/a.ko.xz", &xz(b"module a")),
                ("lib/modules/6.1.0-t/kernel/b.ko", b"module b"),
                ("lib/modules/6.1.0-t/modules.builtin", b"kernel/c.ko\n"),
                ("lib/modules/6.1.0-t/vmlinuz", b"not a module"),
                ("lib/modules/5.10.0-other/kernel/d.ko", b"another kernel's"),
                ("boot/vmlinuz-6.1.0-t", b"image"),
            ],
        );
        let tree = dir.join("tree");
        assert_eq!(take_modules(&pkg, PackageKind::Deb, "6.1.0-t", &tree).unwrap(), 2);
        assert_eq!(fs::read(tree.join("kernel/net/a.ko")).unwrap(), b"module a");
        assert_eq!(fs::read(tree.join("kernel/b.ko")).unwrap(), b"module b");
        assert!(tree.join("modules.builtin").exists());
        assert!(!tree.join("vmlinuz").exists());
        assert!(!tree.join("kernel/d.ko").exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn boot_modules_come_with_their_dependencies_first() {
        let dep = "kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko\n\
                   kernel/drivers/nvme/host/nvme-core.ko:\n\
                   kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko kernel/lib/crc16.ko\n\
                   kernel/fs/jbd2/jbd2.ko: kernel/lib/crc16.ko\n\
                   kernel/fs/mbcache.ko:\nkernel/lib/crc16.ko:\nkernel/net/veth.ko:\n";
        assert_eq!(
            boot_modules(dep, DISK_DRIVERS),
            [
                "kernel/drivers/nvme/host/nvme-core.ko",
                "kernel/drivers/nvme/host/nvme.ko",
                "kernel/lib/crc16.ko",
                "kernel/fs/jbd2/jbd2.ko",
                "kernel/fs/mbcache.ko",
                "kernel/fs/ext4/ext4.ko",
            ]
        );
        // Debian's cloud kernels build both in: nothing to carry.
        assert!(boot_modules("kernel/net/veth.ko:\n", DISK_DRIVERS).is_empty());
    }

    #[test]
    fn module_names_come_from_the_index_and_the_built_in_list() {
        let dir = std::env::temp_dir().join(format!("km-module-names-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("modules.dep"),
            "kernel/net/sched/sch_ingress.ko:\nkernel/kernel/bpf/preload/bpf_preload.ko:\n",
        )
        .unwrap();
        fs::write(dir.join("modules.builtin"), "kernel/drivers/nvme/host/nvme-core.ko\n").unwrap();
        assert_eq!(module_names(&dir).unwrap(), "bpf_preload\nnvme_core\nsch_ingress\n");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_local_tree_becomes_a_disk_once_and_must_match_the_kernel() {
        let dir = std::env::temp_dir().join(format!("km-modules-dir-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let tree = dir.join("install/lib/modules/6.1.0-t/kernel/net");
        fs::create_dir_all(&tree).unwrap();
        fs::write(tree.join("a.ko"), b"\0name=a\0depends=b\0vermagic=6.1.0-t\0").unwrap();
        fs::write(tree.join("b.ko"), b"\0name=b\0depends=\0vermagic=6.1.0-t\0").unwrap();
        std::os::unix::fs::symlink("/nowhere", dir.join("install/lib/modules/6.1.0-t/build")).unwrap();
        let cache = dir.join("cache");
        let install = dir.join("install");
        let disk = ensure_dir(&cache, &install, Some("6.1.0-t")).unwrap().unwrap();
        assert!(fs::metadata(&disk.disk).unwrap().len() > 0);
        assert_eq!(disk.boot, None);
        // The kernel asks for bpf_preload at every bpffs mount; this one has no such module.
        assert_eq!(disk.lacks_at_boot, ["bpf_preload"]);
        assert_eq!(ensure_dir(&cache, &install, None).unwrap().unwrap(), disk, "cached");
        let err = ensure_dir(&cache, &install, Some("6.2.0")).unwrap_err().to_string();
        assert!(err.contains("for 6.1.0-t, the kernel is 6.2.0"), "{err}");
        let err = ensure_dir(&cache, &dir, None).unwrap_err();
        assert!(format!("{err:#}").contains("INSTALL_MOD_PATH"), "{err:#}");
        let _ = fs::remove_dir_all(&dir);
    }
}
