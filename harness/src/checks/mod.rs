//! The checks: what runs inside each kernel, and their names as trials.
//!
//! The catalogue is data shared by both sides: the host lists trials from it
//! without booting anything, and the guest agent runs it.
use std::collections::BTreeMap;

use crate::protocol::{Record, Verdict};

/// One cell kind of the matrix: `<kernel>::<program>::<check>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckId {
    pub program: &'static str,
    pub check: &'static str,
    /// Kernel features (by name, see `features`) the check cannot run without.
    pub needs: &'static [&'static str],
}

pub const CATALOGUE: &[CheckId] = &[
    CheckId { program: "xdp_classifier", check: "load", needs: &[] },
    CheckId { program: "xdp_classifier", check: "classify", needs: &["BPF_PROG_TEST_RUN"] },
    CheckId { program: "profiler", check: "load", needs: &["perf_event programs", "ring buffer"] },
    CheckId { program: "profiler", check: "samples", needs: &["perf_event programs", "ring buffer"] },
    CheckId { program: "usdt_tracer", check: "load", needs: &["ring buffer"] },
    CheckId { program: "usdt_tracer", check: "hits", needs: &["ring buffer"] },
];

/// Lines of verifier log kept when a program is rejected.
const LOG_TAIL_LINES: usize = 25;

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(crate) fn check(program: &str, check: &str, verdict: Verdict, metrics: BTreeMap<String, f64>, note: String) -> Record {
    Record::Check { program: program.into(), check: check.into(), verdict, metrics, note }
}

/// Guest side: runs every check and hands each record to `emit` as soon as it exists,
/// so a crash later on still leaves the earlier results with the host.
pub fn run_all(emit: &mut dyn FnMut(Record)) {
    xdp::run(emit);
    profiler::run(emit);
    usdt::run(emit);
}

mod profiler;
mod usdt;
mod xdp;
