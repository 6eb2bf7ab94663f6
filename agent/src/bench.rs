//! Performance benchmarks that run inside each kernel (guest side), next to the checks.
//!
//! Two measurements per program, both timed by the kernel itself, so the agent's own
//! build profile and the emulator's userspace speed do not enter the numbers:
//!
//! - `test_run`: BPF_PROG_TEST_RUN with `repeat` on one fixed 64-byte packet; the
//!   kernel returns the mean ns per run over the repeats. Run-time statistics are
//!   off during it: with them on every run also pays two `sched_clock` reads
//!   (DESIGN.md measured 48-62 ns/run off vs 118-147 on, host).
//! - `fdinfo`: the program under real events, with run-time statistics on
//!   (BPF_ENABLE_STATS fd on 5.8+, else the sysctl, restored afterwards), and the
//!   `run_time_ns`/`run_cnt` deltas read from `/proc/self/fdinfo/<fd>`:
//!   - XDP: attached to `lo` (generic/SKB mode, no module needed) in a private
//!     network namespace, real UDP packets from 127.0.0.1..254 sent to it;
//!   - USDT tracer: attached to a child that fires `test_grp:test_idx` a known
//!     number of times (every hit must be one run);
//!   - profiler: attached to the CPU-clock/cycles event at 99 Hz on one CPU, with a
//!     busy child pinned to it (every run is a sample of the child).
//!
//! Each measurement takes `samples` independent samples; the value is the median,
//! `lower`/`upper` the first/third quartile (robust to one preempted sample on a busy
//! 2-core machine); min/max are kept as extra metrics. The instruction-count profile
//! (`bpftool prog profile`) needs a hardware PMU: it is the catalogue check
//! `xdp_classifier::insn_profile`, gated on the `prog_profile` feature.
//!
//! Benchmarks only run when asked (`km.bench=1` on the guest's kernel command line,
//! `--bench` for the host agent), so plain `cargo test` matrix runs stay fast.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd},
    time::Instant,
};

use aya::programs::{TestRun, TestRunOptions, Xdp, XdpMode};
use libbpf_log::RunStats;
use libbpf_rs::{ObjectBuilder, ProgramInput};
use xdp_classifier::{packet, OBJECT};

use km_protocol::{
    checks::{gate, BENCHES},
    record::check,
    stats::Summary,
    switches::{BenchConfig, PROFILE_HZ},
    Probe, Record, Verdict,
};

use crate::{checks::LOOP_OBJECT, insn_profile::PROFILE_RUNS};
const LOOP_PROGRAM: &str = "xdp_classifier_loop";

/// The last octet of the benchmark packet's source address (10.0.0.200): not a
/// Fibonacci number, so the slow variant walks its whole sequence (its worst case),
/// and Buzz, so the program takes its longest classification path and drops.
pub const BENCH_OCTET: u8 = 200;

/// Guest side: runs every benchmark of [`BENCHES`] (or reports why not) and emits one
/// record per cell. Gated cells are reported ignored with the missing feature.
/// `wanted`: the programs `--only` selects (the others are not measured).
pub fn run_all(
    emit: &mut dyn FnMut(Record),
    features: &BTreeMap<String, Probe>,
    cfg: BenchConfig,
    wanted: &dyn Fn(&str) -> bool,
) {
    let accel = where_am_i();
    for b in BENCHES.iter().filter(|b| wanted(b.program)) {
        if let Some(reason) = gate(b, features) {
            emit(check(b.program, b.check, Verdict::Ignored(reason), BTreeMap::new(), String::new()));
            continue;
        }
        let started = Instant::now();
        let result = match b.check {
            "test_run" => test_run(b.program, cfg, matches!(features.get("prog_profile"), Some(Probe::Present(_)))),
            "fdinfo" if b.program == "usdt_tracer" => usdt_fdinfo(cfg, features),
            "fdinfo" if b.program == "profiler" => profiler_fdinfo(cfg, features),
            "fdinfo" => fdinfo(b.program, cfg, features),
            other => Err(format!("unknown benchmark {other}")),
        };
        let record = match result {
            Ok((samples, mut metrics, note)) => {
                let s = Summary::of(&samples);
                let mut m = s.metrics(&samples);
                m.append(&mut metrics);
                m.insert("bench_wall_secs".into(), started.elapsed().as_secs_f64());
                let note =
                    format!(
                    "{:.1} ns/run median (Q1 {:.1}, Q3 {:.1}, min {:.1}, max {:.1}) over {} samples; {accel}; {note}",
                    s.median, s.q1, s.q3, s.min, s.max, samples.len()
                );
                check(b.program, b.check, Verdict::Pass, m, note)
            }
            Err(e) => check(b.program, b.check, Verdict::Fail(e), BTreeMap::new(), String::new()),
        };
        emit(record);
    }
}

