//! The guest root of `kernel-matrix exec`: busybox, the user's program at its
//! own absolute host path, the shared libraries `ldd` lists for it, the `--file`
//! copies, and `/km-exec/run.sh` (working directory, environment, argv). Built
//! per invocation into the run directory (not cached: test binaries change on
//! every build), and checked before anything boots.
use km_protocol::Arch;
use std::{
    ffi::OsString,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use crate::config::ConfigError;

/// `/init` of an exec guest: vm-images/guest-mounts (proc, sys, devtmpfs, bpffs,
/// debugfs, tracefs, lo up; nothing over /tmp), vm-images/host-root (with
/// `--host-root`: the host's root, chrooted into for the program), then run `/km-exec/run.sh` as
/// root with stdin from /dev/null and stdout/stderr through pipes (FIFOs, so the
/// program sees pipes as under `cargo test`, not a terminal) copied to ttyS2 and
/// ttyS3, which the host streams to its own stdout and stderr. ttyS1 carries
/// `km-exec start <uptime>` and `km-exec status <code>` (the shell's `$?`: the
/// exit code, or 128+N for signal N).
pub const EXEC_INIT: &str = concat!(
    include_str!("../../../vm-images/guest-mounts"),
    include_str!("../../../vm-images/host-root"),
    include_str!("../../../vm-images/exec-init"),
    include_str!("../../../vm-images/exec-run")
);

/// `/init` of the ready guest of `exec --snapshot` ([`crate::vm::snapshot`]):
/// [`EXEC_INIT`] without `--host-root`, with vm-images/snap-wait (say ready, wait
/// for a job on the job disk and unpack it) just before the program runs.
pub const SNAPSHOT_INIT: &str = concat!(
    include_str!("../../../vm-images/guest-mounts"),
    include_str!("../../../vm-images/exec-init"),
    include_str!("../../../vm-images/snap-wait"),
    include_str!("../../../vm-images/exec-run")
);

/// The ready guest's root: busybox and [`SNAPSHOT_INIT`] (cached like the
/// matrix's root; the kernel's boot modules follow as a second archive).
pub fn snapshot_root(cache: &Path, busybox: &Path) -> anyhow::Result<PathBuf> {
    super::cached(cache, SNAPSHOT_INIT, &[("bin/busybox".into(), busybox.to_path_buf(), 0o755)])
}

/// What to run in the guest, checked on the host.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// Absolute host path; the same path in the guest.
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// (host file or directory, absolute guest path).
    pub files: Vec<(PathBuf, String)>,
    pub env: Vec<(String, String)>,
    /// The guest's working directory: the host's, created in the guest.
    pub cwd: PathBuf,
    /// Run in the host's root (vm-images/host-root): the root then holds only
    /// busybox and the run script, and the program is the host's own file.
    pub host_root: bool,
}

fn invalid(path: impl std::fmt::Display, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { path: path.to_string(), message: message.into() }
}

/// `program` as a file: a path (relative to the working directory) when it has a
/// `/`, else looked up on PATH like a shell does; an ELF the guest can run.
pub fn resolve_program(program: &Path, arch: Arch) -> Result<PathBuf, ConfigError> {
    let p = find_program(program)?;
    check_elf(&p, arch)?;
    Ok(p)
}

/// `program` as an absolute path to a file (any kind: with `--host-root` a script
/// runs by its `#!` line as on the host).
pub fn find_program(program: &Path) -> Result<PathBuf, ConfigError> {
    let found = if program.as_os_str().as_bytes().contains(&b'/') {
        Some(program.to_path_buf())
    } else {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(program)).find(|p| p.is_file()))
    };
    let Some(p) = found.filter(|p| p.is_file()) else {
        return Err(invalid(program.display(), "no such program (give a path to a file, or a name on PATH)"));
    };
    // Absolute, but not through symlinks: a name like /usr/bin/python3 (a link to
    // python3.11) is what the program may look at in argv[0].
    std::path::absolute(&p).map_err(|source| ConfigError::Io { path: p.display().to_string(), source })
}

