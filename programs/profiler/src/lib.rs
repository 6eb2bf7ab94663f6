//! Sampling profiler: `programs-ebpf/profiler/profiler.bpf.c` (a `perf_event`
//! program) runs on every sample of one perf event per online CPU and sends the
//! kernel and user stacks of the interrupted task through a ring buffer;
//! userspace symbolizes them with blazesym.
//!
//! The guest agent calls [`load_only`] (does the verifier accept it?) and
//! [`profile`]; the `profiler` binary is the same thing from a shell.
use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    mem::MaybeUninit,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, IntoRawFd as _, OwnedFd},
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use blazesym::symbolize::{
    source::{Kernel, Process, Source},
    Input, Symbolized, Symbolizer,
};
use libbpf_rs::{
    skel::{OpenSkel as _, SkelBuilder as _},
    RingBufferBuilder,
};

/// The compiled BPF object the skeleton embeds, for tools that inspect it.
pub static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/profiler.bpf.o"));

mod skel {
    #![allow(unused_imports, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/profiler.skel.rs"));
}
use skel::*;

/// Frames per stack the BPF program records (`MAX_STACK_DEPTH` in profiler.h).
pub const MAX_STACK_DEPTH: usize = 127;
const TASK_COMM_LEN: usize = 16;
/// `struct stack_event` in profiler.h, field by field.
const EV_COMM: usize = 32;
const EV_KSTACK: usize = EV_COMM + TASK_COMM_LEN;
const EV_USTACK: usize = EV_KSTACK + MAX_STACK_DEPTH * 8;
const EV_SIZE: usize = EV_USTACK + MAX_STACK_DEPTH * 8;

/// A function a process can run to be seen on CPU in user stacks: it spins for
/// `millis` milliseconds doing integer work the optimizer cannot remove, with the
/// hot loop in this very function (no calls in it but a clock read now and then),
/// so the sampled user instruction pointer lands here whatever the frame pointers.
#[inline(never)]
#[no_mangle]
pub extern "C" fn km_busy_spin(millis: u64) -> u64 {
    let start = Instant::now();
    let budget = Duration::from_millis(millis);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rounds: u64 = 0;
    loop {
        let mut i: u32 = 0;
        while i < 65_536 {
            // xorshift64: shifts and xors only, inline even in debug builds.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            i += 1;
        }
        x = std::hint::black_box(x);
        rounds += 1;
        if start.elapsed() >= budget {
            return std::hint::black_box(x ^ rounds);
        }
    }
}

/// Which perf event drives the sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// PERF_COUNT_HW_CPU_CYCLES: needs a hardware PMU.
    HwCpuCycles,
    /// PERF_COUNT_SW_CPU_CLOCK: an hrtimer, works everywhere (VMs, TCG).
    SwCpuClock,
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventKind::HwCpuCycles => "hardware cpu-cycles",
            EventKind::SwCpuClock => "software cpu-clock",
        })
    }
}

#[derive(Debug, Clone)]
pub struct ProfileOptions {
    /// Samples per second per CPU.
    pub freq: u64,
    /// Only this process (thread group id); `None` = everything.
    pub pid: Option<u32>,
    /// Use the software cpu-clock event even if a hardware PMU exists.
    pub sw_event: bool,
    pub duration: Duration,
    /// Symbolize the stacks (slow under emulation); a benchmark that only wants the
    /// program's run-time statistics turns it off and gets raw addresses.
    pub symbolize: bool,
    /// Sample only on these CPUs; `None` = every online CPU.
    pub cpus: Option<Vec<u32>>,
}

impl Default for ProfileOptions {
    fn default() -> Self {
        ProfileOptions {
            freq: 99,
            pid: None,
            sw_event: false,
            duration: Duration::from_secs(1),
            symbolize: true,
            cpus: None,
        }
    }
}

/// One symbolized stack frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub addr: u64,
    /// Function name (demangled), if the address could be symbolized.
    pub name: Option<String>,
    /// Offset of `addr` into the function.
    pub offset: u64,
    /// `file:line` where debug info exists.
    pub location: Option<String>,
}

impl Frame {
    /// The name used in folded stacks: the function, or the raw address.
    pub fn func(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => format!("0x{:x}", self.addr),
        }
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{:#018x} {n}+0x{:x}", self.addr, self.offset)?,
            None => write!(f, "{:#018x} [unknown]", self.addr)?,
        }
        if let Some(l) = &self.location {
            write!(f, " ({l})")?;
        }
        Ok(())
    }
}