/// What the agent can tell about its own CPU: a guest sees the hypervisor flag.
fn where_am_i() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hv = cpuinfo.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor"));
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("kernel {}, {}", release.trim(), if hv { "virtualised CPU" } else { "bare CPU" })
}

type Samples = (Vec<f64>, BTreeMap<String, f64>, String);

/// Whether run-time statistics are on right now (sysctl or anyone's BPF_ENABLE_STATS
/// fd: the sysctl reports the static key both switch).
fn stats_on() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() == "1")
}

/// One BPF_PROG_TEST_RUN sample of a loaded XDP program on the benchmark packet:
/// the kernel's mean ns per run over `repeat` runs.
pub fn xdp_test_run(prog: &Xdp, repeat: u32) -> Result<f64, String> {
    let data = packet(BENCH_OCTET);
    let r = prog
        .test_run(TestRunOptions { data_in: Some(&data), repeat, ..Default::default() })
        .map_err(|e| format!("BPF_PROG_TEST_RUN: {e}"))?;
    Ok(r.duration.as_nanos() as f64)
}

/// BPF_PROG_TEST_RUN ns/run samples of one program in the running kernel (for
/// tests that compare runs; the agent uses [`run_all`]).
pub fn test_run_samples(program: &str, cfg: BenchConfig) -> Result<Vec<f64>, String> {
    test_run(program, cfg, false).map(|s| s.0)
}

/// The timing samples of `program`, and with `profile` (where the `prog_profile`
/// gate holds) its hardware counters per run as well ([`crate::insn_profile`]):
/// `instructions_per_run`, `cycles_per_run`, ... with their spread.
fn test_run(program: &str, cfg: BenchConfig, profile: bool) -> Result<Samples, String> {
    let data = packet(BENCH_OCTET);
    let stats = stats_on();
    let mut samples = Vec::with_capacity(cfg.samples);
    let mut info_metrics = BTreeMap::new();
    let mut counters = None;
    if program == LOOP_PROGRAM {
        let obj = ObjectBuilder::default()
            .open_memory(LOOP_OBJECT)
            .and_then(|o| o.load())
            .map_err(|e| format!("loading {program}: {e}"))?;
        let prog = obj.progs_mut().find(|p| p.name() == program).ok_or(format!("no {program} in the object"))?;
        for _ in 0..cfg.samples {
            let input = ProgramInput { data_in: Some(&data), repeat: cfg.repeat, ..Default::default() };
            let out = prog.test_run(input).map_err(|e| format!("BPF_PROG_TEST_RUN: {e}"))?;
            samples.push(out.duration.as_nanos() as f64);
        }
        if profile {
            counters = Some(crate::insn_profile::profile(prog.as_fd(), program, || {
                let input = ProgramInput { data_in: Some(&data), repeat: PROFILE_RUNS, ..Default::default() };
                prog.test_run(input).map(drop).map_err(|e| format!("BPF_PROG_TEST_RUN: {e}"))
            }));
        }
    } else {
        let mut ebpf = aya::Ebpf::load(OBJECT).map_err(|e| format!("loading the object: {e}"))?;
        let prog: &mut Xdp = ebpf
            .program_mut(program)
            .ok_or(format!("no {program} in the object"))?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        prog.load().map_err(|e| format!("loading {program}: {e}"))?;
        // The verifier's numbers for programs that have no `load` check of their own
        // (the slow variant), so reports can put them beside the latency.
        if let Ok(info) = prog.info() {
            info_metrics.insert("jited_bytes".to_string(), info.size_jitted() as f64);
            if let Some(n) = info.size_translated() {
                info_metrics.insert("xlated_bytes".to_string(), n as f64);
            }
            if let Some(n) = info.verified_instruction_count() {
                info_metrics.insert("verified_insns".to_string(), n as f64);
            }
        }
        for _ in 0..cfg.samples {
            samples.push(xdp_test_run(prog, cfg.repeat)?);
        }
        if profile {
            let fd = prog.fd().map_err(|e| format!("{e}"))?.as_fd();
            counters = Some(crate::insn_profile::profile(fd, program, || xdp_test_run(prog, PROFILE_RUNS).map(drop)));
        }
    }
    let mut metrics = info_metrics;
    metrics.insert("repeat".to_string(), cfg.repeat as f64);
    metrics.insert("stats_enabled".to_string(), stats as u8 as f64);
    let mut note = format!(
        "BPF_PROG_TEST_RUN repeat {} on a 64-byte UDP packet from 10.0.0.{BENCH_OCTET}; run-time stats {}",
        cfg.repeat,
        if stats { "ON (numbers include their overhead)" } else { "off" }
    );
    match counters {
        Some(Ok(p)) => {
            metrics.append(&mut p.metrics());
            note.push_str(&format!(
                "; hardware counters over {PROFILE_RUNS} more runs (fentry/fexit): {}",
                p.describe()
            ));
        }
        // The matrix's insn_profile check fails with the same reason.
        Some(Err(e)) => note.push_str(&format!("; hardware counters FAILED: {e}")),
        None => {}
    }
    Ok((samples, metrics, note))
}

