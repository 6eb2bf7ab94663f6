//! libbpf prints through one process-wide callback; this crate owns it, so the
//! loaders of every program (profiler, USDT tracer, the harness's own checks)
//! can capture what libbpf said about a load, verifier log included, and show it
//! in their errors. It also reads a loaded program's run-time statistics, which
//! every loader's benchmark needs in the same form.
use std::{os::fd::AsRawFd, sync::Mutex};

use libbpf_rs::PrintLevel;

static LOG: Mutex<String> = Mutex::new(String::new());
/// Captures are serialized: there is only one callback to install.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn collect(_level: PrintLevel, msg: String) {
    LOG.lock().unwrap_or_else(|e| e.into_inner()).push_str(&msg);
}

/// Runs `f` with libbpf's messages at info level and above captured instead of
/// printed (the verifier log is a warning), and returns them with `f`'s result.
pub fn capture<T>(f: impl FnOnce() -> T) -> (T, String) {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    LOG.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let prev = libbpf_rs::set_print(Some((PrintLevel::Info, collect)));
    let out = f();
    libbpf_rs::set_print(prev);
    let log = std::mem::take(&mut *LOG.lock().unwrap_or_else(|e| e.into_inner()));
    (out, log)
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A program's run-time statistics: total ns spent in it and how often it ran, both
/// counted only while statistics are on (sysctl `kernel.bpf_stats_enabled` or a
/// BPF_ENABLE_STATS fd).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

impl RunStats {
    /// The statistics of the program behind `fd`, from `/proc/self/fdinfo/<fd>`
    /// (what bpftool reads too; the fields exist from 5.1).
    pub fn of(fd: &impl AsRawFd) -> Result<Self, String> {
        let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
        let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
        Self::parse(&text).ok_or_else(|| format!("{path} has no run_time_ns/run_cnt (kernel older than 5.1?)"))
    }

    pub fn parse(fdinfo: &str) -> Option<Self> {
        let field = |k: &str| fdinfo.lines().find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok());
        Some(Self { run_time_ns: field("run_time_ns:")?, run_cnt: field("run_cnt:")? })
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            run_time_ns: self.run_time_ns.saturating_sub(earlier.run_time_ns),
            run_cnt: self.run_cnt.saturating_sub(earlier.run_cnt),
        }
    }

    /// Mean ns per run, `None` when the program did not run.
    pub fn ns_per_run(&self) -> Option<f64> {
        (self.run_cnt > 0).then(|| self.run_time_ns as f64 / self.run_cnt as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }

    #[test]
    fn fdinfo_fields() {
        let text = "pos:\t0\nflags:\t02000002\nprog_type:\t6\nprog_jited:\t1\nrun_time_ns:\t12345\nrun_cnt:\t67\nrecursion_misses:\t0\n";
        let s = RunStats::parse(text).unwrap();
        assert_eq!((s.run_time_ns, s.run_cnt), (12345, 67));
        assert_eq!(RunStats::parse("prog_type:\t6\n"), None);
        let d = s.since(&RunStats { run_time_ns: 345, run_cnt: 7 });
        assert_eq!(d.ns_per_run(), Some(200.0));
        assert_eq!(RunStats::default().ns_per_run(), None);
    }

    #[test]
    fn captures_a_failed_open() {
        let (r, log) = capture(|| libbpf_rs::ObjectBuilder::default().open_memory(b"not an ELF"));
        assert!(r.is_err());
        assert!(log.contains("libbpf"), "{log}");
    }
}
