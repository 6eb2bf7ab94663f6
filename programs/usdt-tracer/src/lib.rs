//! USDT tracer: the probe `test_grp:test_idx` (from `src/probe.c`, compiled into
//! this library, so every binary that links it and calls [`traced_loop`] carries
//! the probe in its `.note.stapsdt`), and `programs-ebpf/usdt/usdt.bpf.c`
//! attached to it with libbpf's USDT support, which reads arg0, counts hits,
//! sums arg0 and sends each value through a ring buffer.
use std::{cell::RefCell, io::Read as _, mem::MaybeUninit, os::fd::AsFd as _, path::Path, rc::Rc, time::Duration};

use anyhow::{bail, Context as _};
use libbpf_rs::{
    skel::{OpenSkel as _, SkelBuilder as _},
    RingBufferBuilder,
};

/// The compiled BPF object the skeleton embeds, for tools that inspect it.
pub static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/usdt.bpf.o"));

mod skel {
    #![allow(unused_imports, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/usdt.skel.rs"));
}
use skel::*;

/// The probe's provider and name, as in `DTRACE_PROBE1(test_grp, test_idx, idx)`.
pub const PROVIDER: &str = "test_grp";
pub const PROBE: &str = "test_idx";

extern "C" {
    fn km_usdt_loop(n: libc::c_int);
}

/// Fires `test_grp:test_idx` with arg0 = 0, 1, ..., n-1.
pub fn traced_loop(n: u32) {
    let n = libc::c_int::try_from(n).unwrap_or(libc::c_int::MAX);
    unsafe { km_usdt_loop(n) }
}

/// Waits until standard input yields a byte or reaches end of file, then runs
/// [`traced_loop`]: lets a parent attach the probe to this process first.
pub fn wait_then_loop(n: u32) {
    let mut b = [0u8; 1];
    let _ = std::io::stdin().read(&mut b);
    traced_loop(n);
}

/// What the BPF program saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsdtReport {
    pub hits: u64,
    /// Sum of arg0 over all hits (wrapping, as in the kernel).
    pub sum: u64,
    /// arg0 of each hit, in ring buffer order (missing ones are counted in `dropped`).
    pub values: Vec<i64>,
    /// Hits where bpf_usdt_arg failed.
    pub arg_errors: u64,
    /// The last failure's -errno (-ESRCH: no spec for the IP) and the IP it hit at.
    pub last_arg_error: i64,
    pub last_error_ip: u64,
    /// Values the ring buffer had no room for.
    pub dropped: u64,
    /// The program's run-time statistics between attach and detach (zero unless
    /// statistics were on).
    pub stats: libbpf_log::RunStats,
}

pub use libbpf_log::{capture as with_libbpf_log, tail};

#[derive(Debug, Clone)]
pub struct LoadInfo {
    /// Instructions in the object's program (before verification).
    pub insns: usize,
}

/// Opens and loads the object (the verifier runs), then unloads it. On failure
/// the error comes with everything libbpf printed, verifier log included.
pub fn load_only() -> Result<LoadInfo, (anyhow::Error, String)> {
    let (r, log) = with_libbpf_log(|| -> anyhow::Result<LoadInfo> {
        let mut obj = MaybeUninit::uninit();
        let open = UsdtSkelBuilder::default().open(&mut obj).context("opening the usdt object")?;
        let skel = open.load().context("loading the usdt program")?;
        Ok(LoadInfo { insns: skel.progs.test_idx.insn_cnt() })
    });
    r.map_err(|e| (e, log))
}

