//! Bencher Metric Format (BMF): the performance results of a run as one JSON file,
//! `{ "<benchmark>": { "<measure>": { "value", "lower_value", "upper_value" } } }`.
//!
//! Benchmark names are `<kernel>::<program>::<check>` (`6.1::xdp_classifier::test_run`)
//! so a result names its matrix cell. Measures:
//! - `latency` (ns per program run) for the `test_run` and `fdinfo` benchmarks:
//!   the median of the samples, with the first and third quartile as bounds;
//! - `verified_insns`, `jited_bytes`, `xlated_bytes`, `processed_insns`,
//!   `total_states`, `peak_states` (verifier numbers, exact) on `<kernel>::<program>::load`;
//! - criterion micro-benchmarks of userspace code as `userspace::<criterion id>`,
//!   `latency` = criterion's median estimate with its confidence interval.
//!
//! BMF has no place for strings, so where each number comes from (kernel release,
//! accelerator: `tcg` = emulated, `host` = native) goes into a sidecar,
//! `<file>.meta.json` ([`Meta`]), which `compare` and `report` read when present.
//!
//! A crate of its own (serde only, no BPF, no VM) so `cargo xtask`'s regression demo
//! judges runs with the same [`compare`] the `kernel-matrix compare` command uses,
//! without building the harness. The harness also takes its one atomic file write
//! from here ([`write_atomic`]): the lowest crate that writes files.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

pub mod atomic;
pub mod compare;

pub use atomic::{write_atomic, write_atomic_mode};

/// One measure of one benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_value: Option<f64>,
}

impl Metric {
    pub fn exact(value: f64) -> Self {
        Self { value, lower_value: None, upper_value: None }
    }
    pub fn lower(&self) -> f64 {
        self.lower_value.unwrap_or(self.value)
    }
    pub fn upper(&self) -> f64 {
        self.upper_value.unwrap_or(self.value)
    }
}

/// benchmark -> measure -> metric.
pub type Bmf = BTreeMap<String, BTreeMap<String, Metric>>;

/// The latency measure's name (ns per run).
pub const LATENCY: &str = "latency";
/// Verifier measures copied from `load` records (and from benchmark records of
/// programs that have no `load` check of their own, e.g. `xdp_classifier_slow`).
pub const VERIFIER_MEASURES: &[&str] =
    &["verified_insns", "jited_bytes", "xlated_bytes", "processed_insns", "total_states", "peak_states"];
/// Checks whose records carry a latency (see `bench`).
pub const LATENCY_CHECKS: &[&str] = &["test_run", "fdinfo"];
/// Hardware counts per program run (`instructions`, `cycles`), from the fentry/fexit
/// profile of `test_run` benchmarks where a PMU counts (the agent's
/// `insn_profile`): medians with quartile bounds, judged like latency. Under
/// `tcg-icount` instruction counts are exact and repeat run after run.
pub const COUNTER_MEASURES: &[&str] = &["instructions", "cycles"];

/// Whether `compare` judges `measure` as a cost with noise (latency, hardware
/// counts), rather than as an exact number that merely changed (verifier measures).
pub fn is_judged(measure: &str) -> bool {
    measure == LATENCY || COUNTER_MEASURES.contains(&measure)
}

/// Where the numbers of one kernel came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KernelMeta {
    /// `uname -r` in the guest (or the host).
    pub release: Option<String>,
    /// `tcg` (emulated), `kvm`, or `host` (native, no VM).
    pub accel: String,
    /// Host wall seconds from QEMU start to the agent's first record.
    #[serde(default)]
    pub boot_secs: Option<f64>,
    /// The guest's clock (under `tcg-icount` a virtual one) when /init started,
    /// and how long the agent ran (checks and benchmarks).
    #[serde(default)]
    pub init_secs: Option<f64>,
    #[serde(default)]
    pub agent_secs: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub kernels: BTreeMap<String, KernelMeta>,
    /// Free text: when and on what machine.
    #[serde(default)]
    pub note: String,
}

