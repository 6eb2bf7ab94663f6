//! Test suites users bring (`suites:` in kernels.yaml): programs run inside each
//! kernel after the agent's checks, in the same boot. A `libtest` suite's tests
//! are trials `<kernel>::<suite>::<test>` (listed on the host before booting);
//! an `exit-status` suite is one trial `<kernel>::<suite>`.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SuiteFormat {
    /// A Rust test binary (libtest): `test NAME ... ok|FAILED|ignored` lines.
    Libtest,
    /// Any program: exit status 0 passes.
    ExitStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestSuite {
    pub name: String,
    /// Program (absolute path, the same in the guest as on the host) and arguments.
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (created in the guest): the config file's directory.
    pub cwd: String,
    pub format: SuiteFormat,
    /// Feature ids the suite cannot run without (gates, like checks' needs).
    #[serde(default)]
    pub needs: Vec<String>,
    /// libtest: the tests the host listed (`--list --format terse`).
    #[serde(default)]
    pub tests: Vec<String>,
    /// Run in the host's own root (shared read-only, kernel command line
    /// `km.hostroot`, mounted by /init at [`HOST_ROOT`]) instead of the packed one.
    #[serde(default)]
    pub host_root: bool,
}

/// Where the guest's /init lays the host's root (under a throwaway writable layer)
/// when the harness shares it; /init exports `KM_HOST_ROOT_FAILED` (why) instead
/// when it could not.
pub const HOST_ROOT: &str = "/km-root";

/// The file in the BYO directory that lists the suites.
pub const SUITES_JSON: &str = "suites.json";

/// One test's outcome in libtest's human output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestOutcome {
    Ok,
    Failed,
    Ignored(Option<String>),
}

/// libtest's `test NAME ... RESULT` lines (pretty format, any thread count), and
/// the `---- NAME stdout ----` sections that follow failures.
pub fn parse_libtest(output: &str) -> (BTreeMap<String, TestOutcome>, BTreeMap<String, String>) {
    let mut results = BTreeMap::new();
    let mut failures: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix("test ") {
            if let Some((name, result)) = rest.rsplit_once(" ... ") {
                let outcome = match result.trim() {
                    "ok" => Some(TestOutcome::Ok),
                    "FAILED" => Some(TestOutcome::Failed),
                    "ignored" => Some(TestOutcome::Ignored(None)),
                    r => r.strip_prefix("ignored, ").map(|why| TestOutcome::Ignored(Some(why.to_string()))),
                };
                if let Some(o) = outcome {
                    results.insert(name.to_string(), o);
                    continue;
                }
            }
        }
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----").or_else(|| l.strip_suffix(" stderr ----")))
        {
            current = Some(name.to_string());
            continue;
        }
        if line == "failures:" || line.starts_with("test result:") {
            current = None;
            continue;
        }
        if let Some(name) = &current {
            let f = failures.entry(name.clone()).or_default();
            f.push_str(line);
            f.push('\n');
        }
    }
    (results, failures)
}

/// The names in `--list --format terse` output (`name: test`), or `None` when
/// the output is not libtest's list.
pub fn parse_list(output: &str) -> Option<Vec<String>> {
    let mut tests = Vec::new();
    for line in output.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        if let Some(name) = line.strip_suffix(": test") {
            tests.push(name.to_string());
        } else if line.ends_with(": bench") || line.ends_with(" benchmarks") || line.ends_with(" benchmark") {
            continue;
        } else {
            return None;
        }
    }
    Some(tests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libtest_output() {
        let out = "\nrunning 3 tests\ntest a::ok_one ... ok\ntest b ... FAILED\ntest c ... ignored, needs root\n\nfailures:\n\n---- b stdout ----\nthread 'b' panicked at src/lib.rs:3:5:\nboom\n\n\nfailures:\n    b\n\ntest result: FAILED. 1 passed; 1 failed; 1 ignored\n";
        let (r, f) = parse_libtest(out);
        assert_eq!(r["a::ok_one"], TestOutcome::Ok);
        assert_eq!(r["b"], TestOutcome::Failed);
        assert_eq!(r["c"], TestOutcome::Ignored(Some("needs root".into())));
        assert!(f["b"].contains("boom"), "{f:?}");
        assert_eq!(parse_list("a::x: test\nb: test\nc: bench\n"), Some(vec!["a::x".to_string(), "b".to_string()]));
        assert_eq!(parse_list("hello world\n"), None);
        assert_eq!(parse_list(""), Some(vec![]));
    }
}
