//! The machine-readable results of a run (`kernel-matrix run --json out.json`,
//! `KM_JSON=out.json cargo test --test matrix`): every cell with its verdict,
//! reason, metrics, and where it ran (release, accelerator). Shards of a CI
//! matrix each write one; `kernel-matrix merge` joins them, and the JUnit and
//! Markdown reports are rendered from it.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::Path,
    sync::{Arc, Mutex},
};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use km_protocol::Verdict;

use crate::{
    escape::html,
    run::{KernelRun, Matrix},
};

/// Identifies the format; bumped on incompatible changes.
pub const SCHEMA: &str = "kernel-matrix-results/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    pub schema: String,
    /// `kernel-matrix <version>`.
    pub tool: String,
    /// Which shard(s) this covers (`1/3`), empty for a whole run.
    #[serde(default)]
    pub shards: Vec<String>,
    pub kernels: Vec<KernelResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelResult {
    pub kernel: String,
    /// `uname -r` inside the guest (or the host).
    pub release: Option<String>,
    /// `kvm`, `tcg`, `host` (no VM), or `-` (never started): every number below came from there.
    pub accel: String,
    /// Host wall time from QEMU start to the agent's first record.
    pub boot_secs: Option<f64>,
    pub wall_secs: f64,
    /// The guest's own clock (seconds since its kernel started; under `-icount`
    /// virtual time): when /init started, when the agent started, when its
    /// feature probes were done and when it wrote its last record.
    #[serde(default)]
    pub guest: Option<GuestTimes>,
    /// Why the kernel could not run (or was not trusted), if it could not.
    pub failure: Option<String>,
    /// The QEMU command line used, for `kernel-matrix qemu-cmd`-style reruns.
    pub qemu_command: Option<String>,
    pub cells: Vec<Cell>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestTimes {
    pub init: Option<f64>,
    pub agent: Option<f64>,
    pub probed: Option<f64>,
    pub end: Option<f64>,
}

/// A cell's verdict in the results file: one of three words, nothing else (an
/// unknown one is a parse error, never silently a failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    Ignored,
}

