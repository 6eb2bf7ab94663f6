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
    matrix_with(tag, bench, Vec::new())
}

fn matrix_with(tag: &str, bench: bool, guest_files: Vec<(String, PathBuf)>) -> Arc<Matrix> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = MatrixConfig::load(&root.join("kernels-arm64.yaml")).unwrap();
    let mut opts = Options::from_env(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(tag)).unwrap();
    opts.bench = bench;
    opts.guest_files = guest_files;
    Arc::new(Matrix::new(config, opts).unwrap())
}

/// An arm64 bpftool that can `prog profile`, as a guest file at /usr/sbin/bpftool.
/// Debian's own bpftool packages (bookworm's 7.1, sid's 7.8) are built without the
/// BPF skeletons that command needs ("bpftool prog profile command is not
/// supported. Please build bpftool with clang"), so it is cross-built here from
/// Debian's linux-source-6.1 (set-up installs it) with clang-22: the tools/ tree
/// only, about 20 s. It links only libelf, zlib and libc, which the arm64 guest
/// root carries for the agent.
fn arm64_bpftool() -> Vec<(String, PathBuf)> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("arm64-bpftool");
    let src = dir.join("linux-source-6.1");
    let bin = src.join("tools/bpf/bpftool/bpftool");
    if !bin.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let members =
            ["tools", "kernel/bpf", "include", "scripts", "Makefile", "arch/arm64/include", "arch/x86/include"];
        let st = std::process::Command::new("tar")
            .arg("xf")
            .arg("/usr/src/linux-source-6.1.tar.xz")
            .args(members.map(|m| format!("linux-source-6.1/{m}")))
            .current_dir(&dir)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "unpacking /usr/src/linux-source-6.1.tar.xz (cargo xtask setup installs linux-source-6.1)"
        );
        // The feature probe for clang's BTF misses clang-22 here, so it is stated.
        let out = std::process::Command::new("make")
            .args(["-j2", "ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-", "CLANG=clang-22"])
            .args(["LLVM_STRIP=llvm-strip-22", "HOSTCC=gcc", "HOSTLD=ld", "feature-clang-bpf-co-re=1"])
            .current_dir(src.join("tools/bpf/bpftool"))
            .output()
            .unwrap();
        assert!(
            out.status.success() && bin.exists(),
            "building bpftool for arm64: {}",
            String::from_utf8_lossy(&[out.stdout, out.stderr].concat())
        );
    }
    vec![("usr/sbin/bpftool".into(), bin)]
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
            assert!(matches!(verdict::judge(f, Arch::X86_64, v, probe, false), Verdict::Fail(_)));
            assert_eq!(verdict::judge(f, Arch::Arm64, v, probe, false), Verdict::Pass);
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
    let m = matrix_with("arm64-bench", true, arm64_bpftool());
    let run = m.run_kernel("6.12-arm64");
    assert!(run.problem().is_none(), "{:?}", run.problem());
    // Instruction counts where the PMU counts them (arm64 under TCG with -icount,
    // trampolines from 6.4): insn_profile passes, and agrees with bpftool prog
    // profile run in the same guest (the check itself fails beyond ±1%).
    let id = *m.checks().iter().find(|c| c.trial() == "xdp_classifier::insn_profile").unwrap();
    assert_eq!(verdict::check(&m, &run, id), Verdict::Pass);
    let profile = &run.checks[&("xdp_classifier".to_string(), "insn_profile".to_string())];
    let (ours, theirs) = (profile.metrics["instructions_per_run"], profile.metrics["bpftool_instructions_per_run"]);
    eprintln!("6.12-arm64 insn_profile: {}", profile.note);
    assert!(ours > 100.0 && ((ours - theirs) / theirs).abs() <= 0.01, "ours {ours}, bpftool {theirs}");
    assert!(profile.metrics["cycles_per_run"] > 0.0);
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

    // Instruction counts are deterministic under -icount: a second VM counts the
    // same per run for every program, `compare` flags nothing between the two,
    // and flags the slow variant (read as the classifier) by its instructions.
    use kernel_matrix::perf::bmf::compare;
    let again = m.run_kernel("6.12-arm64");
    assert!(again.problem().is_none(), "{:?}", again.problem());
    let (bmf2, _) = kernel_matrix::perf::bmf::from_runs(std::slice::from_ref(&again));
    for p in ["xdp_classifier", "xdp_classifier_slow", "xdp_classifier_loop"] {
        let b = format!("6.12-arm64::{p}::test_run");
        let (one, two) = (bmf[&b]["instructions"], bmf2[&b]["instructions"]);
        assert!(one.value > 0.0 && one.value == two.value, "{b}: {one:?} then {two:?}");
    }
    let rerun = compare::compare(&bmf, &bmf2, compare::DEFAULT_THRESHOLD_PCT);
    let t = compare::tally_of(&rerun, "instructions");
    assert_eq!((t.judged, t.slower, t.faster), (3, 0, 0), "{rerun:?}");
    let fixed = compare::map_program(&bmf2, "xdp_classifier", "xdp_classifier");
    let slow = compare::map_program(&bmf2, "xdp_classifier_slow", "xdp_classifier");
    let t = compare::tally_of(&compare::compare(&fixed, &slow, compare::DEFAULT_THRESHOLD_PCT), "instructions");
    assert_eq!((t.judged, t.slower), (1, 1), "the slow variant by instructions");
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
