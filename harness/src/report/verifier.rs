//! The verifier table: every manifest program on every kernel, with the verifier's
//! verdict and numbers (processed instructions, states, verification time, stack
//! depth, xlated/JIT-ed size, program and attach type) from the `load` records'
//! metrics. Printed as Markdown after a run and written as CSV and JSON; two JSON
//! files are compared by `kernel-matrix compare` (see `perf::veristat`).
use std::{collections::BTreeMap, fmt::Write as _, path::Path, sync::Arc};

use km_protocol::Verdict;
use serde::{Deserialize, Serialize};

use crate::run::{KernelRun, Matrix};

/// Marks a JSON file as a verifier table (what `compare` looks for).
pub const KIND: &str = "kernel-matrix-verifier";

/// The numbers, in column order: (metric key, column title).
pub const NUMBERS: &[(&str, &str)] = &[
    ("processed_insns", "Insns"),
    ("total_states", "States"),
    ("peak_states", "Peak states"),
    ("verification_usec", "Duration (us)"),
    ("stack_depth", "Stack"),
    ("xlated_bytes", "Xlated B"),
    ("jited_bytes", "JIT B"),
    ("load_secs", "Load s"),
];

/// What a program's load did on a kernel, as the verifier table says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadVerdict {
    /// The verifier accepted it.
    Accepted,
    /// The load failed and the verifier's numbers came with it.
    Rejected,
    /// The load failed before the verifier (no numbers).
    Failed,
    /// The kernel did not report it.
    #[serde(rename = "not run")]
    NotRun,
}

impl LoadVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadVerdict::Accepted => "accepted",
            LoadVerdict::Rejected => "rejected",
            LoadVerdict::Failed => "failed",
            LoadVerdict::NotRun => "not run",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// `entry::program` (the trial without kernel and check).
    pub program: String,
    pub kernel: String,
    #[serde(default)]
    pub release: Option<String>,
    /// `tcg`, `kvm` or `host`.
    #[serde(default)]
    pub accel: String,
    /// `accepted`, `rejected`, `failed` or `not run`.
    pub verdict: LoadVerdict,
    /// The final trial verdict's first line when not a pass (expected failures included).
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub prog_type: Option<String>,
    #[serde(default)]
    pub attach_type: Option<String>,
    /// Metric key -> value (see [`NUMBERS`]).
    #[serde(default)]
    pub numbers: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Table {
    pub kind: String,
    pub rows: Vec<Row>,
}

/// One row per (manifest program, kernel).
pub fn rows(m: &Matrix, runs: &[Arc<KernelRun>]) -> Vec<Row> {
    let mut out = Vec::new();
    for id in m.checks().iter().filter(|c| c.check == "load" && m.byo.iter().any(|p| p.guest.name == c.program)) {
        for r in runs {
            let outcome = r.checks.get(&(id.program.to_string(), "load".to_string()));
            let final_verdict = crate::verdict::check(m, r, *id);
            let metrics = outcome.map(|o| o.metrics.clone()).unwrap_or_default();
            let verdict = match (outcome.map(|o| &o.verdict), metrics.get("accepted")) {
                (Some(Verdict::Pass), _) => LoadVerdict::Accepted,
                (Some(Verdict::Fail(_)), Some(_)) => LoadVerdict::Rejected,
                (Some(Verdict::Fail(_)), None) => LoadVerdict::Failed,
                _ => LoadVerdict::NotRun,
            };
            let reason = match &final_verdict {
                Verdict::Pass => String::new(),
                Verdict::Fail(s) | Verdict::Ignored(s) => s.lines().next().unwrap_or("").to_string(),
            };
            let numbers = NUMBERS.iter().filter_map(|(k, _)| Some((k.to_string(), *metrics.get(*k)?))).collect();
            out.push(Row {
                program: id.program.to_string(),
                kernel: r.kernel.clone(),
                release: r.release.clone(),
                accel: r.accel_label(),
                verdict,
                reason,
                prog_type: metrics.get("prog_type").map(|v| crate::config::object::prog_type_name(*v as u32)),
                attach_type: metrics.get("attach_type").map(|v| crate::config::object::attach_type_name(*v as u32)),
                numbers,
            });
        }
    }
    out
}

