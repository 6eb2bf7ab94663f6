//! The harness's side of BMF: turning kernel runs into a [`Bmf`] with its sidecar.
//! The format itself (types, reading, writing, validation, criterion import) is the
//! `km-bmf` crate, re-exported here.
pub use km_bmf::*;

use crate::run::KernelRun;

/// `host`, `kvm`, `tcg`, or `tcg-icount` when the VM ran with QEMU's
/// instruction-counting virtual clock (benchmark VMs do, see `bench::icount`).
pub fn accel_label(run: &KernelRun) -> String {
    match run.accel {
        None => "host".into(),
        Some(a) if run.command_line.as_deref().is_some_and(|c| c.contains(" -icount ")) => format!("{a}-icount"),
        Some(a) => a.to_string(),
    }
}

/// The BMF of a set of kernel runs, plus its sidecar.
pub fn from_runs(runs: &[impl AsRef<KernelRun>]) -> (Bmf, Meta) {
    let mut bmf = Bmf::new();
    let mut meta = Meta::default();
    for run in runs {
        let run = run.as_ref();
        let accel = accel_label(run);
        let t = &run.timeline;
        meta.kernels.insert(
            run.kernel.clone(),
            KernelMeta {
                release: run.release.clone(),
                accel,
                boot_secs: run.boot.map(|b| b.as_secs_f64()),
                init_secs: t.init,
                agent_secs: t.agent.zip(t.end).map(|(a, e)| e - a),
            },
        );
        for ((program, check), o) in &run.checks {
            if !matches!(o.verdict, km_protocol::Verdict::Pass) {
                continue;
            }
            let m = &o.metrics;
            if LATENCY_CHECKS.contains(&check.as_str()) {
                let bench = bmf.entry(format!("{}::{program}::{check}", run.kernel)).or_default();
                if let Some(&value) = m.get("value") {
                    bench.insert(
                        LATENCY.into(),
                        Metric { value, lower_value: m.get("lower").copied(), upper_value: m.get("upper").copied() },
                    );
                }
                // The agent's hardware counts per run (`<measure>_per_run`, `_q1`, `_q3`).
                for measure in COUNTER_MEASURES {
                    if let Some(&value) = m.get(&format!("{measure}_per_run")) {
                        let bound = |b: &str| m.get(&format!("{measure}_{b}")).copied();
                        bench.insert(
                            measure.to_string(),
                            Metric { value, lower_value: bound("q1"), upper_value: bound("q3") },
                        );
                    }
                }
                if bench.is_empty() {
                    bmf.remove(&format!("{}::{program}::{check}", run.kernel));
                }
            }
            let load = format!("{}::{program}::load", run.kernel);
            for measure in VERIFIER_MEASURES {
                if let Some(&v) = m.get(*measure) {
                    // The `load` check's own numbers win over a benchmark's copy.
                    let entry = bmf.entry(load.clone()).or_default();
                    if check == "load" || !entry.contains_key(*measure) {
                        entry.insert(measure.to_string(), Metric::exact(v));
                    }
                }
            }
        }
    }
    (bmf, meta)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::run::CheckOutcome;
    use km_protocol::Verdict;

    fn run() -> KernelRun {
        let outcome = |pairs: &[(&str, f64)]| CheckOutcome {
            verdict: Verdict::Pass,
            metrics: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            note: String::new(),
            secs: None,
            cause: None,
        };
        let mut checks = BTreeMap::new();
        checks.insert(
            ("xdp_classifier".into(), "load".into()),
            outcome(&[("verified_insns", 118.0), ("jited_bytes", 390.0), ("xlated_bytes", 664.0)]),
        );
        checks.insert(
            ("xdp_classifier".into(), "test_run".into()),
            outcome(&[
                ("value", 140.0),
                ("lower", 139.0),
                ("upper", 146.5),
                ("repeat", 1e6),
                ("instructions_per_run", 1334.0),
                ("instructions_q1", 1334.0),
                ("instructions_q3", 1335.0),
                ("cycles_per_run", 2100.0),
                ("cycles_q1", 2000.0),
                ("cycles_q3", 2200.0),
            ]),
        );
        checks.insert(
            ("xdp_classifier_slow".into(), "test_run".into()),
            outcome(&[("value", 190.0), ("lower", 185.0), ("upper", 195.0), ("verified_insns", 700.0)]),
        );
        checks.insert(("xdp_classifier".into(), "classify".into()), outcome(&[]));
        KernelRun {
            release: Some("6.1.0-47-cloud-amd64".into()),
            accel: Some(crate::vm::accel::Accel::Tcg),
            checks,
            failure: None,
            ..KernelRun::failed("6.1", String::new())
        }
    }

    #[test]
    fn runs_become_valid_bmf_with_the_documented_names() {
        let (bmf, meta) = from_runs(&[std::sync::Arc::new(run())]);
        let json = serde_json::to_value(&bmf).unwrap();
        validate(&json).unwrap();
        assert_eq!(
            json["6.1::xdp_classifier::test_run"]["latency"],
            serde_json::json!({"value": 140.0, "lower_value": 139.0, "upper_value": 146.5})
        );
        assert_eq!(
            json["6.1::xdp_classifier::test_run"]["instructions"],
            serde_json::json!({"value": 1334.0, "lower_value": 1334.0, "upper_value": 1335.0})
        );
        assert_eq!(json["6.1::xdp_classifier::test_run"]["cycles"]["value"], 2100.0);
        assert!(json["6.1::xdp_classifier_slow::test_run"].get("instructions").is_none(), "no profile, no counts");
        assert_eq!(json["6.1::xdp_classifier::load"]["verified_insns"]["value"], 118.0);
        assert_eq!(json["6.1::xdp_classifier_slow::load"]["verified_insns"]["value"], 700.0);
        assert!(json.get("6.1::xdp_classifier::classify").is_none(), "checks without numbers are not benchmarks");
        assert_eq!(meta.accel_of("6.1"), "tcg");
        assert_eq!(split_name("6.1::xdp_classifier::test_run"), ("6.1", "xdp_classifier", "test_run"));
    }
}
