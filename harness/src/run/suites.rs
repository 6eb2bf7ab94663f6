//! `suites:` of kernels.yaml resolved on the host before anything boots: the
//! program found (one `*` in its file name picks the newest match), checked to be
//! an x86-64 ELF with resolvable libraries, a libtest suite's tests listed with
//! `--list --format terse`, and the files the guest root needs (none for a
//! `host_root` suite, which runs in the host's own root: any program, no ELF check).
use std::path::{Path, PathBuf};

use km_protocol::suites::{GuestSuite, SuiteFormat};

use crate::config::{ConfigError, MatrixConfig, SuiteSpec};

#[derive(Debug, Clone)]
pub struct Suite {
    pub guest: GuestSuite,
    /// (path inside the guest without leading '/', host file).
    pub files: Vec<(String, PathBuf)>,
}

fn invalid(cfg: &MatrixConfig, s: &SuiteSpec, message: String) -> ConfigError {
    ConfigError::Invalid { path: cfg.path.display().to_string(), message: format!("suite {:?}: {message}", s.name) }
}

/// The program of `pattern` (relative to the config): itself, or with a glob in
/// its file name (`*`, `?`: `crate::glob`) the newest executable file that matches.
fn find_program(cfg: &MatrixConfig, s: &SuiteSpec) -> Result<PathBuf, ConfigError> {
    let p = cfg.resolve_path(Path::new(&s.command[0]));
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !name.contains('*') {
        if !p.is_file() {
            return Err(invalid(cfg, s, format!("program {} does not exist", p.display())));
        }
        return Ok(p);
    }
    use std::os::unix::fs::PermissionsExt as _;
    let dir = p.parent().unwrap_or(Path::new("."));
    let newest = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| crate::glob::matches(&name, &e.file_name().to_string_lossy()))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            (m.is_file() && m.permissions().mode() & 0o111 != 0).then(|| (m.modified().ok(), e.path()))
        })
        .max();
    newest.map(|(_, p)| p).ok_or_else(|| {
        invalid(
            cfg,
            s,
            format!("no executable file matches {} (build it first, e.g. `cargo test --no-run`)", p.display()),
        )
    })
}

pub fn resolve(cfg: &MatrixConfig, s: &SuiteSpec) -> Result<Suite, ConfigError> {
    let program = find_program(cfg, s)?
        .canonicalize()
        .map_err(|source| ConfigError::Io { path: s.command[0].clone(), source })?;
    if s.host_root && !s.files.is_empty() {
        return Err(invalid(cfg, s, "with host_root the guest sees the host's files already; drop files:".into()));
    }
    // In the host's root any program runs (a script, an interpreter) as on the host.
    if !s.host_root {
        crate::guest_root::exec::check_elf(&program, km_protocol::Arch::host())
            .map_err(|e| invalid(cfg, s, e.to_string()))?;
    }
    let cwd = cfg
        .resolve_path(Path::new("."))
        .canonicalize()
        .map_err(|source| ConfigError::Io { path: cfg.path.display().to_string(), source })?;
    let rel = |p: &Path| p.to_string_lossy().trim_start_matches('/').to_string();
    let mut files = Vec::new();
    if !s.host_root {
        files.push((rel(&program), program.clone()));
        let libs = crate::guest_root::shared_libraries(&program)
            .map_err(|e| invalid(cfg, s, format!("unresolved shared library: {e:#}")))?;
        files.extend(libs.into_iter().map(|l| (rel(&l), l)));
    }
    for f in &s.files {
        let (host, guest) = f.split_once(':').unwrap_or((f, f));
        let host = cfg.resolve_path(Path::new(host));
        if !host.exists() {
            return Err(invalid(cfg, s, format!("file {} does not exist", host.display())));
        }
        let guest = if guest.starts_with('/') { PathBuf::from(guest) } else { cwd.join(guest) };
        add_tree(&host, &rel(&guest), &mut files);
    }
    let tests = match s.format {
        SuiteFormat::ExitStatus => Vec::new(),
        SuiteFormat::Libtest => list_tests(cfg, s, &program, &cwd)?,
    };
    let mut argv = vec![program.to_string_lossy().into_owned()];
    argv.extend(s.command[1..].iter().cloned());
    let guest = GuestSuite {
        name: s.name.clone(),
        argv,
        env: s.env.clone(),
        cwd: cwd.to_string_lossy().into_owned(),
        format: s.format,
        needs: s.needs.clone(),
        tests,
        host_root: s.host_root,
    };
    Ok(Suite { guest, files })
}

fn add_tree(host: &Path, guest: &str, files: &mut Vec<(String, PathBuf)>) {
    if host.is_dir() {
        for e in std::fs::read_dir(host).into_iter().flatten().flatten() {
            add_tree(&e.path(), &format!("{guest}/{}", e.file_name().to_string_lossy()), files);
        }
    } else {
        files.push((guest.to_string(), host.to_path_buf()));
    }
}

/// The suite's tests, as libtest lists them on the host (filters in `command`
/// apply, like `cargo test NAME`).
fn list_tests(cfg: &MatrixConfig, s: &SuiteSpec, program: &Path, cwd: &Path) -> Result<Vec<String>, ConfigError> {
    let out = std::process::Command::new(program)
        .args(&s.command[1..])
        .args(["--list", "--format", "terse"])
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| invalid(cfg, s, format!("running {} --list: {e}", program.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match km_protocol::suites::parse_list(&stdout) {
        Some(tests) if out.status.success() && !tests.is_empty() => Ok(tests),
        Some(_) if out.status.success() && stdout.trim().is_empty() => Err(invalid(
            cfg,
            s,
            format!("`{} --list --format terse` listed no tests: not a libtest binary, or its filters match nothing. For other programs use `format: exit-status`.", program.display()),
        )),
        _ => Err(invalid(
            cfg,
            s,
            format!(
                "`{} --list --format terse` did not print libtest's test list (exit {}); is it a Rust test binary? For other programs use `format: exit-status`.\n{}{}",
                program.display(),
                out.status,
                stdout.lines().take(5).collect::<Vec<_>>().join("\n"),
                String::from_utf8_lossy(&out.stderr).lines().take(5).collect::<Vec<_>>().join("\n")
            ),
        )),
    }
}
