//! Expected failures: known, explained failures that turn into ignored trials.
//!
//! An entry whose trial passes fails the run as "unexpectedly passing", so the list
//! cannot rot: fixing a kernel or a program forces the entry's removal.
use serde::Deserialize;

use km_protocol::Verdict;

/// One entry of `expected_failures:` in kernels.yaml.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExpectedFailure {
    /// Kernel name or glob (`7.*`, `6.1?`; see [`crate::glob`]).
    pub kernel: String,
    /// The trial without its kernel prefix: `xdp_classifier::load`, `features::bpf_loop`.
    pub trial: String,
    pub reason: String,
}

/// Applies the list to one cell's verdict.
pub fn apply(list: &[ExpectedFailure], kernel: &str, trial: &str, v: Verdict) -> Verdict {
    let Some(e) = list.iter().find(|e| e.trial == trial && crate::glob::matches(&e.kernel, kernel)) else {
        return v;
    };
    match v {
        Verdict::Fail(_) => Verdict::Ignored(format!("expected failure: {}", e.reason)),
        Verdict::Pass => Verdict::Fail(format!(
            "unexpectedly passing: listed in expected_failures ({}: {}) but it passed; remove the entry",
            e.kernel, e.reason
        )),
        ignored => ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> Vec<ExpectedFailure> {
        vec![ExpectedFailure { kernel: "7.*".into(), trial: "xdp_classifier::load".into(), reason: "bug 1".into() }]
    }

    #[test]
    fn failure_becomes_ignored_with_reason() {
        let v = apply(&list(), "7.3-rc", "xdp_classifier::load", Verdict::Fail("x".into()));
        assert_eq!(v, Verdict::Ignored("expected failure: bug 1".into()));
    }

    #[test]
    fn pass_becomes_unexpectedly_passing() {
        let v = apply(&list(), "7.2", "xdp_classifier::load", Verdict::Pass);
        assert!(matches!(v, Verdict::Fail(m) if m.starts_with("unexpectedly passing")));
    }

    #[test]
    fn other_cells_are_untouched() {
        assert_eq!(apply(&list(), "6.1", "xdp_classifier::load", Verdict::Pass), Verdict::Pass);
        assert_eq!(apply(&list(), "7.2", "xdp_classifier::classify", Verdict::Pass), Verdict::Pass);
    }

    #[test]
    fn kernel_is_matched_as_a_glob() {
        // The rules themselves are pinned in `crate::glob`'s tests.
        let entry =
            |kernel: &str| vec![ExpectedFailure { kernel: kernel.into(), trial: "x::load".into(), reason: "r".into() }];
        let ignored = |kernel: &str, name: &str| {
            matches!(apply(&entry(kernel), name, "x::load", Verdict::Fail("f".into())), Verdict::Ignored(_))
        };
        assert!(ignored("*", "anything") && ignored("host", "host"));
        assert!(ignored("6.*", "6.12") && !ignored("6.*", "7.2"));
        assert!(ignored("*-rc", "7.3-rc") && ignored("6.1?", "6.12") && !ignored("6.1?", "6.1"));
    }
}