/// Attaches to `test_grp:test_idx` in `binary` (only in process `pid` if given,
/// else in every process running it, including ones started later), calls `run`,
/// then detaches and reports what the probe saw. `run` must make the probe fire:
/// run the target, release a waiting one, or just sleep. Values are collected in
/// the ring buffer (1 MiB, about 65k values) until `run` returns; use
/// [`trace_with`] to drain it while the target runs.
pub fn trace(binary: &Path, pid: Option<i32>, run: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<UsdtReport> {
    trace_with(binary, pid, |_| {}, |_poll| run())
}

/// Like [`trace`], but `run` gets a `poll(timeout)` function to call while the
/// target runs, which hands every value that arrived to `on_value` (in order).
pub fn trace_with(
    binary: &Path,
    pid: Option<i32>,
    mut on_value: impl FnMut(i64),
    run: impl FnOnce(&dyn Fn(Duration) -> anyhow::Result<()>) -> anyhow::Result<()>,
) -> anyhow::Result<UsdtReport> {
    let binary = binary.canonicalize().with_context(|| format!("resolving {}", binary.display()))?;
    let mut obj = MaybeUninit::uninit();
    let mut open = UsdtSkelBuilder::default().open(&mut obj).context("opening the usdt object")?;
    open.maps.rodata_data.as_deref_mut().context("no .rodata in the usdt object")?.target_pid =
        pid.map(|p| p as u32).unwrap_or(0);
    let (loaded, log) = with_libbpf_log(|| open.load());
    let skel = loaded.map_err(|e| anyhow::anyhow!("loading the usdt program: {e}\n{}", tail(&log, 25)))?;

    let values: Rc<RefCell<Vec<i64>>> = Rc::default();
    let sink = values.clone();
    let mut rb = RingBufferBuilder::new();
    rb.add(&skel.maps.values, move |data: &[u8]| {
        if let Ok(b) = <[u8; 8]>::try_from(&data[..data.len().min(8)]) {
            let v = i64::from_ne_bytes(b);
            on_value(v);
            sink.borrow_mut().push(v);
        }
        0
    })?;
    let rb = rb.build()?;

    let (attached, log) =
        with_libbpf_log(|| skel.progs.test_idx.attach_usdt(pid.unwrap_or(-1), &binary, PROVIDER, PROBE));
    let link = attached.map_err(|e| {
        anyhow::anyhow!("attaching to {PROVIDER}:{PROBE} in {}: {e}\n{}", binary.display(), tail(&log, 10))
    })?;
    let prog_fd = skel.progs.test_idx.as_fd();
    let stats_before = libbpf_log::RunStats::of(&prog_fd).map_err(anyhow::Error::msg)?;
    let poll = |t: Duration| -> anyhow::Result<()> { rb.poll(t).map_err(anyhow::Error::from) };
    let outcome = run(&poll);
    // Drain what arrived while the target ran, then detach and drain the rest.
    rb.poll(Duration::from_millis(10))?;
    drop(link);
    let stats = libbpf_log::RunStats::of(&prog_fd).map_err(anyhow::Error::msg)?.since(&stats_before);
    rb.consume()?;
    outcome?;
    let bss = skel.maps.bss_data.as_deref().context("no .bss in the usdt object")?;
    let report = UsdtReport {
        hits: bss.hits,
        sum: bss.sum,
        arg_errors: bss.arg_errors,
        last_arg_error: bss.last_arg_error,
        last_error_ip: bss.last_error_ip,
        dropped: bss.dropped,
        values: std::mem::take(&mut *values.borrow_mut()),
        stats,
    };
    drop(rb);
    Ok(report)
}

/// Checks `report` against a run of `traced_loop(n)`: exactly n hits, values
/// 0..n, sum n(n-1)/2, nothing lost.
pub fn verify_loop(report: &UsdtReport, n: u32) -> anyhow::Result<()> {
    let n64 = n as u64;
    let want_sum = n64 * n64.saturating_sub(1) / 2;
    let mut problems = Vec::new();
    if report.hits != n64 {
        problems.push(format!("{} hits, want exactly {n}", report.hits));
    }
    if report.sum != want_sum {
        problems.push(format!("sum of arg0 {} , want {want_sum} (= {n}*({n}-1)/2)", report.sum));
    }
    if report.arg_errors != 0 {
        problems.push(format!(
            "bpf_usdt_arg failed {} times (last: error {} at ip {:#x})",
            report.arg_errors, report.last_arg_error, report.last_error_ip
        ));
    }
    if report.dropped != 0 {
        problems.push(format!("{} values dropped by the ring buffer", report.dropped));
    }
    let mut sorted = report.values.clone();
    sorted.sort_unstable();
    if sorted.iter().copied().ne(0..n as i64) {
        problems.push(format!("values are not 0..{n} (got {} values)", report.values.len()));
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_runs_without_tracer() {
        traced_loop(10);
    }

    #[test]
    fn verify_loop_accepts_exact_and_rejects_off_by_one() {
        let good = UsdtReport { hits: 4, sum: 6, values: vec![0, 2, 1, 3], ..Default::default() };
        verify_loop(&good, 4).unwrap();
        let bad = UsdtReport { hits: 3, sum: 3, values: vec![0, 1, 2], ..Default::default() };
        let e = verify_loop(&bad, 4).unwrap_err().to_string();
        assert!(e.contains("3 hits, want exactly 4"), "{e}");
    }
}
