//! The one atomic file write of kernel-matrix: a temporary sibling, then a rename,
//! so a reader (another run, a CI step, a crash's leftovers) sees the old file or
//! the whole new one, never a part.
//!
//! Here, in the crate with the fewest dependencies, so the BMF files written here
//! and everything the harness writes (locks, guest roots, agents, reports) share it;
//! the harness re-exports it as `images::fetch::write_atomic`.
use std::{
    fs,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::Context as _;

/// A sibling of `dest` no other writer uses: `.<name>.tmp-<pid>-<n>` (`n` counts
/// within the process, so threads and concurrent runs never share one).
pub fn tmp_path(dest: &Path) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dest.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Writes `data` to `dest` through a temporary file and a rename: readers see all
/// or nothing. Creates the missing parent directories; replaces an existing file.
pub fn write_atomic(dest: &Path, data: &[u8]) -> anyhow::Result<()> {
    write_atomic_mode(dest, data, None)
}

/// [`write_atomic`] with the file's mode set before it appears under its name (an
/// executable is never seen half-written or not yet executable). `None` leaves the
/// mode a new file gets (the umask's).
pub fn write_atomic_mode(dest: &Path, data: &[u8], mode: Option<u32>) -> anyhow::Result<()> {
    if let Some(dir) = dest.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = tmp_path(dest);
    fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", tmp.display()))?;
    }
    fs::rename(&tmp, dest).with_context(|| format!("renaming into {}", dest.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn writes_whole_files_by_rename_with_the_mode_first() {
        let dir = std::env::temp_dir().join(format!("km-atomic-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        // Missing parents are created; the file has the data.
        let f = dir.join("a/b/f.json");
        write_atomic(&f, b"one").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"one");
        // An existing file is replaced (a new inode: a reader holding the old one
        // keeps reading the old contents whole).
        let before = fs::File::open(&f).unwrap();
        write_atomic(&f, b"two, longer").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"two, longer");
        assert_eq!(std::io::read_to_string(before).unwrap(), "one");
        // The mode variant sets the mode, over an existing file too.
        let x = dir.join("agent");
        write_atomic_mode(&x, b"#!", Some(0o755)).unwrap();
        assert_eq!(fs::metadata(&x).unwrap().permissions().mode() & 0o777, 0o755);
        write_atomic_mode(&x, b"#!x", Some(0o700)).unwrap();
        assert_eq!(fs::metadata(&x).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(fs::read(&x).unwrap(), b"#!x");
        // No temporary file is left behind.
        let names = |d: &Path| -> Vec<String> {
            let mut v: Vec<String> =
                fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            v.sort();
            v
        };
        assert_eq!(names(&dir), ["a", "agent"]);
        assert_eq!(names(&dir.join("a/b")), ["f.json"]);
        // A destination that cannot be written is an error naming it.
        let e = write_atomic(&dir.join("agent/under-a-file"), b"").unwrap_err();
        assert!(format!("{e:#}").contains("agent"), "{e:#}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temporary_paths_are_hidden_siblings_never_reused() {
        let dest = Path::new("/d/out.json");
        let (a, b) = (tmp_path(dest), tmp_path(dest));
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/d")));
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(&format!(".out.json.tmp-{}-", std::process::id())), "{name}");
    }
}
