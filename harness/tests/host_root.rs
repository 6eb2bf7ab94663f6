//! `kernel-matrix exec` across kernels and with `--host-root`, for real (cached
//! Debian kernels, QEMU/TCG here): a shell script, a Python script and bpftrace
//! one-liners (a kprobe and a tracepoint) run from the host's own root in 5.10,
//! 6.1, 6.12 and 7.x in one command, each line tagged by its kernel, with the
//! results as JSON and JUnit; the packed root's /etc; a kernel × status table
//! with one failing kernel; a root too large for the guest refused before
//! anything boots; `--timeout` ending a hanging program with 124.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// A project directory under /tmp whose name has a space (where users put them).
fn project(tag: &str) -> PathBuf {
    let d = PathBuf::from(format!("/tmp/km host root {tag} {}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn km(dir: &Path, config: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kernel-matrix"));
    c.arg("-c").arg(workspace().join(config)).env("KM_RUN_DIR", dir.join("runs")).current_dir(dir);
    c
}

fn run(c: &mut Command) -> (Option<i32>, String, String) {
    let o = c.output().unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

const KERNELS: [&str; 5] = ["5.10", "6.1", "6.12", "7.2", "7.3-rc"];

#[test]
fn the_hosts_own_scripts_python_and_bpftrace_run_in_every_kernel_at_once() {
    let dir = project("tools");
    let marker = format!("/tmp/km-host-root-marker-{}", std::process::id());
    std::fs::write(
        dir.join("probe.sh"),
        format!(
            "#!/bin/sh\n# Writes where the host would be changed if the guest could write it.\necho guest > {marker} && echo guest > written-here && cat {marker} written-here | tr '\\n' ' ' && echo \"script in $(uname -r)\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(dir.join("probe.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.join("probe.py"),
        "import os, sys\nprint('python', sys.version.split()[0], 'in', os.uname().release)\n",
    )
    .unwrap();
    let script = "./probe.sh && /usr/bin/python3 probe.py && bpftrace -e 'kprobe:vfs_read /comm == \"cat\"/ { @reads = count(); } tracepoint:syscalls:sys_enter_openat /comm == \"cat\"/ { @opens = count(); }' -c '/bin/cat /etc/os-release'";
    let t = Instant::now();
    let mut c = km(&dir, "kernels.yaml");
    c.args(["exec", "--host-root", "--json", "results.json", "--junit", "results.xml"]);
    for k in KERNELS {
        c.args(["-k", k]);
    }
    let (code, out, err) = run(c.args(["--", "/bin/sh", "-c", script]));
    eprintln!("--host-root across {} kernels: {:.1}s\n{err}", KERNELS.len(), t.elapsed().as_secs_f64());
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    for k in KERNELS {
        let lines: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix(&format!("[{k}] "))).collect();
        let has = |want: &str| lines.iter().any(|l| l.contains(want));
        assert!(has("guest guest script in "), "{k}: the script wrote in the guest:\n{out}");
        assert!(has("python 3.") && lines.iter().any(|l| l.starts_with("python") && l.contains(" in ")), "{k}:\n{out}");
        assert!(has("PRETTY_NAME="), "{k}: cat ran under bpftrace:\n{out}");
        for map in ["@reads: ", "@opens: "] {
            let n: u64 = lines
                .iter()
                .find_map(|l| l.strip_prefix(map))
                .unwrap_or_else(|| panic!("{k}: no {map} in\n{out}"))
                .trim()
                .parse()
                .unwrap();
            assert!(n > 0, "{k}: {map}{n}: the probe never fired");
        }
        // Each kernel's own release, as its guest saw it.
        let release = lines.iter().find_map(|l| l.strip_prefix("guest guest script in ")).unwrap();
        assert!(release.starts_with(&k[..1]), "{k}: {release}");
    }
    assert!(!Path::new(&marker).exists(), "the guest wrote the host's /tmp");
    assert!(!dir.join("written-here").exists(), "the guest wrote the host's working directory");
    assert!(err.contains("5 of 5 kernels exited 0"), "{err}");

    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    let kernels = results["kernels"].as_array().unwrap();
    assert_eq!(kernels.len(), KERNELS.len());
    for k in kernels {
        assert_eq!(k["cells"][0]["trial"], "exec");
        assert_eq!(k["cells"][0]["verdict"], "pass", "{k}");
        assert_eq!(k["accel"], "tcg");
    }
    let junit = quick_junit::Report::deserialize_from_str(&std::fs::read_to_string(dir.join("results.xml")).unwrap())
        .expect("JUnit that quick-junit reads back");
    assert_eq!(junit.test_suites.len(), KERNELS.len());
    assert!(junit.test_suites.iter().all(|s| s.test_cases.len() == 1 && s.test_cases[0].name.as_str() == "exec"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exec_across_kernels_tells_each_status_and_refuses_what_cannot_run() {
    let dir = project("status");
    // The packed root has the small /etc real tools look for; 6.1 fails, 6.12 passes.
    let t = Instant::now();
    let (code, out, err) = run(km(&dir, "kernels.yaml").args([
        "exec",
        "-k",
        "6.1",
        "-k",
        "6.12",
        "--json",
        "r.json",
        "--output-dir",
        "out",
        "--",
        "/bin/sh",
        "-c",
        "head -c 4 /etc/localtime; grep -q '^root:' /etc/passwd && grep -q localhost /etc/hosts && echo ' etc ok'; case $(uname -r) in 6.1.*) echo failing >&2; exit 3;; esac",
    ]));
    let both = t.elapsed();
    assert_eq!(code, Some(1), "one kernel failed:\nstdout: {out}\nstderr: {err}");
    for k in ["6.1", "6.12"] {
        assert!(out.contains(&format!("[{k}] TZif etc ok\n")), "{out}");
        assert_eq!(std::fs::read_to_string(dir.join(format!("out/{k}.stdout"))).unwrap(), "TZif etc ok\n");
    }
    assert!(err.contains("[6.1] failing\n"), "{err}");
    let row = |k: &str| err.lines().find(|l| l.starts_with(&format!("| {k} |"))).unwrap_or_else(|| panic!("{err}"));
    assert!(row("6.1").contains("**exit 3**") && row("6.12").contains("| exit 0 |"), "{err}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("r.json")).unwrap()).unwrap();
    assert_eq!(results["kernels"][0]["cells"][0]["verdict"], "fail");
    assert_eq!(results["kernels"][0]["cells"][0]["reason"], "exit 3");
    assert_eq!(results["kernels"][1]["cells"][0]["verdict"], "pass");

    // A root that would not fit the guest's memory: refused before anything boots.
    let big = dir.join("big.img");
    std::fs::File::create(&big).unwrap().set_len(900 << 20).unwrap();
    let t = Instant::now();
    let (code, _, err) =
        run(km(&dir, "kernels.yaml").args(["exec", "-k", "6.1", "--file", "big.img", "--", "/bin/true"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("memory_mb") && err.contains("--host-root") && err.contains("big.img"), "{err}");
    assert!(t.elapsed() < both / 2, "refused after {:?}: something booted", t.elapsed());

    // --host-root in a kernel of another architecture; a glob that matches nothing.
    let (code, _, err) =
        run(km(&dir, "kernels-arm64.yaml").args(["exec", "-k", "6.12-arm64", "--host-root", "--", "/bin/true"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("this kernel is arm64"), "{err}");
    let (code, _, err) = run(km(&dir, "kernels.yaml").args(["exec", "-k", "9.*", "--", "/bin/true"]));
    assert_eq!(code, Some(2), "bad input: {err}");
    assert!(err.contains("no kernel matches \"9.*\" (kernels: 5.10, 6.1,"), "{err}");

    // A program that hangs: --timeout ends it with 124 and the console's tail. The
    // timeout is the measured two-kernel run's wall time (a boot and more on this
    // machine), so a slower machine gets more.
    let timeout = both.as_secs().max(5);
    let t = Instant::now();
    let (code, _, err) = run(km(&dir, "kernels.yaml").args([
        "exec",
        "-k",
        "6.1",
        "--timeout",
        &timeout.to_string(),
        "--",
        "/bin/sleep",
        "100000",
    ]));
    assert_eq!(code, Some(124), "{err}");
    assert!(err.contains("--- console"), "{err}");
    assert!(t.elapsed().as_secs() < timeout * 3, "not ended by the timeout");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `host_root: true` on a suite: a shell script calling Python runs from the
/// host's root in the agent's boot of 6.1 (writes stay in the guest), and a
/// host-root suite that exits 3 fails.
#[test]
fn host_root_suites_run_the_hosts_scripts_in_the_agents_boot() {
    let dir = project("suites");
    std::fs::copy(workspace().join("kernels.lock"), dir.join("kernels.lock")).unwrap();
    std::fs::write(
        dir.join("check.sh"),
        "#!/bin/sh\nset -e\necho guest > written-here\nv=$(python3 -c 'import os; print(os.uname().release)')\necho \"python says $v\"\ncase $v in 6.1.*) exit 0 ;; *) exit 1 ;; esac\n",
    )
    .unwrap();
    std::fs::set_permissions(dir.join("check.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.join("kernels.yaml"),
        "kernels:\n  - name: \"6.1\"\n    debian: { suite: bookworm, series: \"6.1\" }\nsuites:\n  - { name: script, command: [check.sh], format: exit-status, host_root: true }\n  - { name: fails, command: [/bin/sh, -c, 'exit 3'], format: exit-status, host_root: true }\n",
    )
    .unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_kernel-matrix"));
    c.arg("-c").arg(dir.join("kernels.yaml")).env("KM_RUN_DIR", dir.join("runs")).current_dir(&dir);
    let (code, out, err) = run(c.args(["run", "--only-programs", "script,fails", "--json", "results.json"]));
    assert_eq!(code, Some(1), "the failing suite fails the run\nstdout: {out}\nstderr: {err}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    let cells = results["kernels"][0]["cells"].as_array().unwrap();
    let cell =
        |trial: &str| cells.iter().find(|c| c["trial"] == trial).unwrap_or_else(|| panic!("no {trial}: {results}"));
    assert_eq!(cell("script")["verdict"], "pass", "{results}");
    assert_eq!(cell("fails")["verdict"], "fail", "{results}");
    assert!(cell("fails")["reason"].as_str().unwrap().contains("exit"), "{results}");
    assert!(!dir.join("written-here").exists(), "the guest wrote the host's directory");
    std::fs::remove_dir_all(&dir).unwrap();
}