/// A 64-bit little-endian ELF executable or shared object for `arch` (what its
/// guest can run).
pub fn check_elf(p: &Path, arch: Arch) -> Result<(), ConfigError> {
    use std::io::Read as _;
    let mut head = [0u8; 20];
    let n = std::fs::File::open(p)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|source| ConfigError::Io { path: p.display().to_string(), source })?;
    if n < 20 || &head[..4] != b"\x7fELF" {
        let what = if head.starts_with(b"#!") {
            "a script (#!); exec runs ELF programs: give its interpreter as the program"
        } else {
            "not an ELF file"
        };
        return Err(invalid(p.display(), format!("{what}; the guest runs {arch} Linux programs")));
    }
    let machine = u16::from_le_bytes([head[18], head[19]]);
    if head[4] != 2 || head[5] != 1 || machine != arch.elf_machine() {
        return Err(invalid(
            p.display(),
            format!("an ELF for another architecture (class {}, e_machine {machine:#x}); the guest is {arch}", head[4]),
        ));
    }
    if !matches!(u16::from_le_bytes([head[16], head[17]]), 2 | 3) {
        return Err(invalid(p.display(), "an ELF object that is not an executable (ET_EXEC or ET_DYN)"));
    }
    Ok(())
}

/// `HOST:GUEST` (or `HOST`, the same path in the guest); a relative GUEST is
/// relative to the guest's working directory `cwd`.
pub fn parse_file_arg(arg: &str, cwd: &Path) -> Result<(PathBuf, String), ConfigError> {
    let (host, guest) = arg.split_once(':').unwrap_or((arg, arg));
    let host_path = PathBuf::from(host);
    if !host_path.exists() {
        return Err(invalid(host, format!("--file {arg}: no such file or directory")));
    }
    let guest = if guest.starts_with('/') { PathBuf::from(guest) } else { cwd.join(guest) };
    Ok((host_path, guest.to_string_lossy().into_owned()))
}

/// `/km-exec/run.sh`: working directory, environment, then `exec` the program
/// (every word quoted by [`crate::escape::shell_word`]).
pub fn run_script(req: &ExecRequest) -> String {
    use crate::escape::shell_word as quote;
    let cwd = req.cwd.to_string_lossy();
    let mut s = format!("mkdir -p {0} && cd {0} || exit 126\nexport HOME=/root\n", quote(&cwd));
    for (k, v) in &req.env {
        s.push_str(&format!("export {k}={}\n", quote(v)));
    }
    s.push_str("exec");
    for a in std::iter::once(req.program.as_os_str()).chain(req.args.iter().map(|a| a.as_os_str())) {
        s.push(' ');
        s.push_str(&quote(&a.to_string_lossy()));
    }
    s.push('\n');
    s
}

/// Writes the guest root of `req` to `dest` (cpio newc, gzip). A library the
/// program links that `ldd` cannot find is a [`ConfigError`].
pub fn build(req: &ExecRequest, arch: Arch, busybox: &Path, dest: &Path, memory: u64) -> anyhow::Result<()> {
    write(req, arch, Some(busybox), dest, memory)
}

/// The job of a restored `exec --snapshot` guest ([`crate::vm::snapshot`]): what
/// [`build`] writes but busybox, /init and the rest of the base, which the
/// ready guest has; it unpacks this over its root.
pub fn build_job(req: &ExecRequest, arch: Arch, dest: &Path, memory: u64) -> anyhow::Result<()> {
    write(req, arch, None, dest, memory)
}

fn write(req: &ExecRequest, arch: Arch, busybox: Option<&Path>, dest: &Path, memory: u64) -> anyhow::Result<()> {
    let rel = |p: &str| p.trim_start_matches('/').to_string();
    let init = busybox.map(|_| EXEC_INIT);
    let mut files: Vec<(String, PathBuf, u32)> =
        busybox.map(|b| ("bin/busybox".to_string(), b.to_path_buf(), 0o755)).into_iter().collect();
    let script = dest.with_extension("run.sh");
    std::fs::write(&script, run_script(req))?;
    if req.host_root {
        files.push(("km-exec/run.sh".into(), script, 0o755));
        return super::write_archive(init, &files, dest);
    }
    files.push((rel(&req.program.to_string_lossy()), req.program.clone(), 0));
    let unresolved = |e: anyhow::Error| invalid(req.program.display(), format!("unresolved shared library: {e:#}"));
    if arch == Arch::host() {
        for lib in super::shared_libraries(&req.program).map_err(unresolved)? {
            files.push((rel(&lib.to_string_lossy()), lib, 0o755));
        }
    } else {
        for (guest, host) in super::foreign::libraries(&req.program, arch).map_err(unresolved)? {
            files.push((guest, host, 0o755));
        }
    }
    for (host, guest) in &req.files {
        add_tree(host, &rel(guest), &mut files)?;
    }
    check_fits(&files, memory)?;
    files.push(("km-exec/run.sh".into(), script, 0o755));
    // Later entries win in the kernel's unpacking; keep one of each path anyway.
    let mut seen = std::collections::HashSet::new();
    files.reverse();
    files.retain(|(name, _, _)| seen.insert(name.clone()));
    files.reverse();
    super::write_archive(init, &files, dest)
}