/// One sample; stacks are innermost frame first.
#[derive(Debug, Clone)]
pub struct Sample {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub cpu: u32,
    pub comm: String,
    pub kernel: Vec<Frame>,
    pub user: Vec<Frame>,
    /// Negative errno from bpf_get_stack, if the kernel stack could not be read.
    pub kstack_err: Option<i32>,
    pub ustack_err: Option<i32>,
}

impl Sample {
    /// `comm;user root..leaf;kernel root..leaf` with kernel frames marked `_[k]`
    /// (the convention flamegraph.pl and inferno colour by).
    pub fn folded_key(&self) -> String {
        let mut parts = vec![self.comm.replace([';', ' '], "_")];
        parts.extend(self.user.iter().rev().map(|f| f.func().replace(';', ":")));
        parts.extend(self.kernel.iter().rev().map(|f| format!("{}_[k]", f.func().replace(';', ":"))));
        parts.join(";")
    }
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub event: EventKind,
    pub freq: u64,
    pub cpus: usize,
    pub duration: Duration,
    /// Samples the BPF program accepted (after the pid filter).
    pub seen: u64,
    /// Samples lost because the ring buffer was full.
    pub dropped: u64,
    pub samples: Vec<Sample>,
    /// The program's run-time statistics while it was attached (zero unless
    /// statistics were on). It runs on every sample of every CPU, before the pid filter.
    pub stats: libbpf_log::RunStats,
}

impl Profile {
    /// Folded stacks: key -> count, for flame graphs.
    pub fn folded(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for s in &self.samples {
            *m.entry(s.folded_key()).or_insert(0) += 1;
        }
        m
    }

    /// `stack count` lines, most frequent first.
    pub fn folded_text(&self) -> String {
        let mut v: Vec<(String, u64)> = self.folded().into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.into_iter().map(|(k, n)| format!("{k} {n}\n")).collect()
    }

    /// Readable stacks, one block per distinct stack, most frequent first.
    pub fn stacks_text(&self) -> String {
        let mut groups: HashMap<String, (u64, &Sample)> = HashMap::new();
        for s in &self.samples {
            groups.entry(s.folded_key()).or_insert((0, s)).0 += 1;
        }
        let mut v: Vec<_> = groups.into_values().collect();
        v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.folded_key().cmp(&b.1.folded_key())));
        let mut out = String::new();
        for (n, s) in v {
            out.push_str(&format!("{} samples: {} (pid {}) cpu {}\n", n, s.comm, s.pid, s.cpu));
            match s.kstack_err {
                Some(e) => out.push_str(&format!("  [kernel stack unavailable: {e}]\n")),
                None => s.kernel.iter().for_each(|f| out.push_str(&format!("  {f} [k]\n"))),
            }
            if !s.kernel.is_empty() || s.kstack_err.is_some() {
                out.push_str("  --\n");
            }
            match s.ustack_err {
                Some(e) => out.push_str(&format!("  [user stack unavailable: {e}]\n")),
                None => s.user.iter().for_each(|f| out.push_str(&format!("  {f}\n"))),
            }
            out.push('\n');
        }
        out
    }

    /// Does any sample of `pid` (or any pid) have a user frame named `func`?
    pub fn user_frames_named(&self, func: &str, pid: Option<u32>) -> u64 {
        self.samples
            .iter()
            .filter(|s| pid.is_none_or(|p| s.pid == p))
            .filter(|s| s.user.iter().any(|f| f.name.as_deref() == Some(func)))
            .count() as u64
    }
}

pub use libbpf_log::{capture as with_libbpf_log, tail};

/// Facts about a successful load.
#[derive(Debug, Clone)]
pub struct LoadInfo {
    /// Instructions in the object's program (before verification).
    pub insns: usize,
}

/// Opens and loads the object (the verifier runs) and unloads it again.
/// On failure the error carries everything libbpf printed, verifier log included.
pub fn load_only() -> Result<LoadInfo, (anyhow::Error, String)> {
    let (r, log) = with_libbpf_log(|| -> anyhow::Result<LoadInfo> {
        let mut obj = MaybeUninit::uninit();
        let open = ProfilerSkelBuilder::default().open(&mut obj).context("opening the profiler object")?;
        let skel = open.load().context("loading the profiler program")?;
        Ok(LoadInfo { insns: skel.progs.profile.insn_cnt() })
    });
    r.map_err(|e| (e, log))
}

