//! The `kernel-matrix` binary as a user (or a CI job) meets it: bad input, no
//! network, reproducing a cell, shard reports and their merge, the workflows.
use std::{
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{tag}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The binary with a private run dir, reading `config`.
fn km(dir: &Path, config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kernel-matrix"));
    c.arg("--config").arg(config).env("KM_RUN_DIR", dir.join("runs")).env("KM_PROGRESS", "plain").stdin(Stdio::null());
    c
}

/// A config in `dir` with the workspace's lock beside it.
fn config_with_lock(dir: &Path, yaml: &str) -> PathBuf {
    let p = dir.join("kernels.yaml");
    std::fs::write(&p, yaml).unwrap();
    std::fs::copy(workspace().join("kernels.lock"), dir.join("kernels.lock")).unwrap();
    p
}

fn run(c: &mut Command) -> (Option<i32>, String, String) {
    let out = c.output().expect("running kernel-matrix");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_errors_exit_2_with_a_location() {
    let dir = scratch("config-errors");
    let cases: &[(&str, &str, &str)] = &[
        (
            "unknown-key",
            "kernels:\n  - name: x\n    hots: true\n",
            ":3:5: kernels[0]: unknown field `hots`, expected one of `name`",
        ),
        (
            "wrong-type",
            "timeout_secs: soon\nkernels: []\n",
            ":1:15: timeout_secs: invalid type: string \"soon\", expected u64",
        ),
        (
            "duplicate",
            "kernels:\n  - name: host\n    host: true\n  - name: host\n    host: true\n",
            ":4:5: kernel \"host\" is listed twice (first at line 2)",
        ),
        (
            "impossible-version",
            "kernels:\n  - name: a\n    debian: { suite: sid, series: \"6.x\" }\n",
            ":2:5: kernel \"a\": series \"6.x\" is not a version like 6.1",
        ),
        ("no-source", "kernels:\n  - name: a\n", ":2:5: kernel \"a\" needs exactly one of"),
        ("not-yaml", "kernels: [\n", ":2:1: "),
    ];
    for (tag, yaml, want) in cases {
        let p = dir.join(format!("{tag}.yaml"));
        std::fs::write(&p, yaml).unwrap();
        let (code, _, err) = run(km(&dir, &p).arg("run"));
        assert_eq!(code, Some(2), "{tag}: exit code, stderr:\n{err}");
        let want = format!("{}{want}", p.display());
        assert!(err.contains(&want), "{tag}: expected {want:?} in:\n{err}");
    }
    // A missing file is bad input too.
    let (code, _, err) = run(km(&dir, &dir.join("nope.yaml")).arg("fetch"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("nope.yaml: No such file"), "{err}");
    // Bad arguments are usage errors (clap's exit 2), with the reason.
    let (code, _, err) = run(km(&dir, &workspace().join("kernels.yaml")).args(["run", "--shard", "3/2"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("need 1 <= i <= n"), "{err}");
}

#[test]
fn unreachable_mirror_names_the_package() {
    let dir = scratch("no-network");
    let cfg = config_with_lock(&dir, "kernels:\n  - name: '6.1'\n    debian: { suite: bookworm, series: '6.1' }\n");
    let start = Instant::now();
    let (code, _, err) = run(km(&dir, &cfg)
        .arg("fetch")
        .env("KM_MIRROR", "http://127.0.0.1:9")
        .env("KM_SECURITY_MIRROR", "http://127.0.0.1:9")
        .env("KM_CACHE_DIR", dir.join("cache")));
    assert_eq!(code, Some(1), "{err}");
    let lock = kernel_matrix::images::lock::Lock::load(&dir.join("kernels.lock")).unwrap();
    let package = lock.kernels["6.1"].files[0].package.clone();
    assert!(err.contains(&format!("downloading {package}")), "the error must name the package {package}:\n{err}");
    assert!(err.contains("127.0.0.1:9") && err.to_lowercase().contains("connection refused"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "a refused connection must fail fast, took {:?}",
        start.elapsed()
    );
    // Nothing half-downloaded is left behind.
    let debs = dir.join("cache/debs");
    let left: Vec<_> =
        std::fs::read_dir(&debs).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "left in the cache: {left:?}");
}

#[test]
fn qemu_cmd_prints_the_vm_command_line() {
    let dir = scratch("qemu-cmd");
    let (code, out, err) = run(km(&dir, &workspace().join("kernels.yaml")).args(["qemu-cmd", "--kernel", "6.1"]));
    assert_eq!(code, Some(0), "{err}");
    let line = out.trim();
    assert!(line.starts_with("qemu-system-x86_64 -machine pc -accel "), "{line}");
    let words: Vec<&str> = line.split(' ').collect();
    for flag in ["-kernel", "-initrd"] {
        let i = words.iter().position(|w| *w == flag).unwrap_or_else(|| panic!("{flag} missing: {line}"));
        assert!(Path::new(words[i + 1]).is_file(), "{flag} {} does not exist", words[i + 1]);
    }
    assert!(line.contains("-serial file:") && !line.contains("km.action=shell"), "{line}");
    let (code, out, _) =
        run(km(&dir, &workspace().join("kernels.yaml")).args(["qemu-cmd", "--kernel", "6.1", "--shell"]));
    assert_eq!(code, Some(0));
    assert!(out.contains("-serial mon:stdio") && out.contains("km.action=shell"), "{out}");
    let (code, _, err) = run(km(&dir, &workspace().join("kernels.yaml")).args(["qemu-cmd", "--kernel", "4.4"]));
    assert_eq!(code, Some(2), "bad input");
    assert!(err.contains("no kernel matches \"4.4\"") && err.contains("6.1"), "{err}");
    // A glob that names one kernel is that kernel.
    let (code, out, err) = run(km(&dir, &workspace().join("kernels.yaml")).args(["qemu-cmd", "-k", "5.*"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("/5.10") || out.contains("-5.10"), "{out}");
}

/// A `kernel-matrix shell` (`shell`) whose console is this test's pipe: waits for
/// `banner`, types `line`, waits for `want` in the output, types `leave`, and
/// returns the exit status, the console output and stderr.
fn type_into_shell(
    mut shell: Command,
    banner: &str,
    line: &str,
    want: &str,
    leave: &str,
) -> (std::process::ExitStatus, String, String) {
    /// Kills the shell (and so its QEMU) when a failed assertion unwinds.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut reap = Reap(shell.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let child = &mut reap.0;
    let out = Arc::new(Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = out.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    // Bounds against a hang, not speed goals: a first use downloads the kernel.
    let wait_for = |needle: &str, secs: u64| {
        let t = Instant::now();
        while !out.lock().unwrap().contains(needle) {
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "no {needle:?} after {secs}s; output:\n{}",
                out.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(banner, 180);
    std::thread::sleep(Duration::from_millis(500));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
    wait_for(want, 60);
    stdin.write_all(format!("{leave}\n").as_bytes()).unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "the VM did not power off");
        std::thread::sleep(Duration::from_millis(100));
    };
    reader.join().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let out = out.lock().unwrap().clone();
    (status, out, err)
}

/// `kernel-matrix shell` for real: a VM whose console is this test's pipe. We wait
/// for the shell, type commands, and read their output.
#[test]
fn shell_gives_a_root_shell_in_the_vm() {
    let dir = scratch("shell");
    let mut shell = km(&dir, &workspace().join("kernels.yaml"));
    shell.args(["shell", "--kernel", "6.1"]);
    let (status, out, err) = type_into_shell(
        shell,
        "km: root shell in",
        "echo release=$(uname -r) uid=$(id -u) agent=$(ls /agent) sum=$((6*7))",
        "sum=42",
        "poweroff -f",
    );
    assert!(status.success(), "exit {status}\n{err}\n{out}");
    assert!(out.contains("release=6.1.0-") && out.contains("uid=0 agent=/agent sum=42"), "{out}");
    assert!(err.contains("root shell in kernel 6.1"), "{err}");
}

/// `shell --host-root`: the host's shell, Python and files in 6.12, in the
/// working directory, and a write to /tmp that never reaches the host.
#[test]
fn shell_in_the_hosts_root() {
    let dir = scratch("shell-host-root");
    let marker = dir.join("written-in-the-guest");
    // dash: the user's bash would read their start-up files (bash-completion's
    // hundreds of them over virtiofs under TCG take tens of seconds).
    let mut shell = km(&dir, &workspace().join("kernels.yaml"));
    shell.args(["shell", "--host-root", "-k", "6.12"]).env("SHELL", "/bin/sh").current_dir(&dir);
    let (status, out, err) = type_into_shell(
        shell,
        "km: the host's root in",
        &format!("touch '{}' && echo release=$(uname -r) py=$(python3 -c 'print(6*7)') at=$(pwd)", marker.display()),
        "py=42",
        "exit",
    );
    assert!(status.success(), "exit {status}\n{err}\n{out}");
    assert!(out.contains("release=6.12.") && out.contains(&format!("py=42 at={}", dir.display())), "{out}");
    assert!(!marker.exists(), "the guest wrote the host's working directory");
    assert!(err.contains("in the host's root"), "{err}");
}

/// Two shards through the real binary (the host kernel, which needs no VM, and a
/// kernel that cannot run because it is not in the lock), then `merge`: JSON,
/// JUnit and Markdown agree, and the JUnit parses as XML.
#[test]
fn shards_write_reports_and_merge_joins_them() {
    let dir = scratch("shards");
    // The host's known failures, as kernels.yaml lists them (this machine kind's
    // host kernel has no BPF trampolines): shard 1 must then pass.
    let real = std::fs::read_to_string(workspace().join("kernels.yaml")).unwrap();
    let expected = &real[real.find("expected_failures:").expect("kernels.yaml lists the host's failures")..];
    let cfg = config_with_lock(
        &dir,
        &format!(
            "kernels:\n  - name: host\n    host: true\n  - name: unpinned\n    debian: {{ suite: sid, series: '6.99' }}\n{expected}"
        ),
    );
    let mut files = Vec::new();
    for shard in ["1/2", "2/2"] {
        let n = &shard[..1];
        let (json, xml, md) = (dir.join(format!("r{n}.json")), dir.join(format!("r{n}.xml")), dir.join("summary.md"));
        // Shard 1 through the flag, shard 2 through KM_SHARD (what CI jobs set).
        let mut c = km(&dir, &cfg);
        if shard == "1/2" {
            c.args(["run", "--shard", shard]);
        } else {
            c.arg("run").env("KM_SHARD", shard);
        }
        let (code, out, err) = run(c
            .arg("--json")
            .arg(&json)
            .arg("--junit")
            .arg(&xml)
            .arg("--markdown")
            .arg(&md)
            .env("KM_CACHE_DIR", dir.join("cache")));
        // Shard 1 (the host) passes; shard 2 fails (kernel not in the lock).
        if shard == "1/2" {
            assert_eq!(code, Some(0), "the host shard passes:\n{out}\n{err}");
            let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
            let k = &r["kernels"][0];
            assert_eq!(k["kernel"], "host", "{r}");
            let cells = k["cells"].as_array().unwrap();
            let passed = cells.iter().filter(|c| c["verdict"] == "pass").count();
            assert!(passed >= 10, "the host shard ran its checks ({passed} passed): {r}");
            assert!(cells.iter().all(|c| c["verdict"] != "fail"), "{r}");
        } else {
            assert_eq!(code, Some(1), "{out}\n{err}");
            // The matrix is not the default kernels.yaml: the rerun line names it.
            let rerun =
                format!("reproduce: KM_CONFIG={} cargo test --test matrix -- --exact unpinned::", cfg.display());
            assert!(out.contains(&rerun), "{out}");
        }
        let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(r["shards"][0], shard);
        assert_eq!(r["kernels"].as_array().unwrap().len(), 1, "one kernel per shard: {r}");
        files.push((json, xml));
    }
    let r2: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&files[1].0).unwrap()).unwrap();
    let k = &r2["kernels"][0];
    assert_eq!(k["kernel"], "unpinned");
    let cell = &k["cells"][0];
    assert_eq!(cell["verdict"], "fail");
    assert!(cell["reason"].as_str().unwrap().contains("kernel-matrix lock"), "{cell}");
    // The rerun line of one known cell, written out in full (not built from the
    // cell's own name, which would agree with any naming bug).
    let prog_test_run = k["cells"].as_array().unwrap().iter().find(|c| c["trial"] == "features::prog_test_run");
    assert_eq!(
        prog_test_run.expect("a features::prog_test_run cell")["reproduce"],
        format!("KM_CONFIG={} cargo test --test matrix -- --exact unpinned::features::prog_test_run", cfg.display())
    );

    let merged = (dir.join("merged.json"), dir.join("merged.xml"), dir.join("merged.md"));
    let (code, _, err) = run(km(&dir, &cfg)
        .arg("merge")
        .arg(&files[0].0)
        .arg(&files[1].0)
        .arg("--json")
        .arg(&merged.0)
        .arg("--junit")
        .arg(&merged.1)
        .arg("--markdown")
        .arg(&merged.2)
        .arg("--check"));
    assert_eq!(code, Some(1), "--check fails on the failing shard: {err}");
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&merged.0).unwrap()).unwrap();
    assert_eq!(m["shards"], serde_json::json!(["1/2", "2/2"]));
    assert_eq!(m["kernels"].as_array().unwrap().len(), 2);
    let md = std::fs::read_to_string(&merged.2).unwrap();
    assert!(
        md.contains("| unpinned | - | - |")
            && md.contains(&format!(
                "Reproduce: `KM_CONFIG={} cargo test --test matrix -- --exact unpinned::",
                cfg.display()
            )),
        "{md}"
    );

    // JUnit: parse it; one testcase per cell; skipped ones carry their reason.
    let count = |xml: &str| -> (usize, usize, usize) {
        let mut r = quick_xml::Reader::from_str(xml);
        let (mut cases, mut failures, mut skipped) = (0, 0, 0);
        loop {
            match r.read_event().expect("well-formed JUnit XML") {
                quick_xml::events::Event::Eof => break,
                quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => match e.name().as_ref() {
                    b"testcase" => cases += 1,
                    b"failure" => failures += 1,
                    b"skipped" => {
                        skipped += 1;
                        let msg = e.try_get_attribute("message").unwrap().expect("skipped has a message");
                        assert!(!msg.value.is_empty());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        (cases, failures, skipped)
    };
    let cells = |v: &serde_json::Value, verdict: &str| {
        v["kernels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|k| k["cells"].as_array().unwrap().iter())
            .filter(|c| verdict.is_empty() || c["verdict"] == verdict)
            .count()
    };
    let xml = std::fs::read_to_string(&merged.1).unwrap();
    assert_eq!(count(&xml), (cells(&m, ""), cells(&m, "fail"), cells(&m, "ignored")), "{xml}");
    // Merging the shards' JUnit files directly gives the same counts.
    let direct = dir.join("direct.xml");
    let (code, _, err) = run(km(&dir, &cfg).arg("merge").arg(&files[0].1).arg(&files[1].1).arg("--junit").arg(&direct));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(count(&std::fs::read_to_string(&direct).unwrap()), count(&xml));
    // The same shard given twice is not counted twice.
    let (code, _, err) =
        run(km(&dir, &cfg).arg("merge").arg(&files[1].0).arg(&files[1].0).arg("--json").arg(dir.join("x.json")));
    assert_eq!(code, Some(0), "{err}");
    let x: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("x.json")).unwrap()).unwrap();
    assert_eq!(x["kernels"].as_array().unwrap().len(), 1);
}

/// The workflows are valid GitHub Actions (actionlint, installed by `cargo xtask setup`).
#[test]
fn workflows_pass_actionlint() {
    let wf = workspace().join(".github/workflows");
    let files: Vec<PathBuf> = std::fs::read_dir(&wf)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    for name in ["ci.yml", "nightly.yml", "bench.yml"] {
        assert!(files.iter().any(|p| p.ends_with(name)), "{name} missing in {}", wf.display());
    }
    let out = match Command::new("actionlint").arg("-version").output() {
        Ok(o) if o.status.success() => o,
        _ => {
            let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(!in_ci, "actionlint is not installed (`cargo xtask setup` installs it)");
            eprintln!("SKIPPED workflows_pass_actionlint: actionlint not installed; run `cargo xtask setup`");
            return;
        }
    };
    eprintln!("actionlint {}", String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or(""));
    let out = Command::new("actionlint").arg("-no-color").args(&files).current_dir(workspace()).output().unwrap();
    assert!(
        out.status.success(),
        "actionlint found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // And it does find problems when there are some (so a pass means something).
    let bad = scratch("actionlint").join("bad.yml");
    std::fs::write(
        &bad,
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.nope }}\n",
    )
    .unwrap();
    let out = Command::new("actionlint").arg("-no-color").arg(&bad).output().unwrap();
    assert!(!out.status.success(), "actionlint accepted a broken workflow");
}

/// The `cargo test` matrix binary (tests/matrix.rs, built by the same `cargo test`
/// that runs this file): the newest `matrix-<hash>` next to this test's own binary.
/// Running it directly avoids a nested `cargo`, which would wait on the build lock.
fn matrix_test_binary() -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    std::fs::read_dir(&deps)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("matrix-").is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
        .unwrap_or_else(|| panic!("no matrix-<hash> test binary in {}: run through `cargo test`", deps.display()))
}

/// `KM_SHARD=i/n cargo test --test matrix`: every kernel's trials land in exactly one
/// of the shards, the shards together list exactly the unsharded trials, and a bad
/// KM_SHARD is an error (exit 2) rather than silently running everything.
#[test]
fn km_shard_splits_the_cargo_test_matrix() {
    let dir = scratch("km-shard");
    let cfg = config_with_lock(
        &dir,
        "kernels:\n  - name: a\n    host: true\n  - name: b\n    debian: { suite: sid, series: '6.99' }\n  - name: c\n    debian: { suite: sid, series: '6.98' }\n",
    );
    let list = |shard: Option<&str>| -> (Option<i32>, Vec<String>, String) {
        let mut c = Command::new(matrix_test_binary());
        c.args(["--list", "--format", "terse"]).env("KM_CONFIG", &cfg).env_remove("KM_SHARD");
        if let Some(s) = shard {
            c.env("KM_SHARD", s);
        }
        let out = c.output().expect("running the matrix test binary");
        let names = String::from_utf8_lossy(&out.stdout)
            .lines()
            // "[kind] name: test|bench" (benchmark trials carry the accelerator as kind)
            .filter_map(|l| l.split(": ").next())
            .map(|n| n.split_once("] ").map_or(n, |(_, rest)| rest))
            .filter(|n| n.contains("::"))
            .map(str::to_string)
            .collect();
        (out.status.code(), names, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, all, err) = list(None);
    assert_eq!(code, Some(0), "{err}");
    let kernels = |names: &[String]| {
        names.iter().map(|n| n.split("::").next().unwrap().to_string()).collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(kernels(&all), ["a", "b", "c"].map(String::from).into(), "unsharded lists every kernel");
    let mut union = Vec::new();
    for (shard, want) in [("1/2", vec!["a", "c"]), ("2/2", vec!["b"])] {
        let (code, names, err) = list(Some(shard));
        assert_eq!(code, Some(0), "{shard}: {err}");
        assert_eq!(
            kernels(&names),
            want.into_iter().map(String::from).collect(),
            "shard {shard}, round-robin in kernels.yaml order"
        );
        union.extend(names);
    }
    union.sort();
    let mut all_sorted = all.clone();
    all_sorted.sort();
    assert_eq!(union, all_sorted, "the shards together are the whole matrix, nothing twice");
    let (code, _, err) = list(Some("3/2"));
    assert_eq!(code, Some(2), "bad KM_SHARD: {err}");
    assert!(err.contains("KM_SHARD"), "{err}");
}

/// Under cargo-nextest (one process per trial) the matrix lists its trials but
/// refuses to run them, saying how to run it instead; nothing is booted.
#[test]
fn nextest_process_per_test_is_refused_with_the_way_out() {
    let dir = scratch("km-nextest");
    let cfg = config_with_lock(&dir, "kernels:\n  - name: a\n    debian: { suite: sid, series: '6.99' }\n");
    let run = |args: &[&str]| {
        Command::new(matrix_test_binary())
            .args(args)
            .env("KM_CONFIG", &cfg)
            .env("NEXTEST_EXECUTION_MODE", "process-per-test")
            .env_remove("KM_NEXTEST")
            .output()
            .expect("running the matrix test binary")
    };
    let list = run(&["--list", "--format", "terse"]);
    assert!(list.status.success() && String::from_utf8_lossy(&list.stdout).contains("a::xdp_classifier::load: test"));
    let out = run(&["--exact", "a::xdp_classifier::load"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cargo-nextest runs every trial in a process of its own")
            && err.contains("-E 'not binary(matrix)'"),
        "{err}"
    );
}

/// Every `KM_*` variable is declared through clap, so `--help` (top level and a
/// subcommand's) lists it next to its flag; the old report names still work, with a
/// note printed once.
#[test]
fn help_lists_the_km_variables() {
    let vars = [
        "KM_CONFIG",
        "KM_CACHE_DIR",
        "KM_RUN_DIR",
        "KM_ACCEL",
        "KM_MAX_VMS",
        "KM_MIRROR",
        "KM_SECURITY_MIRROR",
        "KM_UBUNTU_MIRROR",
        "KM_UBUNTU_PORTS_MIRROR",
        "KM_UBUNTU_MAINLINE_URL",
        "KM_OCI_REGISTRY",
        "KM_PROGRESS",
        "KM_BENCH",
        "KM_BENCH_ICOUNT",
        "KM_ONLY_PROGRAMS",
        "KM_AGENT",
        "KM_BUSYBOX",
        "KM_EXEC_TIMES",
        "KM_GDB",
        "KM_GDB_WAIT",
        "KM_CRASH_DUMP",
        "KM_NEXTEST",
        "KM_RETRIES",
    ];
    for args in [&["--help"][..], &["run", "--help"], &["bench", "--help"]] {
        let (code, out, err) = run(Command::new(env!("CARGO_BIN_EXE_kernel-matrix")).args(args));
        assert_eq!(code, Some(0), "{err}");
        for v in vars {
            assert!(out.contains(&format!("[env: {v}=")), "{args:?} does not list {v}:\n{out}");
        }
    }
    let (_, out, _) = run(Command::new(env!("CARGO_BIN_EXE_kernel-matrix")).args(["run", "--help"]));
    for v in ["KM_SHARD", "KM_JSON", "KM_JUNIT", "KM_MARKDOWN"] {
        assert!(out.contains(&format!("[env: {v}=")), "run --help does not list {v}:\n{out}");
    }
    assert!(out.contains("--table <FILE>") && !out.contains("--summary"), "{out}");
    // KM_RESULTS / KM_SUMMARY: still read, with one deprecation note each.
    let dir = scratch("deprecated-env");
    let cfg = config_with_lock(&dir, "kernels:\n  - name: host\n    host: true\n");
    let (code, _, err) = run(km(&dir, &cfg)
        .args(["run", "-k", "nothing-*"])
        .env("KM_RESULTS", dir.join("r.json"))
        .env("KM_SUMMARY", dir.join("s.md")));
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.matches("KM_RESULTS is deprecated, use KM_JSON").count(), 1, "{err}");
    assert_eq!(err.matches("KM_SUMMARY is deprecated, use KM_MARKDOWN").count(), 1, "{err}");
}

/// `-k` takes globs (several -k add up); a pattern that matches no kernel is an
/// error listing the kernels, before anything is fetched or booted.
#[test]
fn kernel_globs_select_and_unmatched_is_an_error() {
    let dir = scratch("kernel-globs");
    let cfg = config_with_lock(
        &dir,
        "kernels:\n  - name: host\n    host: true\n  - name: '6.99'\n    debian: { suite: sid, series: '6.99' }\n  - name: '6.98'\n    debian: { suite: sid, series: '6.98' }\n",
    );
    for sub in ["run", "fetch", "bench", "exec"] {
        let exec_args: &[&str] = if sub == "exec" { &["--", "/bin/true"] } else { &[] };
        let (code, _, err) = run(km(&dir, &cfg).args([sub, "-k", "6.*", "-k", "7.*"]).args(exec_args));
        assert_eq!(code, Some(2), "{sub}: bad input: {err}");
        assert!(err.contains("no kernel matches \"7.*\" (kernels: host, 6.99, 6.98)"), "{sub}: {err}");
    }
    // The single-VM commands take a glob that matches one kernel; two is an error
    // that names them, before anything is fetched or booted (`exec` runs in each).
    for args in [&["qemu-cmd", "-k", "6.*"][..], &["shell", "-k", "6.*"], &["boot-bench", "-k", "6.*"]] {
        let (code, _, err) = run(km(&dir, &cfg).args(args));
        assert_eq!(code, Some(2), "{args:?}: bad input: {err}");
        assert!(err.contains("\"6.*\" matches 2 kernels (6.99, 6.98); this command boots one"), "{args:?}: {err}");
    }
    // `exec` in every kernel: the two that cannot start (not in the lock) are rows
    // of the table with the reason, the host still runs the program.
    let (code, _, err) = run(km(&dir, &cfg).args(["exec", "--", "/bin/true"]));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("| host | - | host |") && err.contains("| exit 0 |"), "{err}");
    assert!(err.contains("| 6.99 | - | - |") && err.contains("\"6.99\" is not in"), "{err}");
    assert!(err.contains("1 of 3 kernels exited 0"), "{err}");
    // `h*` selects the host kernel alone: nothing to download, so fetch succeeds
    // without a mirror and prints nothing.
    let (code, out, err) = run(km(&dir, &cfg).args(["fetch", "-k", "h*"]).env("KM_MIRROR", "http://127.0.0.1:9/"));
    assert_eq!((code, out.as_str()), (Some(0), ""), "{err}");
}

/// The composite action (.github/actions/kernel-matrix): actionlint does not lint an
/// action's own file, but it reads it where a workflow uses it (ci.yml does), checking
/// the inputs given against those it declares; that check is proven to bite here. The
/// file's shape is checked directly: a composite action whose `run` steps name their
/// shell, taking `config` and `args`, running the matrix with JUnit and the job summary,
/// uploading the JUnit, and referring only to inputs it declares.
#[test]
fn the_action_is_well_formed_and_used_by_ci() {
    let action_path = workspace().join(".github/actions/kernel-matrix/action.yml");
    let text = std::fs::read_to_string(&action_path).unwrap();
    let action: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(action["runs"]["using"].as_str(), Some("composite"));
    let inputs = action["inputs"].as_mapping().expect("inputs");
    for name in ["config", "args"] {
        assert!(inputs.contains_key(name), "input {name} missing");
    }
    for (name, input) in inputs {
        assert!(input["description"].as_str().is_some_and(|d| !d.is_empty()), "input {name:?} has no description");
    }
    let steps = action["runs"]["steps"].as_sequence().expect("steps");
    let runs: Vec<&str> = steps.iter().filter_map(|s| s["run"].as_str()).collect();
    for s in steps {
        assert!(s["run"].is_null() || s["shell"].as_str().is_some(), "a run step without shell: {s:?}");
        assert!(s["run"].is_null() != s["uses"].is_null(), "a step needs run or uses: {s:?}");
    }
    assert!(
        runs.iter().any(|r| r.contains("kernel-matrix run")
            && r.contains("--junit")
            && r.contains("--markdown \"$GITHUB_STEP_SUMMARY\"")),
        "no step runs the matrix with --junit and --markdown \"$GITHUB_STEP_SUMMARY\""
    );
    assert!(runs.iter().any(|r| r.contains("cargo install --locked")), "no install step");
    assert!(runs.iter().any(|r| r.contains("cargo xtask setup")), "no set-up step");
    assert!(steps.iter().any(|s| s["uses"].as_str().is_some_and(|u| u.starts_with("actions/upload-artifact@"))));
    for (i, _) in text.match_indices("inputs.") {
        let name: String =
            text[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
        assert!(inputs.contains_key(name.as_str()), "undeclared input {name:?} used");
    }
    for name in ["history", "history-file", "baseline", "gate", "gate-threshold"] {
        assert!(inputs.contains_key(name), "input {name} missing");
    }
    assert!(runs.iter().any(|r| r.contains("cargo xtask setup --runtime")), "no runtime set-up for a cached binary");
    assert!(
        steps.iter().any(|s| s["with"]["path"].as_str() == Some("~/.cargo/bin/kernel-matrix")),
        "the built binary is not cached"
    );
    let ci = std::fs::read_to_string(workspace().join(".github/workflows/ci.yml")).unwrap();
    assert!(ci.contains("uses: ./.github/actions/kernel-matrix"), "ci.yml does not use the action");
    if Command::new("actionlint").arg("-version").output().is_ok_and(|o| o.status.success()) {
        // A workflow giving the action an input it does not declare is refused.
        // In a scratch project (not .github/workflows, which the other test lints
        // whole) with the action linked in.
        let probe = scratch("action-probe");
        std::fs::create_dir_all(probe.join(".github/workflows")).unwrap();
        std::fs::create_dir_all(probe.join(".github/actions")).unwrap();
        std::os::unix::fs::symlink(
            workspace().join(".github/actions/kernel-matrix").canonicalize().unwrap(),
            probe.join(".github/actions/kernel-matrix"),
        )
        .unwrap();
        let wf = probe.join(".github/workflows/probe.yml");
        std::fs::write(
            &wf,
            "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - uses: ./.github/actions/kernel-matrix\n        with:\n          config: kernels.yaml\n          nope: 1\n",
        )
        .unwrap();
        let out = Command::new("actionlint").arg("-no-color").arg(&wf).current_dir(&probe).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success() && text.contains("input \"nope\" is not defined"), "{text}");
    }
}

/// `explain` predicts without booting: `-k` with a kernel that is not in the cache
/// is exit 2 naming the fetch command; `--json` gives one record per program and
/// kernel (here the host, whose BTF is its own `/sys/kernel/btf/vmlinux`).
#[test]
fn explain_predicts_per_kernel_and_says_how_to_fetch_a_missing_one() {
    let dir = scratch("explain");
    let cfg = config_with_lock(
        &dir,
        "kernels:\n  - name: host\n    host: true\n  - name: '6.1'\n    debian: { suite: bookworm, series: '6.1' }\n",
    );
    let obj = workspace().join("examples/corpus/obj/loader.bpf.o");
    let empty = dir.join("empty-cache");
    let (code, _, err) = run(km(&dir, &cfg).env("KM_CACHE_DIR", &empty).args(["explain", "-k", "6.1"]).arg(&obj));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not in the cache") && err.contains("kernel-matrix fetch -k 6.1"), "{err}");

    let (code, out, err) =
        run(km(&dir, &cfg).env("KM_CACHE_DIR", &empty).args(["explain", "--json", "-k", "host"]).arg(&obj));
    assert_eq!(code, Some(0), "{err}");
    let records: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(records.len(), 4, "one per program of loader.bpf.o on the one kernel: {out}");
    for r in &records {
        assert_eq!(r["object"], obj.display().to_string());
        assert_eq!(r["kernel"], "host");
        assert!(r["predicted"] == "accept" || r["predicted"] == "reject", "{r}");
    }
    // The placeholder target is not in any kernel: rejected for its attach target,
    // and the host's BTF is what says so.
    let placeholder = records.iter().find(|r| r["program"] == "placeholder_read").unwrap();
    assert_eq!((&placeholder["predicted"], &placeholder["cause"]), (&"reject".into(), &"attach_target".into()));
    assert!(placeholder["reason"].as_str().unwrap().contains("dummy_kprobe_target"), "{placeholder}");

    // A manifest with attach_to: names a program that is not there: exit 2, the entry named.
    let m = dir.join("m.yaml");
    std::fs::write(
        &m,
        format!("programs:\n  - name: l\n    object: {}\n    attach_to: {{ nope: vfs_read }}\n", obj.display()),
    )
    .unwrap();
    let (code, _, err) = run(km(&dir, &cfg).env("KM_CACHE_DIR", &empty).args(["explain"]).arg(&m));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("m.yaml:4:") && err.contains("attach_to: no program \"nope\""), "{err}");
}

/// kernels-world.yaml names kernels of every archive kind and no address: it
/// loads, and `lock` without the settings is refused naming the one to set
/// (before anything is fetched), as is `run` without a lock.
#[test]
fn the_world_matrix_names_its_sources_and_asks_for_their_addresses() {
    use kernel_matrix::config::{MatrixConfig, Origin};
    let world = workspace().join("kernels-world.yaml");
    let config = MatrixConfig::load(&world).unwrap();
    let kinds: std::collections::BTreeSet<Origin> =
        config.kernels.iter().filter_map(|k| k.archive()).map(|a| a.origin).collect();
    assert_eq!(kinds.len(), 5, "{kinds:?}");
    assert!(config.kernels.len() >= 12);
    let built = config.kernels.iter().find(|k| k.archive().is_none()).expect("bpf-next");
    assert!(built.build.as_ref().is_some_and(|b| b.git.is_some()), "bpf-next is built from git");
    let text = std::fs::read_to_string(&world).unwrap();
    assert_eq!(text.matches("://").count(), 1, "package archives' addresses are settings, not in the file");

    let dir = scratch("world");
    let cfg = world.clone();
    let mut lock = km(&dir, &cfg);
    lock.arg("lock");
    for v in ["KM_UBUNTU_MIRROR", "KM_UBUNTU_MAINLINE_URL", "KM_OCI_REGISTRY", "KM_RPM_REPO_ALMA8"] {
        lock.env_remove(v);
    }
    let (code, _, err) = run(&mut lock);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("4.18-alma8") && err.contains("KM_RPM_REPO_ALMA8"), "{err}");
    assert!(!workspace().join("kernels-world.lock").exists(), "nothing pinned, nothing written");
    let (code, out, err) = run(km(&dir, &cfg).args(["run", "-k", "6.8-noble"]));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        out.contains("\"6.8-noble\" is not in ") && out.contains("kernels-world.lock; run `kernel-matrix lock"),
        "{out}"
    );
    assert!(out.contains("| 6.8-noble | - | - |"), "a kernel that never started has no accelerator:\n{out}");
}

/// The action's gate step, run as the action runs it (bash, its env), against a
/// real results history of two runs where a program the verifier accepted is
/// rejected: the step fails and writes why to the job summary; with `gate:
/// false` it only reports; with no history it passes saying so.
#[test]
fn the_actions_gate_step_fails_on_a_rejection() {
    let action: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(workspace().join(".github/actions/kernel-matrix/action.yml")).unwrap(),
    )
    .unwrap();
    let step = action["runs"]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| s["name"].as_str() == Some("Gate against the baseline"))
        .expect("a gate step");
    let script = step["run"].as_str().unwrap();
    let dir = scratch("action-gate");
    let history = dir.join("history.sqlite");
    let mut h = kernel_matrix::history::History::open(&history).unwrap();
    for (night, verdict, insns) in [(0, "pass", 43.0), (1, "fail", 2.0)] {
        let r: kernel_matrix::report::results::RunResults = serde_json::from_value(serde_json::json!({
            "schema": kernel_matrix::report::results::SCHEMA, "tool": "kernel-matrix test",
            "kernels": [{"kernel": "6.1", "release": "6.1.0-50-cloud-amd64", "accel": "tcg", "boot_secs": 2.0, "wall_secs": 9.0,
                "failure": null, "qemu_command": null, "cells": [{"trial": "filter::load", "verdict": verdict,
                "reason": (verdict == "fail").then_some("R2 invalid mem access 'scalar'"),
                "metrics": {"processed_insns": insns}, "reproduce": "cargo test", "secs": 1.0}]}]}))
        .unwrap();
        let meta = kernel_matrix::history::RunMeta {
            started: 1_764_900_000 + night * 3600,
            matrix: "kernels.yaml".into(),
            ..Default::default()
        };
        h.record(&r, &meta).unwrap();
    }
    drop(h);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_kernel-matrix"));
    let path = format!("{}:{}", bin.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    let gate = |file: &std::path::Path, gate: &str| {
        let summary = dir.join(format!("summary-{gate}.md"));
        let _ = std::fs::remove_file(&summary);
        let out = Command::new("bash")
            .arg("-c")
            .arg(script)
            .env("PATH", &path)
            .env("KM_HISTORY_FILE", file)
            .env("KM_GATE", gate)
            .env("KM_THRESHOLD", "10")
            .env("GITHUB_STEP_SUMMARY", &summary)
            .output()
            .unwrap();
        (
            out.status.code(),
            std::fs::read_to_string(&summary).unwrap_or_default(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, summary, _) = gate(&history, "true");
    assert_eq!(code, Some(1), "{summary}");
    assert!(summary.contains("## ❌ gate FAILED: 1 problem(s)"), "{summary}");
    assert!(
        summary.contains("6.1::filter::load: accepted in the baseline, rejected now: R2 invalid mem access"),
        "{summary}"
    );
    assert!(summary.contains("| 6.1::filter | pass | fail | 43 | 2 | -41 (-95.35 %) |"), "{summary}");
    let (code, summary, _) = gate(&history, "false");
    assert_eq!(code, Some(0), "gate: false only reports\n{summary}");
    assert!(summary.contains("gate FAILED"), "{summary}");
    let (code, _, out) = gate(&dir.join("absent.sqlite"), "true");
    assert_eq!(code, Some(0));
    assert!(out.contains("nothing to gate against"), "{out}");
}

/// The nightly's issue script (.github/scripts/nightly-issue.sh) against a
/// stand-in `gh` that records its calls (GitHub cannot be reached from a test),
/// with the `history` output of a real two-run history where a cell newly fails:
/// it opens the issue naming the cell, its kernel build and rerun command; with
/// an issue open it edits and comments on it; when the cells it names pass
/// again it closes it, and not while one still fails.
#[test]
fn the_nightly_opens_comments_on_and_closes_its_issue() {
    let dir = scratch("nightly-issue");
    let history = dir.join("history.sqlite");
    let mut h = kernel_matrix::history::History::open(&history).unwrap();
    let results = |verdict: &str| -> kernel_matrix::report::results::RunResults {
        serde_json::from_value(serde_json::json!({
            "schema": kernel_matrix::report::results::SCHEMA, "tool": "kernel-matrix test",
            "kernels": [{"kernel": "6.12", "release": "6.12.117+deb12-cloud-amd64", "accel": "kvm", "boot_secs": 2.0, "wall_secs": 9.0,
                "failure": null, "qemu_command": null, "cells": [
                    {"trial": "usdt_tracer::hits", "verdict": verdict, "reason": (verdict == "fail").then_some("0 hits"), "metrics": {}, "reproduce": "x", "secs": 1.0},
                    {"trial": "profiler::load", "verdict": "pass", "reason": null, "metrics": {}, "reproduce": "x", "secs": 1.0}]}]}))
        .unwrap()
    };
    for (night, verdict) in [(0, "pass"), (1, "fail")] {
        let meta = kernel_matrix::history::RunMeta {
            started: 1_764_900_000 + night * 86_400,
            matrix: "/w/repo/kernels.yaml".into(),
            ..Default::default()
        };
        h.record(&results(verdict), &meta).unwrap();
    }
    drop(h);
    let km = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_kernel-matrix"))
            .args(["history", "--history"])
            .arg(&history)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    };
    std::fs::write(dir.join("since.json"), km(&["--json"])).unwrap();
    std::fs::write(dir.join("since.md"), km(&["--markdown"])).unwrap();
    std::fs::write(dir.join("failing.json"), serde_json::to_string(&results("fail")).unwrap()).unwrap();
    std::fs::write(dir.join("green.json"), serde_json::to_string(&results("pass")).unwrap()).unwrap();
    // The stand-in gh: logs each call, answers `issue list` with $FAKE_OPEN and
    // `issue view` with $FAKE_BODY, keeps the last body it was given.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(
        bin.join("gh"),
        "#!/bin/sh\necho \"$*\" >> \"$GH_LOG\"\nsub=\"$1-$2\"\ncase \"$1 $2\" in\n  'issue list') echo \"$FAKE_OPEN\" ;;\n  'issue view') cat \"$FAKE_BODY\" ;;\nesac\nwhile [ $# -gt 0 ]; do [ \"$1\" = --body-file ] && cp \"$2\" \"$GH_LOG.$sub.body\"; shift; done\n",
    )
    .unwrap();
    std::fs::set_permissions(bin.join("gh"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script = workspace().join(".github/scripts/nightly-issue.sh");
    let night = |tag: &str, since: bool, results: &str, open: &str, body: &str| {
        let log = dir.join(format!("gh-{tag}.log"));
        std::fs::write(dir.join("body.md"), body).unwrap();
        let mut c = Command::new("bash");
        c.arg(&script)
            .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()))
            .env("GH_LOG", &log)
            .env("FAKE_OPEN", open)
            .env("FAKE_BODY", dir.join("body.md"))
            .env("RESULTS", dir.join(results))
            .env("RUN_URL", "https://example.invalid/run/1");
        if since {
            c.env("SINCE_JSON", dir.join("since.json")).env("SINCE_MD", dir.join("since.md"));
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let body =
            |sub: &str| std::fs::read_to_string(dir.join(format!("gh-{tag}.log.{sub}.body"))).unwrap_or_default();
        let body = format!("{}{}", body("issue-create"), body("issue-edit"));
        (std::fs::read_to_string(&log).unwrap_or_default(), body, String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // A cell newly fails, no issue open: one is opened, naming it.
    let (calls, body, _) = night("open", true, "failing.json", "", "");
    assert!(
        calls.contains("label create nightly-failure")
            && calls.contains("issue create --label nightly-failure --title Nightly: 1 cell(s) newly failing"),
        "{calls}"
    );
    assert!(body.contains("`6.12::usdt_tracer::hits` (pass -> fail): 0 hits"), "{body}");
    assert!(
        body.contains("on 6.12.117+deb12-cloud-amd64")
            && body.contains("rerun: `cargo test --test matrix -- --exact 6.12::usdt_tracer::hits`"),
        "{body}"
    );
    assert!(body.contains("<!-- km-cells: 6.12::usdt_tracer::hits -->"), "{body}");
    // Another night with it open: the body keeps both cells, and a comment says what is new.
    let (calls, body, _) = night("more", true, "failing.json", "7", "old\n<!-- km-cells: 6.1::profiler::samples -->\n");
    assert!(calls.contains("issue edit 7 --body-file") && calls.contains("issue comment 7 --body-file"), "{calls}");
    assert!(!calls.contains("issue create"), "{calls}");
    assert!(
        body.starts_with("old\n") && body.contains("<!-- km-cells: 6.12::usdt_tracer::hits 6.1::profiler::samples -->"),
        "{body}"
    );
    // Green again: the issue is closed; not while one of its cells still fails.
    let (calls, _, _) = night("green", false, "green.json", "7", "x\n<!-- km-cells: 6.12::usdt_tracer::hits -->\n");
    assert!(calls.contains("issue close 7 --comment Every cell this issue names passes again"), "{calls}");
    let (calls, _, out) = night("still", false, "failing.json", "7", "x\n<!-- km-cells: 6.12::usdt_tracer::hits -->\n");
    assert!(!calls.contains("issue close"), "{calls}");
    assert!(out.contains("stays open: still failing: 6.12::usdt_tracer::hits"), "{out}");
    // A night whose matrix never ran leaves the issue alone.
    let quiet = Command::new("bash")
        .arg(&script)
        .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()))
        .env("GH_LOG", dir.join("gh-none.log"))
        .env("RESULTS", "")
        .output()
        .unwrap();
    assert!(quiet.status.success() && !dir.join("gh-none.log").exists());
}

/// `cache` shows what each kind of entry weighs and what a prune would remove;
/// `--prune` removes only that: a package and an extracted kernel that
/// kernels.lock pins stay, a superseded package and a guest root go. (Age is
/// the unit tests' part: a file written now cannot be made older in its ctime,
/// so here `--older-than 0` makes every unpinned entry stale.)
#[test]
fn cache_prunes_what_no_lock_pins() {
    let dir = scratch("cache");
    // A kernel tree in git (its ref resolved by `git ls-remote` as a build's is).
    let repo = dir.join("tree.git");
    std::fs::create_dir_all(&repo).unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "tree"],
    ] {
        assert!(Command::new("git").args(args).current_dir(&repo).status().unwrap().success());
    }
    let config = config_with_lock(
        &dir,
        &format!(
            "kernels:\n  - name: \"6.1\"\n    debian: {{ suite: bookworm, series: \"6.1\" }}\n  \
             - name: mine\n    build: {{ source: linux.tar.xz }}\n  \
             - name: next\n    build: {{ git: \"{}\", ref: main }}\n  \
             - name: moved\n    build: {{ source: gone/ }}\n",
            repo.display()
        ),
    );
    std::fs::write(dir.join("linux.tar.xz"), "a kernel tarball").unwrap();
    std::fs::write(dir.join("Cargo.lock"), "version = 4\n").unwrap(); // not a kernel lock: passed over
    let lock = kernel_matrix::images::lock::Lock::load(&dir.join("kernels.lock")).unwrap();
    let sha = lock.kernels["6.1"].files[0].sha256.clone();
    let cfg = kernel_matrix::config::MatrixConfig::load(&config).unwrap();
    let built_of = |name: &str| {
        let kernel_matrix::config::KernelSource::Build(b) = cfg.kernel(name).unwrap().source() else { unreachable!() };
        kernel_matrix::images::build::cache_entries(b, |p| cfg.resolve_path(p)).unwrap()
    };
    let (built, from_git) = (built_of("mine"), built_of("next"));
    assert_eq!((built.len(), from_git.len()), (2, 2), "{built:?} {from_git:?}");
    let cache = dir.join("cache");
    let entries = [
        (format!("debs/{sha}.deb"), true),
        (format!("kernels/{sha}/vmlinuz"), true),
        (format!("{}/vmlinuz", built[0]), true),
        (format!("{}/obj/.config", built[1]), true),
        (format!("{}/vmlinuz", from_git[0]), true),
        (format!("debs/{}.deb", "0".repeat(64)), false),
        ("guest-roots/00aa.cpio.gz".to_string(), false),
    ];
    for (p, _) in &entries {
        let p = cache.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, vec![7u8; 3000]).unwrap();
    }
    let cache_cmd = |args: &[&str]| {
        let mut c = km(&dir, &config);
        run(c.env("KM_CACHE_DIR", &cache).arg("cache").args(args))
    };
    let (code, out, err) = cache_cmd(&[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("kernel moved: its build is kept by age only: build source"), "{out}");
    assert!(out.contains("| debs | Debian and Ubuntu packages | 2 | 5.9 kB | 1 (2.9 kB) | 1 (2.9 kB) | - |"), "{out}");
    let (code, out, err) = cache_cmd(&["--older-than", "0"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("stale: 2 entries, 5.9 kB (pinned by none of kernels.lock, kernels.yaml and unused for 0 days)"),
        "{out}"
    );
    assert!(entries.iter().all(|(p, _)| cache.join(p).exists()), "showing removes nothing");
    let (code, out, err) = cache_cmd(&["--prune", "--older-than", "0"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("removed 2 entries, 5.9 kB"), "{out}");
    for (p, kept) in &entries {
        assert_eq!(cache.join(p).exists(), *kept, "{p}");
    }
    let (code, _, err) = cache_cmd(&["--lock", "nowhere.lock"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--lock nowhere.lock"), "{err}");
}