/// Keeps run-time statistics on while alive, by the means the kernel has.
enum StatsGuard {
    /// BPF_ENABLE_STATS (5.8+): on while the fd is open, whatever else happens.
    Fd(#[allow(dead_code)] OwnedFd),
    /// The sysctl (5.1+): restored to its previous value on drop.
    Sysctl(String),
}

impl StatsGuard {
    fn on(features: &BTreeMap<String, Probe>) -> Result<Self, String> {
        if matches!(features.get("enable_stats"), Some(Probe::Present(_))) {
            // aya's BPF_ENABLE_STATS(BPF_STATS_RUN_TIME): the same command libbpf's
            // bpf_enable_stats issues; stats stay on while the fd is open.
            if let Ok(fd) = aya::sys::enable_stats(aya::sys::Stats::RunTime) {
                return Ok(Self::Fd(fd));
            }
        }
        let path = "/proc/sys/kernel/bpf_stats_enabled";
        let old = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
        std::fs::write(path, "1").map_err(|e| format!("writing {path}: {e}"))?;
        Ok(Self::Sysctl(old.trim().to_string()))
    }
    fn how(&self) -> &'static str {
        match self {
            Self::Fd(_) => "BPF_ENABLE_STATS fd",
            Self::Sysctl(_) => "sysctl kernel.bpf_stats_enabled",
        }
    }
}

impl Drop for StatsGuard {
    fn drop(&mut self) {
        if let Self::Sysctl(old) = self {
            let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", old.as_bytes());
        }
    }
}

/// Runs `sample` `samples` times with run-time statistics on, each returning the
/// program's statistics delta over one sample, and switches them back off.
/// Returns ns per run per sample, the total runs, and how stats were switched
/// (for the record's note).
fn under_stats(
    features: &BTreeMap<String, Probe>,
    samples: usize,
    mut sample: impl FnMut() -> Result<RunStats, String>,
) -> Result<(Vec<f64>, u64, String), String> {
    let guard = StatsGuard::on(features)?;
    let how = guard.how();
    let mut out = Vec::with_capacity(samples);
    let mut runs = 0;
    for _ in 0..samples {
        let d = sample()?;
        out.push(d.ns_per_run().ok_or("the program never ran during a sample")?);
        runs += d.run_cnt;
    }
    drop(guard);
    let after = if stats_on() {
        "; stats still on afterwards (someone else holds them on)"
    } else {
        ", switched off afterwards"
    };
    Ok((out, runs, format!("stats via {how}{after}")))
}

