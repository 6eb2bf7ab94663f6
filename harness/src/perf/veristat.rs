//! `kernel-matrix compare BASE.json CURRENT.json` for verifier tables, in the
//! style of `veristat -C`: one line per (program, kernel) with each side's verdict
//! and numbers and their difference in percent. A program accepted in the baseline
//! and rejected now is a regression (exit 1); so is one that disappeared.
use std::{fmt::Write as _, path::Path, process::ExitCode};

use crate::report::verifier::{read_json, LoadVerdict, Row, NUMBERS};

/// The comparison as text, and whether anything regressed.
pub fn diff(base: &[Row], cur: &[Row], all: bool) -> (String, usize) {
    let mut s = String::new();
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for r in base.iter().chain(cur) {
        if !keys.contains(&(r.program.as_str(), r.kernel.as_str())) {
            keys.push((&r.program, &r.kernel));
        }
    }
    let shown: &[(&str, &str)] = &NUMBERS[..4];
    let _ = write!(s, "| Program | Kernel | Verdict (A) | Verdict (B) | Verdict (DIFF) |");
    for (_, t) in shown {
        let _ = write!(s, " {t} (A) | {t} (B) | {t} (DIFF) |");
    }
    s.push('\n');
    s.push_str(&"|---".repeat(5 + 3 * shown.len()));
    s.push_str("|\n");
    let mut regressions = 0;
    for (p, k) in keys {
        let a = base.iter().find(|r| r.program == p && r.kernel == k);
        let b = cur.iter().find(|r| r.program == p && r.kernel == k);
        let accepted = |r: Option<&Row>| r.is_some_and(|r| r.verdict == LoadVerdict::Accepted);
        let regressed = accepted(a) && !accepted(b);
        let va = a.map(|r| r.verdict.as_str()).unwrap_or("absent");
        let vb = b.map(|r| r.verdict.as_str()).unwrap_or("absent");
        let verdict_diff = if va == vb {
            "MATCH".to_string()
        } else if regressed {
            regressions += 1;
            "REGRESSION".to_string()
        } else if accepted(b) {
            "FIXED".to_string()
        } else {
            "MISMATCH".to_string()
        };
        let mut cells = String::new();
        let mut changed = va != vb;
        for (key, _) in shown {
            let x = a.and_then(|r| r.numbers.get(*key)).copied();
            let y = b.and_then(|r| r.numbers.get(*key)).copied();
            let d = match (x, y) {
                (Some(x), Some(y)) if x == y => "+0 (+0.00%)".to_string(),
                (Some(x), Some(y)) => {
                    // Verification time is noise-prone; it alone does not make a row "changed".
                    changed |= *key != "verification_usec";
                    let pct = if x == 0.0 { f64::INFINITY } else { (y - x) / x * 100.0 };
                    format!("{:+} ({pct:+.2}%)", y - x)
                }
                _ => "N/A".to_string(),
            };
            let show = |v: Option<f64>| v.map(|v| format!("{v}")).unwrap_or_else(|| "N/A".into());
            let _ = write!(cells, " {} | {} | {d} |", show(x), show(y));
        }
        if all || changed {
            let _ = writeln!(s, "| {p} | {k} | {va} | {vb} | {verdict_diff} |{cells}");
        }
    }
    (s, regressions)
}

pub fn compare(base: &Path, cur: &Path, all: bool) -> anyhow::Result<ExitCode> {
    let (a, b) = (read_json(base)?, read_json(cur)?);
    let (text, regressions) = diff(&a.rows, &b.rows, all);
    println!("A = {}, B = {}\n{text}", base.display(), cur.display());
    if regressions > 0 {
        println!("{regressions} program(s) accepted in A are rejected (or missing) in B");
        return Ok(ExitCode::FAILURE);
    }
    println!("no verifier regressions");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: &str, insns: f64) -> Row {
        Row {
            program: "loop::close_enter".into(),
            kernel: "6.1".into(),
            release: None,
            accel: "tcg".into(),
            verdict: serde_json::from_value(serde_json::Value::String(v.into())).unwrap(),
            reason: String::new(),
            prog_type: None,
            attach_type: None,
            numbers: [("processed_insns".to_string(), insns)].into(),
        }
    }

    #[test]
    fn accepted_then_rejected_is_a_regression() {
        let (text, n) = diff(&[row("accepted", 100.0)], &[row("rejected", 150.0)], false);
        assert_eq!(n, 1);
        assert!(text.contains("REGRESSION") && text.contains("+50 (+50.00%)"), "{text}");
        let (text, n) = diff(&[row("accepted", 100.0)], &[row("accepted", 100.0)], false);
        assert_eq!(n, 0);
        assert!(!text.contains("loop::"), "unchanged rows are hidden without --all: {text}");
    }
}
