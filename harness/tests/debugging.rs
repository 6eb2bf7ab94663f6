//! Debugging a guest kernel for real (6.1 under QEMU/TCG here): the memory dump
//! of a panicked guest (`--crash-dump`) read by `crash` with Debian's debug
//! vmlinux (`fetch --debug-symbols`), which prints the panicking task's stack;
//! and gdb attached through `--gdb` to a running `exec` guest, reading and
//! writing kernel memory by symbol before the guest runs on.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// A project with 6.1 (pinned by the repository's lock), `cmdline` on its kernel line.
fn project(tag: &str, cmdline: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("debugging-{tag}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(workspace().join("kernels.lock"), d.join("kernels.lock")).unwrap();
    std::fs::write(
        d.join("kernels.yaml"),
        format!("kernels:\n  - name: \"6.1\"\n    debian: {{ suite: bookworm, series: \"6.1\" }}\n{cmdline}"),
    )
    .unwrap();
    d
}

fn km(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kernel-matrix"));
    c.arg("-c").arg(dir.join("kernels.yaml")).env("KM_RUN_DIR", dir.join("runs")).current_dir(dir);
    c
}

/// 6.1's debug vmlinux, fetched once for both tests.
fn symbols() -> &'static Path {
    static SYMBOLS: OnceLock<PathBuf> = OnceLock::new();
    SYMBOLS.get_or_init(|| {
        let dir = project("symbols", "");
        let o = km(&dir).args(["fetch", "--debug-symbols", "-k", "6.1"]).output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
        let path = out.lines().find_map(|l| l.strip_prefix("6.1: debug symbols ")).expect("the symbols' path");
        PathBuf::from(path)
    })
}

#[test]
fn a_panicked_guests_memory_dump_shows_the_panicking_stack_in_crash() {
    let sym = symbols();
    let dir = project("crash-dump", "    cmdline: km.action=panic\n");
    let o = km(&dir).args(["--crash-dump", "run"]).output().unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "a panic fails the run\n{out}\n{err}");
    let both = format!("{out}{err}");
    let note = both.lines().find_map(|l| l.strip_prefix("memory dump: ")).unwrap_or_else(|| panic!("{both}"));
    let (vmcore, how) = note.split_once(" (read it: crash ").unwrap_or_else(|| panic!("{note}"));
    assert!(how.starts_with(&sym.display().to_string()), "{note}");
    assert!(Path::new(vmcore).metadata().unwrap().len() > 512 << 20, "a dump of the guest's 1 GB");
    let mut crash = Command::new("crash")
        .args(["-s"])
        .arg(sym)
        .arg(vmcore)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("crash (apt package crash; cargo xtask setup installs it)");
    crash.stdin.take().unwrap().write_all(b"bt\nquit\n").unwrap();
    let o = crash.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(said.contains("sysrq_handle_crash") && said.contains("panic at"), "crash's bt:\n{said}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gdb_attaches_to_a_running_guest_with_its_symbols() {
    let sym = symbols();
    let dir = project("gdb", "");
    // The program waits until the kernel's hostname is "go": gdb writes it.
    let script = r#"echo ready; until read h < /proc/sys/kernel/hostname && [ "$h" = go ]; do sleep 0.2; done; echo "hostname $h, set by gdb""#;
    /// Ends the exec (and so its QEMU) when a failed assertion unwinds.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut reap = Reap(
        km(&dir)
            .args(["--gdb", "exec", "-k", "6.1", "--timeout", "600", "--", "/bin/bash", "-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let exec = &mut reap.0;
    let mut stderr = BufReader::new(exec.stderr.take().unwrap());
    let mut line = String::new();
    let command = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "exec ended without a gdb line");
        if let Some(c) = line.trim().strip_prefix("gdb -ex 'target remote ") {
            break c.to_string();
        }
    };
    let (address, file) = command.split_once("' ").unwrap();
    assert_eq!(file, sym.display().to_string(), "the gdb line names the debug symbols");
    let mut stdout = BufReader::new(exec.stdout.take().unwrap());
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let o = Command::new("gdb")
        .args(["-batch", "-nx", "-ex", &format!("target remote {address}"), "-ex", "print linux_banner"])
        .args([
            "-ex",
            "set var init_uts_ns.name.nodename[0] = 'g'",
            "-ex",
            "set var init_uts_ns.name.nodename[1] = 'o'",
        ])
        .args(["-ex", "set var init_uts_ns.name.nodename[2] = 0", "-ex", "detach"])
        .arg(sym)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("<linux_banner> \"Linux version 6.1."),
        "gdb:\n{said}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "hostname go, set by gdb");
    let status = exec.wait().unwrap();
    assert!(status.success(), "exec after gdb detached: {status}");
    std::fs::remove_dir_all(&dir).unwrap();
}
