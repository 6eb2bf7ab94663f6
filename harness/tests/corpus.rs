//! The corpus (examples/corpus) through kernels-corpus.yaml on a real old and a
//! real new kernel (5.10 and 6.12 under QEMU): every program's load (and attach)
//! verdict is the one examples/corpus/expected.yaml documents for that kernel, the
//! run is green after the matrix's expected failures, and every rejection names
//! its cause (the need this kernel lacks) before the verifier's log.
use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use kernel_matrix::{
    config::MatrixConfig,
    run::{Matrix, Options},
    verdict,
};
use km_protocol::Verdict;
use serde::Deserialize;

#[derive(Deserialize)]
struct Expected {
    kernels: Vec<String>,
    objects: BTreeMap<String, Object>,
}
#[derive(Deserialize)]
struct Object {
    programs: BTreeMap<String, Program>,
}
#[derive(Deserialize)]
struct Program {
    observed: Observed,
}
#[derive(Deserialize)]
struct Observed {
    load: Vec<String>,
    attach: Vec<String>,
}

/// What a missing need's message must mention, per documented failure.
const CAUSES: &[(&str, &str)] = &[
    ("syscall::create_map", "syscall program"),
    ("loop::close_enter", "calls bpf_loop (helper 181), which 5.10 lacks; features.yaml: bpf_loop, 5.17"),
    ("cookie::func_hit", "calls bpf_get_attach_cookie (helper 174), which 5.10 lacks"),
    ("user_ringbuf::drain_commands", "user_ringbuf map"),
    ("kfunc_task::sig_generate", "calls kfunc bpf_task_from_pid, which"),
    ("iter_num::fork_hist", "calls kfunc bpf_iter_num_new, which"),
];

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let expected: Expected =
        serde_norway::from_str(&std::fs::read_to_string(root.join("examples/corpus/expected.yaml")).unwrap()).unwrap();
    let config = MatrixConfig::load(&root.join("kernels-corpus.yaml")).unwrap();
    let run_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("corpus-runs");
    let m = Arc::new(Matrix::new(config, Options::from_env(run_dir).unwrap()).unwrap());
    let kernels = std::env::var("KM_CORPUS_KERNELS").unwrap_or_else(|_| "5.10,6.12".into());
    let mut problems = Vec::new();
    let mut checked = 0;
    for k in kernels.split(',') {
        let col = expected.kernels.iter().position(|x| x == k).unwrap_or_else(|| panic!("{k} not in expected.yaml"));
        let run = m.run_kernel(k);
        assert!(run.problem().is_none(), "{k}: {:?}", run.problem());
        for (file, obj) in &expected.objects {
            let entry = file.trim_end_matches(".bpf.o");
            for (prog, want) in &obj.programs {
                let trial = format!("{entry}::{prog}");
                let id = *m
                    .checks()
                    .iter()
                    .find(|c| c.program == trial && c.check == "load")
                    .unwrap_or_else(|| panic!("no trial {trial}::load"));
                let raw = &run
                    .checks
                    .get(&(trial.clone(), "load".into()))
                    .unwrap_or_else(|| panic!("{k}: {trial}: no record"))
                    .verdict;
                let want_ok = want.observed.load[col] == "ok";
                checked += 1;
                match (raw, want_ok) {
                    (Verdict::Pass, true) => {}
                    (Verdict::Fail(msg), false) => {
                        let cause = CAUSES.iter().find(|(t, _)| *t == trial).map(|c| c.1).unwrap_or("lacks");
                        if !msg.lines().next().unwrap_or("").contains(cause) {
                            problems.push(format!("{k}::{trial}: rejection does not lead with {cause:?}:\n{msg}"));
                        }
                    }
                    (v, _) => problems
                        .push(format!("{k}::{trial}::load: got {v:?}, expected.yaml says {}", want.observed.load[col])),
                }
                // After expected_failures the cell must not fail.
                if let Verdict::Fail(msg) = verdict::check(&m, &run, id) {
                    problems.push(format!("{k}::{trial}::load fails after expected_failures: {msg}"));
                }
                let attach = want.observed.attach[col].as_str();
                if let Some(o) = run.checks.get(&(trial.clone(), "attach".into())) {
                    let ok = matches!(o.verdict, Verdict::Pass);
                    if (attach == "ok") != ok && attach != "-" {
                        problems
                            .push(format!("{k}::{trial}::attach: got {:?}, expected.yaml says {attach}", o.verdict));
                    }
                } else if attach == "ok" {
                    problems.push(format!("{k}::{trial}::attach: no attach trial, expected.yaml says ok"));
                }
            }
        }
    }
    assert!(checked >= 48, "checked only {checked} cells");
    assert!(problems.is_empty(), "{} disagreement(s) with expected.yaml:\n{}", problems.len(), problems.join("\n\n"));
    println!("corpus: {checked} load verdicts on {kernels} agree with expected.yaml");
}
