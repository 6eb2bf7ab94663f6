//! The matrix as libtest trials (`cargo test` through libtest-mimic).
use std::sync::Arc;

use libtest_mimic::{Completion, Failed, Trial};

use crate::{checks::CATALOGUE, matrix::{KernelRun, Matrix}, protocol::Verdict};

/// One trial per kernel x program x check, named `<kernel>::<program>::<check>`.
///
/// Ordered check-major so the first trials the worker threads pick belong to
/// different kernels, which then boot in parallel.
pub fn trials(matrix: Arc<Matrix>) -> Vec<Trial> {
    let mut out = Vec::new();
    for id in CATALOGUE {
        for kernel in matrix.kernel_names() {
            let m = matrix.clone();
            let name = format!("{kernel}::{}::{}", id.program, id.check);
            let id = *id;
            out.push(Trial::ignorable_test(name, move || {
                let run = m.run_kernel(&kernel);
                completion(m.cell(&run, &format!("{}::{}", id.program, id.check), run.verdict(id)), &run)
            }));
        }
    }
    for f in crate::features::catalogue() {
        for kernel in matrix.kernel_names() {
            let m = matrix.clone();
            out.push(Trial::ignorable_test(format!("{kernel}::features::{}", f.id), move || {
                let run = m.run_kernel(&kernel);
                completion(m.cell(&run, &format!("features::{}", f.id), run.feature_verdict(f)), &run)
            }));
        }
    }
    out
}

fn completion(v: Verdict, run: &KernelRun) -> Result<Completion, Failed> {
    match v {
        Verdict::Pass => Ok(Completion::Completed),
        Verdict::Ignored(reason) => Ok(Completion::ignored_with(reason)),
        Verdict::Fail(msg) => Err(Failed::from(format!("{msg}\n(on {})", run.where_()))),
    }
}