impl Meta {
    pub fn accel_of(&self, kernel: &str) -> &str {
        self.kernels.get(kernel).map(|k| k.accel.as_str()).unwrap_or("unknown accelerator")
    }
}

/// Human-readable accelerator: what a reader needs to know to trust a number.
pub fn describe_accel(accel: &str) -> &'static str {
    match accel {
        "tcg" => "tcg (emulated CPU, wall-clock: compare only with other tcg numbers)",
        "tcg-icount" => "tcg with -icount shift=0 (emulated; virtual clock, 1 ns = 1 guest instruction: deterministic, not wall time)",
        "kvm" => "kvm (hardware virtualisation)",
        "host" => "host (native)",
        _ => "unknown accelerator",
    }
}

/// Splits `kernel::program::check`.
pub fn split_name(name: &str) -> (&str, &str, &str) {
    let mut it = name.splitn(3, "::");
    (it.next().unwrap_or(""), it.next().unwrap_or(""), it.next().unwrap_or(""))
}

/// Criterion's results (`<dir>/**/new/estimates.json` with its `benchmark.json`)
/// as `userspace::<full id>` latency: median point estimate, CI bounds.
pub fn from_criterion(dir: &Path) -> anyhow::Result<Bmf> {
    let mut out = Bmf::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "new") {
                    if let Some((name, m)) = criterion_estimate(&p)? {
                        out.entry(format!("userspace::{name}")).or_default().insert(LATENCY.into(), m);
                    }
                } else if p.file_name().is_some_and(|n| n != "base" && n != "change" && n != "report") {
                    stack.push(p);
                }
            }
        }
    }
    Ok(out)
}

fn criterion_estimate(new_dir: &Path) -> anyhow::Result<Option<(String, Metric)>> {
    let (est, bench) = (new_dir.join("estimates.json"), new_dir.join("benchmark.json"));
    if !est.exists() || !bench.exists() {
        return Ok(None);
    }
    let read = |p: &PathBuf| -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)
            .with_context(|| format!("parsing {}", p.display()))
    };
    let (est, bench) = (read(&est)?, read(&bench)?);
    let name = bench["full_id"].as_str().context("benchmark.json without full_id")?.to_string();
    let median = &est["median"];
    let f = |v: &serde_json::Value| v.as_f64().context("estimates.json: median without numbers");
    let m = Metric {
        value: f(&median["point_estimate"])?,
        lower_value: Some(f(&median["confidence_interval"]["lower_bound"])?),
        upper_value: Some(f(&median["confidence_interval"]["upper_bound"])?),
    };
    Ok(Some((name, m)))
}

/// The sidecar path of a BMF file: `x.json` -> `x.meta.json`.
pub fn meta_path(bmf: &Path) -> PathBuf {
    let stem = bmf.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    bmf.with_file_name(format!("{stem}.meta.json"))
}

pub fn write(path: &Path, bmf: &Bmf, meta: &Meta) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    validate(&serde_json::to_value(bmf)?).map_err(anyhow::Error::msg)?;
    write_atomic(path, serde_json::to_string_pretty(bmf)?.as_bytes())?;
    write_atomic(&meta_path(path), serde_json::to_string_pretty(meta)?.as_bytes())?;
    Ok(())
}

/// Reads a BMF file (validated) and its sidecar if there is one.
pub fn read(path: &Path) -> anyhow::Result<(Bmf, Meta)> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
    validate(&value).map_err(|e| anyhow::anyhow!("{}: not valid BMF: {e}", path.display()))?;
    let bmf = serde_json::from_value(value)?;
    let meta = match std::fs::read(meta_path(path)) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("parsing {}", meta_path(path).display()))?,
        Err(_) => Meta::default(),
    };
    Ok((bmf, meta))
}

