//! The guest root: a self-contained initramfs (cpio newc, gzip) with busybox, the
//! agent and the shared libraries it links. It is cached by the hash of what
//! goes in (see [`build_cached`]), so an unchanged root is built once.
pub mod agent;
pub mod exec;
mod foreign;
use std::{
    collections::BTreeSet,
    io::Write,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};
use km_protocol::Arch;

/// `/init`: note when it started (the kernel's clock, for the boot breakdown),
/// mount the pseudo file systems, run the agent with its output on the second
/// serial port, power off. `km.action=` on the kernel command line makes
/// the guest misbehave on purpose, to prove the host survives it; `km.splat=warn|bug|oops`
/// loads `/km_splat.ko` (put there by the robustness tests, vm-images/splat) so
/// the kernel prints a real WARN, BUG or oops, then (if it survives) runs the agent.
/// With `km.hostroot`, vm-images/host-root first lays the host's root at /km-root
/// for `host_root` suites.
pub const INIT: &str = concat!(
    include_str!("../../../vm-images/guest-mounts"),
    include_str!("../../../vm-images/host-root"),
    include_str!("../../../vm-images/init")
);

/// Where every guest /init mounts a file system at boot (vm-images/guest-mounts):
/// a file the run put there would be hidden, so the guest root refuses it.
pub const MOUNTED_OVER: &[&str] = &["proc", "sys", "dev", "lib/modules"];

/// `/sbin/modprobe` of every guest root: busybox's, over the kernel's own modules
/// (mounted from the disk [`crate::images::modules`] makes, on first use).
pub const MODPROBE: &str = include_str!("../../../vm-images/modprobe");

/// The guest root for these inputs in `cache/guest-roots/<key>.cpio.gz`, built
/// only when it is not there yet. The key hashes everything that goes in: the
/// init script, and the path, size and contents of every file (busybox, the
/// agent, its libraries, `extra`), so a changed input makes a new root.
pub fn build_cached(
    cache: &Path,
    arch: Arch,
    agent: &Path,
    busybox: &Path,
    extra: &[(String, PathBuf)],
) -> anyhow::Result<PathBuf> {
    cached(cache, INIT, &contents(arch, agent, busybox, extra)?)
}

/// `/init` of the boot floor: the least a guest can do, note that /init runs
/// (one line on the agent's channel, as the agent's first record would be) and
/// power off. What `kernel-matrix boot-bench` measures the real root against.
pub const FLOOR_INIT: &str = include_str!("../../../vm-images/floor-init");

/// A guest root of busybox alone with [`FLOOR_INIT`] (cached like the real one).
pub fn build_floor(cache: &Path, busybox: &Path) -> anyhow::Result<PathBuf> {
    cached(cache, FLOOR_INIT, &[("bin/busybox".into(), busybox.to_path_buf(), 0o755)])
}

fn cached(cache: &Path, init: &str, files: &[(String, PathBuf, u32)]) -> anyhow::Result<PathBuf> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(init.as_bytes());
    h.update(MODPROBE.as_bytes());
    for (name, src, perm) in files {
        // Streamed: a root may hold files as large as the guest's memory allows.
        let mut f = std::fs::File::open(src).with_context(|| format!("reading {}", src.display()))?;
        h.update(format!("\0{name}\0{perm}\0{}\0", f.metadata()?.len()).as_bytes());
        std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", src.display()))?;
    }
    let dir = cache.join("guest-roots");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dest = dir.join(format!("{}.cpio.gz", &hex::encode(h.finalize())[..32]));
    if !dest.exists() {
        write_archive(Some(init), files, &dest)?;
    }
    Ok(dest)
}

