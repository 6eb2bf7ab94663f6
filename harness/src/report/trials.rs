//! The matrix as libtest trials (`cargo test` through libtest-mimic).
use std::sync::Arc;

use libtest_mimic::{Completion, Failed, Trial};

use km_protocol::Verdict;

use crate::run::{KernelRun, Matrix};

/// One trial per kernel x program x check, named `<kernel>::<program>::<check>`.
///
/// Ordered check-major so the first trials the worker threads pick belong to
/// different kernels, which then boot in parallel.
pub fn trials(matrix: Arc<Matrix>) -> Vec<Trial> {
    let mut out = Vec::new();
    for id in matrix.checks().to_vec() {
        for kernel in matrix.kernel_names() {
            let m = matrix.clone();
            let name = format!("{kernel}::{}", id.trial());
            out.push(Trial::ignorable_test(name, move || {
                let run = m.run_kernel(&kernel);
                let trial = id.trial();
                completion(&m, crate::verdict::check(&m, &run, id), &run, &trial)
            }));
        }
    }
    for f in km_protocol::features::catalogue() {
        for kernel in matrix.kernel_names() {
            let m = matrix.clone();
            out.push(Trial::ignorable_test(format!("{kernel}::features::{}", f.id), move || {
                let run = m.run_kernel(&kernel);
                let trial = format!("features::{}", f.id);
                completion(&m, crate::verdict::feature(&m, &run, f), &run, &trial)
            }));
        }
    }
    out.extend(crate::report::benches::trials(matrix));
    out
}

/// A failing trial's message ends with the command that reruns just that cell
/// (see `results::rerun_hint`); every outcome is recorded for the JUnit/JSON files.
/// libtest has no word for flaky, so a flaky trial says so on stderr (and in the
/// JUnit and JSON files, which have one).
fn completion(m: &Matrix, v: Verdict, run: &KernelRun, trial: &str) -> Result<Completion, Failed> {
    let attempts = crate::report::results::attempts(m, run, trial);
    if let Some(note) = crate::report::results::flaky_note(&attempts, &v) {
        eprintln!("{}::{trial}: {note}", run.kernel);
    }
    crate::report::results::observe(run, trial, &v, attempts);
    match v {
        Verdict::Pass => Ok(Completion::Completed),
        Verdict::Ignored(reason) => Ok(Completion::ignored_with(reason)),
        Verdict::Fail(msg) => Err(Failed::from(format!(
            "{msg}\n(on {})\n{}",
            run.where_(),
            crate::report::results::rerun_hint(run, trial)
        ))),
    }
}
