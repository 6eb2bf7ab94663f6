//! The matrix as libtest trials (`cargo test` through libtest-mimic).
use std::sync::Arc;

use libtest_mimic::{Completion, Failed, Trial};

use crate::{checks::CATALOGUE, matrix::Matrix, protocol::Verdict};

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
                match run.verdict(id) {
                    Verdict::Pass => Ok(Completion::Completed),
                    Verdict::Ignored(reason) => Ok(Completion::ignored_with(reason)),
                    Verdict::Fail(msg) => Err(Failed::from(format!("{msg}\n(on {})", run.where_()))),
                }
            }));
        }
    }
    out
}
