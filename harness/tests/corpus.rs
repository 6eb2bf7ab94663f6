//! The corpus (examples/corpus) through kernels-corpus.yaml on real old and new
//! kernels (5.10, 6.12 and 7.2 under QEMU): every program's load (and attach)
//! verdict is the one examples/corpus/expected.yaml documents for that kernel, the
//! run is green after the matrix's expected failures, every rejection is
//! classified by what happened (a missing need, an attach target absent from the
//! kernel's BTF, a map the kernel cannot create) and its first line names it, and
//! `explain`'s prediction (versions, and the kernel's own BTF read from the cache,
//! nothing booted) agrees with the run's verdict and cause on every program.
use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use kernel_matrix::report::explain::{self, Predicted};
use kernel_matrix::{
    config::MatrixConfig,
    run::{Matrix, Options},
    verdict,
};
use km_protocol::{byo::LoadCause, Verdict};
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

/// The cause of each documented failure, and what its first line must say.
const CAUSES: &[(&str, LoadCause, &str)] = &[
    ("syscall::create_map", LoadCause::MissingNeed, "syscall program"),
    (
        "loop::close_enter",
        LoadCause::MissingNeed,
        "calls bpf_loop (helper 181), which 5.10 lacks; features.yaml: bpf_loop, 5.17",
    ),
    ("cookie::func_hit", LoadCause::MissingNeed, "calls bpf_get_attach_cookie (helper 174), which 5.10 lacks"),
    ("user_ringbuf::drain_commands", LoadCause::MissingNeed, "user_ringbuf map"),
    ("kfunc_task::sig_generate", LoadCause::MissingNeed, "calls kfunc bpf_task_from_pid, which"),
    ("iter_num::fork_hist", LoadCause::MissingNeed, "calls kfunc bpf_iter_num_new, which"),
    // The renamed function: absent from the old kernels' BTF, which have the old name.
    (
        "loader::unlink_new",
        LoadCause::AttachTarget,
        "attach target \"filename_unlinkat\" (kernel function named by its section) is not in",
    ),
    ("loader::unlink_old", LoadCause::AttachTarget, "attach target \"do_unlinkat\" (kernel function"),
    ("bad_stackmap::write_stack", LoadCause::MapCreate, "map 'stacks' could not be created on"),
];

/// The name the message must list as nearest, per (trial, kernel series).
const NEAREST: &[(&str, &str, &str)] =
    &[("loader::unlink_new", "5.10", "do_unlinkat"), ("loader::unlink_old", "7.2", "filename_unlinkat")];

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let expected: Expected =
        serde_norway::from_str(&std::fs::read_to_string(root.join("examples/corpus/expected.yaml")).unwrap()).unwrap();
    let config = MatrixConfig::load(&root.join("kernels-corpus.yaml")).unwrap();
    let run_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("corpus-runs");
    let m = Arc::new(Matrix::new(config, Options::from_env(run_dir).unwrap()).unwrap());
    let kernels = std::env::var("KM_CORPUS_KERNELS").unwrap_or_else(|_| "5.10,6.12,7.2".into());
    let mut problems = Vec::new();
    let mut checked = 0;
    let (mut predicted, mut agreed) = (0, 0);
    for k in kernels.split(',') {
        let col = expected.kernels.iter().position(|x| x == k).unwrap_or_else(|| panic!("{k} not in expected.yaml"));
        let run = m.run_kernel(k);
        assert!(run.problem().is_none(), "{k}: {:?}", run.problem());
        // explain's view of this kernel: its version and the BTF of the image the
        // run just booted, read from the cache.
        let (views, _) = explain::kernel_views(&m.config, &m.opts.cache_dir, &[k.to_string()]).unwrap();
        for p in &m.byo {
            let Some(o) = run.checks.get(&(p.guest.name.clone(), "load".to_string())) else { continue };
            let (prediction, cause, reason) = explain::predict(&p.guest.requires, &views[0]);
            let observed = if o.verdict == Verdict::Pass { Predicted::Accept } else { Predicted::Reject };
            predicted += 1;
            if (prediction, cause) == (observed, o.cause) {
                agreed += 1;
            } else {
                problems.push(format!(
                    "{k}::{}::load: explain predicted {prediction:?} ({cause:?}: {reason}), the run gave {:?} ({:?})",
                    p.guest.name, o.verdict, o.cause
                ));
            }
        }
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
                        let (class, cause) = CAUSES
                            .iter()
                            .find(|(t, _, _)| *t == trial)
                            .map(|c| (c.1, c.2))
                            .unwrap_or((LoadCause::MissingNeed, "lacks"));
                        let first = msg.lines().next().unwrap_or("");
                        if !first.contains(cause) {
                            problems.push(format!("{k}::{trial}: rejection does not lead with {cause:?}:\n{msg}"));
                        }
                        let got = run.checks[&(trial.clone(), "load".to_string())].cause;
                        if got != Some(class) {
                            problems.push(format!("{k}::{trial}: cause {got:?}, want {class:?}:\n{msg}"));
                        }
                        for (t, series, name) in NEAREST {
                            if *t == trial && *series == k && !first.contains(name) {
                                problems.push(format!("{k}::{trial}: the nearest names do not list {name}:\n{first}"));
                            }
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
    println!("corpus: explain's prediction agreed with the run on {agreed} of {predicted} program x kernel cells");
    let programs: usize = expected.objects.values().map(|o| o.programs.len()).sum();
    assert!(programs >= 29 && checked == programs * kernels.split(',').count(), "checked only {checked} cells");
    assert!(problems.is_empty(), "{} disagreement(s):\n{}", problems.len(), problems.join("\n\n"));
    println!("corpus: {checked} load verdicts on {kernels} agree with expected.yaml");
}