impl Outcome {
    pub fn letter(self) -> char {
        match self {
            Outcome::Pass => 'P',
            Outcome::Fail => 'F',
            Outcome::Ignored => 'I',
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Ignored => "ignored",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// `program::check` or `features::id` (the trial name without the kernel).
    pub trial: String,
    /// `pass`, `fail` or `ignored`.
    pub verdict: Outcome,
    /// The failure message or the reason for ignoring; absent on pass.
    pub reason: Option<String>,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    #[serde(default)]
    pub note: String,
    /// The command that reruns just this cell.
    pub reproduce: String,
    /// Guest seconds the check took (from the agent's previous record to this
    /// one, by the guest's clock); absent for features, which are probed together.
    #[serde(default)]
    pub secs: Option<f64>,
    /// A failed load's cause, by what happened (`attach_target`, `map_create`,
    /// `missing_need`, `verifier`, `other`), as the agent classified it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<km_protocol::byo::LoadCause>,
    /// The cell in the kernel's earlier attempts (`--retries`), oldest first; the
    /// verdict above is the last attempt's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
}

/// A cell's verdict in one earlier attempt of its kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub verdict: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Cell {
    /// Passed in one attempt and failed in another: flaky, whichever came last.
    pub fn flaky(&self) -> bool {
        self.flaky_note().is_some()
    }

    /// [`flaky_note`] of this cell.
    pub fn flaky_note(&self) -> Option<String> {
        flaky_note(&self.attempts, &self.verdict())
    }

    /// `PF`-style letters for every attempt, the last one last (`P`ass, `F`ail,
    /// `I`gnored); `None` for a cell that ran once.
    pub fn attempt_letters(&self) -> Option<String> {
        (!self.attempts.is_empty())
            .then(|| self.attempts.iter().map(|a| a.verdict).chain([self.verdict]).map(Outcome::letter).collect())
    }

    pub fn verdict(&self) -> Verdict {
        let r = self.reason.clone().unwrap_or_default();
        match self.verdict {
            Outcome::Pass => Verdict::Pass,
            Outcome::Ignored => Verdict::Ignored(r),
            Outcome::Fail => Verdict::Fail(r),
        }
    }
}

/// `cargo test --test matrix -- --exact <kernel>::<trial>` (with `KM_CONFIG`
/// when the matrix did not come from the workspace's kernels.yaml).
pub fn reproduce_command(kernel: &str, trial: &str) -> String {
    let env = other_config().map(|c| format!("KM_CONFIG={c} ")).unwrap_or_default();
    format!("{env}cargo test --test matrix -- --exact {kernel}::{trial}")
}

/// The matrix file when it is not the default (`--config` or `KM_CONFIG`), as an
/// absolute, shell-quoted path: `cargo test` runs in the crate's directory, not
/// the user's, so a relative one would name another file there.
fn other_config() -> Option<String> {
    let c = crate::settings::try_get().ok()?.config.clone()?;
    let abs = c.canonicalize().unwrap_or(c);
    Some(crate::escape::shell_word(&abs.to_string_lossy()))
}

/// The end of a failure message: how to get into the VM, then the exact
/// command that reruns this cell (always the last line).
pub fn rerun_hint(run: &KernelRun, trial: &str) -> String {
    let mut s = String::new();
    if run.accel.is_some() {
        let _ = writeln!(
            s,
            "debug: `cargo run -p kernel-matrix -- {c}shell --kernel {k}` (root shell in this VM), `cargo run -p kernel-matrix -- {c}qemu-cmd --kernel {k}` (its QEMU command)",
            k = crate::escape::shell_word(&run.kernel),
            c = other_config().map(|c| format!("-c {c} ")).unwrap_or_default()
        );
    }
    let _ = write!(s, "reproduce: {}", reproduce_command(&run.kernel, trial));
    s
}

fn verdict_parts(v: &Verdict) -> (Outcome, Option<String>) {
    match v {
        Verdict::Pass => (Outcome::Pass, None),
        Verdict::Fail(m) => (Outcome::Fail, Some(m.clone())),
        Verdict::Ignored(r) => (Outcome::Ignored, Some(r.clone())),
    }
}

fn kernel_header(r: &KernelRun) -> KernelResult {
    KernelResult {
        kernel: r.kernel.clone(),
        release: r.release.clone(),
        accel: r.accel_label(),
        boot_secs: r.boot.map(|b| b.as_secs_f64()),
        wall_secs: r.wall.as_secs_f64(),
        guest: (r.timeline != Default::default()).then(|| {
            let t = &r.timeline;
            GuestTimes { init: t.init, agent: t.agent, probed: t.probed, end: t.end }
        }),
        failure: r.problem().map(str::to_string),
        qemu_command: r.command_line.clone(),
        cells: Vec::new(),
    }
}

impl RunResults {
    pub fn new(kernels: Vec<KernelResult>) -> Self {
        Self {
            schema: SCHEMA.into(),
            tool: format!("kernel-matrix {}", env!("CARGO_PKG_VERSION")),
            shards: Vec::new(),
            kernels,
        }
    }

    /// Every cell of every kernel of a `kernel-matrix run`.
    pub fn from_runs(m: &Matrix, runs: &[Arc<KernelRun>]) -> Self {
        let kernels = runs
            .iter()
            .map(|r| {
                let mut k = kernel_header(r);
                let mut earlier = attempts_by_trial(m, r);
                for (trial, v) in crate::report::cells(m, r) {
                    let (verdict, reason) = verdict_parts(&v);
                    let (metrics, note, secs, cause) = outcome(r, &trial);
                    let reproduce = reproduce_command(&r.kernel, &trial);
                    let attempts = earlier.remove(&trial).unwrap_or_default();
                    k.cells.push(Cell { trial, verdict, reason, metrics, note, reproduce, secs, cause, attempts });
                }
                k
            })
            .collect();
        Self::new(kernels)
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let r: RunResults = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a kernel-matrix results file", path.display()))?;
        if r.schema != SCHEMA {
            bail!("{}: schema {:?}, this kernel-matrix reads {SCHEMA:?}", path.display(), r.schema);
        }
        Ok(r)
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        crate::images::fetch::write_atomic(path, text.as_bytes())
    }

    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for cell in self.kernels.iter().flat_map(|k| &k.cells) {
            match cell.verdict {
                Outcome::Pass => c.0 += 1,
                Outcome::Ignored => c.2 += 1,
                Outcome::Fail => c.1 += 1,
            }
        }
        c
    }