/// Checks the BMF shape by hand (not through our own types, so a serde attribute
/// mistake cannot hide a malformed file): an object of objects of objects with a
/// finite number `value`, optional finite `lower_value <= value <= upper_value`,
/// and nothing else. Names follow Bencher's own rules (bencher_valid, read at the
/// source since its crates are not published to the registry): a benchmark name is
/// 1..=1024 bytes and must not end in an ignore suffix (Bencher drops those); a measure
/// is a name of 1..=50 bytes.
pub fn validate(v: &serde_json::Value) -> Result<(), String> {
    let benches = v.as_object().ok_or("top level is not an object")?;
    for (bench, measures) in benches {
        if bench.is_empty() || bench.len() > 1024 {
            return Err(format!("benchmark name of {} bytes (Bencher takes 1..=1024)", bench.len()));
        }
        if ["_bencher_ignore", "BencherIgnore", "-bencher-ignore"].iter().any(|s| bench.ends_with(s)) {
            return Err(format!("{bench}: Bencher would ignore a benchmark with this suffix"));
        }
        let measures = measures.as_object().ok_or(format!("{bench}: not an object of measures"))?;
        if measures.is_empty() {
            return Err(format!("{bench}: no measures"));
        }
        for (measure, metric) in measures {
            if measure.is_empty() || measure.len() > 50 {
                return Err(format!("{bench}: measure name {measure:?} (Bencher takes 1..=50 bytes)"));
            }
            let metric = metric.as_object().ok_or(format!("{bench}/{measure}: not an object"))?;
            let num = |k: &str| -> Result<Option<f64>, String> {
                match metric.get(k) {
                    None => Ok(None),
                    Some(x) => x
                        .as_f64()
                        .filter(|f| f.is_finite())
                        .map(Some)
                        .ok_or(format!("{bench}/{measure}/{k}: not a finite number")),
                }
            };
            for k in metric.keys() {
                if !["value", "lower_value", "upper_value"].contains(&k.as_str()) {
                    return Err(format!("{bench}/{measure}: unknown key {k}"));
                }
            }
            let value = num("value")?.ok_or(format!("{bench}/{measure}: no value"))?;
            if num("lower_value")?.is_some_and(|l| l > value) || num("upper_value")?.is_some_and(|u| u < value) {
                return Err(format!("{bench}/{measure}: value outside [lower_value, upper_value]"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_rejects_what_bencher_would() {
        use serde_json::json;
        assert!(validate(&json!({"a": {"latency": {"value": 1.0}}})).is_ok());
        assert!(validate(&json!([])).is_err());
        assert!(validate(&json!({"a": {"latency": 1.0}})).is_err());
        assert!(validate(&json!({"a": {"latency": {"value": "1"}}})).is_err());
        assert!(validate(&json!({"a": {"latency": {"lower_value": 1.0}}})).is_err());
        assert!(validate(&json!({"a": {"latency": {"value": 1.0, "lower_value": 2.0}}})).is_err());
        assert!(validate(&json!({"a": {"latency": {"value": 1.0, "note": 2.0}}})).is_err());
        assert!(validate(&json!({"a": {}})).is_err());
        assert!(validate(&json!({"": {"latency": {"value": 1.0}}})).is_err());
        assert!(validate(&json!({"x".repeat(1025): {"latency": {"value": 1.0}}})).is_err());
        assert!(validate(&json!({"a_bencher_ignore": {"latency": {"value": 1.0}}})).is_err());
        assert!(validate(&json!({"a": {"m".repeat(51): {"value": 1.0}}})).is_err());
    }

    #[test]
    fn criterion_estimates_convert() {
        let dir = std::env::temp_dir().join(format!("km-crit-{}", std::process::id()));
        let new = dir.join("SourceAddr__new 0..256/new");
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(
            new.join("benchmark.json"),
            r#"{"group_id":"SourceAddr::new 0..256","full_id":"SourceAddr::new 0..256"}"#,
        )
        .unwrap();
        std::fs::write(
            new.join("estimates.json"),
            r#"{"mean":{"point_estimate":101.0,"confidence_interval":{"lower_bound":99.0,"upper_bound":103.0}},
                "median":{"point_estimate":100.0,"confidence_interval":{"lower_bound":98.5,"upper_bound":101.5}}}"#,
        )
        .unwrap();
        let bmf = from_criterion(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            bmf["userspace::SourceAddr::new 0..256"][LATENCY],
            Metric { value: 100.0, lower_value: Some(98.5), upper_value: Some(101.5) }
        );
    }
}