/// Every file of the root as (path inside the guest, host file, mode): `extra`
/// files are (path inside the guest without leading '/', host file).
fn contents(
    arch: Arch,
    agent: &Path,
    busybox: &Path,
    extra: &[(String, PathBuf)],
) -> anyhow::Result<Vec<(String, PathBuf, u32)>> {
    let mut files: Vec<(String, PathBuf, u32)> =
        vec![("bin/busybox".into(), busybox.to_path_buf(), 0o755), ("agent".into(), agent.to_path_buf(), 0o755)];
    // Executables (suites' programs, their libraries) stay executable.
    let mode = |p: &Path| {
        if std::fs::metadata(p).map(|m| m.permissions().mode() & 0o111 != 0).unwrap_or(false) {
            0o755
        } else {
            0o644
        }
    };
    files.extend(extra.iter().map(|(guest, host)| (guest.clone(), host.clone(), mode(host))));
    // The libraries of every program in the root: the agent is linked statically,
    // so the loader and libc come only with a program that needs them (a
    // bpftool the tests bring, say).
    let programs: Vec<PathBuf> =
        files.iter().filter(|(_, p, m)| *m == 0o755 && is_elf(p)).map(|(_, p, _)| p.clone()).collect();
    let mut libs = BTreeSet::new();
    // And libc with its loader, as a real system has them, for programs that
    // probe it (uprobes on /lib/x86_64-linux-gnu/libc.so.6:malloc): the host's,
    // the ones the harness itself links.
    if arch == Arch::host() {
        let exe = std::env::current_exe().context("the harness's own path")?;
        for lib in shared_libraries(&exe)? {
            let name = lib.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with("libc.so") || name.starts_with("ld-linux") {
                libs.insert((lib.to_string_lossy().trim_start_matches('/').to_string(), lib));
            }
        }
    }
    for program in &programs {
        if arch == Arch::host() {
            for lib in shared_libraries(program)? {
                libs.insert((lib.to_string_lossy().trim_start_matches('/').to_string(), lib));
            }
        } else {
            libs.extend(foreign::libraries(program, arch)?);
        }
    }
    files.extend(
        libs.into_iter()
            .filter(|(g, _)| !files.iter().any(|(n, _, _)| n == g))
            .map(|(g, h)| (g, h, 0o755))
            .collect::<Vec<_>>(),
    );
    Ok(files)
}

/// Writes a guest root: with `init`, a whole one (/init, /sbin/modprobe, /etc and
/// the usual directories, then `files`), gzip'd for the kernel to unpack; without,
/// `files` alone (with their directories), uncompressed, for a running guest's
/// busybox cpio to unpack over a root that has the rest (gunzip in an emulated
/// guest costs more than reading the larger archive).
pub(crate) fn write_archive(init: Option<&str>, files: &[(String, PathBuf, u32)], dest: &Path) -> anyhow::Result<()> {
    for (name, _, _) in files {
        if let Some(m) = MOUNTED_OVER.iter().find(|m| name == *m || name.starts_with(&format!("{m}/"))) {
            bail!("/{name}: the guest mounts a file system over /{m}, which would hide it; put it elsewhere");
        }
    }
    // The guest's own /sbin/modprobe (MODPROBE) is not to be replaced either.
    if let Some((name, _, _)) = files.iter().find(|(n, _, _)| n == "sbin/modprobe") {
        bail!("/{name}: every guest root has its own /sbin/modprobe (vm-images/modprobe); put yours elsewhere");
    }
    let mut dirs = BTreeSet::new();
    if init.is_some() {
        for d in
            ["bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "root", "etc", "lib", "lib/modules"]
        {
            dirs.insert(d.to_string());
        }
    }
    for (name, _, _) in files {
        let mut p = Path::new(name).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_string_lossy().into_owned());
            p = d.parent();
        }
    }
    // Written as it is read, to a file renamed into place when whole: the
    // harness holds one file's buffer at a time, whatever the root's size.
    let tmp = dest.with_extension(format!("tmp.{}", std::process::id()));
    let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let file = std::io::BufWriter::new(file);
    let mut out = match init {
        Some(_) => Newc::new(file),
        None => Newc::plain(file),
    };
    let written = (|| -> anyhow::Result<()> {
        for d in &dirs {
            out.entry(d, 0o040755, &[])?;
        }
        if let Some(init) = init {
            out.entry("init", 0o100755, init.as_bytes())?;
            out.entry("sbin/modprobe", 0o100755, MODPROBE.as_bytes())?;
            for (name, data) in ETC {
                out.entry(name, 0o100644, data)?;
            }
        }
        for (name, src, perm) in files {
            let perm = if *perm == 0 { std::fs::metadata(src)?.permissions().mode() & 0o777 } else { *perm };
            out.entry_from(name, 0o100000 | perm, src)?;
        }
        Ok(())
    })();
    let finished = written.and_then(|()| {
        let file = out.finish()?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, dest).with_context(|| format!("writing {}", dest.display()))
    });
    if finished.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    finished
}

