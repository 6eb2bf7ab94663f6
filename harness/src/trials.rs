//! The matrix as libtest trials (`cargo test` through libtest-mimic).
use std::sync::Arc;

use libtest_mimic::{Completion, Failed, Trial};

use crate::{matrix::{KernelRun, Matrix}, protocol::Verdict};

/// One trial per kernel x program x check, named `<kernel>::<program>::<check>`.
///
/// Ordered check-major so the first trials the worker threads pick belong to
/// different kernels, which then boot in parallel.
pub fn trials(matrix: Arc<Matrix>) -> Vec<Trial> {
    let mut out = Vec::new();
    for id in matrix.checks().to_vec() {
        for kernel in matrix.kernel_names() {
            let m = matrix.clone();
            let name = format!("{kernel}::{}::{}", id.program, id.check);
            out.push(Trial::ignorable_test(name, move || {
                let start = std::time::Instant::now();
                let run = m.run_kernel(&kernel);
                let trial = format!("{}::{}", id.program, id.check);
                completion(m.cell(&run, &trial, run.verdict(id)), &run, &trial, start)
            }));
        }
    }
    for f in crate::features::catalogue() {
        for kernel in matrix.kernel_names() {
            let m = matrix.clone();
            out.push(Trial::ignorable_test(format!("{kernel}::features::{}", f.id), move || {
                let start = std::time::Instant::now();
                let run = m.run_kernel(&kernel);
                let trial = format!("features::{}", f.id);
                completion(m.cell(&run, &trial, run.feature_verdict(f)), &run, &trial, start)
            }));
        }
    }
    out.extend(crate::bench::trials(matrix));
    out
}

/// A failing trial's message ends with the command that reruns just that cell
/// (see `results::rerun_hint`); every outcome is recorded for the JUnit/JSON files.
fn completion(v: Verdict, run: &KernelRun, trial: &str, start: std::time::Instant) -> Result<Completion, Failed> {
    crate::results::observe(run, trial, &v, start.elapsed().as_secs_f64());
    match v {
        Verdict::Pass => Ok(Completion::Completed),
        Verdict::Ignored(reason) => Ok(Completion::ignored_with(reason)),
        Verdict::Fail(msg) => Err(Failed::from(format!("{msg}\n(on {})\n{}", run.where_(), crate::results::rerun_hint(run, trial)))),
    }
}