/// The share of the guest's memory a packed root may take: the kernel holds the
/// compressed archive and the unpacked files at once, and itself. (Measured: a
/// 900 MB `--file` in a 1 GiB guest panicked it while unpacking.)
const ROOT_SHARE_OF_MEMORY: u64 = 40;

/// A root whose files would not fit the guest's `memory` (bytes) unpacked is
/// refused before anything boots, with the sizes and the ways out.
fn check_fits(files: &[(String, PathBuf, u32)], memory: u64) -> Result<(), ConfigError> {
    let mut total = 0u64;
    let mut largest: Option<(u64, &Path)> = None;
    for (_, src, _) in files {
        let len = std::fs::metadata(src).map(|m| m.len()).unwrap_or(0);
        total += len;
        if largest.is_none_or(|(l, _)| len > l) {
            largest = Some((len, src));
        }
    }
    let limit = memory / 100 * ROOT_SHARE_OF_MEMORY;
    if total <= limit {
        return Ok(());
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let (big, big_path) = largest.expect("a root has files");
    Err(invalid(
        "--file",
        format!(
            "the guest root would hold {:.0} MiB (largest: {} at {:.0} MiB) and a guest of {:.0} MiB unpacks at most {:.0} MiB of it ({ROOT_SHARE_OF_MEMORY}% of its memory): raise memory_mb in kernels.yaml, or use --host-root to share the host's files instead of packing them",
            mib(total),
            big_path.display(),
            mib(big),
            mib(memory),
            mib(limit)
        ),
    ))
}

fn add_tree(host: &Path, guest: &str, files: &mut Vec<(String, PathBuf, u32)>) -> anyhow::Result<()> {
    if host.is_dir() {
        for e in std::fs::read_dir(host)? {
            let e = e?;
            add_tree(&e.path(), &format!("{guest}/{}", e.file_name().to_string_lossy()), files)?;
        }
    } else {
        files.push((guest.to_string(), host.to_path_buf(), 0));
    }
    Ok(())
}

/// Environment variables passed to the guest program without being asked:
/// cargo's (`CARGO_*`, e.g. CARGO_MANIFEST_DIR for tests that read files
/// relative to their crate) and Rust's (`RUST_*`: RUST_BACKTRACE, RUST_LOG,
/// RUST_TEST_THREADS, ...). Others with `--env NAME[=VALUE]`.
pub fn passed_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| (k.starts_with("CARGO_") || k.starts_with("RUST_")) && is_variable_name(k))
        .collect()
}

/// The whole environment of the host (what a shell can export), for a program
/// that runs in the host's root as it would on the host.
pub fn host_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| is_variable_name(k))
        .collect()
}

/// A name `export NAME=...` takes.
pub fn is_variable_name(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_checks() {
        assert!(check_elf(Path::new("/bin/sh"), Arch::X86_64).is_ok() || !Path::new("/bin/sh").exists());
        let dir = std::env::temp_dir().join(format!("km-exec-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("s");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        assert!(check_elf(&script, Arch::X86_64).unwrap_err().to_string().contains("script"));
        let mut arm = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\xb7\0".to_vec();
        arm.resize(64, 0);
        std::fs::write(dir.join("arm"), &arm).unwrap();
        assert!(check_elf(&dir.join("arm"), Arch::X86_64).unwrap_err().to_string().contains("another architecture"));
        assert!(check_elf(&dir.join("arm"), Arch::Arm64).is_ok());
        assert!(resolve_program(Path::new("./does-not-exist"), Arch::X86_64)
            .unwrap_err()
            .to_string()
            .contains("no such program"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn script_quotes_what_needs_it() {
        let req = ExecRequest {
            program: "/t/prog".into(),
            args: vec!["a b".into(), "it's".into()],
            files: vec![],
            env: vec![("RUST_BACKTRACE".into(), "1".into())],
            cwd: "/w d".into(),
            host_root: false,
        };
        // Words the shell takes literally stay bare (`1`, `/t/prog`); the rest is quoted.
        assert_eq!(run_script(&req), "mkdir -p '/w d' && cd '/w d' || exit 126\nexport HOME=/root\nexport RUST_BACKTRACE=1\nexec /t/prog 'a b' 'it'\\''s'\n");
    }
}
