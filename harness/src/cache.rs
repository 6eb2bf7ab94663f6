//! The cache as a whole (`kernel-matrix cache`): what each kind of entry holds
//! and weighs, and pruning. Downloads are content-addressed and derived entries
//! are keyed by their inputs, so nothing is ever overwritten: without pruning the
//! cache only grows (each refreshed lock, each agent build, each guest root).
//!
//! An entry is **kept** when a lock file pins it (a package, layer or busybox by
//! its sha256, an extracted kernel by its key), when it is a `build:` kernel of
//! the matrix file as its source is now (its build tree and tarball too), or when it was used within the age
//! limit; every other entry is **stale**, and `--prune` removes it. "Used" is the
//! newest access, modification or change time of the entry's files, the rule
//! systemd-tmpfiles ages by: reads update access times (at least daily under
//! Linux's default `relatime`), so an entry a run reads stays young without the
//! harness touching anything. Under `noatime` a used entry may look stale; it is
//! then made again on its next use, which costs time, never correctness.
use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;

use crate::images::lock::Lock;

#[derive(clap::Args, Debug, Clone)]
pub struct CacheArgs {
    /// Remove the stale entries (without it, only show what would go).
    #[arg(long)]
    pub prune: bool,
    /// Entries unused for this many days are stale unless a lock pins them.
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    pub older_than: u64,
    /// Lock files whose kernels are kept whatever their age [default: every
    /// `*.lock` beside the matrix file that is a kernel lock].
    #[arg(long = "lock", value_name = "FILE")]
    pub locks: Vec<PathBuf>,
}

/// The kinds of entry, one directory each under the cache, and what they hold.
const KINDS: &[(&str, &str)] = &[
    ("kernels", "extracted kernels (and their modules disks and debug symbols)"),
    ("debs", "Debian and Ubuntu packages"),
    ("rpms", "RPM packages"),
    ("layers", "OCI image layers"),
    ("sources", "kernel source tarballs"),
    ("builds", "kernel build trees"),
    ("busybox", "pinned busybox binaries of foreign architectures"),
    ("agents", "guest agents"),
    ("guest-roots", "guest roots (initramfs)"),
    ("snapshots", "exec --snapshot roots"),
    ("modules", "test kernel modules"),
];

/// Why an entry stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keep {
    /// A kept lock pins it (the lock file's name).
    Pinned(String),
    /// Used within the age limit.
    Recent,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: &'static str,
    pub path: PathBuf,
    pub bytes: u64,
    pub last_used: SystemTime,
    /// `None`: stale.
    pub keep: Option<Keep>,
}

/// The cache keys the kept locks pin, each with the lock that pins it:
/// `debs/<sha>.deb`, `rpms/<sha>.rpm`, `layers/<sha>`, `busybox/<sha>` and
/// `kernels/<key>`, as relative paths.
pub fn pinned(locks: &[(String, Lock)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, lock) in locks {
        for k in lock.kernels.values() {
            let mut add = |p: String| out.push((p, name.clone()));
            add(format!("kernels/{}", crate::images::entry_key(k)));
            for f in &k.files {
                add(format!("debs/{}.deb", f.sha256));
                add(format!("rpms/{}.rpm", f.sha256));
                add(format!("layers/{}", f.sha256));
            }
            if let Some(b) = &k.busybox {
                add(format!("busybox/{}", b.sha256));
                add(format!("debs/{}.deb", b.sha256));
            }
        }
    }
    out
}

/// Every entry of the cache at `dir`, judged against `pinned` and `max_age` at `now`.
pub fn inventory(dir: &Path, pinned: &[(String, String)], max_age: Duration, now: SystemTime) -> Vec<Entry> {
    let mut out = Vec::new();
    for (kind, _) in KINDS {
        let Ok(entries) = std::fs::read_dir(dir.join(kind)) else { continue };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            if crate::images::cache_gc::temporary_owner(&name).is_some() {
                continue; // a run's temporary: cache_gc's, once its writer is gone
            }
            let (bytes, last_used) = weigh(&path);
            let key = format!("{kind}/{name}");
            let keep = match pinned.iter().find(|(p, _)| *p == key) {
                Some((_, lock)) => Some(Keep::Pinned(lock.clone())),
                None if now.duration_since(last_used).unwrap_or_default() < max_age => Some(Keep::Recent),
                None => None,
            };
            out.push(Entry { kind, path, bytes, last_used, keep });
        }
    }
    out
}