fn fdinfo(program: &str, cfg: BenchConfig, features: &BTreeMap<String, Probe>) -> Result<Samples, String> {
    let program = program.to_string();
    let features = features.clone();
    // A private network namespace: the program only ever sees our packets, and a
    // host run never touches the machine's real `lo`. Namespaces are per thread.
    std::thread::spawn(move || -> Result<Samples, String> {
        if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
            return Err(format!(
                "unshare(CLONE_NEWNET): {} (needed to keep the benchmark off the real lo)",
                std::io::Error::from(e)
            ));
        }
        lo_up().map_err(|e| format!("bringing lo up in the private namespace: {e}"))?;
        if program == LOOP_PROGRAM {
            let obj = ObjectBuilder::default()
                .open_memory(LOOP_OBJECT)
                .and_then(|o| o.load())
                .map_err(|e| format!("loading {program}: {e}"))?;
            let prog =
                obj.progs_mut().find(|p| p.name() == program.as_str()).ok_or(format!("no {program} in the object"))?;
            let _link = prog.attach_xdp(lo_index()? as i32).map_err(|e| format!("attaching {program} to lo: {e}"))?;
            drive(prog.as_fd(), cfg, &features)
        } else {
            let mut ebpf = aya::Ebpf::load(OBJECT).map_err(|e| format!("loading the object: {e}"))?;
            let prog: &mut Xdp = ebpf
                .program_mut(&program)
                .ok_or(format!("no {program} in the object"))?
                .try_into()
                .map_err(|e| format!("{e}"))?;
            prog.load().map_err(|e| format!("loading {program}: {e}"))?;
            prog.attach_to_if_index(lo_index()?, XdpMode::Skb)
                .map_err(|e| format!("attaching {program} to lo (SKB mode): {e}"))?;
            let fd = prog.fd().map_err(|e| format!("{e}"))?.as_fd();
            drive(fd, cfg, &features)
        }
    })
    .join()
    .map_err(|_| "the fdinfo benchmark thread panicked".to_string())?
}

fn lo_index() -> Result<u32, String> {
    nix::net::if_::if_nametoindex("lo").map_err(|_| "no lo interface".into())
}

fn lo_up() -> std::io::Result<()> {
    let sock = UdpSocket::bind("0.0.0.0:0").or_else(|_| {
        // A fresh namespace has no usable address yet; any AF_INET socket will do.
        use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
        socket(AddressFamily::Inet, SockType::Datagram, SockFlag::empty(), None)
            .map(UdpSocket::from)
            .map_err(std::io::Error::from)
    })?;
    // SAFETY: ifreq is a plain C struct (a name array and a union of integers and
    // addresses) for which all zero bytes are a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: `sock` is an open socket; SIOCGIFFLAGS writes the flags of the
    // interface named in `ifr` (NUL-terminated "lo") into `ifr`, which we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFFLAGS the union holds `ifru_flags`; every bit pattern
    // of a c_short is valid.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: `sock` is an open socket; SIOCSIFFLAGS only reads `ifr`, a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `cfg.packets` UDP datagrams per sample from 127.0.0.1..254 to a bound
/// receiver on 127.0.0.1, with statistics on, and returns ns per run per sample.
fn drive(prog_fd: BorrowedFd<'_>, cfg: BenchConfig, features: &BTreeMap<String, Probe>) -> Result<Samples, String> {
    let rx = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("binding the receiver: {e}"))?;
    rx.set_nonblocking(true).map_err(|e| e.to_string())?;
    let dest = rx.local_addr().map_err(|e| e.to_string())?;
    let senders: Vec<UdpSocket> = (1..=254u8)
        .map(|o| UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, o), 0)))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("binding senders on 127.0.0.x: {e}"))?;
    let payload = [0u8; 22]; // 14 + 20 + 8 + 22 = a 64-byte frame on the wire
    let mut buf = [0u8; 64];
    let (samples, runs, how) = under_stats(features, cfg.samples, || {
        let before = RunStats::of(&prog_fd)?;
        for i in 0..cfg.packets {
            senders[i % senders.len()].send_to(&payload, dest).map_err(|e| format!("sending: {e}"))?;
            if i % 64 == 63 {
                while rx.recv(&mut buf).is_ok() {}
            }
        }
        while rx.recv(&mut buf).is_ok() {}
        let d = RunStats::of(&prog_fd)?.since(&before);
        if d.run_cnt < cfg.packets as u64 {
            return Err(format!(
                "sent {} packets through lo but run_cnt grew by {}: the program is not seeing them",
                cfg.packets, d.run_cnt
            ));
        }
        Ok(d)
    })?;
    let metrics = [("packets".to_string(), cfg.packets as f64), ("runs".to_string(), runs as f64)].into();
    let note = format!(
        "XDP generic mode on lo (private netns), {} UDP packets per sample from 127.0.0.1..254; {how}",
        cfg.packets
    );
    Ok((samples, metrics, note))
}