    pub fn failed(&self) -> bool {
        self.counts().1 > 0
    }

    /// Joins shards. A kernel present in two inputs is an error (it would be
    /// counted twice), unless both are identical.
    pub fn merge(parts: Vec<(String, RunResults)>) -> anyhow::Result<Self> {
        let mut out = RunResults::new(Vec::new());
        let mut from: BTreeMap<String, String> = BTreeMap::new();
        for (name, part) in parts {
            out.shards.extend(part.shards.iter().cloned());
            for k in part.kernels {
                if let Some(prev) = from.get(&k.kernel) {
                    let existing = out.kernels.iter().find(|e| e.kernel == k.kernel).expect("recorded");
                    if *existing == k {
                        continue;
                    }
                    bail!("kernel {:?} is in both {prev} and {name}: shards must not overlap", k.kernel);
                }
                from.insert(k.kernel.clone(), name.clone());
                out.kernels.push(k);
            }
        }
        out.shards.sort();
        out.shards.dedup();
        Ok(out)
    }

    /// A Markdown report for `$GITHUB_STEP_SUMMARY`: totals, one row per kernel,
    /// then each failure with its reason and the command that reruns it.
    pub fn markdown(&self) -> String {
        let (pass, fail, ignored) = self.counts();
        let mut s = String::new();
        let icon = if fail == 0 { "✅" } else { "❌" };
        let flaky: Vec<(&KernelResult, &Cell, String)> = self
            .kernels
            .iter()
            .flat_map(|k| k.cells.iter().filter_map(move |c| c.flaky_note().map(|n| (k, c, n))))
            .collect();
        let flaky_count = if flaky.is_empty() { String::new() } else { format!(", {} flaky", flaky.len()) };
        let _ = writeln!(s, "## {icon} kernel matrix: {pass} passed, {fail} failed, {ignored} ignored{flaky_count}\n");
        if !self.shards.is_empty() {
            let _ = writeln!(s, "Shards: {}\n", self.shards.join(", "));
        }
        let _ = writeln!(s, "| kernel | release | accel | boot s | wall s | pass | fail | ignored |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for k in &self.kernels {
            let n = |v: Outcome| k.cells.iter().filter(|c| c.verdict == v).count();
            let boot = k.boot_secs.map(|b| format!("{b:.1}")).unwrap_or_else(|| "-".into());
            let fails = n(Outcome::Fail);
            let fails = if fails > 0 { format!("**{fails}**") } else { "0".into() };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {boot} | {:.1} | {} | {fails} | {} |",
                md_cell(&k.kernel),
                md_cell(k.release.as_deref().unwrap_or("-")),
                k.accel,
                k.wall_secs,
                n(Outcome::Pass),
                n(Outcome::Ignored)
            );
        }
        let failures: Vec<(&KernelResult, &Cell)> = self
            .kernels
            .iter()
            .flat_map(|k| k.cells.iter().filter(|c| c.verdict == Outcome::Fail).map(move |c| (k, c)))
            .collect();
        if !flaky.is_empty() {
            let _ = writeln!(s, "\n### Flaky (passed in one attempt, failed in another)\n");
            for (k, c, note) in &flaky {
                let _ = writeln!(s, "- `{}::{}` ({}): {}", k.kernel, c.trial, c.verdict.as_str(), md_cell(note));
            }
        }
        if !failures.is_empty() {
            let _ = writeln!(s, "\n### Failures\n");
        }
        for (k, c) in failures {
            let reason = c.reason.as_deref().unwrap_or("");
            let first = reason.lines().next().unwrap_or("");
            let _ = writeln!(
                s,
                "<details><summary><code>{}::{}</code>: {}</summary>\n",
                html(&k.kernel),
                html(&c.trial),
                html(first)
            );
            let _ = writeln!(s, "```text\n{}\n```\n", reason.replace("```", "'''"));
            let _ = writeln!(s, "Reproduce: `{}`\n</details>\n", c.reproduce);
        }
        s
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// Writes the reports named by `KM_JSON`, `KM_JUNIT` and `KM_MARKDOWN` (appended,
/// as `$GITHUB_STEP_SUMMARY` expects), with `KM_SHARD` recorded in the JSON;
/// returns the results and the outputs (for `KM_HISTORY`, which the caller records
/// with `history::record_run`).
pub fn write_reports_from_env(mut r: RunResults) -> anyhow::Result<(RunResults, RunOutputs)> {
    let out = crate::settings::Env::from_env()?.out;
    if let Some(shard) = out.shard {
        r.shards = vec![shard.to_string()];
    }
    write_reports(&r, out.json.as_deref(), out.junit.as_deref(), out.markdown.as_deref())?;
    if std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true") {
        print!("{}", github_annotations(&r));
    }
    Ok((r, out))
}

