//! Verifier insight: what the verifier thought of a program on this kernel.
//!
//! aya and the skeletons keep the verifier log only when a load fails, so the
//! object is loaded once more through libbpf with our own log buffer: log level 4
//! (statistics) when it loads, level 1 (the full log) to explain a rejection.
use std::{collections::BTreeMap, os::raw::c_char};

use libbpf_rs::{libbpf_sys as sys, AsRawLibbpf as _, ObjectBuilder};

/// Statistics and, for a rejection, the reason.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Insight {
    pub accepted: bool,
    /// `processed N insns` from the log: the verifier's work, the number that hits the 1M limit.
    pub processed_insns: Option<u64>,
    pub total_states: Option<u64>,
    pub peak_states: Option<u64>,
    /// `verification time N usec` (log level 4).
    pub verification_usec: Option<u64>,
    /// `stack depth 16+32`: the sum over the program and its subprograms.
    pub stack_depth: Option<u64>,
    /// From prog info (5.16+): same count as processed_insns, reported by the kernel.
    pub verified_insns: Option<u32>,
    pub xlated_bytes: Option<u32>,
    pub jited_bytes: Option<u32>,
    /// Rejection only: the log's last lines, and the instruction it stopped at.
    pub log_tail: String,
    pub failing_insn: Option<String>,
    pub error: Option<String>,
}

impl Insight {
    /// The numbers, named as report measures.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: Option<f64>| {
            if let Some(v) = v {
                m.insert(k.to_string(), v);
            }
        };
        put("processed_insns", self.processed_insns.map(|v| v as f64));
        put("total_states", self.total_states.map(|v| v as f64));
        put("peak_states", self.peak_states.map(|v| v as f64));
        put("verification_usec", self.verification_usec.map(|v| v as f64));
        put("stack_depth", self.stack_depth.map(|v| v as f64));
        put("verified_insns", self.verified_insns.map(|v| v as f64));
        put("xlated_bytes", self.xlated_bytes.map(|v| v as f64));
        put("jited_bytes", self.jited_bytes.map(|v| v as f64));
        m
    }

    /// One line for a trial note.
    pub fn summary(&self) -> String {
        let show = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "?".into());
        format!(
            "verifier: {}, processed {} insns, {} states (peak {}), verified_insns {}, xlated {} B, jited {} B",
            if self.accepted { "accepted" } else { "rejected" },
            show(self.processed_insns),
            show(self.total_states),
            show(self.peak_states),
            show(self.verified_insns.map(u64::from)),
            show(self.xlated_bytes.map(u64::from)),
            show(self.jited_bytes.map(u64::from)),
        )
    }
}

pub const STATS_LOG: u32 = 4;
pub const FULL_LOG: u32 = 1;

/// Loads `program` (only it) from `object` and reports what the verifier did.
pub fn inspect(object: &[u8], program: &str) -> Insight {
    match load(object, program, STATS_LOG, 64 << 10) {
        Ok((insight, _)) => insight,
        Err(_) => {
            // Again, with the full log, to show why.
            let (mut insight, log) = match load(object, program, FULL_LOG | STATS_LOG, 16 << 20) {
                Ok((i, _)) => return i, // flaky rejection; report the accepted load
                Err(e) => (Insight { error: Some(e.0), ..Default::default() }, e.1),
            };
            parse_stats(&log, &mut insight);
            insight.failing_insn = failing_instruction(&log);
            insight.log_tail = crate::checks::tail(&log, 25);
            insight
        }
    }
}

/// Autoloads only `program` of `open` (the others off, as veristat does), with its
/// verifier log at `level` written into `buf`; false when the object has no such
/// program. `buf` must outlive the object's load.
pub(crate) fn only_program(open: &mut libbpf_rs::OpenObject, program: &str, level: u32, buf: &mut [u8]) -> bool {
    let mut found = false;
    for mut p in open.progs_mut() {
        let ours = p.name() == program;
        found |= ours;
        p.set_autoload(ours);
        if ours {
            p.set_log_level(level);
            // SAFETY: the caller keeps `buf` alive through the load; libbpf only
            // writes within its length.
            unsafe {
                sys::bpf_program__set_log_buf(
                    p.as_libbpf_object().as_ptr(),
                    buf.as_mut_ptr() as *mut c_char,
                    buf.len() as _,
                );
            }
        }
    }
    found
}

