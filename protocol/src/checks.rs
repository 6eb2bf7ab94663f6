//! The checks and benchmarks as data: the host lists trials from these tables
//! without booting anything, and the guest agent runs them.
use std::collections::BTreeMap;

use crate::{byo::GuestProgram, features::Probe};

/// One cell kind of the matrix: `<kernel>::<program>::<check>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckId {
    pub program: &'static str,
    pub check: &'static str,
    /// Kernel features (by id, see `features`) the check cannot run without.
    pub needs: &'static [&'static str],
}

impl CheckId {
    /// The trial name without the kernel: `program::check`.
    /// (A suite of `format: exit-status` is one trial named by the suite alone:
    /// its check is empty.)
    pub fn trial(&self) -> String {
        if self.check.is_empty() {
            return self.program.to_string();
        }
        format!("{}::{}", self.program, self.check)
    }
}

pub const CATALOGUE: &[CheckId] = &[
    CheckId { program: "xdp_classifier", check: "load", needs: &[] },
    CheckId { program: "xdp_classifier", check: "classify", needs: &["prog_test_run"] },
    // Instructions/cycles per run (`bpftool prog profile`): fentry/fexit + hardware PMU.
    CheckId { program: "xdp_classifier", check: "insn_profile", needs: &["prog_profile"] },
    CheckId { program: "xdp_classifier_loop", check: "load", needs: &["bpf_loop"] },
    CheckId { program: "xdp_classifier_loop", check: "classify", needs: &["bpf_loop", "prog_test_run"] },
    CheckId { program: "profiler", check: "load", needs: &["perf_event_prog", "ringbuf"] },
    CheckId { program: "profiler", check: "samples", needs: &["perf_event_prog", "ringbuf"] },
    CheckId { program: "usdt_tracer", check: "load", needs: &["ringbuf", "usdt"] },
    CheckId { program: "usdt_tracer", check: "hits", needs: &["ringbuf", "usdt"] },
];

/// Every benchmark cell, `<kernel>::<program>::<check>`. Listed as libtest bench
/// trials (not in [`CATALOGUE`], so plain matrix runs neither list nor wait for them).
pub const BENCHES: &[CheckId] = &[
    CheckId { program: "xdp_classifier", check: "test_run", needs: &["prog_test_run"] },
    CheckId { program: "xdp_classifier_slow", check: "test_run", needs: &["prog_test_run"] },
    CheckId { program: "xdp_classifier_loop", check: "test_run", needs: &["bpf_loop", "prog_test_run"] },
    CheckId { program: "xdp_classifier", check: "fdinfo", needs: &["bpf_stats_sysctl"] },
    CheckId { program: "xdp_classifier_slow", check: "fdinfo", needs: &["bpf_stats_sysctl"] },
    CheckId { program: "xdp_classifier_loop", check: "fdinfo", needs: &["bpf_loop", "bpf_stats_sysctl"] },
    CheckId { program: "usdt_tracer", check: "fdinfo", needs: &["ringbuf", "usdt", "bpf_stats_sysctl"] },
    CheckId { program: "profiler", check: "fdinfo", needs: &["perf_event_prog", "ringbuf", "bpf_stats_sysctl"] },
];

/// The checks of a manifest program: `load`, `attach` when the entry asks for it,
/// and `test_run` when it has packets.
/// Names are leaked once per program so they fit the `'static` catalogue type.
pub fn byo_checks(p: &GuestProgram) -> Vec<CheckId> {
    let program: &'static str = Box::leak(p.name.clone().into_boxed_str());
    let needs: &'static [&'static str] = Box::leak(
        p.needs
            .iter()
            .map(|n| &*Box::leak(n.clone().into_boxed_str()))
            .collect::<Vec<&'static str>>()
            .into_boxed_slice(),
    );
    let mut out = vec![CheckId { program, check: "load", needs }];
    if p.attach {
        out.push(CheckId { program, check: "attach", needs });
    }
    if !p.packets.is_empty() {
        let mut test_needs = needs.to_vec();
        test_needs.push("prog_test_run");
        out.push(CheckId { program, check: "test_run", needs: Box::leak(test_needs.into_boxed_slice()) });
    }
    out
}

/// Why `c` cannot run here, if a feature it needs was probed absent or unavailable.
pub fn gate(c: &CheckId, features: &BTreeMap<String, Probe>) -> Option<String> {
    gate_needs(c.needs, features, &c.trial())
}

/// Why something needing `needs` (feature ids) cannot run here, if it cannot.
pub fn gate_needs<S: AsRef<str>>(needs: &[S], features: &BTreeMap<String, Probe>, what: &str) -> Option<String> {
    needs.iter().map(AsRef::as_ref).find_map(|id| {
        let f = crate::features::by_id(id).unwrap_or_else(|| panic!("{what} needs unknown feature {id}"));
        match features.get(id) {
            Some(Probe::Present(_)) => None,
            Some(Probe::Unavailable(why)) | Some(Probe::Unprobed(why)) => Some(format!("{} ({why})", f.need_reason())),
            _ => Some(f.need_reason()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_need_is_a_catalogued_feature() {
        for c in CATALOGUE.iter().chain(BENCHES) {
            for n in c.needs {
                assert!(crate::features::by_id(n).is_some(), "{}::{} needs unknown feature {n}", c.program, c.check);
            }
        }
    }

    #[test]
    fn gate_names_the_missing_feature_and_version() {
        let c = CATALOGUE.iter().find(|c| c.program == "xdp_classifier_loop" && c.check == "load").unwrap();
        let mut f = BTreeMap::new();
        f.insert("bpf_loop".to_string(), Probe::Absent("no".into()));
        assert_eq!(gate(c, &f).as_deref(), Some("needs bpf_loop, 5.17"));
        f.insert("bpf_loop".to_string(), Probe::Present("yes".into()));
        assert_eq!(gate(c, &f), None);
    }
}