/// Writes whichever of the three reports has a path.
pub fn write_reports(
    r: &RunResults,
    json: Option<&Path>,
    junit: Option<&Path>,
    markdown: Option<&Path>,
) -> anyhow::Result<()> {
    if let Some(p) = json {
        r.save(p)?;
    }
    if let Some(p) = junit {
        crate::images::fetch::write_atomic(p, crate::report::junit::render(r).as_bytes())?;
    }
    if let Some(p) = markdown {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .with_context(|| format!("opening {}", p.display()))?;
        f.write_all(r.markdown().as_bytes()).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Cells seen by the `cargo test` trials (they run on libtest's threads), so the
/// test binary can write the same results/JUnit files after the run.
static OBSERVED: Mutex<Vec<(KernelResult, Cell)>> = Mutex::new(Vec::new());

/// What the agent recorded for `trial` (`program::check`) beside its verdict.
type Measured = (BTreeMap<String, f64>, String, Option<f64>, Option<km_protocol::byo::LoadCause>);

/// What the agent recorded for `trial` (`entry::program::check`, or a suite's
/// `name` alone when it is one exit-status trial).
fn outcome(run: &KernelRun, trial: &str) -> Measured {
    let (program, check) = trial.rsplit_once("::").unwrap_or((trial, ""));
    match run.checks.get(&(program.to_string(), check.to_string())) {
        Some(o) => (o.metrics.clone(), o.note.clone(), o.secs, o.cause),
        None => Default::default(),
    }
}

/// `trial` in each of `run`'s earlier attempts (`--retries`).
pub fn attempts(m: &Matrix, run: &KernelRun, trial: &str) -> Vec<Attempt> {
    attempts_by_trial(m, run).remove(trial).unwrap_or_default()
}

/// Every cell's earlier attempts (`--retries`), by trial: each earlier attempt's
/// verdicts are decided once, not once per cell.
pub fn attempts_by_trial(m: &Matrix, run: &KernelRun) -> BTreeMap<String, Vec<Attempt>> {
    let mut by_trial: BTreeMap<String, Vec<Attempt>> = BTreeMap::new();
    for e in &run.earlier {
        for (trial, v) in crate::report::cells(m, e) {
            let (verdict, reason) = verdict_parts(&v);
            by_trial.entry(trial).or_default().push(Attempt { verdict, reason });
        }
    }
    by_trial
}

/// What a flaky cell's attempts were, for people: `flaky: attempt 1 of 2 fail
/// (<first line>), attempt 2 of 2 pass`; `None` unless it both passed and failed.
pub fn flaky_note(attempts: &[Attempt], last: &Verdict) -> Option<String> {
    let (verdict, reason) = verdict_parts(last);
    let all: Vec<Attempt> = attempts.iter().cloned().chain([Attempt { verdict, reason }]).collect();
    let seen = |o: Outcome| all.iter().any(|a| a.verdict == o);
    if !(seen(Outcome::Pass) && seen(Outcome::Fail)) {
        return None;
    }
    let n = all.len();
    let each: Vec<String> = all
        .iter()
        .enumerate()
        .map(|(i, a)| match (a.verdict, a.reason.as_deref().and_then(|r| r.lines().next())) {
            (Outcome::Fail, Some(why)) => format!("attempt {} of {n} fail ({why})", i + 1),
            (o, _) => format!("attempt {} of {n} {}", i + 1, o.as_str()),
        })
        .collect();
    Some(format!("flaky: {}", each.join(", ")))
}

/// Records one trial's outcome (called by [`crate::report::trials`]).
pub fn observe(run: &KernelRun, trial: &str, v: &Verdict, attempts: Vec<Attempt>) {
    let (verdict, reason) = verdict_parts(v);
    let (metrics, note, secs, cause) = outcome(run, trial);
    let cell = Cell {
        trial: trial.into(),
        verdict,
        reason,
        metrics,
        note,
        reproduce: reproduce_command(&run.kernel, trial),
        secs,
        cause,
        attempts,
    };
    OBSERVED.lock().unwrap_or_else(|e| e.into_inner()).push((kernel_header(run), cell));
}

/// Everything [`observe`]d so far, grouped by kernel in order of first sight.
pub fn observed() -> RunResults {
    let seen = OBSERVED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut kernels: Vec<KernelResult> = Vec::new();
    for (header, cell) in seen {
        match kernels.iter_mut().find(|k| k.kernel == header.kernel) {
            Some(k) => k.cells.push(cell),
            None => {
                let mut k = header;
                k.cells.push(cell);
                kernels.push(k);
            }
        }
    }
    for k in &mut kernels {
        k.cells.sort_by(|a, b| a.trial.cmp(&b.trial));
    }
    RunResults::new(kernels)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(kernel: &str) -> KernelResult {
        KernelResult {
            kernel: kernel.into(),
            release: Some("6.1.0-50-cloud-amd64".into()),
            accel: "tcg".into(),
            boot_secs: Some(3.2),
            wall_secs: 12.0,
            guest: Some(GuestTimes { init: Some(1.5), agent: Some(1.6), probed: Some(1.8), end: Some(9.0) }),
            failure: None,
            qemu_command: Some("qemu-system-x86_64 ...".into()),
            cells: vec![
                Cell {
                    trial: "x::load".into(),
                    verdict: Outcome::Pass,
                    reason: None,
                    metrics: [("insns".to_string(), 12.0)].into(),
                    note: String::new(),
                    reproduce: reproduce_command(kernel, "x::load"),
                    secs: None,
                    cause: None,
                    attempts: Vec::new(),
                },
                Cell {
                    trial: "x::run".into(),
                    verdict: Outcome::Fail,
                    reason: Some("bad <verdict> & | pipes\nline 2".into()),
                    metrics: BTreeMap::new(),
                    note: String::new(),
                    reproduce: reproduce_command(kernel, "x::run"),
                    secs: None,
                    cause: None,
                    attempts: Vec::new(),
                },
                Cell {
                    trial: "features::y".into(),
                    verdict: Outcome::Ignored,
                    reason: Some("needs PMU".into()),
                    metrics: BTreeMap::new(),
                    note: String::new(),
                    reproduce: reproduce_command(kernel, "features::y"),
                    secs: None,
                    cause: None,
                    attempts: Vec::new(),
                },
            ],
        }
    }

    #[test]
    fn round_trip_and_counts() {
        let r = RunResults::new(vec![sample("6.1")]);
        let text = serde_json::to_string(&r).unwrap();
        let back: RunResults = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        assert_eq!(r.counts(), (1, 1, 1));
        assert!(r.failed());
        assert_eq!(r.kernels[0].cells[0].reproduce, "cargo test --test matrix -- --exact 6.1::x::load");
    }

    #[test]
    fn merge_joins_shards_and_refuses_overlap() {
        let mut a = RunResults::new(vec![sample("6.1")]);
        a.shards = vec!["1/2".into()];
        let mut b = RunResults::new(vec![sample("5.10")]);
        b.shards = vec!["2/2".into()];
        let m = RunResults::merge(vec![("a".into(), a.clone()), ("b".into(), b)]).unwrap();
        assert_eq!(m.kernels.len(), 2);
        assert_eq!(m.shards, vec!["1/2", "2/2"]);
        assert_eq!(m.counts(), (2, 2, 2));
        let mut c = a.clone();
        c.kernels[0].wall_secs = 1.0;
        let e = RunResults::merge(vec![("a.json".into(), a.clone()), ("c.json".into(), c)]).unwrap_err().to_string();
        assert!(e.contains("\"6.1\" is in both a.json and c.json"), "{e}");
        // The same file given twice is harmless.
        assert_eq!(RunResults::merge(vec![("a".into(), a.clone()), ("a".into(), a)]).unwrap().kernels.len(), 1);
    }

    #[test]
    fn github_annotations_one_per_failure() {
        let a = github_annotations(&RunResults::new(vec![sample("6.1")]));
        assert_eq!(a.lines().count(), 1, "{a}");
        assert!(a.starts_with("::error title=6.1%3A%3Ax%3A%3Arun::bad <verdict> & | pipes%0Acargo test --test matrix -- --exact 6.1::x::run"), "{a}");
    }

    /// `--retries`: a pass after a failure is flaky everywhere a person or a CI
    /// tool looks; a cell that failed every attempt is not.
    #[test]
    fn flaky_cells_are_told_apart() {
        let mut k = sample("6.1");
        let fail = |why: &str| Attempt { verdict: Outcome::Fail, reason: Some(why.into()) };
        k.cells[0].attempts = vec![fail("timed out\nconsole tail")];
        k.cells[1].attempts = vec![fail("bad <verdict> & | pipes")];
        let r = RunResults::new(vec![k]);
        let (pass, fail_, _) = r.counts();
        assert_eq!((pass, fail_), (1, 1));
        assert_eq!(
            r.kernels[0].cells[0].flaky_note().as_deref(),
            Some("flaky: attempt 1 of 2 fail (timed out), attempt 2 of 2 pass")
        );
        assert!(!r.kernels[0].cells[1].flaky(), "failed twice: broken, not flaky");
        assert_eq!(r.kernels[0].cells[0].attempt_letters().as_deref(), Some("FP"));
        let md = r.markdown();
        assert!(md.starts_with("## ❌ kernel matrix: 1 passed, 1 failed, 1 ignored, 1 flaky"), "{md}");
        assert!(
            md.contains("- `6.1::x::load` (pass): flaky: attempt 1 of 2 fail (timed out), attempt 2 of 2 pass"),
            "{md}"
        );
        let a = github_annotations(&r);
        assert!(a.contains("::warning title=6.1%3A%3Ax%3A%3Aload is flaky::flaky: attempt 1 of 2 fail"), "{a}");
        // And the JSON keeps the attempts.
        let back: RunResults = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn markdown_lists_failures_with_the_rerun_command() {
        let md = RunResults::new(vec![sample("6.1")]).markdown();
        assert!(md.starts_with("## ❌ kernel matrix: 1 passed, 1 failed, 1 ignored"), "{md}");
        assert!(md.contains("| 6.1 | 6.1.0-50-cloud-amd64 | tcg | 3.2 | 12.0 | 1 | **1** | 1 |"), "{md}");
        assert!(md.contains("<code>6.1::x::run</code>: bad &lt;verdict&gt; &amp; | pipes"), "{md}");
        assert!(md.contains("Reproduce: `cargo test --test matrix -- --exact 6.1::x::run`"), "{md}");
    }
}

/// Declared with the other settings (so [`crate::settings`] needs nothing from
/// here); the writing of the reports it names is below.
pub use crate::settings::RunOutputs;

impl RunOutputs {
    /// Writes the requested reports of a finished run; returns its results.
    pub fn write(&self, m: &Matrix, runs: &[Arc<KernelRun>]) -> anyhow::Result<RunResults> {
        let mut r = RunResults::from_runs(m, runs);
        if let Some(s) = self.shard()? {
            r.shards = vec![s.to_string()];
        }
        write_reports(&r, self.json.as_deref(), self.junit.as_deref(), self.markdown.as_deref())?;
        if std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true") {
            print!("{}", github_annotations(&r));
        }
        Ok(r)
    }
}

/// `::error` workflow commands, one per failing cell, so GitHub shows the
/// failures on the run's page (the full message stays in the log and reports).
pub fn github_annotations(r: &RunResults) -> String {
    let esc = |s: &str| s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A");
    // Property values also escape ':' and ','.
    let prop = |s: &str| esc(s).replace(':', "%3A").replace(',', "%2C");
    let mut out = String::new();
    for k in &r.kernels {
        for c in k.cells.iter().filter(|c| c.verdict == Outcome::Fail) {
            let first = c.reason.as_deref().and_then(|m| m.lines().next()).unwrap_or("failed");
            let title = prop(&format!("{}::{}", k.kernel, c.trial));
            let _ = writeln!(out, "::error title={title}::{}%0A{}", esc(first), esc(&c.reproduce));
        }
        for (c, note) in
            k.cells.iter().filter(|c| c.verdict == Outcome::Pass).filter_map(|c| Some((c, c.flaky_note()?)))
        {
            let title = prop(&format!("{}::{} is flaky", k.kernel, c.trial));
            let _ = writeln!(out, "::warning title={title}::{}%0A{}", esc(&note), esc(&c.reproduce));
        }
    }
    out
}

/// `kernel-matrix merge`: joins the reports of CI shards.
#[derive(clap::Args, Debug, Clone)]
pub struct MergeArgs {
    /// Shard reports: results JSON files (`run --json`) and/or JUnit XML files.
    #[arg(required = true)]
    pub inputs: Vec<std::path::PathBuf>,
    /// The merged results JSON.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// The merged JUnit XML (from the JSON inputs, plus the suites of XML inputs).
    #[arg(long)]
    pub junit: Option<std::path::PathBuf>,
    /// Append a Markdown summary of the merged results.
    #[arg(long)]
    pub markdown: Option<std::path::PathBuf>,
    /// Exit 1 when the merged results contain a failure.
    #[arg(long)]
    pub check: bool,
}

pub fn merge_command(a: &MergeArgs) -> anyhow::Result<std::process::ExitCode> {
    let mut json_parts = Vec::new();
    let mut xml_parts = Vec::new();
    for p in &a.inputs {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        if text.trim_start().starts_with('<') {
            xml_parts.push((p.display().to_string(), text));
        } else {
            json_parts.push((p.display().to_string(), RunResults::load(p)?));
        }
    }
    let merged = RunResults::merge(json_parts)?;
    if let Some(p) = &a.junit {
        let mut suites = xml_parts;
        if !merged.kernels.is_empty() {
            suites.insert(0, ("merged results".into(), crate::report::junit::render(&merged)));
        }
        crate::images::fetch::write_atomic(p, crate::report::junit::merge(&suites)?.as_bytes())?;
    } else if !xml_parts.is_empty() {
        bail!("JUnit inputs given but no --junit output to merge them into");
    }
    write_reports(&merged, a.json.as_deref(), None, a.markdown.as_deref())?;
    let (pass, fail, ignored) = merged.counts();
    eprintln!(
        "kernel-matrix: merged {} kernels: {pass} passed, {fail} failed, {ignored} ignored",
        merged.kernels.len()
    );
    Ok(if a.check && fail > 0 { std::process::ExitCode::FAILURE } else { std::process::ExitCode::SUCCESS })
}
