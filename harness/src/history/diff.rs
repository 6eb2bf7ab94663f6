//! What changed between two recorded runs: cells newly failing and newly passing
//! (each with what changed under it: kernel build, commit, program object),
//! cells that flip (flaky), verifier numbers and benchmark values that moved.
//! Rendered as text, Markdown (`$GITHUB_STEP_SUMMARY`) or JSON.
use std::{collections::BTreeMap, fmt::Write as _};

use km_bmf::{compare::judge, Metric, COUNTER_MEASURES, LATENCY_CHECKS};
use serde::Serialize;

use super::{short, RecordedRun, RunRef};
use crate::report::results::Outcome;

/// The verifier's numbers followed across runs (exact: any change is reported).
pub const VERIFIER_MEASURES: &[&str] = &["processed_insns", "total_states", "peak_states", "verified_insns"];

/// How many verdict changes between pass and fail within the window make a cell
/// flaky (one change is a regression or a fix; two are a pattern).
pub const FLAKY_FLIPS: usize = 2;

#[derive(Debug, Clone, Serialize)]
pub struct Changes {
    pub baseline: RunRef,
    pub latest: RunRef,
    /// What changed between the two runs, whether or not a cell moved: kernel
    /// builds, the commit, program objects.
    pub changed: Vec<String>,
    pub newly_failing: Vec<CellChange>,
    pub newly_passing: Vec<CellChange>,
    pub flaky: Vec<Flaky>,
    pub verifier: Vec<Drift>,
    /// Every `load` cell whose verdict, processed instructions or peak states
    /// differ between the runs, side by side (veristat `-C` style).
    pub loads: Vec<LoadDiff>,
    pub bench: Vec<Drift>,
    /// What the comparison could not cover (cells in one run only).
    pub left_out: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CellChange {
    /// `kernel::program::check`.
    pub trial: String,
    pub before: Outcome,
    pub after: Outcome,
    /// The latest run's reason (first line).
    pub reason: Option<String>,
    /// What changed between the two runs under this cell; empty when nothing
    /// recorded did.
    pub changed: Vec<String>,
    /// The kernel build it ran on in the latest run (`uname -r`, package version,
    /// checksum).
    pub kernel_build: String,
    /// The command that reruns this cell from the repository's root.
    pub rerun: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Flaky {
    pub trial: String,
    /// Verdict changes between pass and fail within the window that no change
    /// of the cell's kernel build or program object explains.
    pub flips: usize,
    /// The verdicts over the window, oldest first: `P` pass, `F` fail, `I`
    /// ignored, `-` not run.
    pub verdicts: String,
    pub latest: Outcome,
    /// The latest run's attempts when they both passed and failed (`--retries`:
    /// `FP` failed, then passed): flaky within one run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<String>,
}

/// One program's load on one kernel in both runs (A the baseline, B the latest).
#[derive(Debug, Clone, Serialize)]
pub struct LoadDiff {
    /// `kernel::program::load`.
    pub trial: String,
    pub verdict_a: Outcome,
    pub verdict_b: Outcome,
    pub insns_a: Option<f64>,
    pub insns_b: Option<f64>,
    pub peak_states_a: Option<f64>,
    pub peak_states_b: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Drift {
    pub trial: String,
    pub measure: String,
    pub before: f64,
    pub after: f64,
    /// `None` from zero (no percentage of nothing).
    pub change_pct: Option<f64>,
    /// `changed` (an exact count), `slower` or `faster` (a latency beyond the
    /// threshold and both runs' spreads, as `compare` judges it).
    pub status: &'static str,
    /// The measure over the window, oldest first (runs without it left out).
    pub trend: Vec<f64>,
}

/// `entry::program::check` -> `entry::program`.
fn program_of(trial: &str) -> &str {
    trial.rsplit_once("::").map_or(trial, |(p, _)| p)
}

fn check_of(trial: &str) -> &str {
    trial.rsplit_once("::").map_or("", |(_, c)| c)
}

/// `window`: the runs to look for flaky cells and trends in, oldest first, ending
/// with `latest` (which is compared against `base`).
pub fn changes(base: &RecordedRun, latest: &RecordedRun, window: &[RecordedRun], threshold_pct: f64) -> Changes {
    let mut out = Changes {
        baseline: base.run.clone(),
        latest: latest.run.clone(),
        changed: between(base, latest),
        newly_failing: Vec::new(),
        newly_passing: Vec::new(),
        flaky: Vec::new(),
        verifier: Vec::new(),
        loads: Vec::new(),
        bench: Vec::new(),
        left_out: left_out(base, latest),
    };
    for (key @ (kernel, trial), cur) in &latest.cells {
        let name = format!("{kernel}::{trial}");
        let history: Vec<Option<Outcome>> = window.iter().map(|r| r.cells.get(key).map(|c| c.verdict)).collect();
        let flips = unexplained_flips(window, key);
        // Passed and failed within the latest run (`--retries`).
        let attempts = cur.attempts.clone().filter(|a| a.contains('P') && a.contains('F'));
        let flaky = flips >= FLAKY_FLIPS || attempts.is_some();
        if flaky {
            let verdicts = history.iter().map(|v| v.map_or('-', Outcome::letter)).collect();
            out.flaky.push(Flaky { trial: name.clone(), flips, verdicts, latest: cur.verdict, attempts });
        }
        let Some(prev) = base.cells.get(key) else { continue };
        let change = |out: &mut Vec<CellChange>| {
            out.push(CellChange {
                trial: name.clone(),
                before: prev.verdict,
                after: cur.verdict,
                reason: cur.reason.as_deref().and_then(|r| r.lines().next()).map(str::to_string),
                changed: what_changed(base, latest, kernel, trial),
                kernel_build: latest.kernels.get(kernel).map_or_else(|| "-".to_string(), |k| k.describe()),
                rerun: rerun(&latest.run.matrix, kernel, trial),
            })
        };
        match (prev.verdict, cur.verdict) {
            (Outcome::Pass | Outcome::Ignored, Outcome::Fail) if !flaky => change(&mut out.newly_failing),
            (Outcome::Fail, Outcome::Pass) if !flaky => change(&mut out.newly_passing),
            _ => {}
        }
        let trend = |measure: &str| -> Vec<f64> {
            window.iter().filter_map(|r| r.cells.get(key)?.metrics.get(measure).copied()).collect()
        };
        let pct = |a: f64, b: f64| (a != 0.0).then(|| (b - a) / a * 100.0);
        if check_of(trial) == "load" {
            let d = LoadDiff {
                trial: name.clone(),
                verdict_a: prev.verdict,
                verdict_b: cur.verdict,
                insns_a: prev.metrics.get("processed_insns").copied(),
                insns_b: cur.metrics.get("processed_insns").copied(),
                peak_states_a: prev.metrics.get("peak_states").copied(),
                peak_states_b: cur.metrics.get("peak_states").copied(),
            };
            if d.verdict_a != d.verdict_b || d.insns_a != d.insns_b || d.peak_states_a != d.peak_states_b {
                out.loads.push(d);
            }
        }
        // An exact count (verifier numbers, instructions or cycles per run):
        // any change is reported, under the measure's name.
        let exact = |measure: &str, metric: &str| -> Option<Drift> {
            let (&a, &b) = (prev.metrics.get(metric)?, cur.metrics.get(metric)?);
            (a != b).then(|| Drift {
                trial: name.clone(),
                measure: measure.to_string(),
                before: a,
                after: b,
                change_pct: pct(a, b),
                status: "changed",
                trend: trend(metric),
            })
        };
        out.verifier.extend(VERIFIER_MEASURES.iter().filter_map(|m| exact(m, m)));
        if LATENCY_CHECKS.contains(&check_of(trial)) {
            let metric = |c: &super::RecordedCell| {
                let v = *c.metrics.get("value")?;
                Some(Metric {
                    value: v,
                    lower_value: c.metrics.get("lower").copied(),
                    upper_value: c.metrics.get("upper").copied(),
                })
            };
            if let (Some(a), Some(b)) = (metric(prev), metric(cur)) {
                let (status, _) = judge(&a, &b, threshold_pct);
                let status = match status {
                    km_bmf::compare::Status::Slower => Some("slower"),
                    km_bmf::compare::Status::Faster => Some("faster"),
                    _ => None,
                };
                if let Some(status) = status {
                    out.bench.push(Drift {
                        trial: name.clone(),
                        measure: km_bmf::LATENCY.into(),
                        before: a.value,
                        after: b.value,
                        change_pct: pct(a.value, b.value),
                        status,
                        trend: trend("value"),
                    });
                }
            }
            out.bench.extend(COUNTER_MEASURES.iter().filter_map(|m| exact(m, &format!("{m}_per_run"))));
        }
    }
    out
}

/// Changes between pass and fail of cell `key` across `window` (ignored and
/// absent runs are stepped over) that nothing under the cell explains: a flip
/// where its kernel's build or its program's object changed is a regression or
/// a fix, not a flake. (A new commit does not explain one: commits change every
/// night, and a flaky test flips across them.)
fn unexplained_flips(window: &[RecordedRun], key: &(String, String)) -> usize {
    let decided: Vec<(&RecordedRun, Outcome)> = window
        .iter()
        .filter_map(|r| Some((r, r.cells.get(key)?.verdict)))
        .filter(|(_, v)| *v != Outcome::Ignored)
        .collect();
    decided.windows(2).filter(|w| w[0].1 != w[1].1 && own_changes(w[0].0, w[1].0, &key.0, &key.1).is_empty()).count()
}

/// What changed between the runs under one cell: its kernel's build, its
/// program's object, and the commit.
fn what_changed(base: &RecordedRun, latest: &RecordedRun, kernel: &str, trial: &str) -> Vec<String> {
    let mut out = own_changes(base, latest, kernel, trial);
    if base.run.commit != latest.run.commit {
        let c = |c: &Option<String>| c.as_deref().map_or("-".to_string(), short);
        out.push(format!("commit: {} -> {}", c(&base.run.commit), c(&latest.run.commit)));
    }
    out
}

/// The changes that belong to one cell: its kernel's build and its program's object.
fn own_changes(base: &RecordedRun, latest: &RecordedRun, kernel: &str, trial: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some(a), Some(b)) = (base.kernels.get(kernel), latest.kernels.get(kernel)) {
        if (&a.release, &a.build, &a.checksum) != (&b.release, &b.build, &b.checksum) {
            out.push(format!("kernel build: {} -> {}", a.describe(), b.describe()));
        }
    }
    let program = program_of(trial);
    if let (Some(a), Some(b)) = (base.objects.get(program), latest.objects.get(program)) {
        if a != b {
            out.push(format!("object of {program}: sha256 {} -> {}", short(a), short(b)));
        }
    }
    out
}

/// `cargo test --test matrix -- --exact <kernel>::<trial>`, with `KM_CONFIG` when
/// the run's matrix file is not kernels.yaml (by file name: the history records
/// where the file was on the machine that ran it, not where a reader has it).
fn rerun(matrix: &str, kernel: &str, trial: &str) -> String {
    let file = std::path::Path::new(matrix).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let config = if file.is_empty() || file == "kernels.yaml" {
        String::new()
    } else {
        format!("KM_CONFIG={} ", crate::escape::shell_word(&file))
    };
    format!("{config}cargo test --test matrix -- --exact {}", crate::escape::shell_word(&format!("{kernel}::{trial}")))
}

/// A table row: Markdown (`| a | b |`) or text (columns separated by two spaces).
fn row(md: bool, cells: &[&str]) -> String {
    if md {
        format!("| {} |", cells.iter().map(|c| c.replace('|', "\\|")).collect::<Vec<_>>().join(" | "))
    } else {
        format!("  {}", cells.join("  "))
    }
}

/// A, B and their difference as veristat `-C` writes them: `+12 (+5.00 %)`.
fn diff_cells(a: Option<f64>, b: Option<f64>) -> (String, String, String) {
    let n = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v}"));
    let d = match (a, b) {
        (Some(a), Some(b)) if a != 0.0 => format!("{:+} ({:+.2} %)", b - a, (b - a) / a * 100.0),
        (Some(a), Some(b)) => format!("{:+}", b - a),
        _ => "-".to_string(),
    };
    (n(a), n(b), d)
}

/// Everything recorded that differs between the runs: each common kernel's
/// build, the commit, each common program's object.
fn between(base: &RecordedRun, latest: &RecordedRun) -> Vec<String> {
    let mut out = Vec::new();
    for (kernel, a) in &base.kernels {
        if let Some(b) = latest.kernels.get(kernel) {
            if (&a.release, &a.build, &a.checksum) != (&b.release, &b.build, &b.checksum) {
                out.push(format!("kernel {kernel}: {} -> {}", a.describe(), b.describe()));
            }
        }
    }
    if base.run.commit != latest.run.commit {
        let c = |c: &Option<String>| c.as_deref().map_or("-".to_string(), short);
        out.push(format!("commit: {} -> {}", c(&base.run.commit), c(&latest.run.commit)));
    }
    for (program, a) in &base.objects {
        if let Some(b) = latest.objects.get(program).filter(|b| *b != a) {
            out.push(format!("object of {program}: sha256 {} -> {}", short(a), short(b)));
        }
    }
    out
}

/// Kernels and cells in one run only (another matrix, a kernel added or dropped).
fn left_out(base: &RecordedRun, latest: &RecordedRun) -> Vec<String> {
    let mut out = Vec::new();
    if base.run.matrix != latest.run.matrix {
        out.push(format!(
            "the runs used different matrix files ({} and {}); only common cells are compared",
            base.run.matrix, latest.run.matrix
        ));
    }
    for (which, a, b) in [("baseline", base, latest), ("latest run", latest, base)] {
        let mut per_kernel: BTreeMap<&str, usize> = BTreeMap::new();
        for (k, _) in a.cells.keys().filter(|key| !b.cells.contains_key(*key)) {
            *per_kernel.entry(k).or_default() += 1;
        }
        for (k, n) in per_kernel {
            let whole = !b.kernels.contains_key(k);
            let what = if whole { "kernel".to_string() } else { format!("{n} cells of kernel") };
            out.push(format!("{what} {k} only in the {which} (run {}): not compared", a.run.id));
        }
    }
    out
}

impl Changes {
    /// What fails a pull request (`history --gate`): a program the verifier
    /// accepted in the baseline and rejects now; processed instructions or peak
    /// states grown by more than `threshold_pct`; a benchmark judged slower.
    pub fn gate(&self, threshold_pct: f64) -> Vec<String> {
        let mut out = Vec::new();
        for d in &self.loads {
            if d.verdict_a == Outcome::Pass && d.verdict_b == Outcome::Fail {
                let why = self
                    .newly_failing
                    .iter()
                    .find(|c| c.trial == d.trial)
                    .and_then(|c| c.reason.clone())
                    .unwrap_or_default();
                out.push(format!("{}: accepted in the baseline, rejected now: {why}", d.trial));
            }
        }
        // Growth counts between two accepted loads only: a rejected load's numbers
        // are where the verifier stopped, not what the program costs.
        let accepted_in_both = |trial: &str| {
            self.loads
                .iter()
                .find(|l| l.trial == trial)
                .is_none_or(|l| l.verdict_a == Outcome::Pass && l.verdict_b == Outcome::Pass)
        };
        for d in self
            .verifier
            .iter()
            .filter(|d| d.measure == "processed_insns" || d.measure == "peak_states")
            .filter(|d| accepted_in_both(&d.trial))
        {
            let grew = match d.change_pct {
                Some(p) => p > threshold_pct,
                None => d.after > d.before,
            };
            if grew {
                let pct = d.change_pct.map_or("from 0".to_string(), |p| format!("{p:+.1} %"));
                out.push(format!(
                    "{} {}: {} -> {} ({pct}), more than {threshold_pct} %",
                    d.trial, d.measure, d.before, d.after
                ));
            }
        }
        for d in self.bench.iter().filter(|d| d.status == "slower") {
            let pct = d.change_pct.map_or("from 0".to_string(), |p| format!("{p:+.1} %"));
            out.push(format!("{} {}: {} -> {} ({pct}): slower", d.trial, d.measure, d.before, d.after));
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.changed.is_empty()
            && self.newly_failing.is_empty()
            && self.newly_passing.is_empty()
            && self.flaky.is_empty()
            && self.verifier.is_empty()
            && self.bench.is_empty()
    }

    /// Markdown for `$GITHUB_STEP_SUMMARY` (`md`), or plain text for a terminal.
    pub fn render(&self, md: bool) -> String {
        let mut s = String::new();
        let run = |r: &RunRef| {
            let commit = r.commit.as_deref().map(|c| format!(", commit {}", short(c))).unwrap_or_default();
            let label = r.label.as_deref().map(|l| format!(", {l}")).unwrap_or_default();
            format!("run {} ({} UTC{commit}{label})", r.id, r.started)
        };
        let head = |s: &mut String, title: &str, n: usize| {
            if md {
                let _ = writeln!(s, "\n### {title} ({n})\n");
            } else {
                let _ = writeln!(s, "\n{title} ({n}):");
            }
        };
        let code = |t: &str| if md { format!("`{t}`") } else { t.to_string() };
        let title = format!("since {}: {}", run(&self.baseline), run(&self.latest));
        let _ = writeln!(s, "{}{title}", if md { "## " } else { "" });
        if self.is_empty() {
            let _ = writeln!(
                s,
                "\nNothing changed: no kernel build, commit or object; no cell newly failing or passing, none flaky, no verifier or benchmark drift."
            );
        }
        if !self.changed.is_empty() {
            head(&mut s, "Changed between the runs", self.changed.len());
            for c in &self.changed {
                let _ = writeln!(s, "- {c}");
            }
        }
        for (title, list) in [("Newly failing", &self.newly_failing), ("Newly passing", &self.newly_passing)] {
            if list.is_empty() {
                continue;
            }
            head(&mut s, title, list.len());
            for c in list {
                let reason = c.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
                let _ = writeln!(s, "- {} ({} -> {}){reason}", code(&c.trial), c.before.as_str(), c.after.as_str());
                if c.changed.is_empty() {
                    let _ = writeln!(s, "  - nothing recorded changed (same kernel build, commit and objects)");
                }
                for what in &c.changed {
                    let _ = writeln!(s, "  - {what}");
                }
                if c.after == Outcome::Fail {
                    let _ = writeln!(s, "  - on {}", c.kernel_build);
                    let _ = writeln!(s, "  - rerun: {}", code(&c.rerun));
                }
            }
        }
        if !self.flaky.is_empty() {
            head(&mut s, "Flaky", self.flaky.len());
            for f in &self.flaky {
                let within = match &f.attempts {
                    Some(a) => format!("; its attempts in the latest run: {}", code(a)),
                    None => String::new(),
                };
                let _ = writeln!(
                    s,
                    "- {} flipped {} times, {} (oldest first), now {}{within}",
                    code(&f.trial),
                    f.flips,
                    code(&f.verdicts),
                    f.latest.as_str()
                );
            }
        }
        for (title, list) in [("Verifier drift", &self.verifier), ("Benchmark drift", &self.bench)] {
            if list.is_empty() {
                continue;
            }
            head(&mut s, title, list.len());
            if md {
                let _ =
                    writeln!(s, "| trial | measure | before | after | change | trend |\n|---|---|---:|---:|---:|---|");
            }
            for d in list {
                let pct = d.change_pct.map_or("from 0".to_string(), |p| format!("{p:+.1} %"));
                let trend = d
                    .trend
                    .iter()
                    .map(|v| format!("{v:.6}").trim_end_matches('0').trim_end_matches('.').to_string())
                    .collect::<Vec<_>>()
                    .join(" ");
                if md {
                    let _ = writeln!(
                        s,
                        "| `{}` | {} | {} | {} | {pct} ({}) | {trend} |",
                        d.trial, d.measure, d.before, d.after, d.status
                    );
                } else {
                    let _ = writeln!(
                        s,
                        "- {} {}: {} -> {} ({pct}, {}); over the window: {trend}",
                        d.trial, d.measure, d.before, d.after, d.status
                    );
                }
            }
        }
        if !self.loads.is_empty() {
            head(&mut s, "Verifier, side by side (A: baseline, B: latest)", self.loads.len());
            let _ = writeln!(
                s,
                "{}",
                row(
                    md,
                    &[
                        "kernel::program",
                        "verdict (A)",
                        "verdict (B)",
                        "insns (A)",
                        "insns (B)",
                        "insns (DIFF)",
                        "peak states (A)",
                        "peak states (B)",
                        "peak states (DIFF)"
                    ]
                )
            );
            if md {
                let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|---:|---:|");
            }
            for d in &self.loads {
                let program = d.trial.strip_suffix("::load").unwrap_or(&d.trial);
                let (ia, ib, id) = diff_cells(d.insns_a, d.insns_b);
                let (pa, pb, pd) = diff_cells(d.peak_states_a, d.peak_states_b);
                let cells = [program, d.verdict_a.as_str(), d.verdict_b.as_str(), &ia, &ib, &id, &pa, &pb, &pd];
                let _ = writeln!(s, "{}", row(md, &cells));
            }
        }
        if !self.left_out.is_empty() {
            head(&mut s, "Not compared", self.left_out.len());
            for l in &self.left_out {
                let _ = writeln!(s, "- {l}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{KernelBuild, RecordedCell};

    /// (trial, verdict, metrics) of kernel 6.1.
    type TestCell<'a> = (&'a str, Outcome, &'a [(&'a str, f64)]);

    fn run(id: i64, cells: &[TestCell]) -> RecordedRun {
        RecordedRun {
            run: RunRef {
                id,
                started: format!("2026-12-0{id} 02:00:00"),
                commit: Some("c1".into()),
                matrix: "kernels.yaml".into(),
                label: None,
            },
            kernels: [(
                "6.1".to_string(),
                KernelBuild {
                    release: Some("6.1.0-50".into()),
                    accel: "tcg".into(),
                    build: Some("b1".into()),
                    checksum: Some("aa".into()),
                },
            )]
            .into(),
            cells: cells
                .iter()
                .map(|(t, v, m)| {
                    let metrics = m.iter().map(|(k, v)| (k.to_string(), *v)).collect();
                    (
                        ("6.1".to_string(), t.to_string()),
                        RecordedCell { verdict: *v, reason: None, metrics, attempts: None },
                    )
                })
                .collect(),
            objects: [("m::p".to_string(), "0001".to_string())].into(),
        }
    }

    use Outcome::{Fail as F, Pass as P};

    #[test]
    fn a_new_failure_names_what_changed_under_it() {
        let a = run(1, &[("m::p::load", P, &[("processed_insns", 100.0)]), ("x::attach", P, &[])]);
        let mut b = run(2, &[("m::p::load", F, &[("processed_insns", 120.0)]), ("x::attach", P, &[])]);
        b.objects.insert("m::p".into(), "0002".into());
        let c = changes(&a, &b, &[a.clone(), b.clone()], 10.0);
        assert_eq!(c.newly_failing.len(), 1);
        assert_eq!(c.newly_failing[0].trial, "6.1::m::p::load");
        assert_eq!(c.newly_failing[0].changed, vec!["object of m::p: sha256 0001 -> 0002"]);
        assert_eq!(c.changed, vec!["object of m::p: sha256 0001 -> 0002"]);
        assert_eq!(c.verifier.len(), 1);
        assert_eq!(c.verifier[0].change_pct, Some(20.0));
        assert!(c.newly_passing.is_empty() && c.flaky.is_empty() && c.bench.is_empty() && c.left_out.is_empty());

        let mut k = b.clone();
        k.kernels.get_mut("6.1").unwrap().checksum = Some("bb".into());
        let c = changes(&a, &k, &[a.clone(), k.clone()], 10.0);
        assert_eq!(c.newly_failing[0].changed[0], "kernel build: 6.1.0-50 (b1, aa) -> 6.1.0-50 (b1, bb)");
        // A build that moved under cells that did not is still said.
        let mut quiet = a.clone();
        quiet.run.id = 3;
        quiet.kernels.get_mut("6.1").unwrap().checksum = Some("cc".into());
        let c = changes(&a, &quiet, &[a.clone(), quiet.clone()], 10.0);
        assert_eq!(c.changed, vec!["kernel 6.1: 6.1.0-50 (b1, aa) -> 6.1.0-50 (b1, cc)"]);
        assert!(!c.is_empty() && c.newly_failing.is_empty());
    }

    #[test]
    fn two_flips_make_a_cell_flaky_and_not_a_regression() {
        let w: Vec<RecordedRun> =
            [P, P, F, P, P, F].iter().enumerate().map(|(i, v)| run(i as i64 + 1, &[("x::attach", *v, &[])])).collect();
        let c = changes(&w[4], &w[5], &w, 10.0);
        assert!(c.newly_failing.is_empty());
        assert_eq!(c.flaky.len(), 1);
        assert_eq!(c.flaky[0].verdicts, "PPFPPF");
        assert_eq!(c.flaky[0].flips, 3);
        // One flip is a plain regression.
        let c = changes(&w[1], &w[2], &w[..3], 10.0);
        assert_eq!(c.newly_failing.len(), 1);
        assert!(c.newly_failing[0].changed.is_empty());
        assert!(c.flaky.is_empty());
    }

    /// The pull-request gate: a rejection, verifier growth beyond the threshold,
    /// a slower benchmark; and the side-by-side table shows the load.
    #[test]
    fn the_gate_names_each_regression() {
        let a = run(
            1,
            &[
                ("m::p::load", P, &[("processed_insns", 100.0), ("peak_states", 10.0)]),
                ("m::q::load", P, &[("processed_insns", 50.0)]),
            ],
        );
        let b = run(
            2,
            &[
                ("m::p::load", P, &[("processed_insns", 120.0), ("peak_states", 10.0)]),
                ("m::q::load", F, &[("processed_insns", 7.0)]),
            ],
        );
        let c = changes(&a, &b, &[a.clone(), b.clone()], 10.0);
        let gate = c.gate(10.0);
        assert_eq!(gate.len(), 2, "{gate:?}");
        assert!(gate[0].starts_with("6.1::m::q::load: accepted in the baseline, rejected now"), "{gate:?}");
        assert_eq!(gate[1], "6.1::m::p::load processed_insns: 100 -> 120 (+20.0 %), more than 10 %");
        assert_eq!(c.gate(25.0).len(), 1, "20 % is within a 25 % threshold");
        let md = c.render(true);
        assert!(
            md.contains("| 6.1::m::p | pass | pass | 100 | 120 | +20 (+20.00 %) | 10 | 10 | +0 (+0.00 %) |"),
            "{md}"
        );
        assert!(md.contains("| 6.1::m::q | pass | fail | 50 | 7 | -43 (-86.00 %) | - | - | - |"), "{md}");
        // A rejected program accepted again: its numbers rose from where the
        // verifier stopped, which is no growth.
        let fixed = changes(&b, &a, &[b.clone(), a.clone()], 10.0);
        assert!(fixed.gate(10.0).is_empty(), "{:?}", fixed.gate(10.0));
        // Nothing moved: the gate passes.
        assert!(changes(&a, &a, &[a.clone(), a.clone()], 10.0).gate(10.0).is_empty());
    }

    /// Flips that the object explains (broken by one object, fixed by the next)
    /// are a regression and a fix, not a flake.
    #[test]
    fn flips_the_object_explains_are_not_flaky() {
        let mut w: Vec<RecordedRun> =
            [P, P, F, P].iter().enumerate().map(|(i, v)| run(i as i64 + 1, &[("m::p::load", *v, &[])])).collect();
        w[2].objects.insert("m::p".into(), "0002".into());
        let c = changes(&w[2], &w[3], &w, 10.0);
        assert!(c.flaky.is_empty(), "{c:?}");
        assert_eq!(c.newly_passing.len(), 1);
        // The same flips with the same object: flaky.
        w[2].objects.insert("m::p".into(), "0001".into());
        let c = changes(&w[2], &w[3], &w, 10.0);
        assert_eq!(c.flaky.len(), 1);
    }

    /// A cell that failed and then passed on a retry within one run is flaky
    /// there and then, and not a fix.
    #[test]
    fn a_pass_on_retry_is_flaky_within_the_run() {
        let a = run(1, &[("x::attach", F, &[])]);
        let mut b = run(2, &[("x::attach", P, &[])]);
        b.cells.values_mut().next().unwrap().attempts = Some("FP".into());
        let c = changes(&a, &b, &[a.clone(), b.clone()], 10.0);
        assert!(c.newly_passing.is_empty(), "{c:?}");
        assert_eq!(c.flaky.len(), 1);
        assert_eq!((c.flaky[0].flips, c.flaky[0].attempts.as_deref()), (1, Some("FP")));
        assert!(c.render(false).contains("its attempts in the latest run: FP"), "{}", c.render(false));
        // Failed on every attempt: no flake, a failure.
        b.cells.values_mut().next().unwrap().attempts = Some("FF".into());
        b.cells.values_mut().next().unwrap().verdict = F;
        let a = run(1, &[("x::attach", P, &[])]);
        let c = changes(&a, &b, &[a.clone(), b.clone()], 10.0);
        assert!(c.flaky.is_empty() && c.newly_failing.len() == 1);
    }

    #[test]
    fn latency_drift_is_judged_with_spreads_and_counts_exactly() {
        let m = |v: f64| [("value", v), ("lower", v * 0.98), ("upper", v * 1.02), ("instructions_per_run", 50.0)];
        let a = run(1, &[("x::test_run", P, &m(100.0))]);
        let same = run(2, &[("x::test_run", P, &m(103.0))]);
        assert!(changes(&a, &same, &[a.clone(), same.clone()], 10.0).is_empty());
        let mut slow_m = m(150.0).to_vec();
        slow_m[3].1 = 80.0;
        let slow = run(2, &[("x::test_run", P, &slow_m)]);
        let c = changes(&a, &slow, &[a.clone(), slow.clone()], 10.0);
        let got: Vec<(&str, &str)> = c.bench.iter().map(|d| (d.measure.as_str(), d.status)).collect();
        assert_eq!(got, vec![("latency", "slower"), ("instructions", "changed")]);
        assert_eq!(c.bench[0].trend, vec![100.0, 150.0]);
    }

    #[test]
    fn cells_of_another_matrix_are_left_out_and_said() {
        let a = run(1, &[("x::attach", P, &[]), ("y::attach", P, &[])]);
        let mut b = run(2, &[("x::attach", F, &[])]);
        b.run.matrix = "other.yaml".into();
        let c = changes(&a, &b, &[a.clone(), b.clone()], 10.0);
        assert_eq!(c.newly_failing.len(), 1);
        assert_eq!(c.left_out.len(), 2, "{:?}", c.left_out);
        assert!(c.left_out[1].contains("1 cells of kernel 6.1 only in the baseline"), "{:?}", c.left_out);
        let text = c.render(false);
        assert!(text.contains("Not compared (2)"), "{text}");
    }
}
