//! Human-readable summaries of a matrix run.
use std::{fmt::Write as _, sync::Arc};

pub mod benches;
pub mod explain;
pub mod junit;
pub mod repro;
pub mod results;
pub mod trials;
pub mod verifier;

use km_protocol::{features::catalogue, Probe, Verdict};

use crate::run::{KernelRun, Matrix};

/// Every cell of one kernel, `(trial without kernel prefix, final verdict)`, in
/// trial order: checks first, then features.
pub fn cells(m: &Matrix, r: &KernelRun) -> Vec<(String, Verdict)> {
    let checks = m.checks().iter().map(|id| {
        let v = crate::verdict::check(m, r, *id);
        (id.trial(), v)
    });
    let features = catalogue().iter().map(|f| {
        let name = format!("features::{}", f.id);
        let v = crate::verdict::feature(m, r, f);
        (name, v)
    });
    checks.chain(features).collect()
}

/// A Markdown table: one row per kernel, one column per check, plus where the
/// numbers came from (release, accelerator, boot time).
pub fn summary_table(m: &Matrix, runs: &[Arc<KernelRun>]) -> String {
    let mut s = String::from("| kernel | release | accel | boot s | wall s |");
    for id in m.checks() {
        let _ = write!(s, " {} |", id.trial());
    }
    s.push('\n');
    s.push_str(&"|---".repeat(5 + m.checks().len()));
    s.push_str("|\n");
    for r in runs {
        let accel = r.accel_label();
        let boot = r.boot.map(|b| format!("{:.1}", b.as_secs_f64())).unwrap_or_else(|| "-".into());
        let release = r.release.as_deref().unwrap_or("-");
        let _ = write!(s, "| {} | {release} | {accel} | {boot} | {:.1} |", r.kernel, r.wall.as_secs_f64());
        let earlier = results::attempts_by_trial(m, r);
        for (trial, v) in cells(m, r).into_iter().take(m.checks().len()) {
            let attempts = earlier.get(&trial).map_or(&[][..], Vec::as_slice);
            let flaky = if results::flaky_note(attempts, &v).is_some() { " (flaky)" } else { "" };
            let cell = match v {
                Verdict::Pass => format!("pass{flaky}"),
                Verdict::Fail(_) => format!("**FAIL**{flaky}"),
                // Full reasons are in the trial output; a table cell keeps the gist.
                Verdict::Ignored(reason) if reason.chars().count() > 48 => {
                    format!("ignored ({}…)", reason.chars().take(47).collect::<String>())
                }
                Verdict::Ignored(reason) => format!("ignored ({reason})"),
            };
            let _ = write!(s, " {cell} |");
        }
        s.push('\n');
    }
    s
}

/// Markdown: where each kernel's time went, by the guest's own clock (seconds
/// since its kernel started): the kernel's boot to /init, /init to the agent's
/// start, the feature probes, then each program's checks (its load included), the
/// agent's whole run, and the host's view (QEMU start to the agent's first record,
/// and the kernel's whole wall time including waiting for a VM slot).
pub fn time_table(m: &Matrix, runs: &[Arc<KernelRun>]) -> String {
    let mut programs: Vec<&str> = Vec::new();
    for id in m.checks() {
        if !programs.contains(&id.program) {
            programs.push(id.program);
        }
    }
    let mut s = String::from("| kernel | accel | kernel->init | init->agent | probes |");
    for p in &programs {
        let _ = write!(s, " {p} |");
    }
    s.push_str(" agent total | guest clock at end | host: boot | host: wall |\n");
    s.push_str(&"|---".repeat(9 + programs.len()));
    s.push_str("|\n");
    let f = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
    for r in runs {
        let t = &r.timeline;
        let accel = r.accel_label();
        let since = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| b - a);
        let _ = write!(
            s,
            "| {} | {accel} | {} | {} | {} |",
            r.kernel,
            f(t.init),
            f(since(t.init, t.agent)),
            f(since(t.agent, t.probed))
        );
        for p in &programs {
            let secs: Vec<f64> =
                r.checks.iter().filter(|((prog, _), _)| prog == p).filter_map(|(_, o)| o.secs).collect();
            let _ = write!(s, " {} |", f((!secs.is_empty()).then(|| secs.iter().sum())));
        }
        // The host's clock at the end is its uptime, not this run's: only guests show it.
        let end = if r.accel.is_some() { f(t.end) } else { "-".into() };
        let _ = writeln!(
            s,
            " {} | {end} | {} | {:.2} |",
            f(since(t.agent, t.end)),
            f(r.boot.map(|b| b.as_secs_f64())),
            r.wall.as_secs_f64()
        );
    }
    s
}

/// Markdown: features as rows, kernels as columns, what the probes found, with
/// the declared minimum; a cell that disagrees with it is marked.
pub fn feature_table(m: &Matrix, runs: &[Arc<KernelRun>]) -> String {
    let mut s = String::from("| feature | since |");
    for r in runs {
        let _ = write!(s, " {} |", r.kernel);
    }
    s.push('\n');
    s.push_str(&"|---".repeat(2 + runs.len()));
    s.push_str("|\n");
    for f in catalogue() {
        let since = std::iter::once(f.since.clone())
            .chain(f.since_arch.iter().map(|(a, v)| format!("{v} on {a}")))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(s, "| {} | {since} |", f.title);
        for r in runs {
            let verdict = crate::verdict::feature(m, r, f);
            let found = r.features.get(&f.id).map(Probe::word).unwrap_or("-");
            let cell = match verdict {
                Verdict::Fail(_) if found != "-" => {
                    let arch = m.config.arch_of(&r.kernel);
                    format!("**{found} (disagrees with {})**", f.since_on(arch))
                }
                Verdict::Ignored(reason) if reason.starts_with("expected failure") => format!("{found} (expected)"),
                _ => found.to_string(),
            };
            let _ = write!(s, " {cell} |");
        }
        s.push('\n');
    }
    s
}

/// The failures, each with its reason, for the end of a run.
pub fn failures(m: &Matrix, runs: &[Arc<KernelRun>]) -> Vec<String> {
    let mut out = Vec::new();
    for r in runs {
        for (trial, v) in cells(m, r) {
            if let Verdict::Fail(msg) = v {
                out.push(format!(
                    "{}::{trial} ({}):\n{msg}\n{}",
                    r.kernel,
                    r.where_(),
                    crate::report::results::rerun_hint(r, &trial)
                ));
            }
        }
    }
    out
}

/// The flaky cells (`--retries`: passed in one attempt, failed in another), each
/// with its attempts, for the end of a run.
pub fn flaky(m: &Matrix, runs: &[Arc<KernelRun>]) -> Vec<String> {
    let mut out = Vec::new();
    for r in runs.iter().filter(|r| !r.earlier.is_empty()) {
        let earlier = results::attempts_by_trial(m, r);
        for (trial, v) in cells(m, r) {
            let attempts = earlier.get(&trial).map_or(&[][..], Vec::as_slice);
            if let Some(note) = results::flaky_note(attempts, &v) {
                out.push(format!("{}::{trial}: {note}", r.kernel));
            }
        }
    }
    out
}
