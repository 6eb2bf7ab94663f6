//! Human-readable summaries of a matrix run.
use std::fmt::Write as _;

use crate::{checks::CATALOGUE, matrix::KernelRun, protocol::Verdict};

/// A Markdown table: one row per kernel, one column per check, plus where the
/// numbers came from (release, accelerator, boot time).
pub fn summary_table(runs: &[std::sync::Arc<KernelRun>]) -> String {
    let mut s = String::new();
    let _ = write!(s, "| kernel | release | accel | boot s | wall s |");
    for id in CATALOGUE {
        let _ = write!(s, " {}::{} |", id.program, id.check);
    }
    s.push('\n');
    s.push_str(&"|---".repeat(5 + CATALOGUE.len()));
    s.push_str("|\n");
    for r in runs {
        let accel = r.accel.map(|a| a.to_string()).unwrap_or_else(|| "host".into());
        let boot = r.boot.map(|b| format!("{:.1}", b.as_secs_f64())).unwrap_or_else(|| "-".into());
        let _ = write!(
            s,
            "| {} | {} | {} | {} | {:.1} |",
            r.kernel,
            r.release.as_deref().unwrap_or("-"),
            accel,
            boot,
            r.wall.as_secs_f64()
        );
        for id in CATALOGUE {
            let cell = match r.verdict(*id) {
                Verdict::Pass => "pass".to_string(),
                Verdict::Fail(_) => "**FAIL**".to_string(),
                Verdict::Ignored(reason) => format!("ignored ({reason})"),
            };
            let _ = write!(s, " {cell} |");
        }
        s.push('\n');
    }
    s
}

/// The failures, each with its reason, for the end of a run.
pub fn failures(runs: &[std::sync::Arc<KernelRun>]) -> Vec<String> {
    let mut out = Vec::new();
    for r in runs {
        for id in CATALOGUE {
            if let Verdict::Fail(msg) = r.verdict(*id) {
                out.push(format!("{}::{}::{} ({}):\n{msg}", r.kernel, id.program, id.check, r.where_()));
            }
        }
    }
    out
}
