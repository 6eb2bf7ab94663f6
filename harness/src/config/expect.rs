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
    /// Kernel name, `*` wildcards allowed (`7.*`).
    pub kernel: String,
    /// The trial without its kernel prefix: `xdp_classifier::load`, `features::bpf_loop`.
    pub trial: String,
    pub reason: String,
}

/// Applies the list to one cell's verdict.
pub fn apply(list: &[ExpectedFailure], kernel: &str, trial: &str, v: Verdict) -> Verdict {
    let Some(e) = list.iter().find(|e| e.trial == trial && glob(&e.kernel, kernel)) else {
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

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, rest)) => {
            let Some(tail) = s.strip_prefix(head) else { return false };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob(rest, &tail[i..]))
        }
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
    fn globbing() {
        assert!(glob("*", "anything"));
        assert!(glob("6.*", "6.12"));
        assert!(!glob("6.*", "7.2"));
        assert!(glob("*-rc", "7.3-rc"));
        assert!(glob("host", "host"));
    }
}
