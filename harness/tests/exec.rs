//! `kernel-matrix exec` and `suites:` for real, in the 6.1 VM (cached kernel,
//! QEMU/TCG here): exit statuses (0, 3, a signal as 128+N), stdout and stderr
//! kept apart, bad programs refused with exit 2 before anything boots.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

fn scratch(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("exec-{tag}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn km_with(dir: &Path, config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kernel-matrix"));
    c.arg("-c").arg(config).env("KM_RUN_DIR", dir.join("runs")).current_dir(dir);
    c
}

fn km(dir: &Path) -> Command {
    km_with(dir, &workspace().join("kernels.yaml"))
}

fn run(c: &mut Command) -> (Option<i32>, String, String) {
    let o = c.output().unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn exec_propagates_status_and_keeps_stdout_and_stderr_apart() {
    let dir = scratch("status");
    let t = Instant::now();
    let (code, out, err) = run(km(&dir).args(["exec", "-k", "6.1", "--", "/bin/sh", "-c", "echo to-stdout; echo to-stderr >&2; test -d /sys/fs/bpf && grep -q ' /sys/fs/bpf bpf' /proc/mounts && grep -q tracefs /proc/mounts && grep -q debugfs /proc/mounts && test $(id -u) = 0 && echo mounted; pwd; exit 3"]));
    eprintln!("exec exit 3: {:.1}s\n{err}", t.elapsed().as_secs_f64());
    assert_eq!(code, Some(3), "stdout: {out}\nstderr: {err}");
    assert_eq!(out, format!("to-stdout\nmounted\n{}\n", dir.canonicalize().unwrap().display()));
    assert_eq!(err, "to-stderr\n");

    let (code, out, _) = run(km(&dir).args(["exec", "-k", "6.1", "--", "/bin/true"]));
    assert_eq!((code, out.as_str()), (Some(0), ""));

    let (code, _, err) = run(km(&dir).args(["exec", "-k", "6.1", "--", "/bin/sh", "-c", "kill -USR1 $$"]));
    assert_eq!(code, Some(128 + libc::SIGUSR1), "stderr: {err}");
}

#[test]
fn exec_refuses_bad_programs_before_booting() {
    let dir = scratch("bad");
    let t = Instant::now();
    let (code, _, err) = run(km(&dir).args(["exec", "-k", "6.1", "--", "./does-not-exist"]));
    assert_eq!(code, Some(2));
    assert!(err.contains("does-not-exist: no such program"), "{err}");
    std::fs::write(dir.join("script"), "#!/bin/sh\n").unwrap();
    let (code, _, err) = run(km(&dir).args(["exec", "-k", "6.1", "--", "./script"]));
    assert_eq!(code, Some(2));
    assert!(err.contains("script: a script"), "{err}");
    let mut arm = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\xb7\0".to_vec();
    arm.resize(64, 0);
    std::fs::write(dir.join("arm64"), arm).unwrap();
    let (code, _, err) = run(km(&dir).args(["exec", "-k", "6.1", "--", "./arm64"]));
    assert_eq!(code, Some(2));
    assert!(err.contains("another architecture"), "{err}");
    assert!(t.elapsed().as_secs() < 10, "nothing should boot");
}

#[test]
fn suites_run_inside_the_kernel_as_their_own_trials() {
    let dir = scratch("suites");
    let example = workspace().join("examples/bpf-user-tests");
    let built =
        Command::new(env!("CARGO")).args(["test", "--no-run", "--offline"]).current_dir(&example).status().unwrap();
    assert!(built.success(), "building examples/bpf-user-tests");
    let t = Instant::now();
    let json = dir.join("results.json");
    let (code, out, err) = run(km_with(&dir, &workspace().join("kernels-suites.yaml")).args([
        "run",
        "-k",
        "6.1",
        "--json",
        &json.display().to_string(),
    ]));
    eprintln!("suites on 6.1: {:.1}s", t.elapsed().as_secs_f64());
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let cells = results["kernels"][0]["cells"].as_array().unwrap();
    let verdict = |trial: &str| {
        let c = cells.iter().find(|c| c["trial"] == trial).unwrap_or_else(|| panic!("no cell {trial}: {results}"));
        c["verdict"].as_str().unwrap().to_string()
    };
    // Each libtest test is a trial of its own; the exit-status suite is one trial
    // named by the suite alone (no trailing `::`), which its rerun line names.
    for test in ["drops_telnet", "passes_https", "drops_tftp", "runs_in_the_kernel_it_says"] {
        assert_eq!(verdict(&format!("port_filter::{test}")), "pass");
    }
    assert_eq!(verdict("bpftool_prog_list"), "pass");
    assert_eq!(verdict("host_python"), "pass", "a host_root suite: the host's python3 in the 6.1 guest");
    assert!(cells.iter().all(|c| !c["trial"].as_str().unwrap().ends_with("::")), "{results}");
    assert!(cells.iter().all(|c| c["verdict"] != "fail"), "{results}");
    let row = out.lines().find(|l| l.starts_with("| 6.1 |")).unwrap();
    assert!(!row.to_lowercase().contains("fail"), "{row}");

    // A libtest suite whose program is not a test binary: exit 2, naming the suite.
    std::fs::copy(workspace().join("kernels.lock"), dir.join("kernels.lock")).unwrap();
    let cfg = dir.join("kernels.yaml");
    std::fs::write(&cfg, "kernels:\n  - name: \"6.1\"\n    debian: { suite: bookworm, series: \"6.1\" }\nsuites:\n  - name: not_tests\n    command: [/bin/echo, hello]\n    format: libtest\n").unwrap();
    let (code, _, err) = run(km_with(&dir, &cfg).args(["run", "-k", "6.1"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("suite \"not_tests\"") && err.contains("libtest"), "{err}");
}

/// A project where users really put them: under /tmp (where a guest /init once
/// mounted a tmpfs that hid the run's files) and in a directory whose name has a
/// space. Its suite and an `exec` of its own program both run in the 6.1 guest.
#[test]
fn suites_and_exec_work_from_a_project_under_tmp_with_a_space() {
    let example = workspace().join("examples/bpf-user-tests");
    let built =
        Command::new(env!("CARGO")).args(["test", "--no-run", "--offline"]).current_dir(&example).status().unwrap();
    assert!(built.success(), "building examples/bpf-user-tests");
    let deps = example.join("target/debug/deps");
    let program = std::fs::read_dir(&deps)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("port_filter-") && p.extension().is_none()
        })
        .max_by_key(|p| p.metadata().unwrap().modified().unwrap())
        .expect("the port_filter test binary");
    let project = PathBuf::from(format!("/tmp/km project {}", std::process::id()));
    let _ = std::fs::remove_dir_all(&project);
    std::fs::create_dir_all(project.join("bin")).unwrap();
    std::fs::copy(&program, project.join("bin/port filter")).unwrap();
    std::fs::copy(workspace().join("kernels.lock"), project.join("kernels.lock")).unwrap();
    // The test binary opens its object at the example's absolute path.
    let data = example.join("tests/data");
    let cfg = project.join("kernels.yaml");
    std::fs::write(
        &cfg,
        format!(
            "kernels:\n  - name: \"6.1\"\n    debian: {{ suite: bookworm, series: \"6.1\" }}\nsuites:\n  - name: port_filter\n    command: [\"bin/port filter\", --test-threads=1]\n    files: [\"{}\"]\n    format: libtest\n",
            data.display()
        ),
    )
    .unwrap();
    let (code, out, err) = run(km_with(&project, &cfg).args(["run", "-k", "6.1", "--json", "results.json"]));
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    let results = std::fs::read_to_string(project.join("results.json")).unwrap();
    for test in ["drops_telnet", "passes_https", "drops_tftp", "runs_in_the_kernel_it_says"] {
        let trial = format!("port_filter::{test}");
        assert!(out.contains(&trial), "{trial} missing:\n{out}");
    }
    let passed = results.matches("\"verdict\": \"pass\"").count() + results.matches("\"verdict\":\"pass\"").count();
    assert!(passed >= 4, "fewer than 4 passing cells in results.json:\n{results}");

    // exec: the project's own program, by a relative path with a space, in its own
    // directory (the guest's working directory is the host's).
    let (code, out, err) = run(km_with(&project, &cfg).args([
        "exec",
        "-k",
        "6.1",
        "--file",
        &data.display().to_string(),
        "--",
        "./bin/port filter",
        "--test-threads=1",
    ]));
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    assert!(out.contains("test result: ok. 4 passed"), "{out}");
    std::fs::remove_dir_all(&project).unwrap();
}

/// `exec --snapshot`: the first run saves 6.1 booted to ready (unless an earlier
/// run did), every run restores it; the program sees what a booted guest shows
/// (output, stderr, exit status, its kernel's modules) and a clock that reads a
/// time within the call. `--host-root` cannot be saved and boots cold, saying so.
#[test]
fn exec_snapshot_restores_a_saved_guest_that_behaves_as_a_booted_one() {
    let dir = scratch("snapshot");
    let script = "echo out $(uname -r); echo to-stderr >&2; modprobe veth && grep -q '^veth ' /proc/modules && echo veth-loaded; date +%s; exit 3";
    let (code, cold, _) = run(km(&dir).args(["exec", "-k", "6.1", "--", "/bin/sh", "-c", script]));
    assert_eq!(code, Some(3), "{cold}");
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    for i in 0..2 {
        let before = now();
        let (code, out, err) = run(km(&dir).env("KM_EXEC_TIMES", "1").args([
            "exec",
            "--snapshot",
            "-k",
            "6.1",
            "--",
            "/bin/sh",
            "-c",
            script,
        ]));
        let after = now();
        eprintln!("run {i}:\n{err}");
        assert_eq!(code, Some(3), "stdout: {out}\nstderr: {err}");
        assert!(err.contains("restored from a saved guest"), "{err}");
        assert!(err.starts_with("to-stderr\n") || err.contains("\nto-stderr\n"), "{err}");
        let lines: Vec<&str> = out.lines().collect();
        // The same kernel and modules as the booted run; only the clock differs.
        assert_eq!(lines[..2], cold.lines().collect::<Vec<_>>()[..2], "restored: {out}\nbooted: {cold}");
        assert_eq!(lines[1], "veth-loaded");
        let guest: u64 = lines[2].parse().unwrap();
        assert!((before..=after).contains(&guest), "guest clock {guest}, the call ran from {before} to {after}");
    }
    let (code, _, err) = run(km(&dir).args(["exec", "--snapshot", "--host-root", "-k", "6.1", "--", "/bin/true"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("booting cold: --host-root"), "{err}");
}