/// The USDT tracer under real probe hits: per sample a fresh child fires the probe
/// `probe_hits` times; every hit must have been exactly one run.
fn usdt_fdinfo(cfg: BenchConfig, features: &BTreeMap<String, Probe>) -> Result<Samples, String> {
    let (samples, runs, how) = under_stats(features, cfg.samples, || {
        let run = crate::checks::usdt::traced_child(cfg.probe_hits).map_err(|e| format!("{e:#}"))?;
        let d = run.report.stats;
        if d.run_cnt != cfg.probe_hits as u64 || run.report.hits != cfg.probe_hits as u64 {
            let why = usdt_tracer::verify_loop(&run.report, cfg.probe_hits)
                .err()
                .map(|e| format!(": {e:#}"))
                .unwrap_or_default();
            return Err(format!(
                "the child fired {} probe hits; the program ran {} times{why}",
                cfg.probe_hits, d.run_cnt
            ));
        }
        Ok(d)
    })?;
    let metrics = [("probe_hits".to_string(), cfg.probe_hits as f64), ("runs".to_string(), runs as f64)].into();
    let note = format!("uprobe on test_grp:test_idx in a child firing it {} times per sample; {how}", cfg.probe_hits);
    Ok((samples, metrics, note))
}

/// The profiler under real perf samples: per sample, `profile_secs` of sampling at
/// [`PROFILE_HZ`] on one CPU while a busy child pinned there spins (stacks not
/// symbolized: only the program's cost is measured).
fn profiler_fdinfo(cfg: BenchConfig, features: &BTreeMap<String, Probe>) -> Result<Samples, String> {
    // One CPU, with the child pinned to it: every run is then a sample of the busy
    // child (pid match, two stack walks). Sampling every CPU mixed in the other CPUs'
    // cheap runs (rejected by the pid filter) in whatever proportion the machine's
    // load gave: identical host runs differed by 2x.
    let cpu = *::profiler::online_cpus().map_err(|e| format!("{e:#}"))?.first().ok_or("no online CPU")?;
    let mut event = String::new();
    let mut seen = 0;
    let (samples, runs, how) = under_stats(features, cfg.samples, || {
        let opts = ::profiler::ProfileOptions {
            freq: PROFILE_HZ,
            duration: std::time::Duration::from_secs_f64(cfg.profile_secs),
            symbolize: false,
            cpus: Some(vec![cpu]),
            ..Default::default()
        };
        let (prof, _pid) = crate::checks::profiling::profile_busy_child(opts).map_err(|e| format!("{e:#}"))?;
        event = prof.event.to_string();
        seen += prof.seen;
        Ok(prof.stats)
    })?;
    let metrics = [("runs".to_string(), runs as f64), ("samples_of_child".to_string(), seen as f64)].into();
    let note = format!(
        "perf_event program on {event} at {PROFILE_HZ} Hz on CPU {cpu}, {:.1} s per sample, a busy child pinned there; {how}",
        cfg.profile_secs
    );
    Ok((samples, metrics, note))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_benchmark_has_a_runner() {
        for b in BENCHES {
            assert!(matches!(b.check, "test_run" | "fdinfo"), "{}::{} has no runner", b.program, b.check);
        }
    }

    #[test]
    fn bench_packet_is_the_worst_case_of_the_slow_variant() {
        use xdp_classifier_common::{is_fibonacci_slow, SourceAddr};
        assert!(!is_fibonacci_slow(BENCH_OCTET));
        assert_eq!(SourceAddr::new(BENCH_OCTET as u32), SourceAddr::Buzz);
    }
}
