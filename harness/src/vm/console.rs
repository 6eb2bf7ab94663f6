//! Reading a guest's serial console for signs that its kernel is in trouble.
//!
//! A panic ends the VM; the other splats (oops, `WARNING:`/`BUG:`, RCU stalls,
//! soft lockups, hung tasks) can leave the kernel running and the agent finishing,
//! but a kernel that printed one cannot be trusted: every trial of that kernel
//! fails, with the console tail, even if the agent reported passes.
use std::fmt;

/// What kind of trouble a console line shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SplatKind {
    Panic,
    Oops,
    Bug,
    Warning,
    RcuStall,
    SoftLockup,
    HardLockup,
    HungTask,
}

impl SplatKind {
    /// Whether the kernel is stuck (or dead) after this: the VM is stopped soon
    /// after it is seen instead of waiting for a timeout.
    pub fn is_fatal(self) -> bool {
        matches!(self, SplatKind::Panic | SplatKind::RcuStall | SoftLockup | HardLockup)
    }
}
use SplatKind::*;

impl fmt::Display for SplatKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Panic => "kernel panic",
            Oops => "kernel oops",
            Bug => "kernel BUG",
            Warning => "kernel WARNING",
            RcuStall => "RCU stall",
            SoftLockup => "soft lockup",
            HardLockup => "hard lockup",
            HungTask => "hung task",
        })
    }
}

/// The first sign of trouble found in a console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splat {
    pub kind: SplatKind,
    /// 1-based line number in the console log.
    pub line_no: usize,
    /// The line itself, without the printk timestamp.
    pub line: String,
}

impl fmt::Display for Splat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (console line {}: {:?})", self.kind, self.line_no, self.line)
    }
}

/// Markers, matched against a line with its `[   12.345678]` timestamp removed.
/// Order matters only within one line; across lines the earliest line wins.
const MARKERS: &[(SplatKind, Match)] = &[
    (Panic, Match::Contains("Kernel panic - not syncing")),
    (Panic, Match::Contains("---[ end Kernel panic")),
    (SoftLockup, Match::Contains("BUG: soft lockup")),
    (HardLockup, Match::Contains("NMI watchdog: Watchdog detected hard LOCKUP")),
    (RcuStall, Match::Contains("detected stalls on CPUs/tasks")),
    (RcuStall, Match::Contains("self-detected stall on CPU")),
    (RcuStall, Match::Contains("rcu_preempt detected stalls")),
    (RcuStall, Match::Contains("rcu_sched detected stalls")),
    (HungTask, Match::Prefix("INFO: task ")),
    (Oops, Match::Prefix("Oops: ")),
    (Bug, Match::Prefix("BUG: ")),
    (Bug, Match::Prefix("kernel BUG at ")),
    (Oops, Match::DieHeader),
    // No marker for "------------[ cut here ]------------": it opens a BUG() as well
    // as a WARN (measured on 6.1: "cut here", then "kernel BUG at km_splat.c:33!"),
    // so the line after it says which; `excerpt` still starts at it.
    (Warning, Match::Prefix("WARNING: CPU: ")),
];

/// The line that opens a WARN or a BUG() splat (not a splat by itself).
const CUT_HERE: &str = "------------[ cut here ]------------";

