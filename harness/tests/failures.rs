//! Failure modes, produced for real: a tampered hash in the lock, a package the
//! mirror does not have, a guest that hangs and a guest kernel that panics. Each
//! must end as a clear failing verdict (not a hang, not a panic of the harness)
//! and leave no QEMU process behind.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use kernel_matrix::{
    config::MatrixConfig,
    images::lock::Lock,
    run::{KernelRun, Matrix, Options},
    verdict,
};
use km_protocol::{checks::CATALOGUE, Verdict};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A one-kernel matrix in a scratch directory, with a lock derived from the
/// workspace's real one by `edit`.
fn scratch_matrix(tag: &str, yaml: &str, edit: impl FnOnce(&mut Lock)) -> (Arc<Matrix>, PathBuf) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("failures-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg_path = dir.join("kernels.yaml");
    std::fs::write(&cfg_path, yaml).unwrap();
    let mut lock = Lock::load(&workspace().join("kernels.lock")).unwrap();
    edit(&mut lock);
    lock.save(&Lock::path_for(&cfg_path)).unwrap();
    let config = MatrixConfig::load(&cfg_path).unwrap();
    let run_dir = dir.join("runs");
    let opts = Options::from_env(run_dir.clone()).unwrap();
    (Arc::new(Matrix::new(config, opts).unwrap()), run_dir)
}

fn all_failed_with(m: &Matrix, run: &KernelRun, needle: &str) {
    for id in CATALOGUE {
        match verdict::check(m, run, *id) {
            Verdict::Fail(msg) => {
                assert!(msg.contains(needle), "{}::{}: expected {needle:?} in:\n{msg}", id.program, id.check)
            }
            other => panic!("{}::{} should fail, got {other:?}", id.program, id.check),
        }
    }
}

/// No process whose command line mentions `dir` (our QEMUs all do, via -serial file:).
fn assert_no_process_mentions(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            assert!(!(cmd.contains("qemu-system") && cmd.contains(&needle)), "left behind: {cmd}");
        }
    }
}

#[test]
fn tampered_sha256_is_caught_and_nothing_is_kept() {
    let yaml = "kernels:\n  - name: '5.10'\n    debian: { suite: bullseye-security, series: '5.10' }\n";
    let (m, _) = scratch_matrix("sha", yaml, |lock| {
        let f = &mut lock.kernels.get_mut("5.10").unwrap().files[0];
        f.sha256 = "0".repeat(64);
    });
    let run = m.run_kernel("5.10");
    all_failed_with(&m, &run, "sha256 mismatch");
    let debs = m.opts.cache_dir.join("debs");
    assert!(!debs.join(format!("{}.deb", "0".repeat(64))).exists(), "a file with the wrong hash was kept");
    let leftovers: Vec<_> = std::fs::read_dir(&debs)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary downloads left behind: {leftovers:?}");
}

#[test]
fn missing_package_names_the_package() {
    let yaml = "kernels:\n  - name: '6.1'\n    debian: { suite: bookworm, series: '6.1' }\n";
    let (m, _) = scratch_matrix("missing", yaml, |lock| {
        let f = &mut lock.kernels.get_mut("6.1").unwrap().files[0];
        f.package = "linux-image-0.0.0-km-test-cloud-amd64".into();
        f.path = "pool/main/l/linux-signed-amd64/linux-image-0.0.0-km-test-cloud-amd64_0.0.0-1_amd64.deb".into();
        f.sha256 = "1".repeat(64);
    });
    let run = m.run_kernel("6.1");
    all_failed_with(&m, &run, "not found on the mirror");
    all_failed_with(&m, &run, "linux-image-0.0.0-km-test-cloud-amd64");
}

#[test]
fn kernel_missing_from_the_lock_says_how_to_fix_it() {
    let yaml = "kernels:\n  - name: '6.1'\n    debian: { suite: bookworm, series: '6.1' }\n";
    let (m, _) = scratch_matrix("unlocked", yaml, |lock| lock.kernels.clear());
    // The engine prints nothing itself: what happened arrives as events.
    let events = Arc::new(kernel_matrix::run::events::Collect::default());
    let m = Arc::new(Arc::into_inner(m).unwrap().with_events(events.clone()));
    m.announce("", &["6.1".to_string()]);
    let runs = m.run_kernels(&["6.1".to_string()]);
    all_failed_with(&m, &runs[0], "kernel-matrix lock --update");
    let seen = events.0.lock().unwrap().clone();
    use kernel_matrix::run::events::Event;
    assert!(
        matches!(&seen[..], [Event::Starting { kernels: 1, .. }, Event::KernelDone { kernel, .. }] if kernel == "6.1"),
        "{seen:?}"
    );
}

