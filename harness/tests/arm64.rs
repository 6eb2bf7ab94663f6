//! The arm64 matrix (kernels-arm64.yaml) for real: Debian's arm64 kernels booted by
//! qemu-system-aarch64 under TCG with the cross-built agent, every check with a real
//! verdict, a feature gate that differs between the architectures and is explained by
//! its probe, and guest benchmarks labelled with their accelerator.
use std::{path::PathBuf, sync::Arc};

use kernel_matrix::{
    config::MatrixConfig,
    run::{Matrix, Options},
    verdict,
};
use km_protocol::{features::by_id, Arch, KernelVersion, Probe, Verdict};

fn matrix(tag: &str, bench: bool) -> Arc<Matrix> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = MatrixConfig::load(&root.join("kernels-arm64.yaml")).unwrap();
    let mut opts = Options::from_env(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(tag)).unwrap();
    opts.bench = bench;
    Arc::new(Matrix::new(config, opts).unwrap())
}

/// Checks every arm64 guest passes (not merely "does not fail").
const MUST_PASS: &[&str] = &[
    "xdp_classifier::load",
    "xdp_classifier::classify",
    "profiler::load",
    "profiler::samples",
    "usdt_tracer::load",
    "usdt_tracer::hits",
    "port_filter::load",
    "port_filter::test_run",
];

#[test]
fn arm64_matrix_has_real_verdicts_and_an_architecture_gate() {
    let m = matrix("arm64-runs", false);
    let names = m.kernel_names();
    assert_eq!(names, ["5.10-arm64", "6.1-arm64", "6.12-arm64"]);
    let runs = m.run_kernels(&names);
    let mut problems = Vec::new();
    for run in &runs {
        let k = &run.kernel;
        assert!(run.problem().is_none(), "{k}: {:?}", run.problem());
        let release = run.release.as_deref().unwrap_or_default();
        assert!(release.ends_with("-cloud-arm64"), "{k}: uname -r is {release}");
        let cmd = run.command_line.as_deref().unwrap_or_default();
        assert!(cmd.starts_with("qemu-system-aarch64 -machine virt -accel tcg"), "{k}: {cmd}");
        for id in m.checks() {
            let v = verdict::check(&m, run, *id);
            let trial = id.trial();
            match (&v, MUST_PASS.contains(&trial.as_str())) {
                (Verdict::Pass, _) => {}
                (Verdict::Ignored(why), false) if why.starts_with("needs ") => {}
                _ => problems.push(format!("{k}::{trial}: {v:?}")),
            }
        }
        for f in km_protocol::features::catalogue() {
            if let Verdict::Fail(why) = verdict::feature(&m, run, f) {
                problems.push(format!("{k}::features::{}: {why}", f.id));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The gate that differs: BPF trampolines on kernel functions, x86_64 5.5 and
    // arm64 6.4. The probe attaches an fentry program; arm64 5.10 and 6.1 cannot
    // (ENOTSUPP), 6.12 can, and each is judged against arm64's minimum.
    let f = by_id("trampolines").unwrap();
    for run in &runs {
        let probe = run.features.get("trampolines").expect("a trampolines probe");
        let v: KernelVersion = run.release.as_deref().unwrap().parse().unwrap();
        let present = matches!(probe, Probe::Present(_));
        assert_eq!(present, v >= f.min_version_on(Arch::Arm64), "{}: {probe:?}", run.kernel);
        if run.kernel == "5.10-arm64" {
            let Probe::Absent(why) = probe else { panic!("{probe:?}") };
            assert!(why.contains("attaching it fails"), "{why}");
            // The same answer from an x86_64 5.10 would contradict the catalogue.
            assert!(matches!(verdict::judge(f, Arch::X86_64, v, probe), Verdict::Fail(_)));
            assert_eq!(verdict::judge(f, Arch::Arm64, v, probe), Verdict::Pass);
        }
    }
    // Skipped checks name arm64's version: insn_profile needs prog_profile.
    let old = runs.iter().find(|r| r.kernel == "6.1-arm64").unwrap();
    let id = *m.checks().iter().find(|c| c.trial() == "xdp_classifier::insn_profile").unwrap();
    match verdict::check(&m, old, id) {
        Verdict::Ignored(why) => assert!(why.contains("6.4 on arm64"), "{why}"),
        v => panic!("6.1-arm64 insn_profile: {v:?}"),
    }
}

#[test]
fn arm64_guest_benchmarks_are_measured_and_labelled() {
    let m = matrix("arm64-bench", true);
    let run = m.run_kernel("6.12-arm64");
    assert!(run.problem().is_none(), "{:?}", run.problem());
    let (bmf, meta) = kernel_matrix::perf::bmf::from_runs(std::slice::from_ref(&run));
    assert_eq!(meta.accel_of("6.12-arm64"), "tcg-icount");
    for b in ["xdp_classifier::test_run", "xdp_classifier::fdinfo", "usdt_tracer::fdinfo", "profiler::fdinfo"] {
        let metric = bmf
            .get(&format!("6.12-arm64::{b}"))
            .and_then(|ms| ms.get(kernel_matrix::perf::bmf::LATENCY))
            .unwrap_or_else(|| panic!("no latency for 6.12-arm64::{b}"));
        assert!(metric.value > 0.0, "{b}: {metric:?}");
    }
    // The slow variant costs more than the classifier on arm64 too.
    let lat = |p: &str| bmf[&format!("6.12-arm64::{p}::test_run")][kernel_matrix::perf::bmf::LATENCY].value;
    assert!(lat("xdp_classifier_slow") > lat("xdp_classifier"));
}

/// `exec` and `qemu-cmd` on an arm64 kernel: a program cross-built for aarch64 runs
/// there with its exit status and output; an x86_64 one is refused before booting.
#[test]
fn exec_and_qemu_cmd_work_for_arm64_kernels() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("arm64-exec");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("hello.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include <sys/utsname.h>\nint main(void){struct utsname u;uname(&u);printf(\"machine=%s\\n\",u.machine);return 7;}\n",
    )
    .unwrap();
    let bin = dir.join("hello-arm64");
    let cc = std::process::Command::new("aarch64-linux-gnu-gcc").arg("-o").arg(&bin).arg(&src).status();
    assert!(cc.is_ok_and(|s| s.success()), "aarch64-linux-gnu-gcc (cargo xtask setup installs it)");
    let km = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kernel-matrix"))
            .arg("-c")
            .arg(root.join("kernels-arm64.yaml"))
            .env("KM_RUN_DIR", dir.join("runs"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = km(&["exec", "-k", "6.1-*", "--", bin.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("machine=aarch64"), "{stdout}");
    let out = km(&["exec", "-k", "6.1-arm64", "--", "/bin/true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the guest is arm64"));
    let out = km(&["qemu-cmd", "-k", "6.12-*", "--shell"]);
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.starts_with("qemu-system-aarch64 -machine virt -accel tcg -cpu max,pauth-impdef=on"), "{line}");
    assert!(line.contains("-serial mon:stdio") && line.contains("console=ttyAMA0") && line.contains("km.action=shell"));
    assert!(line.contains("-device pci-serial,chardev=km1"), "{line}");
}
