//! What the guest agent tells the host: one JSON object per line on a channel of
//! its own (the VM's second serial port, or a pipe for the host kernel), never mixed
//! with the kernel console.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The verdict of one check on one kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail(String),
    /// Could not run on this kernel; the reason names what is missing.
    Ignored(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// First line: proves the agent started, says where it runs.
    Hello { kernel_release: String, uptime_secs: f64 },
    Check {
        program: String,
        check: String,
        verdict: Verdict,
        /// Numbers the check measured (name -> value), for reports.
        #[serde(default)]
        metrics: BTreeMap<String, f64>,
        /// Free text shown with the trial (e.g. a verifier log excerpt).
        #[serde(default)]
        note: String,
    },
    /// A kernel feature probe's result (see `features`).
    Feature { id: String, result: crate::features::Probe },
    /// Last line: the agent finished normally.
    Done,
}

impl Record {
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("records serialize")
    }
}

/// Parses the agent's output, skipping anything that is not a record (a serial
/// line can carry noise before the agent opens it).
pub fn parse_records(text: &str) -> Vec<Record> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_matches(|c: char| c.is_whitespace() || c == '\0');
            serde_json::from_str(l).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_noise() {
        let r = Record::Check {
            program: "p".into(),
            check: "c".into(),
            verdict: Verdict::Ignored("needs ring buffer, 5.8".into()),
            metrics: [("x".to_string(), 1.5)].into(),
            note: String::new(),
        };
        let text = format!("garbage\r\n{}\r\n{}\n", r.to_line(), Record::Done.to_line());
        assert_eq!(parse_records(&text), vec![r, Record::Done]);
    }
}