#[test]
fn hanging_guest_is_killed_at_its_timeout_with_console_tail() {
    let yaml = "kernels:\n  - name: '6.1'\n    debian: { suite: bookworm, series: '6.1' }\n    cmdline: km.action=hang\n    timeout_secs: 20\n";
    let (m, run_dir) = scratch_matrix("hang", yaml, |_| {});
    let start = Instant::now();
    let run = m.run_kernel("6.1");
    let took = start.elapsed();
    all_failed_with(&m, &run, "did not finish within 20s");
    all_failed_with(&m, &run, "km: hanging on request");
    eprintln!("hang detected and VM killed after {took:?}");
    assert_no_process_mentions(&run_dir);
}

#[test]
fn panicking_guest_fails_fast_with_the_panic_in_the_log() {
    let yaml = "kernels:\n  - name: '6.1'\n    debian: { suite: bookworm, series: '6.1' }\n    cmdline: km.action=panic\n    timeout_secs: 120\n";
    let (m, run_dir) = scratch_matrix("panic", yaml, |_| {});
    let start = Instant::now();
    let run = m.run_kernel("6.1");
    let took = start.elapsed();
    all_failed_with(&m, &run, "panicked");
    all_failed_with(&m, &run, "Kernel panic");
    eprintln!("panic detected after {took:?}");
    assert!(took.as_secs() < 60, "panic detection took {took:?}, the timeout is not what caught it");
    assert_no_process_mentions(&run_dir);
}

