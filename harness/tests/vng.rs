//! `runner: vng` for real: `exec` through virtme-ng (PyPI 1.42, which set-up
//! installs with the Rust virtiofsd, kmod and udev it needs) in Debian's 6.1 and
//! 6.12 cloud kernels (cached, QEMU/TCG here): each kernel's own output, stderr
//! kept apart, the program's exit status; `runner: vng` on a kernel entry; a vng
//! that is not there named with how to install it.
use std::{path::PathBuf, process::Command};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

fn scratch(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("vng-{tag}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(c: &mut Command) -> (Option<i32>, String, String) {
    let o = c.output().unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn exec_through_virtme_ng_keeps_each_kernels_output_and_status() {
    let dir = scratch("exec");
    let script = "uname -r; echo to-stderr >&2; pwd; exit 3";
    let (code, out, err) = run(Command::new(env!("CARGO_BIN_EXE_kernel-matrix"))
        .arg("-c")
        .arg(workspace().join("kernels.yaml"))
        .env("KM_RUN_DIR", dir.join("runs"))
        .env("KM_RUNNER", "vng")
        .current_dir(&dir)
        .args(["exec", "-k", "6.1", "-k", "6.12", "--json", "results.json", "--", "/bin/sh", "-c", script]));
    eprintln!("{err}");
    assert_eq!(code, Some(1), "stdout: {out}\nstderr: {err}");
    for (kernel, release) in [("6.1", "6.1.0-50-cloud-amd64"), ("6.12", "6.12.117+deb12-cloud-amd64")] {
        assert!(out.contains(&format!("[{kernel}] {release}\n")), "{kernel}: {out}");
        // The host's root, in the host's working directory.
        assert!(out.contains(&format!("[{kernel}] {}\n", dir.canonicalize().unwrap().display())), "{out}");
        assert!(err.contains(&format!("[{kernel}] to-stderr\n")), "{kernel}: {err}");
        let row = err.lines().find(|l| l.starts_with(&format!("| {kernel} |"))).unwrap_or_else(|| panic!("{err}"));
        assert!(row.contains("vng 1.42/") && row.contains("exit 3"), "{row}");
    }
    let results = std::fs::read_to_string(dir.join("results.json")).unwrap();
    assert!(results.contains("6.12::exec") || results.contains("\"6.12\""), "{results}");

    // `runner: vng` on one entry of a matrix file (the same lock).
    let cfg = dir.join("vng.yaml");
    std::fs::write(
        &cfg,
        std::fs::read_to_string(workspace().join("kernels.yaml"))
            .unwrap()
            .replace("  - name: \"6.1\"\n", "  - name: \"6.1\"\n    runner: vng\n")
            .replace("examples/", &format!("{}/examples/", workspace().display())),
    )
    .unwrap();
    std::fs::copy(workspace().join("kernels.lock"), dir.join("vng.lock")).unwrap();
    let (code, out, err) = run(Command::new(env!("CARGO_BIN_EXE_kernel-matrix"))
        .arg("-c")
        .arg(&cfg)
        .env("KM_RUN_DIR", dir.join("runs"))
        .env("KM_EXEC_TIMES", "1")
        .current_dir(&dir)
        .args(["exec", "-k", "6.1", "--", "/bin/sh", "-c", "uname -r; exit 4"]));
    assert_eq!(code, Some(4), "stdout: {out}\nstderr: {err}");
    assert_eq!(out, "6.1.0-50-cloud-amd64\n");

    // No virtme-ng: the reason and how to install it, nothing booted.
    let (code, _, err) = run(Command::new(env!("CARGO_BIN_EXE_kernel-matrix"))
        .arg("-c")
        .arg(workspace().join("kernels.yaml"))
        .env("KM_RUN_DIR", dir.join("runs"))
        .env("KM_RUNNER", "vng")
        .env("KM_VNG", dir.join("no-vng"))
        .current_dir(&dir)
        .args(["exec", "-k", "6.1", "--", "/bin/true"]));
    assert_ne!(code, Some(0));
    assert!(err.contains("is not installed") && err.contains("pip install 'virtme-ng>=1.42'"), "{err}");
}