/// The small `/etc` a real system has, so that real tools behave in a packed root:
/// one that looks up `/etc/localtime` and fails may loop on its own failed open
/// (seen with a tracing tool), and user and host lookups need passwd, group,
/// hosts and nsswitch.conf. Guests have no network; resolv.conf says so. A
/// `--file` of the same path replaces one (later cpio entries win).
const ETC: &[(&str, &[u8])] = &[
    ("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
    ("etc/group", b"root:x:0:\nnogroup:x:65534:\n"),
    ("etc/hosts", b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
    ("etc/nsswitch.conf", b"passwd: files\ngroup: files\nshadow: files\nhosts: files\n"),
    ("etc/resolv.conf", b"# kernel-matrix guests have no network\n"),
    ("etc/localtime", &UTC_TZIF),
];

/// `/etc/localtime` for UTC: a TZif (version 1) file with no transitions and one
/// local time type, offset 0, named "UTC" (RFC 8536), written out here rather
/// than copied from the host's zoneinfo, which a host may lack.
const UTC_TZIF: [u8; 54] = {
    let mut f = [0u8; 54];
    (f[0], f[1], f[2], f[3]) = (b'T', b'Z', b'i', b'f');
    // Counts at 20..44: isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt.
    f[39] = 1;
    f[43] = 4;
    // ttinfo { utoff 0, isdst 0, desigidx 0 } at 44..50, then "UTC\0".
    (f[50], f[51], f[52]) = (b'U', b'T', b'C');
    f
};

/// A cpio (newc) archive being written to `W`, the initramfs format: gzip'd, or
/// plain.
struct Newc<W: Write> {
    out: Compression<W>,
    ino: u32,
}

enum Compression<W: Write> {
    Gzip(Box<flate2::write::GzEncoder<W>>),
    Plain(W),
}

impl<W: Write> Write for Compression<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Compression::Gzip(w) => w.write(buf),
            Compression::Plain(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Compression::Gzip(w) => w.flush(),
            Compression::Plain(w) => w.flush(),
        }
    }
}

impl<W: Write> Newc<W> {
    fn new(w: W) -> Self {
        Self { out: Compression::Gzip(Box::new(flate2::write::GzEncoder::new(w, flate2::Compression::fast()))), ino: 1 }
    }

