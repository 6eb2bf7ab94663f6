//! What the guest agent tells the host: one JSON object per line on a channel of
//! its own (the VM's second serial port, or a file for the host kernel), never mixed
//! with the kernel console.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::features::Probe;

/// The verdict of one check on one kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail(String),
    /// Could not run on this kernel; the reason names what is missing.
    Ignored(String),
}

/// The version of this channel's records: bumped whenever a record changes shape,
/// so a harness and an agent from different builds (`--agent`/`KM_AGENT`) notice
/// at the first line instead of misreading the rest.
pub const PROTOCOL_VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// First line: proves the agent started, says where it runs and how long the
    /// kernel took to get there (seconds since the kernel started, its own clock).
    Hello {
        /// [`PROTOCOL_VERSION`] of the agent's build (0: an agent older than the field).
        #[serde(default)]
        protocol: u32,
        kernel_release: String,
        /// When the agent started.
        uptime_secs: f64,
        /// When `/init` started (`km.init_uptime` handed over by /init; absent on the host).
        #[serde(default)]
        init_uptime_secs: Option<f64>,
    },
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
        /// A failed load's cause, by what happened.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<crate::byo::LoadCause>,
    },
    /// A kernel feature probe's result (see `features`).
    Feature { id: String, result: Probe },
    /// Last line: the agent finished normally.
    Done,
}

/// One line of the channel: a record and when the agent wrote it (seconds since
/// the kernel started, `CLOCK_BOOTTIME`). The time between two lines is what the
/// work in between cost, so every second of a guest is accounted for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    #[serde(default)]
    pub at: Option<f64>,
    #[serde(flatten)]
    pub record: Record,
}

impl Line {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("records serialize")
    }
}

/// Parses the agent's output, skipping anything that is not a record (a serial
/// line can carry noise before the agent opens it).
pub fn parse_lines(text: &str) -> Vec<Line> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_matches(|c: char| c.is_whitespace() || c == '\0');
            serde_json::from_str(l).ok()
        })
        .collect()
}

/// `Check` records from a runner are built with this.
pub fn check(program: &str, check: &str, verdict: Verdict, metrics: BTreeMap<String, f64>, note: String) -> Record {
    Record::Check { program: program.into(), check: check.into(), verdict, metrics, note, cause: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_noise() {
        let r = Line {
            at: Some(3.25),
            record: check(
                "p",
                "c",
                Verdict::Ignored("needs ring buffer, 5.8".into()),
                [("x".to_string(), 1.5)].into(),
                String::new(),
            ),
        };
        let done = Line { at: None, record: Record::Done };
        let text = format!("garbage\r\n{}\r\n{}\n", r.to_json(), done.to_json());
        assert_eq!(parse_lines(&text), vec![r, done]);
    }
}