/// Markdown: programs as rows, kernels as columns, `✓ insns/states` or `✗`.
pub fn markdown(rows: &[Row]) -> String {
    let mut kernels: Vec<&str> = Vec::new();
    let mut programs: Vec<&str> = Vec::new();
    for r in rows {
        if !kernels.contains(&r.kernel.as_str()) {
            kernels.push(&r.kernel);
        }
        if !programs.contains(&r.program.as_str()) {
            programs.push(&r.program);
        }
    }
    if programs.is_empty() {
        return String::new();
    }
    let mut s = String::from("verifier: ✓ accepted (processed insns / peak states / verification µs), ✗ rejected, - not run\n\n| program | type |");
    for k in &kernels {
        let _ = write!(s, " {k} |");
    }
    s.push('\n');
    s.push_str(&"|---".repeat(2 + kernels.len()));
    s.push_str("|\n");
    let num = |r: &Row, k: &str| r.numbers.get(k).map(|v| format!("{v:.0}")).unwrap_or_else(|| "?".into());
    for p in programs {
        let ty = rows
            .iter()
            .find(|r| r.program == p && r.prog_type.is_some())
            .and_then(|r| r.prog_type.clone())
            .unwrap_or_default();
        let _ = write!(s, "| {p} | {ty} |");
        for k in &kernels {
            let cell = match rows.iter().find(|r| r.program == p && r.kernel == *k) {
                Some(r) if r.verdict == LoadVerdict::Accepted => {
                    format!("✓ {}/{}/{}", num(r, "processed_insns"), num(r, "peak_states"), num(r, "verification_usec"))
                }
                Some(r) if matches!(r.verdict, LoadVerdict::Rejected | LoadVerdict::Failed) => "✗".to_string(),
                _ => "-".to_string(),
            };
            let _ = write!(s, " {cell} |");
        }
        s.push('\n');
    }
    s
}

pub fn csv(rows: &[Row]) -> String {
    let mut s = String::from("program,kernel,release,accel,verdict,prog_type,attach_type");
    for (k, _) in NUMBERS {
        let _ = write!(s, ",{k}");
    }
    s.push_str(",reason\n");
    let q = |v: &str| {
        if v.contains([',', '"', '\n']) {
            format!("\"{}\"", v.replace('"', "\"\""))
        } else {
            v.to_string()
        }
    };
    for r in rows {
        let _ = write!(
            s,
            "{},{},{},{},{},{},{}",
            q(&r.program),
            q(&r.kernel),
            q(r.release.as_deref().unwrap_or("")),
            q(&r.accel),
            r.verdict.as_str(),
            r.prog_type.as_deref().unwrap_or(""),
            r.attach_type.as_deref().unwrap_or("")
        );
        for (k, _) in NUMBERS {
            let _ = write!(s, ",{}", r.numbers.get(*k).map(|v| v.to_string()).unwrap_or_default());
        }
        let _ = writeln!(s, ",{}", q(&r.reason));
    }
    s
}

pub fn write_json(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    let t = Table { kind: KIND.into(), rows: rows.to_vec() };
    crate::images::fetch::write_atomic(path, serde_json::to_string_pretty(&t)?.as_bytes())
}

pub fn read_json(path: &Path) -> anyhow::Result<Table> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let t: Table = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a verifier table (kernel-matrix run --verifier-json)", path.display()))?;
    anyhow::ensure!(t.kind == KIND, "{}: kind {:?}, want {KIND:?}", path.display(), t.kind);
    Ok(t)
}

/// Whether `path` holds a verifier table (rather than BMF).
pub fn is_verifier_file(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .is_ok_and(|t| t.contains(&format!("\"kind\": \"{KIND}\"")) || t.contains(&format!("\"kind\":\"{KIND}\"")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(p: &str, k: &str, v: &str, insns: f64) -> Row {
        Row {
            program: p.into(),
            kernel: k.into(),
            release: None,
            accel: "tcg".into(),
            verdict: serde_json::from_value(serde_json::Value::String(v.into())).unwrap(),
            reason: String::new(),
            prog_type: Some("xdp".into()),
            attach_type: None,
            numbers: [("processed_insns".to_string(), insns)].into(),
        }
    }

    #[test]
    fn table_and_csv() {
        let rows = vec![row("net::xdp_count", "6.1", "accepted", 27.0), row("net::xdp_count", "5.10", "rejected", 3.0)];
        let md = markdown(&rows);
        assert!(md.contains("| net::xdp_count | xdp | ✓ 27/?/? | ✗ |"), "{md}");
        let c = csv(&rows);
        assert!(c.lines().nth(1).unwrap().starts_with("net::xdp_count,6.1,,tcg,accepted,xdp,,27,"), "{c}");
    }
}
