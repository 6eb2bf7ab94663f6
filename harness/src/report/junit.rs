//! JUnit XML for CI systems: one `<testsuite>` per kernel, one `<testcase>` per
//! trial (`classname` = kernel, `name` = `program::check`), ignored trials as
//! `<skipped message="reason"/>`, failures with their message and the command
//! that reruns them.
use std::fmt::Write as _;

use anyhow::bail;

use crate::report::results::RunResults;

/// Escapes text for XML 1.0 attributes and content, dropping the characters XML
/// cannot carry at all (console logs contain escape sequences and NULs).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

pub fn render(r: &RunResults) -> String {
    let (pass, fail, ignored) = r.counts();
    let total = pass + fail + ignored;
    let time: f64 = r.kernels.iter().map(|k| k.wall_secs).sum();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(s, "<testsuites name=\"kernel-matrix\" tests=\"{total}\" failures=\"{fail}\" errors=\"0\" skipped=\"{ignored}\" time=\"{time:.3}\">");
    for k in &r.kernels {
        let n = |v: &str| k.cells.iter().filter(|c| c.verdict == v).count();
        let _ = writeln!(
            s,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{:.3}\">",
            escape(&k.kernel),
            k.cells.len(),
            n("fail"),
            n("ignored"),
            k.wall_secs
        );
        s.push_str("    <properties>\n");
        let mut prop = |name: &str, value: &str| {
            let _ = writeln!(s, "      <property name=\"{name}\" value=\"{}\"/>", escape(value));
        };
        prop("release", k.release.as_deref().unwrap_or("unknown"));
        prop("accel", &k.accel);
        if let Some(b) = k.boot_secs {
            prop("boot_secs", &format!("{b:.3}"));
        }
        s.push_str("    </properties>\n");
        for c in &k.cells {
            let time = c.secs.unwrap_or(0.0);
            let open = format!("    <testcase classname=\"{}\" name=\"{}\" time=\"{time:.3}\"", escape(&k.kernel), escape(&c.trial));
            let reason = c.reason.as_deref().unwrap_or("");
            match c.verdict.as_str() {
                "pass" => {
                    let _ = writeln!(s, "{open}/>");
                }
                "ignored" => {
                    let _ = writeln!(s, "{open}>\n      <skipped message=\"{}\"/>\n    </testcase>", escape(reason));
                }
                _ => {
                    let first = reason.lines().next().unwrap_or("failed");
                    let _ = writeln!(
                        s,
                        "{open}>\n      <failure message=\"{}\" type=\"failure\">{}\nreproduce: {}</failure>\n    </testcase>",
                        escape(first),
                        escape(reason),
                        escape(&c.reproduce)
                    );
                }
            }
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}

/// Merges JUnit files written by shards (ours or any tool's that uses
/// `<testsuites>`/`<testsuite>`): their `<testsuite>` elements go under one
/// `<testsuites>` with the counts added up.
pub fn merge(files: &[(String, String)]) -> anyhow::Result<String> {
    let mut suites = String::new();
    let (mut tests, mut failures, mut errors, mut skipped, mut time) = (0u64, 0u64, 0u64, 0u64, 0f64);
    for (name, xml) in files {
        let mut rest = xml.as_str();
        let mut found = false;
        while let Some(start) = find_tag(rest, "<testsuite") {
            let tail = &rest[start..];
            let head_end = tail.find('>').ok_or_else(|| anyhow::anyhow!("{name}: unterminated <testsuite"))?;
            let head = &tail[..=head_end];
            let end = if head.ends_with("/>") {
                head_end + 1
            } else {
                match tail.find("</testsuite>") {
                    Some(e) => e + "</testsuite>".len(),
                    None => bail!("{name}: <testsuite> without </testsuite>"),
                }
            };
            tests += attr(head, "tests").and_then(|v| v.parse().ok()).unwrap_or(0);
            failures += attr(head, "failures").and_then(|v| v.parse().ok()).unwrap_or(0);
            errors += attr(head, "errors").and_then(|v| v.parse().ok()).unwrap_or(0);
            skipped += attr(head, "skipped").and_then(|v| v.parse().ok()).unwrap_or(0);
            time += attr(head, "time").and_then(|v| v.parse().ok()).unwrap_or(0.0);
            suites.push_str("  ");
            suites.push_str(&tail[..end]);
            suites.push('\n');
            rest = &tail[end..];
            found = true;
        }
        if !found {
            bail!("{name}: no <testsuite> element: not a JUnit report");
        }
    }
    Ok(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"kernel-matrix\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{time:.3}\">\n{suites}</testsuites>\n"
    ))
}

/// `<testsuite` as a tag, not `<testsuites`.
fn find_tag(s: &str, tag: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find(tag) {
        let at = from + i;
        match s[at + tag.len()..].chars().next() {
            Some(c) if c.is_whitespace() || c == '>' || c == '/' => return Some(at),
            _ => from = at + tag.len(),
        }
    }
    None
}

fn attr<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let i = head.find(&key)? + key.len();
    let j = head[i..].find('"')?;
    Some(&head[i..i + j])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::results::{Cell, KernelResult, RunResults};

    fn results(kernel: &str) -> RunResults {
        let cell = |trial: &str, verdict: &str, reason: Option<&str>| Cell {
            trial: trial.into(),
            verdict: verdict.into(),
            reason: reason.map(str::to_string),
            metrics: Default::default(),
            note: String::new(),
            reproduce: crate::report::results::reproduce_command(kernel, trial),
            secs: Some(0.5),
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
        assert!(x.contains("<testsuites name=\"kernel-matrix\" tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\""), "{x}");
        assert!(x.contains("<testcase classname=\"6.1\" name=\"a::load\" time=\"0.500\"/>"), "{x}");
        assert!(x.contains("<skipped message=\"no &quot;PMU&quot; here\"/>"), "{x}");
        assert!(x.contains("<failure message=\"verifier said &lt;no&gt; &amp; [31mred\" type=\"failure\">"), "{x}");
        assert!(x.contains("reproduce: cargo test --test matrix -- --exact 6.1::a::run</failure>"), "{x}");
        assert!(!x.contains('\u{1b}') && !x.contains('\0'));
    }

    #[test]
    fn merging_adds_up() {
        let a = render(&results("6.1"));
        let b = render(&results("5.10"));
        let m = merge(&[("a".into(), a), ("b".into(), b)]).unwrap();
        assert!(m.contains("tests=\"6\" failures=\"2\" errors=\"0\" skipped=\"2\" time=\"20.000\""), "{m}");
        assert_eq!(m.matches("<testsuite ").count(), 2);
        assert!(merge(&[("x".into(), "<html/>".into())]).is_err());
    }
}
