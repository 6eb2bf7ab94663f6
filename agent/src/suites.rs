//! Users' test suites (`suites:` in kernels.yaml), run after the checks in the
//! same boot. Each suite's output is echoed to the agent's stderr (the VM
//! console, so it is in console.log); verdicts go out as `Check` records:
//! program = suite, check = test name (libtest) or "" (exit status).
use std::{collections::BTreeMap, ffi::CString, os::unix::process::CommandExt as _, process::Command};

use km_protocol::{
    checks::gate_needs,
    suites::{parse_libtest, GuestSuite, SuiteFormat, TestOutcome, HOST_ROOT},
    Probe, Record, Verdict,
};

fn record(suite: &str, test: &str, verdict: Verdict, note: String, secs: f64) -> Record {
    let mut metrics = BTreeMap::new();
    metrics.insert("suite_secs".to_string(), secs);
    Record::Check { program: suite.into(), check: test.into(), verdict, metrics, note, cause: None }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Makes `command` run chrooted in the host's root that /init laid at
/// [`HOST_ROOT`], in `cwd` there (the host's directory, writable through the
/// throwaway layer); why not, when /init could not lay it.
fn in_host_root(command: &mut Command, cwd: &str) -> Result<(), String> {
    if let Ok(why) = std::env::var("KM_HOST_ROOT_FAILED") {
        return Err(format!("the host's root is not in this guest: {why}"));
    }
    if !std::path::Path::new(HOST_ROOT).join("proc/self").exists() {
        return Err(format!("the host's root is not at {HOST_ROOT} (the harness did not share it)"));
    }
    let root = CString::new(HOST_ROOT).expect("no NUL");
    let cwd = CString::new(cwd).map_err(|_| format!("working directory {cwd:?} has a NUL"))?;
    // std's current_dir() is applied before pre_exec, in the old root: chroot,
    // then chdir, both with paths made before the fork.
    // SAFETY: chroot(2) and chdir(2) are async-signal-safe, the paths are built
    // already, and the closure touches no shared state.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::chroot(root.as_c_str())?;
            nix::unistd::chdir(cwd.as_c_str())?;
            Ok(())
        });
    }
    Ok(())
}

/// Waits (at most 35 s, modprobe's own patience) while the guest's modprobe is
/// mounting the kernel's modules disk (vm-images/modprobe holds
/// `/lib/.km-modules-lock` meanwhile): a suite may load modules by any modprobe,
/// and busybox's own does not wait for the disk.
fn modules_mounted() {
    let lock = std::path::Path::new("/lib/.km-modules-lock");
    let start = std::time::Instant::now();
    while lock.exists() && start.elapsed() < std::time::Duration::from_secs(35) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

pub fn run_all(emit: &mut dyn FnMut(Record), features: &BTreeMap<String, Probe>, suites: &[GuestSuite]) {
    if !suites.is_empty() {
        modules_mounted();
    }
    for s in suites {
        let names: Vec<&str> = match s.format {
            SuiteFormat::Libtest => s.tests.iter().map(String::as_str).collect(),
            SuiteFormat::ExitStatus => vec![""],
        };
        if let Some(reason) = gate_needs(&s.needs, features, &s.name) {
            for t in &names {
                emit(record(&s.name, t, Verdict::Ignored(reason.clone()), String::new(), 0.0));
            }
            continue;
        }
        let mut command = Command::new(&s.argv[0]);
        command.args(&s.argv[1..]).envs(&s.env).stdin(std::process::Stdio::null());
        if s.host_root {
            if let Err(why) = in_host_root(&mut command, &s.cwd) {
                for t in &names {
                    emit(record(&s.name, t, Verdict::Fail(format!("suite {}: {why}", s.name)), String::new(), 0.0));
                }
                continue;
            }
        } else {
            let _ = std::fs::create_dir_all(&s.cwd);
            command.current_dir(&s.cwd);
        }
        let start = std::time::Instant::now();
        let out = command.output();
        let secs = start.elapsed().as_secs_f64();
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                for t in &names {
                    emit(record(
                        &s.name,
                        t,
                        Verdict::Fail(format!("suite {}: could not start {}: {e}", s.name, s.argv[0])),
                        String::new(),
                        secs,
                    ));
                }
                continue;
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("km: suite {} ({}) exited with {}\n{stdout}{stderr}", s.name, s.argv.join(" "), out.status);
        let both = format!("{stdout}{stderr}");
        match s.format {
            SuiteFormat::ExitStatus => {
                let v = if out.status.success() {
                    Verdict::Pass
                } else {
                    Verdict::Fail(format!(
                        "suite {} exited with {}; output (last 30 lines):\n{}",
                        s.name,
                        out.status,
                        tail(&both, 30)
                    ))
                };
                emit(record(&s.name, "", v, String::new(), secs));
            }
            SuiteFormat::Libtest => {
                let (results, failures) = parse_libtest(&stdout);
                for t in &names {
                    let v = match results.get(*t) {
                        Some(TestOutcome::Ok) => Verdict::Pass,
                        Some(TestOutcome::Ignored(why)) => Verdict::Ignored(why.clone().unwrap_or_else(|| "#[ignore] in the suite".into())),
                        Some(TestOutcome::Failed) => Verdict::Fail(format!(
                            "{}::{t} failed:\n{}",
                            s.name,
                            failures.get(*t).map(|f| f.trim_end().to_string()).unwrap_or_else(|| tail(&both, 30))
                        )),
                        None if results.is_empty() => Verdict::Fail(format!(
                            "suite {}: its output is not libtest's (no `test NAME ... ok` line; exit {}); use `format: exit-status` for other programs. Output (last 30 lines):\n{}",
                            s.name,
                            out.status,
                            tail(&both, 30)
                        )),
                        None => Verdict::Fail(format!("suite {}: the run did not report this test (exit {}); output (last 30 lines):\n{}", s.name, out.status, tail(&both, 30))),
                    };
                    emit(record(&s.name, t, v, String::new(), secs));
                }
            }
        }
    }
}
