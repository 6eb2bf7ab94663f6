//! The benchmarks must catch the classic regression in a guest too: one real
//! `kernel-matrix bench` of the 6.1 kernel under TCG with -icount, every benchmark
//! cell measured (XDP, USDT and profiler fdinfo included), a valid BMF file, and
//! `compare --map` flagging the slow variant on test_run and fdinfo. (The host's
//! version, with native timings: agent/tests/perf_regression.rs.)
use kernel_matrix::perf::bmf::LATENCY;

#[test]
fn guest_benchmarks_run_and_catch_the_slow_variant() {
    let ws = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("perf-guest");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let km = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_kernel-matrix"));
        c.arg("--config").arg(ws.join("kernels.yaml")).env("KM_RUN_DIR", dir.join("runs")).env("KM_PROGRESS", "plain");
        c
    };
    let json = dir.join("bench.json");
    let out = km().args(["bench", "-k", "6.1", "-o"]).arg(&json).output().expect("running kernel-matrix bench");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{text}");
    // Read back through the validator (bmf::read checks the BMF shape and names).
    let (bmf, meta) = kernel_matrix::perf::bmf::read(&json).expect("valid BMF");
    assert_eq!(meta.accel_of("6.1"), "tcg-icount", "{meta:?}");
    for cell in km_protocol::checks::BENCHES {
        let name = format!("6.1::{}::{}", cell.program, cell.check);
        let m =
            bmf.get(&name).and_then(|ms| ms.get(LATENCY)).unwrap_or_else(|| panic!("no latency for {name}:\n{text}"));
        assert!(m.value > 0.0 && m.lower() <= m.value && m.value <= m.upper(), "{name}: {m:?}");
    }
    let out = km()
        .arg("compare")
        .arg(&json)
        .arg(&json)
        .args(["--map", "xdp_classifier_slow=xdp_classifier"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "the slow variant must be a regression:\n{table}");
    for check in ["test_run", "fdinfo"] {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| 6.1::xdp_classifier::{check} | latency")))
            .unwrap_or_else(|| panic!("no {check} row:\n{table}"));
        assert!(row.contains("**SLOWER**"), "{row}");
    }
    eprintln!("{table}");
}