fn load(object: &[u8], program: &str, level: u32, size: usize) -> Result<(Insight, String), (String, String)> {
    let mut buf = vec![0u8; size];
    let mut open = ObjectBuilder::default()
        .open_memory(object)
        .map_err(|e| (format!("opening the object: {e}"), String::new()))?;
    if !only_program(&mut open, program, level, &mut buf) {
        return Err((format!("no program {program} in the object"), String::new()));
    }
    let (loaded, _libbpf_log) = crate::checks::capture_libbpf_log(|| open.load());
    let log = String::from_utf8_lossy(&buf[..buf.iter().position(|b| *b == 0).unwrap_or(0)]).into_owned();
    let obj = loaded.map_err(|e| (format!("{e}"), log.clone()))?;
    let mut insight = Insight { accepted: true, ..Default::default() };
    parse_stats(&log, &mut insight);
    if let Some(p) = obj.progs().find(|p| p.name() == program) {
        prog_info(&p, &mut insight);
    }
    Ok((insight, log))
}

/// The kernel's `bpf_prog_info` of a loaded program, its verifier and size numbers
/// noted in `insight` (`None` when the kernel would not say).
pub(crate) fn prog_info(p: &impl std::os::fd::AsFd, insight: &mut Insight) -> Option<sys::bpf_prog_info> {
    use std::os::fd::AsRawFd as _;
    let mut info = sys::bpf_prog_info::default();
    let mut len = std::mem::size_of::<sys::bpf_prog_info>() as u32;
    // SAFETY: the fd is a loaded program's, open while `p` lives; `info` is a
    // bpf_prog_info of `len` bytes. (libbpf-rs 0.27.2 reads program info only while
    // iterating every program of the system; aya's from-fd reader is private.)
    if unsafe { sys::bpf_prog_get_info_by_fd(p.as_fd().as_raw_fd(), &mut info, &mut len) } != 0 {
        return None;
    }
    insight.verified_insns = (info.verified_insns > 0).then_some(info.verified_insns);
    insight.xlated_bytes = Some(info.xlated_prog_len);
    insight.jited_bytes = Some(info.jited_prog_len);
    Some(info)
}

/// `processed 27 insns (limit 1000000) max_states_per_insn 0 total_states 2 peak_states 2 mark_read 1`
pub fn parse_stats(log: &str, out: &mut Insight) {
    for l in log.lines() {
        if let Some(rest) = l.strip_prefix("verification time ") {
            out.verification_usec = rest.split_whitespace().next().and_then(|v| v.parse().ok());
        }
        if let Some(rest) = l.strip_prefix("stack depth ") {
            out.stack_depth = rest.trim().split('+').map(|v| v.trim().parse::<u64>().ok()).sum();
        }
    }
    let Some(line) = log.lines().rev().find(|l| l.starts_with("processed ")) else { return };
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |key: &str| words.iter().position(|w| *w == key).and_then(|i| words.get(i + 1)?.parse().ok());
    out.processed_insns = after("processed");
    out.total_states = after("total_states");
    out.peak_states = after("peak_states");
}

/// The last instruction the verifier printed (`12: (61) r1 = *(u32 *)(r2 +0)`),
/// which is the one it rejected.
pub fn failing_instruction(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .find(|l| {
            let l = l.trim_start();
            let digits = l.chars().take_while(|c| c.is_ascii_digit()).count();
            digits > 0 && l[digits..].starts_with(": (")
        })
        .map(|l| l.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "verification time 12 usec\nstack depth 8+16\n0: R1=ctx() R10=fp0\n0: (61) r2 = *(u32 *)(r1 +0)       ; R1=ctx() R2_w=pkt(r=0)\n1: (61) r3 = *(u32 *)(r2 +0)\ninvalid access to packet, off=0 size=4, R2(id=0,off=0,r=0)\nR2 offset is outside of the packet\nprocessed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n";

    #[test]
    fn parses_stats_and_failing_instruction() {
        let mut i = Insight::default();
        parse_stats(LOG, &mut i);
        assert_eq!((i.processed_insns, i.total_states, i.peak_states), (Some(2), Some(0), Some(0)));
        assert_eq!((i.verification_usec, i.stack_depth), (Some(12), Some(24)));
        assert_eq!(failing_instruction(LOG).as_deref(), Some("1: (61) r3 = *(u32 *)(r2 +0)"));
    }

    #[test]
    fn summary_marks_unknowns() {
        let i = Insight { accepted: true, processed_insns: Some(5), ..Default::default() };
        assert!(i.summary().starts_with("verifier: accepted, processed 5 insns, ? states"));
    }
}
