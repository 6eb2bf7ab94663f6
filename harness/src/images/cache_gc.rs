//! Temporaries of dead runs. Cache files are written as `.<name>.tmp-<pid>-<n>`
//! and renamed into place, so a killed run never leaves half an entry under a
//! final name, only a temporary; the next run removes those whose process is gone.
use std::path::Path;

/// The pid in a temporary's name, if `name` is one.
pub fn temporary_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(".tmp-")?;
    tail.split('-').next()?.parse().ok()
}

/// Removes the temporaries in `dir` whose writer is no longer running.
pub fn remove_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = temporary_owner(&name) else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let p = e.path();
        let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(temporary_owner(".abc.deb.tmp-123-4"), Some(123));
        assert_eq!(temporary_owner(".5195b2.tmp-77-0"), Some(77));
        assert_eq!(temporary_owner("abc.deb"), None);
        assert_eq!(temporary_owner(".x.tmp-notapid-1"), None);
    }

    #[test]
    fn only_dead_writers_are_removed() {
        let dir = std::env::temp_dir().join(format!("km-gc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mine = dir.join(format!(".a.tmp-{}-0", std::process::id()));
        let dead = dir.join(".b.tmp-999999999-0");
        let entry = dir.join("c.deb");
        for p in [&mine, &dead, &entry] {
            std::fs::write(p, b"x").unwrap();
        }
        remove_stale(&dir);
        assert!(mine.exists() && entry.exists() && !dead.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