// ---- perf events ----------------------------------------------------------

/// `struct perf_event_attr`, the first published layout (PERF_ATTR_SIZE_VER0,
/// 64 bytes), which every kernel accepts.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_freq: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}
const PERF_TYPE_HARDWARE: u32 = 0;
const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_HW_CPU_CYCLES: u64 = 0;
const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
const ATTR_FLAG_FREQ: u64 = 1 << 10;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

fn perf_event_open(kind: EventKind, freq: u64, cpu: u32) -> std::io::Result<OwnedFd> {
    let (type_, config) = match kind {
        EventKind::HwCpuCycles => (PERF_TYPE_HARDWARE, PERF_COUNT_HW_CPU_CYCLES),
        EventKind::SwCpuClock => (PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK),
    };
    let attr = PerfEventAttr {
        type_,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config,
        sample_freq: freq,
        flags: ATTR_FLAG_FREQ,
        ..Default::default()
    };
    // pid -1 + cpu N: every task on that CPU.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1i32,
            cpu as i32,
            -1i32,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Parses a kernel CPU list such as `0-3,5,7-8`.
pub fn parse_cpu_list(s: &str) -> anyhow::Result<Vec<u32>> {
    let mut v = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse()?, b.parse()?);
                if b < a {
                    bail!("bad cpu range {part}");
                }
                v.extend(a..=b);
            }
            None => v.push(part.parse()?),
        }
    }
    Ok(v)
}

pub fn online_cpus() -> anyhow::Result<Vec<u32>> {
    let s =
        std::fs::read_to_string("/sys/devices/system/cpu/online").context("reading /sys/devices/system/cpu/online")?;
    parse_cpu_list(&s)
}

/// Opens one sampling event per CPU: hardware cycles when a PMU exists and
/// `sw_event` is false, else the software cpu-clock.
fn open_events(cpus: &[u32], freq: u64, sw_event: bool) -> anyhow::Result<(EventKind, Vec<OwnedFd>)> {
    let mut kind = if sw_event { EventKind::SwCpuClock } else { EventKind::HwCpuCycles };
    let mut fds = Vec::new();
    for &cpu in cpus {
        match perf_event_open(kind, freq, cpu) {
            Ok(fd) => fds.push(fd),
            Err(e) if kind == EventKind::HwCpuCycles && fds.is_empty() => {
                // ENOENT / EOPNOTSUPP / ENODEV: no hardware PMU (VMs, TCG).
                let _ = e;
                kind = EventKind::SwCpuClock;
                fds.push(
                    perf_event_open(kind, freq, cpu)
                        .with_context(|| format!("perf_event_open({kind}) on cpu {cpu}"))?,
                );
            }
            Err(e) => return Err(e).with_context(|| format!("perf_event_open({kind}) on cpu {cpu}")),
        }
    }
    Ok((kind, fds))
}

// ---- sampling -------------------------------------------------------------

struct RawSample {
    ts_ns: u64,
    pid: u32,
    tid: u32,
    cpu: u32,
    comm: String,
    kstack: Result<Vec<u64>, i32>,
    ustack: Result<Vec<u64>, i32>,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(b[off..off + 8].try_into().unwrap())
}

/// Size of one ring-buffer record (`struct stack_event`).
#[doc(hidden)]
pub const EVENT_SIZE: usize = EV_SIZE;

/// Decodes one ring-buffer record into (pid, kernel frames, user frames): the
/// per-sample hot path, public only for the criterion benchmark
/// (`benches/parse_event.rs`); not an API.
#[doc(hidden)]
pub fn bench_parse_event(b: &[u8]) -> Option<(u32, usize, usize)> {
    parse_event(b).map(|s| (s.pid, s.kstack.map_or(0, |k| k.len()), s.ustack.map_or(0, |u| u.len())))
}

fn parse_event(b: &[u8]) -> Option<RawSample> {
    if b.len() < EV_SIZE {
        return None;
    }
    let stack = |sz: i32, off: usize| -> Result<Vec<u64>, i32> {
        if sz < 0 {
            return Err(sz);
        }
        let n = (sz as usize / 8).min(MAX_STACK_DEPTH);
        Ok((0..n).map(|i| u64_at(b, off + i * 8)).filter(|&a| a != 0).collect())
    };
    let comm = &b[EV_COMM..EV_COMM + TASK_COMM_LEN];
    let comm_len = comm.iter().position(|&c| c == 0).unwrap_or(TASK_COMM_LEN);
    Some(RawSample {
        ts_ns: u64_at(b, 0),
        pid: u32_at(b, 8),
        tid: u32_at(b, 12),
        cpu: u32_at(b, 16),
        comm: String::from_utf8_lossy(&comm[..comm_len]).into_owned(),
        kstack: stack(u32_at(b, 20) as i32, EV_KSTACK),
        ustack: stack(u32_at(b, 24) as i32, EV_USTACK),
    })
}

