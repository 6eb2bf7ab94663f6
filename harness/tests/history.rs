//! The results history end to end: two real runs of one kernel recorded by
//! `run --history`, the second with the program's object swapped for one the
//! verifier rejects; `history` must report exactly that cell as newly failing,
//! naming the object as what changed, and nothing else.
use std::{path::PathBuf, process::Command};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn km(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kernel-matrix"));
    c.current_dir(dir).env_remove("KM_HISTORY").env_remove("KM_CONFIG").args([
        "-c",
        "kernels.yaml",
        "--only-programs",
        "filter",
    ]);
    c
}

/// Writes the manifest naming `object`'s program `program` as `filter`.
fn manifest(dir: &std::path::Path, object: &str, program: &str) {
    std::fs::copy(workspace().join("examples/byo").join(object), dir.join("filter.bpf.o")).unwrap();
    let yaml = format!(
        "programs:\n  - name: filter\n    object: filter.bpf.o\n    program: {program}\n    type: xdp\n    test_run:\n      - {{ name: telnet, ipv4: {{ src: 192.0.2.1, dst: 192.0.2.2, proto: tcp, dport: 23 }}, expect: XDP_DROP }}\n"
    );
    std::fs::write(dir.join("programs.yaml"), yaml).unwrap();
}

#[test]
fn history_reports_the_object_that_broke_a_cell_and_nothing_else() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("history-e2e");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kernels.yaml"),
        "programs: [programs.yaml]\nkernels:\n  - name: '6.1'\n    debian: { suite: bookworm, series: '6.1' }\n",
    )
    .unwrap();
    std::fs::copy(workspace().join("kernels.lock"), dir.join("kernels.lock")).unwrap();

    manifest(&dir, "xdp_port_filter.bpf.o", "port_filter");
    let first = km(&dir).args(["run", "--history", "h.sqlite", "--history-label", "night 1"]).output().unwrap();
    // --only-programs leaves our own programs unrun, so their cells fail in both
    // runs: a failure that is not new, which `history` must not report.
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        out.lines().any(|l| l.starts_with("| filter |") && l.contains('✓')),
        "the original object must load:\n{out}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stderr).contains("history: recorded as run 1"));
    let only = km(&dir).args(["history", "--history", "h.sqlite"]).output().unwrap();
    assert!(only.status.success());
    assert!(String::from_utf8_lossy(&only.stdout).contains("only run 1 is recorded"));

    manifest(&dir, "xdp_unchecked_read.bpf.o", "unchecked_read");
    let second = km(&dir).args(["run", "--history", "h.sqlite", "--history-label", "night 2"]).output().unwrap();
    let out2 = String::from_utf8_lossy(&second.stdout);
    assert!(
        out2.lines().any(|l| l.starts_with("| filter |") && l.contains('✗')),
        "the swapped object must be rejected:\n{out2}"
    );
    assert!(String::from_utf8_lossy(&second.stderr).contains("history: recorded as run 2"));

    let json = km(&dir).args(["history", "--history", "h.sqlite", "--json"]).output().unwrap();
    assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let failing = v["newly_failing"].as_array().unwrap();
    let trials: Vec<&str> = failing.iter().map(|c| c["trial"].as_str().unwrap()).collect();
    assert!(trials.contains(&"6.1::filter::load"), "{v:#}");
    for c in failing {
        assert!(c["trial"].as_str().unwrap().starts_with("6.1::filter::"), "only the swapped program may break: {v:#}");
        let changed: Vec<&str> = c["changed"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        assert_eq!(changed.len(), 1, "{v:#}");
        assert!(changed[0].starts_with("object of filter: sha256 "), "{v:#}");
    }
    for empty in ["newly_passing", "flaky", "bench", "left_out"] {
        assert_eq!(v[empty].as_array().unwrap().len(), 0, "{empty}: {v:#}");
    }
    assert_eq!(v["latest"]["label"], "night 2");

    // --check fails the job on a new failure; Markdown names the cell.
    let md = km(&dir).args(["history", "--history", "h.sqlite", "--markdown", "--check"]).output().unwrap();
    assert_eq!(md.status.code(), Some(1));
    let md = String::from_utf8_lossy(&md.stdout);
    assert!(md.contains("### Newly failing") && md.contains("`6.1::filter::load` (pass -> fail)"), "{md}");
}