/// The bytes under `path` and the newest time any of its files was used.
fn weigh(path: &Path) -> (u64, SystemTime) {
    let (mut bytes, mut newest) = (0, SystemTime::UNIX_EPOCH);
    for e in walkdir::WalkDir::new(path).into_iter().flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_file() {
            bytes += m.len();
        }
        let changed = std::os::unix::fs::MetadataExt::ctime(&m);
        let ctime = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(changed).unwrap_or(0));
        for t in [m.accessed().ok(), m.modified().ok(), Some(ctime)].into_iter().flatten() {
            newest = newest.max(t);
        }
    }
    (bytes, newest)
}

/// The lock files to keep: those named, else every kernel lock beside `config`
/// (the others, `Cargo.lock` say, do not read as one and are passed over).
fn locks(named: &[PathBuf], config: &Path) -> anyhow::Result<Vec<(String, Lock)>> {
    if !named.is_empty() {
        let load = |p: &PathBuf| {
            anyhow::ensure!(p.is_file(), "--lock {}: no such file", p.display());
            Ok((label(p), Lock::load(p).with_context(|| format!("--lock {}", p.display()))?))
        };
        return named.iter().map(load).collect();
    }
    let dir = config.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "lock")).collect())
        .unwrap_or_default();
    found.sort();
    Ok(found.iter().filter_map(|p| Lock::load(p).ok().map(|l| (label(p), l))).collect())
}