/// Samples for `opts.duration` on every online CPU and returns the symbolized samples.
/// User stacks are symbolized right after sampling, so processes that exited by
/// then show raw addresses.
pub fn profile(opts: &ProfileOptions) -> anyhow::Result<Profile> {
    if opts.freq == 0 {
        bail!("frequency must be > 0");
    }
    let cpus = match &opts.cpus {
        Some(c) if c.is_empty() => bail!("an empty CPU list"),
        Some(c) => c.clone(),
        None => online_cpus()?,
    };
    let mut obj = MaybeUninit::uninit();
    let mut open = ProfilerSkelBuilder::default().open(&mut obj).context("opening the profiler object")?;
    open.maps.rodata_data.as_deref_mut().context("no .rodata in the profiler object")?.target_pid =
        opts.pid.unwrap_or(0);
    let (loaded, log) = with_libbpf_log(|| open.load());
    let skel = loaded.map_err(|e| anyhow::anyhow!("loading the profiler program: {e}\n{}", tail(&log, 25)))?;

    let (event, fds) = open_events(&cpus, opts.freq, opts.sw_event)?;
    let raw: Rc<RefCell<Vec<RawSample>>> = Rc::default();
    let sink = raw.clone();
    let mut rb = RingBufferBuilder::new();
    rb.add(&skel.maps.events, move |data: &[u8]| {
        if let Some(s) = parse_event(data) {
            sink.borrow_mut().push(s);
        }
        0
    })?;
    let rb = rb.build()?;
    let mut links = Vec::new();
    for (fd, cpu) in fds.into_iter().zip(&cpus) {
        // On success the link owns the perf event fd (libbpf closes it on detach).
        let link = skel
            .progs
            .profile
            .attach_perf_event(fd.as_raw_fd())
            .with_context(|| format!("attaching to the perf event on cpu {cpu}"))?;
        let _ = fd.into_raw_fd();
        links.push(link);
    }
    let prog_fd = skel.progs.profile.as_fd();
    let stats_before = libbpf_log::RunStats::of(&prog_fd).map_err(anyhow::Error::msg)?;
    let start = Instant::now();
    while start.elapsed() < opts.duration {
        let left = opts.duration.saturating_sub(start.elapsed()).min(Duration::from_millis(100));
        rb.poll(left)?;
    }
    let duration = start.elapsed();
    drop(links);
    let stats = libbpf_log::RunStats::of(&prog_fd).map_err(anyhow::Error::msg)?.since(&stats_before);
    rb.consume()?;
    let bss = skel.maps.bss_data.as_deref().context("no .bss in the profiler object")?;
    let (seen, dropped) = (bss.seen, bss.dropped);
    drop(rb);
    let raw = std::mem::take(&mut *raw.borrow_mut());
    let samples = if opts.symbolize { symbolize(raw) } else { with_frames(raw, &HashMap::new(), &HashMap::new()) };
    Ok(Profile { event, freq: opts.freq, cpus: cpus.len(), duration, seen, dropped, samples, stats })
}

/// `foo::bar::h0123456789abcdef` -> `foo::bar`.
fn strip_hash(name: &str) -> &str {
    match name.rsplit_once("::h") {
        Some((head, h)) if h.len() == 16 && h.bytes().all(|c| c.is_ascii_hexdigit()) => head,
        _ => name,
    }
}

fn to_frames(symbolizer: &Symbolizer, src: &Source, addrs: &[u64]) -> HashMap<u64, Frame> {
    let mut out = HashMap::new();
    let results = symbolizer.symbolize(src, Input::AbsAddr(addrs)).unwrap_or_else(|e| {
        // Frames stay as raw addresses; say why rather than fail the profile.
        eprintln!("profiler: symbolization failed: {e:#}");
        Vec::new()
    });
    for (i, &addr) in addrs.iter().enumerate() {
        let frame = match results.get(i) {
            Some(Symbolized::Sym(sym)) => Frame {
                addr,
                name: Some(strip_hash(&sym.name).to_string()),
                offset: sym.offset as u64,
                location: sym.code_info.as_ref().map(|ci| {
                    let path = ci.to_path();
                    match ci.line {
                        Some(l) => format!("{}:{l}", path.display()),
                        None => path.display().to_string(),
                    }
                }),
            },
            _ => Frame { addr, name: None, offset: 0, location: None },
        };
        out.insert(addr, frame);
    }
    out
}