    fn plain(w: W) -> Self {
        Self { out: Compression::Plain(w), ino: 1 }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> anyhow::Result<()> {
        self.entry_with(name, mode, data.len() as u64, |w| Ok(w.write_all(data)?))
    }

    /// A file's entry copied from `src` as it is read.
    fn entry_from(&mut self, name: &str, mode: u32, src: &Path) -> anyhow::Result<()> {
        let mut f = std::fs::File::open(src).with_context(|| format!("reading {}", src.display()))?;
        let len = f.metadata()?.len();
        self.entry_with(name, mode, len, |w| {
            let n = std::io::copy(&mut f, w).with_context(|| format!("reading {}", src.display()))?;
            anyhow::ensure!(n == len, "{} changed while it was read", src.display());
            Ok(())
        })
    }

    fn entry_with(
        &mut self,
        name: &str,
        mode: u32,
        len: u64,
        write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let len =
            u32::try_from(len).map_err(|_| anyhow::anyhow!("/{name}: over 4 GiB, more than a cpio entry holds"))?;
        self.ino += 1;
        let b = cpio::newc::Builder::new(name).ino(self.ino).mode(mode).nlink(1);
        let mut w = b.write(&mut self.out, len);
        write(&mut w)?;
        w.finish()?;
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<W> {
        cpio::newc::trailer(&mut self.out)?;
        Ok(match self.out {
            Compression::Gzip(w) => w.finish()?,
            Compression::Plain(w) => w,
        })
    }
}

/// Where a guest finds the modules it needs to mount its kernel's modules disk
/// (vm-images/modprobe loads them in the order of `order`).
const BOOT_MODULES_DIR: &str = "km-boot-modules";

/// `root` followed by a second archive with the kernel's boot modules (`boot`, an
/// [`crate::images::modules::BOOT_MODULES`] directory) under /km-boot-modules: the
/// kernel unpacks concatenated archives one after the other, so one shared root
/// serves every kernel and only the few kernels that need boot modules get a root
/// of their own, `<dir>/guest-roots/<key>.cpio.gz`, made once.
pub fn with_boot_modules(root: &Path, boot: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    use sha2::Digest as _;
    let order =
        std::fs::read_to_string(boot.join("order")).with_context(|| format!("reading {}/order", boot.display()))?;
    let mut overlay = Newc::new(Vec::new());
    overlay.entry(BOOT_MODULES_DIR, 0o040755, &[])?;
    overlay.entry(&format!("{BOOT_MODULES_DIR}/order"), 0o100644, order.as_bytes())?;
    for name in order.lines() {
        overlay.entry_from(&format!("{BOOT_MODULES_DIR}/{name}"), 0o100644, &boot.join(name))?;
    }
    let overlay = overlay.finish()?;
    let mut h = sha2::Sha256::new();
    h.update(root.to_string_lossy().as_bytes());
    h.update(&overlay);
    let dest = dir.join("guest-roots").join(format!("{}.cpio.gz", &hex::encode(h.finalize())[..32]));
    if !dest.exists() {
        let mut data = std::fs::read(root).with_context(|| format!("reading {}", root.display()))?;
        data.extend_from_slice(&overlay);
        crate::images::fetch::write_atomic(&dest, &data)?;
    }
    Ok(dest)
}

/// An ELF file (by its magic).
fn is_elf(p: &Path) -> bool {
    use std::io::Read as _;
    let mut magic = [0u8; 4];
    std::fs::File::open(p).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == *b"\x7fELF"
}

/// The dynamic loader and libraries `ldd` lists for `bin` (none for static binaries).
pub fn shared_libraries(bin: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(bin).output().context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        } else if line.contains("not found") {
            bail!("{}: {}", bin.display(), line.trim());
        }
    }
    Ok(libs)
}

/// A statically linked busybox: `KM_BUSYBOX`, else `busybox` on PATH.
pub fn find_busybox() -> anyhow::Result<PathBuf> {
    if let Some(p) = &crate::settings::try_get()?.busybox {
        return Ok(p.clone());
    }
    for dir in ["/bin", "/usr/bin", "/sbin", "/usr/sbin"] {
        let p = Path::new(dir).join("busybox");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("busybox not found: install busybox-static (the guest root needs a static busybox)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_utc_localtime_is_one_glibc_reads() {
        let f = std::env::temp_dir().join(format!("km-utc-{}", std::process::id()));
        std::fs::write(&f, UTC_TZIF).unwrap();
        // glibc's own reader: a file it cannot parse gives no zone name.
        let out = Command::new("date").arg("+%Z %z").env("TZ", format!(":{}", f.display())).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "UTC +0000\n");
        let _ = std::fs::remove_file(f);
    }

    #[test]
    fn boot_modules_follow_the_root_as_a_second_archive() {
        let dir = std::env::temp_dir().join(format!("km-boot-modules-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let boot = dir.join("boot-modules");
        std::fs::create_dir_all(&boot).unwrap();
        std::fs::write(boot.join("nvme-core.ko"), b"core module").unwrap();
        std::fs::write(boot.join("nvme.ko"), b"nvme module").unwrap();
        std::fs::write(boot.join("order"), "nvme-core.ko\nnvme.ko\n").unwrap();
        let root = dir.join("root.cpio.gz");
        write_archive(Some("#!/bin/sh\n"), &[], &root).unwrap();
        let out = with_boot_modules(&root, &boot, &dir).unwrap();
        assert_eq!(with_boot_modules(&root, &boot, &dir).unwrap(), out, "made once");
        let data = std::fs::read(&out).unwrap();
        assert!(data.starts_with(&std::fs::read(&root).unwrap()), "the shared root comes first, unchanged");
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&data[..]), &mut all).unwrap();
        let text = String::from_utf8_lossy(&all);
        for want in ["sbin/modprobe", "km-boot-modules/order", "km-boot-modules/nvme.ko", "nvme module", "core module"]
        {
            assert!(text.contains(want), "{want} missing");
        }
        assert_eq!(text.matches("TRAILER!!!").count(), 2, "two archives, each ended");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