/// A C program someone else wrote, brought through a manifest, that every
/// verifier must reject: on every kernel its `load` fails with the verifier's log
/// tail and the instruction it stopped at. Only that program runs in the guests.
#[test]
fn user_program_rejected_by_the_verifier_fails_with_its_log_on_every_kernel() {
    let manifest = workspace().join("examples/byo/rejected.yaml");
    let mut yaml = format!("programs: [{}]\nkernels:\n", manifest.display());
    let real = MatrixConfig::load(&workspace().join("kernels.yaml")).unwrap();
    for k in &real.kernels {
        match &k.debian {
            Some(d) => yaml.push_str(&format!(
                "  - {{ name: '{}', debian: {{ suite: {}, series: '{}' }} }}\n",
                k.name, d.suite, d.series
            )),
            None if k.host => yaml.push_str("  - { name: host, host: true }\n"),
            None => {}
        }
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("failures-byo-rejected");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg_path = dir.join("kernels.yaml");
    std::fs::write(&cfg_path, yaml).unwrap();
    std::fs::copy(workspace().join("kernels.lock"), Lock::path_for(&cfg_path)).unwrap();
    let mut opts = Options::from_env(dir.join("runs")).unwrap();
    opts.only_programs = Some(vec!["unchecked_read".into()]);
    let m = Arc::new(Matrix::new(MatrixConfig::load(&cfg_path).unwrap(), opts).unwrap());
    let load = m.checks().iter().copied().find(|c| c.program == "unchecked_read" && c.check == "load").unwrap();
    let handles: Vec<_> = m
        .kernel_names()
        .into_iter()
        .map(|k| {
            let m = m.clone();
            std::thread::spawn(move || (k.clone(), m.run_kernel(&k)))
        })
        .collect();
    for h in handles {
        let (k, run) = h.join().unwrap();
        match verdict::check(&m, &run, load) {
            Verdict::Fail(msg) => {
                assert!(msg.contains("verifier/libbpf log") || msg.contains("verifier log"), "{k}: no log in:\n{msg}");
                assert!(msg.contains("failing instruction: "), "{k}: no failing instruction in:\n{msg}");
                assert!(
                    msg.contains("R2") || msg.contains("invalid access to packet") || msg.contains("pkt"),
                    "{k}: log tail lacks the verifier's reason:\n{msg}"
                );
                eprintln!(
                    "{k}: rejected as expected; {}",
                    msg.lines().find(|l| l.starts_with("failing instruction")).unwrap()
                );
            }
            other => panic!("{k}: unchecked_read::load should fail, got {other:?}"),
        }
    }
}

/// The position of the PVH entry note's type field in an x86 vmlinux: a `Xen`
/// note (namesz 4) of type XEN_ELFNOTE_PHYS32_ENTRY (18).
fn pvh_note_type_at(elf: &[u8]) -> Option<usize> {
    elf.windows(16)
        .position(|w| w[0..4] == 4u32.to_le_bytes() && w[8..12] == 18u32.to_le_bytes() && &w[12..16] == b"Xen\0")
        .map(|p| p + 8)
}

/// Kernels QEMU will not boot as given: what QEMU said is in the verdict (a
/// kernel it cannot load prints only there, the console stays empty); a vmlinux
/// without the PVH note (CONFIG_PVH off) is refused before booting with what to
/// give instead; and an image whose extracted vmlinux has no PVH note boots from
/// its compressed image.
#[test]
fn kernels_qemu_cannot_boot_fail_with_its_words_or_boot_their_bzimage() {
    let (m0, _) = scratch_matrix(
        "pvh-fetch",
        "kernels:\n  - name: '6.1'\n    debian: { suite: bookworm, series: '6.1' }\n",
        |_| {},
    );
    let image = m0.image(m0.config.kernel("6.1").unwrap()).unwrap().unwrap();
    let elf = std::fs::read(image.vmlinux.as_ref().expect("6.1's vmlinux")).unwrap();
    assert!(kernel_matrix::images::bzimage::has_pvh_note(&elf));
    let at = pvh_note_type_at(&elf).expect("Debian's 6.1 has a PVH note");
    let mut no_pvh = elf;
    no_pvh[at] = 17; // another Xen note type: the entry point is gone
    assert!(!kernel_matrix::images::bzimage::has_pvh_note(&no_pvh));
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("failures-pvh-files");
    std::fs::create_dir_all(&dir).unwrap();
    let (junk, elf_path, bz) = (dir.join("junk"), dir.join("vmlinux-no-pvh"), dir.join("vmlinuz"));
    std::fs::write(&junk, vec![0x5a; 64 << 10]).unwrap();
    std::fs::write(&elf_path, &no_pvh).unwrap();
    std::fs::copy(&image.bzimage, &bz).unwrap();
    let local = |tag: &str, kernel: &Path| {
        let yaml = format!(
            "kernels:\n  - name: mine\n    local: {{ kernel: '{}' }}\n    timeout_secs: 120\n",
            kernel.display()
        );
        scratch_matrix(tag, &yaml, |_| {})
    };

    // Not a kernel at all: QEMU refuses it, and says why.
    let (m, run_dir) = local("pvh-junk", &junk);
    let run = m.run_kernel("mine");
    let problem = run.problem().expect("junk does not boot");
    assert!(problem.contains("QEMU said: "), "{problem}");
    assert_no_process_mentions(&run_dir);

    // A vmlinux without the PVH note: refused before booting, naming the fix.
    let (m, _) = local("pvh-elf", &elf_path);
    let run = m.run_kernel("mine");
    let problem = run.problem().expect("refused");
    assert!(problem.contains("no PVH ELF note") && problem.contains("bzImage"), "{problem}");

    // A bzImage whose extracted vmlinux has no PVH note: marked so in the cache,
    // it boots from the bzImage and its checks run.
    let (m, _) = local("pvh-bz", &bz);
    let img = m.image(m.config.kernel("mine").unwrap()).unwrap().unwrap();
    let entry = img.vmlinux.as_ref().unwrap().parent().unwrap().to_path_buf();
    std::fs::write(entry.join("vmlinux.no-pvh"), "").unwrap();
    let img = m.image(m.config.kernel("mine").unwrap()).unwrap().unwrap();
    assert_eq!(img.boot_file(), img.bzimage.as_path(), "no PVH: boot the compressed image");
    let run = m.run_kernel("mine");
    let _ = std::fs::remove_file(entry.join("vmlinux.no-pvh"));
    assert!(run.problem().is_none(), "{:?}", run.problem());
    assert!(run.command_line.as_deref().unwrap_or("").contains("vmlinuz"), "{:?}", run.command_line);
    let load = verdict::check(&m, &run, CATALOGUE[0]);
    assert_eq!(load, Verdict::Pass, "{}", CATALOGUE[0].trial());
}
