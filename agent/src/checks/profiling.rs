//! The sampling profiler: `load` and `samples`.
//!
//! `samples` re-executes the agent as a busy child (`--busy-spin`, which runs
//! `profiler::km_busy_spin`), profiles it at 99 Hz on every CPU filtered to its
//! pid, and requires `km_busy_spin` in the symbolized user stacks and a sample
//! count near frequency x seconds (the child keeps one CPU busy).
use std::{process::Stdio, time::Duration};

use ::profiler::{load_only, profile, ProfileOptions};

use anyhow::Context as _;

use super::*;

const P: &str = "profiler";
const FREQ: u64 = 99;
const SECONDS: f64 = 2.0;
/// Accepted sample counts, as fractions of FREQ x SECONDS: TCG timers are imprecise.
const BAND: (f64, f64) = (0.30, 1.30);
/// The busy child must outlive sampling *and* symbolization (blazesym reads its
/// /proc/<pid>/maps and the binary's DWARF, slow under TCG: a shorter margin lost
/// every symbol once on 7.2). It is killed as soon as the profile is in; this only
/// bounds a child whose parent vanished.
const SPIN_MARGIN_SECS: f64 = 118.0;

pub fn run(emit: &mut dyn FnMut(Record)) {
    let loaded = load_only().map(|info| [("insns".to_string(), info.insns as f64)].into());
    run_skeleton(P, loaded, "samples", samples, emit);
}

/// Profiles a busy child (the agent as `--busy-spin`) for `opts.duration`, filtered
/// to its pid; returns the profile and the pid. Shared by the `samples` check and
/// the profiler fdinfo benchmark. When `opts.cpus` names exactly one CPU, the child
/// is pinned to it, so every sample there is one of the child.
pub(crate) fn profile_busy_child(opts: ProfileOptions) -> anyhow::Result<(::profiler::Profile, u32)> {
    // Spinning once spawn returns, so the sampling window does not start in the
    // dynamic loader (slow under TCG).
    let child = AgentChild::spawn(
        "--busy-spin",
        &format!("{}", opts.duration.as_secs_f64() + SPIN_MARGIN_SECS),
        Stdio::null(),
    )?;
    let pid = child.pid();
    if let Some([cpu]) = opts.cpus.as_deref() {
        pin(pid, *cpu).with_context(|| format!("pinning the busy child to CPU {cpu}"))?;
    }
    let prof = profile(&ProfileOptions { pid: Some(pid), ..opts })?;
    drop(child);
    Ok((prof, pid))
}

fn pin(pid: u32, cpu: u32) -> std::io::Result<()> {
    use nix::{sched::CpuSet, unistd::Pid};
    let mut set = CpuSet::new();
    set.set(cpu as usize)?;
    nix::sched::sched_setaffinity(Pid::from_raw(pid as libc::pid_t), &set)?;
    Ok(())
}

fn samples() -> anyhow::Result<(Verdict, BTreeMap<String, f64>, String)> {
    let opts = ProfileOptions { freq: FREQ, duration: Duration::from_secs_f64(SECONDS), ..Default::default() };
    let (prof, pid) = profile_busy_child(opts)?;

    let n = prof.samples.iter().filter(|s| s.pid == pid).count() as f64;
    let secs = prof.duration.as_secs_f64();
    let expected = FREQ as f64 * secs;
    let (lo, hi) = (BAND.0 * expected, BAND.1 * expected);
    let in_busy = prof.user_frames_named("km_busy_spin", Some(pid)) as f64;
    let folded = prof.folded_text();
    let top = folded.lines().next().unwrap_or("(no samples)").to_string();

    let mut metrics = BTreeMap::new();
    metrics.insert("samples".into(), n);
    metrics.insert("expected_samples".into(), expected);
    metrics.insert("samples_in_km_busy_spin".into(), in_busy);
    metrics.insert("seen".into(), prof.seen as f64);
    metrics.insert("dropped".into(), prof.dropped as f64);
    metrics.insert("cpus".into(), prof.cpus as f64);
    metrics.insert("seconds".into(), secs);
    let band = format!(
        "band {:.0}%..{:.0}% of {FREQ} Hz x {secs:.2} s x 1 busy CPU = {lo:.0}..{hi:.0}",
        BAND.0 * 100.0,
        BAND.1 * 100.0
    );
    let note = format!(
        "{n} samples ({band}), {in_busy} in km_busy_spin, {} dropped, {}; top stack: {top}",
        prof.dropped, prof.event
    );

    let mut problems = Vec::new();
    if n < lo || n > hi {
        problems.push(format!("{n} samples for pid {pid}, outside the {band}"));
    }
    if in_busy == 0.0 {
        problems.push(format!("km_busy_spin not in any symbolized user stack of pid {pid}; top stack: {top}"));
    }
    if prof.dropped != 0 {
        problems.push(format!("{} samples dropped by the ring buffer", prof.dropped));
    }
    let verdict = if problems.is_empty() { Verdict::Pass } else { Verdict::Fail(problems.join("; ")) };
    Ok((verdict, metrics, note))
}