fn symbolize(raw: Vec<RawSample>) -> Vec<Sample> {
    let symbolizer = Symbolizer::new();
    // Kernel addresses, all at once.
    let kaddrs: Vec<u64> = raw
        .iter()
        .filter_map(|s| s.kstack.as_ref().ok())
        .flatten()
        .copied()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let kernel = if kaddrs.is_empty() {
        HashMap::new()
    } else {
        to_frames(&symbolizer, &Source::Kernel(Kernel::default()), &kaddrs)
    };
    // User addresses, per process.
    let mut by_pid: HashMap<u32, HashSet<u64>> = HashMap::new();
    for s in &raw {
        if let Ok(u) = &s.ustack {
            by_pid.entry(s.pid).or_default().extend(u.iter().copied());
        }
    }
    let user: HashMap<u32, HashMap<u64, Frame>> = by_pid
        .into_iter()
        .map(|(pid, addrs)| {
            let addrs: Vec<u64> = addrs.into_iter().collect();
            let src = Source::Process(Process::new(pid.into()));
            (pid, to_frames(&symbolizer, &src, &addrs))
        })
        .collect();
    with_frames(raw, &kernel, &user)
}

/// Samples with their addresses looked up in `kernel` and `user` (per pid); what
/// is not there stays a raw address.
fn with_frames(
    raw: Vec<RawSample>,
    kernel: &HashMap<u64, Frame>,
    user: &HashMap<u32, HashMap<u64, Frame>>,
) -> Vec<Sample> {
    let unknown = |a: u64| Frame { addr: a, name: None, offset: 0, location: None };
    raw.into_iter()
        .map(|s| {
            let frames = |st: &Result<Vec<u64>, i32>, table: Option<&HashMap<u64, Frame>>| -> Vec<Frame> {
                match st {
                    Ok(v) => {
                        v.iter().map(|a| table.and_then(|t| t.get(a)).cloned().unwrap_or_else(|| unknown(*a))).collect()
                    }
                    Err(_) => Vec::new(),
                }
            };
            Sample {
                ts_ns: s.ts_ns,
                pid: s.pid,
                tid: s.tid,
                cpu: s.cpu,
                kernel: frames(&s.kstack, Some(kernel)),
                user: frames(&s.ustack, user.get(&s.pid)),
                kstack_err: s.kstack.as_ref().err().copied(),
                ustack_err: s.ustack.as_ref().err().copied(),
                comm: s.comm,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n").unwrap(), vec![0, 1]);
        assert_eq!(parse_cpu_list("0,2-3,7").unwrap(), vec![0, 2, 3, 7]);
        assert_eq!(parse_cpu_list("0").unwrap(), vec![0]);
        assert!(parse_cpu_list("3-1").is_err());
    }

    #[test]
    fn event_layout_matches_profiler_h() {
        // 8 + 4*6 + 16 + 2 * 127 * 8
        assert_eq!(EV_SIZE, 2080);
        assert_eq!(std::mem::size_of::<PerfEventAttr>(), 64);
    }

    #[test]
    fn folded_key_order_and_hash_stripping() {
        let f = |n: &str| Frame { addr: 1, name: Some(n.into()), offset: 0, location: None };
        let s = Sample {
            ts_ns: 0,
            pid: 1,
            tid: 1,
            cpu: 0,
            comm: "my prog".into(),
            kernel: vec![f("kleaf"), f("kroot")],
            user: vec![f("leaf"), f("main")],
            kstack_err: None,
            ustack_err: None,
        };
        assert_eq!(s.folded_key(), "my_prog;main;leaf;kroot_[k];kleaf_[k]");
        assert_eq!(strip_hash("a::b::h0123456789abcdef"), "a::b");
        assert_eq!(strip_hash("a::hello"), "a::hello");
    }

    #[test]
    fn busy_spin_returns() {
        let t = Instant::now();
        km_busy_spin(20);
        assert!(t.elapsed() >= Duration::from_millis(20));
    }
}