/// How the output names a file that pins entries: its name.
fn label(p: &Path) -> String {
    p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GB", b as f64 / f64::from(1u32 << 30)),
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / f64::from(1u32 << 20)),
        b if b >= 1 << 10 => format!("{:.1} kB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// The table of `entries`: per kind, how many and how big, kept and stale.
pub fn table(entries: &[Entry]) -> String {
    let mut out = String::from(
        "| kind | what | entries | size | pinned | used lately | stale |\n|---|---|---|---|---|---|---|\n",
    );
    for (kind, what) in KINDS {
        let of: Vec<&Entry> = entries.iter().filter(|e| e.kind == *kind).collect();
        if of.is_empty() {
            continue;
        }
        let sum = |f: &dyn Fn(&Entry) -> bool| {
            let (n, b) = of.iter().filter(|e| f(e)).fold((0, 0), |(n, b), e| (n + 1, b + e.bytes));
            if n == 0 {
                "-".to_string()
            } else {
                format!("{n} ({})", human(b))
            }
        };
        out.push_str(&format!(
            "| {kind} | {what} | {} | {} | {} | {} | {} |\n",
            of.len(),
            human(of.iter().map(|e| e.bytes).sum()),
            sum(&|e| matches!(e.keep, Some(Keep::Pinned(_)))),
            sum(&|e| e.keep == Some(Keep::Recent)),
            sum(&|e| e.keep.is_none()),
        ));
    }
    out
}

/// `kernel-matrix cache [--prune]`: `config` is the matrix file, whose directory
/// holds the locks to keep by default and whose `build:` kernels are kept.
pub fn command(args: &CacheArgs, cache: &Path, config: &Path) -> anyhow::Result<()> {
    for (kind, _) in KINDS {
        crate::images::cache_gc::remove_stale(&cache.join(kind));
    }
    let locks = locks(&args.locks, config)?;
    let mut pins = pinned(&locks);
    let mut names: Vec<String> = locks.iter().map(|(n, _)| n.clone()).collect();
    // The matrix file's kernels built from source are pinned by it (their keys
    // are their sources' digests and configs, which no lock holds).
    if config.is_file() {
        let cfg = crate::config::MatrixConfig::load(config)?;
        let label = label(config);
        for k in &cfg.kernels {
            if let crate::config::KernelSource::Build(b) = k.source() {
                // A source that cannot be read now (a tree moved, a git server
                // down) leaves its build to the age rule rather than stopping the rest.
                match crate::images::build::cache_entries(b, |p| cfg.resolve_path(p)) {
                    Ok(entries) => pins.extend(entries.into_iter().map(|e| (e, label.clone()))),
                    Err(e) => println!("kernel {}: its build is kept by age only: {e:#}", k.name),
                }
            }
        }
        names.push(label);
    }
    let max_age = Duration::from_secs(args.older_than * 86_400);
    let entries = inventory(cache, &pins, max_age, SystemTime::now());
    let total: u64 = entries.iter().map(|e| e.bytes).sum();
    println!("{}: {} in {} entries", cache.display(), human(total), entries.len());
    print!("{}", table(&entries));
    let pinned_by = if names.is_empty() { "no lock".to_string() } else { names.join(", ") };
    let stale: Vec<&Entry> = entries.iter().filter(|e| e.keep.is_none()).collect();
    let stale_bytes: u64 = stale.iter().map(|e| e.bytes).sum();
    let rule = format!("pinned by none of {pinned_by} and unused for {} days", args.older_than);
    if !args.prune {
        println!(
            "stale: {} entries, {} ({rule}); `kernel-matrix cache --prune` removes them",
            stale.len(),
            human(stale_bytes)
        );
        return Ok(());
    }
    let mut freed = 0;
    for e in &stale {
        let r = if e.path.is_dir() { std::fs::remove_dir_all(&e.path) } else { std::fs::remove_file(&e.path) };
        r.with_context(|| format!("removing {}", e.path.display()))?;
        freed += e.bytes;
    }
    println!("removed {} entries, {} ({rule})", stale.len(), human(freed));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::lock::{LockedFile, LockedKernel};

    fn write(path: &Path, data: &[u8], age: Duration, now: SystemTime) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
        let t = now - age;
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t)).unwrap();
    }

    #[test]
    fn pinned_and_recent_entries_stay_and_the_rest_is_stale() {
        let dir = std::env::temp_dir().join(format!("km-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let day = Duration::from_secs(86_400);
        // A file just written was changed (ctime) now, which no call can set back:
        // judge from 31 days ahead, so only the times set here can make an entry recent.
        let now = SystemTime::now() + 31 * day;
        let (pinned_sha, old_sha) = ("a".repeat(64), "b".repeat(64));
        write(&dir.join(format!("debs/{pinned_sha}.deb")), b"pinned", 60 * day, now);
        write(&dir.join(format!("debs/{old_sha}.deb")), b"superseded", 60 * day, now);
        write(&dir.join(format!("kernels/{pinned_sha}/vmlinuz")), b"kernel", 60 * day, now);
        write(&dir.join("guest-roots/0123.cpio.gz"), b"root", 3 * day, now);
        write(&dir.join(format!("debs/.x.deb.tmp-{}-0", std::process::id())), b"", 60 * day, now);
        write(&dir.join("debs/.y.deb.tmp-999999999-0"), b"tmp", 60 * day, now);
        let file = |sha: &str| LockedFile {
            package: "linux-image".into(),
            version: "1".into(),
            path: "pool/x.deb".into(),
            size: 6,
            sha256: sha.into(),
        };
        let kernel = LockedKernel {
            origin: Default::default(),
            suite: "bookworm".into(),
            series: "6.1".into(),
            flavour: "cloud".into(),
            abi: "6.1.0-50".into(),
            files: vec![file(&pinned_sha)],
            arch: None,
            busybox: None,
            busybox_suite: None,
            busybox_origin: None,
            digest: None,
        };
        let lock = Lock { kernels: [("6.1".to_string(), kernel)].into() };
        let entries = inventory(&dir, &pinned(&[("kernels.lock".into(), lock)]), 30 * day, now);
        let judged: Vec<(String, Option<Keep>)> = entries
            .iter()
            .map(|e| (e.path.strip_prefix(&dir).unwrap().display().to_string(), e.keep.clone()))
            .collect();
        let pin = Some(Keep::Pinned("kernels.lock".into()));
        assert_eq!(
            judged,
            [
                (format!("kernels/{pinned_sha}"), pin.clone()),
                (format!("debs/{pinned_sha}.deb"), pin),
                (format!("debs/{old_sha}.deb"), None),
                ("guest-roots/0123.cpio.gz".to_string(), Some(Keep::Recent)),
            ],
            "temporaries are not entries"
        );
        assert_eq!(entries[0].bytes, 6, "a directory weighs its files");
        let t = table(&entries);
        assert!(t.contains("| debs | Debian and Ubuntu packages | 2 | 16 B"), "{t}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