enum Match {
    Contains(&'static str),
    Prefix(&'static str),
    /// The header `die()` prints for an oops: `<what>: <4 hex digits> [#<n>] ...`,
    /// e.g. "invalid opcode: 0000 [#1] PREEMPT SMP NOPTI" (what x86 prints for
    /// BUG()) or "general protection fault, ...: 0000 [#1] SMP".
    DieHeader,
}

impl Match {
    fn matches(&self, line: &str) -> bool {
        match self {
            Match::Contains(s) => line.contains(s),
            Match::Prefix(s) => line.starts_with(s),
            Match::DieHeader => is_die_header(line),
        }
    }
}

fn is_die_header(line: &str) -> bool {
    let Some(i) = line.find(" [#") else { return false };
    let (head, tail) = (&line[..i], &line[i + 3..]);
    let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
    let Some((_, code)) = head.rsplit_once(": ") else { return false };
    digits > 0 && tail[digits..].starts_with(']') && code.len() >= 4 && code.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `[   12.345678] text` -> `text` (also without the `<4>` level prefix).
pub fn strip_timestamp(line: &str) -> &str {
    let l = line.trim_start_matches(['\0', '\r']);
    let l = match l.strip_prefix('<') {
        Some(rest) if rest.find('>').is_some_and(|i| i <= 2) => &rest[rest.find('>').unwrap() + 1..],
        _ => l,
    };
    match l.strip_prefix('[') {
        Some(rest) => match rest.find(']') {
            Some(i) if rest[..i].trim().chars().all(|c| c.is_ascii_digit() || c == '.') => rest[i + 1..].trim_start(),
            _ => l,
        },
        None => l,
    }
    .trim_end_matches('\r')
}

/// Classifies one console line.
pub fn classify_line(line: &str) -> Option<SplatKind> {
    let l = strip_timestamp(line);
    MARKERS.iter().find(|(_, m)| m.matches(l)).map(|(k, _)| *k)
}

/// The first splat in `console`, if any.
pub fn first_splat(console: &str) -> Option<Splat> {
    console.lines().enumerate().find_map(|(i, line)| {
        classify_line(line).map(|kind| Splat { kind, line_no: i + 1, line: strip_timestamp(line).trim().to_string() })
    })
}

/// Every splat kind in `console`, in order of first appearance.
pub fn all_splats(console: &str) -> Vec<Splat> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for (i, line) in console.lines().enumerate() {
        if let Some(kind) = classify_line(line) {
            if !seen.contains(&kind) {
                seen.push(kind);
                out.push(Splat { kind, line_no: i + 1, line: strip_timestamp(line).trim().to_string() });
            }
        }
    }
    out
}

/// Incremental scanning of a growing console: fed only the bytes appended since
/// the last call (the caller reads the file from where it left off), it looks at
/// each complete line once, so polling a large console stays cheap.
#[derive(Debug, Default)]
pub struct Watcher {
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    line_no: usize,
    pub first: Option<Splat>,
    /// The first fatal splat (panic, stall, lockup).
    pub fatal: Option<Splat>,
}

impl Watcher {
    pub fn feed(&mut self, appended: &[u8]) {
        self.partial.extend_from_slice(appended);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else { return };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        for line in String::from_utf8_lossy(&complete).lines() {
            self.line_no += 1;
            if let Some(kind) = classify_line(line) {
                let s = Splat { kind, line_no: self.line_no, line: strip_timestamp(line).trim().to_string() };
                if self.first.is_none() {
                    self.first = Some(s.clone());
                }
                if kind.is_fatal() && self.fatal.is_none() {
                    self.fatal = Some(s);
                }
            }
        }
    }
}

/// The console from two lines before the splat (or from its "cut here" line, up
/// to 10 lines before: a WARN's message comes between the two), at most `lines`
/// lines: the splat and its backtrace, which a plain tail would often cut off.
pub fn excerpt(console: &str, splat: &Splat, lines: usize) -> String {
    console.lines().skip(excerpt_start(console, splat) - 1).take(lines).collect::<Vec<_>>().join("\n")
}

/// 1-based line number where `excerpt` starts.
fn excerpt_start(console: &str, splat: &Splat) -> usize {
    let from = splat.line_no.saturating_sub(10).max(1);
    let cut = console
        .lines()
        .enumerate()
        .skip(from - 1)
        .take(splat.line_no - from)
        .filter(|(_, l)| l.contains(CUT_HERE))
        .last();
    cut.map(|(i, _)| i + 1).unwrap_or(splat.line_no.saturating_sub(2).max(1))
}

/// Why nothing a kernel reported can be trusted once its console showed `splat`
/// (the verdicts themselves are decided in `verdict`): every kind the console
/// showed, and the console from the splat on. `failure` is how the VM ended, when
/// it ended badly; its message already holds the console tail.
pub fn untrusted_message(
    kernel: &str,
    failure: Option<&str>,
    splat: &Splat,
    console: &str,
    console_path: &std::path::Path,
) -> String {
    // Every kind the console showed, so an oops that ended in a panic is named as both.
    let also: Vec<String> = all_splats(console)
        .into_iter()
        .filter(|s| s.kind != splat.kind)
        .map(|s| format!("{} (console line {}: {:?})", s.kind, s.line_no, s.line))
        .collect();
    let also = if also.is_empty() { String::new() } else { format!("; then {}", also.join(", ")) };
    match failure {
        // The splat and its trace may be above the tail the failure shows: add them.
        Some(f) if f.contains(&splat.line) => format!("{f}\n(first sign of trouble: {splat}{also})"),
        Some(f) => format!(
            "{f}\n(first sign of trouble: {splat}{also})\n--- console from line {} ---\n{}",
            excerpt_start(console, splat),
            excerpt(console, splat, 40)
        ),
        None => format!(
            "{kernel}: the guest kernel reported a {splat}{also}; its results cannot be trusted\n--- console from line {} (full log {}) ---\n{}",
            excerpt_start(console, splat),
            console_path.display(),
            excerpt(console, splat, 40)
        ),
    }
}

pub use crate::escape::tail;

#[cfg(test)]
mod tests {
    use super::*;

    // Console excerpts in the exact format the kernels print (format strings from
    // kernel/watchdog.c, kernel/rcu/tree_stall.h, kernel/panic.c, lib/bug.c,
    // arch/x86/mm/fault.c, kernel/hung_task.c).
    const WARN: &str = "[    5.100000] ------------[ cut here ]------------\n[    5.100001] WARNING: CPU: 0 PID: 1 at kernel/foo.c:42 foo+0x1/0x2\n[    5.100002] Modules linked in:\n";
    const OOPS: &str = "[    3.2] BUG: kernel NULL pointer dereference, address: 0000000000000000\n[    3.3] #PF: supervisor write access in kernel mode\n[    3.4] Oops: 0002 [#1] SMP NOPTI\n";
    const RCU: &str =
        "[   30.0] rcu: INFO: rcu_sched self-detected stall on CPU\n[   30.1] rcu: \t0-....: (21002 ticks this GP)\n";
    const RCU2: &str = "[   30.0] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n";
    const SOFT: &str = "[   44.0] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [sh:1]\n";
    const HUNG: &str = "[  240.0] INFO: task sh:55 blocked for more than 120 seconds.\n";
    const PANIC: &str = "[    9.0] Kernel panic - not syncing: sysrq triggered crash\n";

    #[test]
    fn each_kind_is_recognised() {
        let k = |s: &str| first_splat(s).map(|s| s.kind);
        assert_eq!(k(WARN), Some(Warning));
        assert_eq!(k(OOPS), Some(Bug), "the BUG: line comes before the Oops: line");
        assert_eq!(all_splats(OOPS).iter().map(|s| s.kind).collect::<Vec<_>>(), vec![Bug, Oops]);
        assert_eq!(k(RCU), Some(RcuStall));
        assert_eq!(k(RCU2), Some(RcuStall));
        assert_eq!(k(SOFT), Some(SoftLockup), "soft lockup, not a generic BUG");
        assert_eq!(k(HUNG), Some(HungTask));
        assert_eq!(k(PANIC), Some(Panic));
    }

    /// A whole oops as a guest prints it (x86 NULL write with `oops=panic`): no
    /// stock Debian kernel oopses on request (sysrq-c panics directly since 5.10.y,
    /// no lkdtm), so the detector is proven on the recorded text.
    #[test]
    fn recorded_oops_then_panic() {
        let log = "[    8.568675] sysrq: Trigger a crash\n\
[    8.569197] BUG: kernel NULL pointer dereference, address: 0000000000000000\n\
[    8.569300] #PF: supervisor write access in kernel mode\n\
[    8.569400] #PF: error_code(0x0002) - not-present page\n\
[    8.569500] PGD 0 P4D 0 \n\
[    8.569600] Oops: 0002 [#1] SMP NOPTI\n\
[    8.569700] CPU: 0 PID: 1 Comm: init Not tainted 5.10.0-46-cloud-amd64 #1 Debian 5.10.262-1\n\
[    8.569800] RIP: 0010:sysrq_handle_crash+0x16/0x20\n\
[    8.570000] Kernel panic - not syncing: Fatal exception\n";
        let all: Vec<SplatKind> = all_splats(log).into_iter().map(|s| s.kind).collect();
        assert_eq!(all, vec![Bug, Oops, Panic]);
        let mut w = Watcher::default();
        w.feed(log.as_bytes());
        assert_eq!(w.first.as_ref().map(|s| (s.kind, s.line_no)), Some((Bug, 2)));
        assert_eq!(w.fatal.as_ref().map(|s| (s.kind, s.line_no)), Some((Panic, 9)));
        let s = first_splat(log).unwrap();
        assert!(excerpt(log, &s, 40).starts_with("[    8.568675] sysrq: Trigger a crash"));
    }

    /// A BUG() as the 6.1 cloud kernel prints it (km_splat.ko, vm-images/splat):
    /// "cut here" opens it like a WARN, so it must not be taken for one.
    #[test]
    fn recorded_bug_is_a_bug_not_a_warning() {
        let log = "km: bug on request: insmod /km_splat.ko\n\
[    1.959819] km_splat: loading out-of-tree module taints kernel.\n\
[    1.965554] ------------[ cut here ]------------\n\
[    1.965695] kernel BUG at /tmp/splat/mod/km_splat.c:19!\n\
[    1.966228] invalid opcode: 0000 [#1] PREEMPT SMP NOPTI\n\
[    1.966432] CPU: 0 PID: 82 Comm: insmod Tainted: G           OE      6.1.0-50-cloud-amd64 #1  Debian 6.1.176-1\n\
[    1.983717] Kernel panic - not syncing: Fatal exception\n";
        let all: Vec<(SplatKind, usize)> = all_splats(log).into_iter().map(|s| (s.kind, s.line_no)).collect();
        assert_eq!(all, vec![(Bug, 4), (Oops, 5), (Panic, 7)]);
        assert!(excerpt(log, &first_splat(log).unwrap(), 40).starts_with("[    1.965554] ------------[ cut here ]"));
        assert!(is_die_header(
            "general protection fault, probably for non-canonical address 0xdead: 0000 [#1] SMP NOPTI"
        ));
        assert!(is_die_header("Oops: 0002 [#1] PREEMPT SMP NOPTI"));
        assert!(!is_die_header("pci 0000:00:01.0: [8086:7000] type 00 class 0x060100"));
        assert!(!is_die_header("foo: bar [#1]"));
    }

    /// A WARN with a message (6.1, km_splat.ko): the message sits between "cut here"
    /// and "WARNING: CPU:"; the excerpt starts at "cut here".
    #[test]
    fn recorded_warn_with_message() {
        let log = "a\nb\nc\n\
[    2.285560] ------------[ cut here ]------------\n\
[    2.285679] km_splat: WARN on request\n\
[    2.285680] second line of the message\n\
[    2.285961] WARNING: CPU: 0 PID: 82 at /tmp/splat/mod/km_splat.c:15 km_splat_init+0x40/0x1000 [km_splat]\n\
[    2.286339] Modules linked in: km_splat(OE+)\n";
        let s = first_splat(log).unwrap();
        assert_eq!((s.kind, s.line_no), (Warning, 7));
        assert_eq!(all_splats(log).len(), 1, "the [km_splat] module tag is not a die header");
        assert!(excerpt(log, &s, 40).starts_with("[    2.285560] ------------[ cut here ]"));
    }

    #[test]
    fn ordinary_boot_messages_are_not_splats() {
        let boot = "[    0.000000] Linux version 6.1.0\n[    0.1] BUG_ON_DATA_CORRUPTION enabled\n[    1.0] rcu: Hierarchical RCU implementation.\n[    2.0] watchdog: Watchdog detected hard lockups disabled\nkm: agent exited with status 0\n[ 3.0] clocksource: Long readout interval, skipping watchdog check\n";
        assert_eq!(first_splat(boot), None);
    }

    #[test]
    fn line_numbers_and_timestamps() {
        let s = first_splat(&format!("a\nb\n{SOFT}")).unwrap();
        assert_eq!(s.line_no, 3);
        assert!(s.line.starts_with("watchdog: BUG: soft lockup"), "{}", s.line);
        assert_eq!(strip_timestamp("<4>[   1.5] x"), "x");
        assert_eq!(strip_timestamp("[not a stamp] x"), "[not a stamp] x");
    }

    #[test]
    fn watcher_sees_lines_split_across_reads() {
        let mut w = Watcher::default();
        let full = format!("boot\n{RCU}");
        let (a, b) = full.as_bytes().split_at(12);
        w.feed(a);
        assert!(w.first.is_none());
        w.feed(b);
        assert_eq!(w.fatal.as_ref().map(|s| s.kind), Some(RcuStall));
        assert_eq!(w.fatal.as_ref().map(|s| s.line_no), Some(2));
        let mut w = Watcher::default();
        w.feed(WARN.as_bytes());
        assert_eq!(w.first.as_ref().map(|s| s.kind), Some(Warning));
        assert!(w.fatal.is_none(), "a WARNING does not stop the VM");
    }
}
