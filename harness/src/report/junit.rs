//! JUnit XML for CI systems: one `<testsuite>` per kernel, one `<testcase>` per
//! trial (`classname` = kernel, `name` = `program::check`), ignored trials as
//! `<skipped message="reason"/>`, failures with their message and the command
//! that reruns them, failed earlier attempts (`--retries`) as `<flakyFailure>`
//! or `<rerunFailure>`. Written and read with quick-junit (the JUnit model nextest
//! uses), so merging shards parses their files instead of scanning strings.
use std::time::Duration;

use anyhow::{bail, Context as _};
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestRerun, TestSuite, XmlString};

use crate::report::results::{Outcome, RunResults};

/// Text as XML 1.0 can carry it: quick-junit's [`XmlString`] drops ANSI escape
/// sequences and C0 controls (console logs contain both, and NULs); U+FFFE and
/// U+FFFF, which no XML document may contain either, go here.
pub fn text(s: &str) -> XmlString {
    if s.contains(['\u{FFFE}', '\u{FFFF}']) {
        XmlString::new(s.replace(['\u{FFFE}', '\u{FFFF}'], ""))
    } else {
        XmlString::new(s)
    }
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or_default()
}

/// The run as a JUnit report.
pub fn report(r: &RunResults) -> Report {
    let mut report = Report::new("kernel-matrix");
    let mut time = Duration::ZERO;
    for k in &r.kernels {
        let mut suite = TestSuite::new(text(&k.kernel));
        suite.set_time(secs(k.wall_secs));
        time += secs(k.wall_secs);
        suite.add_property(Property::new("release", text(k.release.as_deref().unwrap_or("unknown"))));
        suite.add_property(Property::new("accel", text(&k.accel)));
        if let Some(b) = k.boot_secs {
            suite.add_property(Property::new("boot_secs", format!("{b:.3}")));
        }
        for c in &k.cells {
            let reason = c.reason.as_deref().unwrap_or("");
            let mut status = match c.verdict {
                Outcome::Pass => TestCaseStatus::success(),
                Outcome::Ignored => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(text(reason));
                    s
                }
                Outcome::Fail => {
                    let flaky = c.flaky_note().map(|n| format!("{n}\n")).unwrap_or_default();
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(text(reason.lines().next().unwrap_or("failed")))
                        .set_type("failure")
                        .set_description(text(&format!("{reason}\n{flaky}reproduce: {}", c.reproduce)));
                    s
                }
            };
            // Earlier attempts that failed (`--retries`): `<flakyFailure>` in a
            // passing case, `<rerunFailure>` in a failing one (Surefire's and
            // nextest's convention).
            status.add_reruns(c.attempts.iter().filter(|a| a.verdict == Outcome::Fail).map(|a| {
                let why = a.reason.as_deref().unwrap_or("failed");
                let mut r = TestRerun::new(NonSuccessKind::Failure);
                r.set_message(text(why.lines().next().unwrap_or("failed")))
                    .set_type("failure")
                    .set_description(text(why));
                r
            }));
            let mut case = TestCase::new(text(&c.trial), status);
            case.set_classname(text(&k.kernel)).set_time(secs(c.secs.unwrap_or(0.0)));
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    report.set_time(time);
    report
}

pub fn render(r: &RunResults) -> String {
    report(r).to_string().expect("a JUnit report serializes to memory")
}

/// Reads a JUnit file: `<testsuites>` at the root, or a single `<testsuite>` (as
/// some tools write it).
pub fn parse(name: &str, xml: &str) -> anyhow::Result<Report> {
    match Report::deserialize_from_str(xml) {
        Ok(r) => Ok(r),
        Err(first) => {
            // A bare <testsuite> root: parse it under a <testsuites> of our own.
            let body = match xml.trim_start().strip_prefix("<?xml") {
                Some(rest) => rest.split_once("?>").map_or("", |(_, b)| b),
                None => xml,
            };
            let wrapped = format!("<testsuites>{body}</testsuites>");
            match Report::deserialize_from_str(&wrapped) {
                Ok(r) if !r.test_suites.is_empty() => Ok(r),
                _ => Err(first).with_context(|| format!("{name}: not a JUnit report")),
            }
        }
    }
}

/// Merges JUnit files written by shards (ours or any tool's that uses
/// `<testsuites>`/`<testsuite>`): their `<testsuite>` elements go under one
/// `<testsuites>` with the counts added up.
pub fn merge(files: &[(String, String)]) -> anyhow::Result<String> {
    let mut merged = Report::new("kernel-matrix");
    let mut time = Duration::ZERO;
    for (name, xml) in files {
        let report = parse(name, xml)?;
        if report.test_suites.is_empty() {
            bail!("{name}: no <testsuite> element: not a JUnit report");
        }
        for suite in report.test_suites {
            time += suite.time.unwrap_or_default();
            merged.add_test_suite(suite);
        }
    }
    merged.set_time(time);
    merged.to_string().context("writing the merged JUnit report")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::results::{Cell, KernelResult, RunResults};

    fn results(kernel: &str) -> RunResults {
        let cell = |trial: &str, verdict: &str, reason: Option<&str>| Cell {
            trial: trial.into(),
            verdict: serde_json::from_value(serde_json::Value::String(verdict.into())).unwrap(),
            reason: reason.map(str::to_string),
            metrics: Default::default(),
            note: String::new(),
            reproduce: crate::report::results::reproduce_command(kernel, trial),
            secs: Some(0.5),
            cause: None,
            attempts: Vec::new(),
        };
        RunResults::new(vec![KernelResult {
            kernel: kernel.into(),
            release: Some("6.1.0".into()),
            accel: "tcg".into(),
            boot_secs: Some(3.0),
            wall_secs: 10.0,
            guest: None,
            failure: None,
            qemu_command: None,
            cells: vec![
                cell("a::load", "pass", None),
                cell("a::run", "fail", Some("verifier said <no> & \u{1b}[31mred\u{0}\nmore")),
                cell("features::pmu", "ignored", Some("no \"PMU\" here")),
            ],
        }])
    }

    #[test]
    fn renders_each_outcome() {
        let x = render(&results("6.1"));
        assert!(
            x.contains("<testsuites name=\"kernel-matrix\" tests=\"3\" skipped=\"1\" failures=\"1\" errors=\"0\""),
            "{x}"
        );
        assert!(x.contains("name=\"a::load\" classname=\"6.1\" time=\"0.500\"/>"), "{x}");
        assert!(x.contains("<skipped message=\"no &quot;PMU&quot; here\"/>"), "{x}");
        // Markup escaped; the colour sequence and the NUL of a console log dropped.
        assert!(x.contains("<failure message=\"verifier said &lt;no&gt; &amp; red\" type=\"failure\">"), "{x}");
        assert!(x.contains("reproduce: cargo test --test matrix -- --exact 6.1::a::run</failure>"), "{x}");
        assert!(x.contains("<property name=\"boot_secs\" value=\"3.000\"/>"), "{x}");
        assert!(!x.contains('\u{1b}') && !x.contains('\0') && !x.contains("[31m") && !x.contains('\u{FFFE}'));
        // And it reads back as what was written.
        let r = Report::deserialize_from_str(&x).unwrap();
        let suite = &r.test_suites[0];
        assert_eq!((suite.name.as_str(), suite.tests, suite.failures, suite.skipped), ("6.1", 3, 1, 1));
        match &suite.test_cases[1].status {
            TestCaseStatus::NonSuccess { message, description, .. } => {
                assert_eq!(message.as_deref(), Some("verifier said <no> & red"));
                assert!(description
                    .as_deref()
                    .unwrap()
                    .ends_with("\nmore\nreproduce: cargo test --test matrix -- --exact 6.1::a::run"));
            }
            other => panic!("{other:?}"),
        }
    }

    /// A pass after a failed attempt is `<flakyFailure>` (and reads back as a
    /// flaky success); a failure after a failed attempt carries `<rerunFailure>`.
    #[test]
    fn flaky_and_rerun_failures() {
        use crate::report::results::Attempt;
        let mut r = results("6.1");
        let earlier = Attempt { verdict: Outcome::Fail, reason: Some("timed out <x>\ntail".into()) };
        r.kernels[0].cells[0].attempts = vec![earlier.clone()];
        r.kernels[0].cells[1].attempts = vec![earlier];
        let x = render(&r);
        assert!(x.contains("<flakyFailure message=\"timed out &lt;x&gt;\" type=\"failure\">"), "{x}");
        assert!(x.contains("<rerunFailure message=\"timed out &lt;x&gt;\" type=\"failure\">"), "{x}");
        let back = Report::deserialize_from_str(&x).unwrap();
        let cases = &back.test_suites[0].test_cases;
        match &cases[0].status {
            TestCaseStatus::Success { flaky_runs } => assert_eq!(flaky_runs.len(), 1),
            other => panic!("{other:?}"),
        }
        match &cases[1].status {
            TestCaseStatus::NonSuccess { reruns, .. } => assert_eq!(reruns.runs.len(), 1),
            other => panic!("{other:?}"),
        }
        assert_eq!((back.tests, back.failures), (3, 1), "a flaky pass is not a failure");
    }

    #[test]
    fn merging_adds_up() {
        let a = render(&results("6.1"));
        let b = render(&results("5.10"));
        let m = merge(&[("a".into(), a), ("b".into(), b)]).unwrap();
        assert!(m.contains("tests=\"6\" skipped=\"2\" failures=\"2\" errors=\"0\" time=\"20.000\""), "{m}");
        assert_eq!(m.matches("<testsuite ").count(), 2);
        assert!(merge(&[("x".into(), "<html/>".into())]).is_err());
    }

    /// Other tools' files: a bare `<testsuite>` root, elements and attributes we do
    /// not write, text that only looks like markup; broken XML is refused.
    #[test]
    fn merges_other_tools_reports() {
        let bare = "<?xml version=\"1.0\"?>\n<testsuite name=\"pytest\" tests=\"2\" failures=\"0\" errors=\"1\" skipped=\"0\" time=\"1.5\" hostname=\"ci\">\
            <testcase classname=\"t\" name=\"ok\"/><testcase classname=\"t\" name=\"boom\"><error message=\"x\">&lt;/testsuite&gt; in a log</error>\
            <system-out>out</system-out></testcase></testsuite>";
        let nested =
            "<testsuites><testsuite name=\"one\" tests=\"1\"><testcase name=\"c\"><skipped/></testcase></testsuite>\
            <testsuite name=\"two\" tests=\"0\"/></testsuites>";
        let m = merge(&[
            ("bare".into(), bare.into()),
            ("nested".into(), nested.into()),
            ("ours".into(), render(&results("6.1"))),
        ])
        .unwrap();
        let r = Report::deserialize_from_str(&m).unwrap();
        let names: Vec<&str> = r.test_suites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["pytest", "one", "two", "6.1"]);
        assert_eq!((r.tests, r.failures, r.errors, r.skipped), (6, 1, 1, 1), "{m}");
        assert!(m.contains("&lt;/testsuite&gt; in a log") && m.contains("hostname=\"ci\""), "{m}");
        let err = merge(&[("broken.xml".into(), "<testsuites><testsuite name=\"x\"><testcase name=\"y\">".into())])
            .unwrap_err();
        assert!(format!("{err:#}").contains("broken.xml"), "{err:#}");
        assert!(merge(&[("empty".into(), "<testsuites/>".into())]).is_err());
    }
}
