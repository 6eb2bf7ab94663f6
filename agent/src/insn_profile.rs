//! Hardware counters per run of a BPF program: what `bpftool prog profile` does
//! (fentry/fexit programs attached to the target by its fd, reading perf counters
//! with `bpf_perf_event_read_value`), with every run kept instead of a sum
//! (programs-ebpf/insn-profile/insn_profile.bpf.c), loaded with libbpf-rs as
//! bpftool loads its profiler with libbpf.
//!
//! The counters count kernel mode only (`exclude_user`, as bpftool's), one per CPU
//! and metric. Under QEMU/TCG an arm64 guest's PMU (armv8_pmuv3) counts cycles
//! always and instructions only under `-icount`, where instruction counts are exact
//! and the same on every run of an unchanged program.
use std::{
    collections::BTreeMap,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

use libbpf_rs::{MapCore as _, MapFlags, ObjectBuilder};
use perf_event_open_sys as perf;

use km_protocol::stats::Summary;

static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/insn_profile.bpf.o"));

/// As in the BPF object.
const MAX_METRICS: usize = 4;
pub const MAX_RUNS: u32 = 4096;
/// How many runs a profile takes (one BPF_PROG_TEST_RUN with this repeat): the
/// per-run counts' median and quartiles come from these.
pub const PROFILE_RUNS: u32 = 1000;

/// A hardware event: its name (as `bpftool prog profile` names it), perf type and config.
pub struct Event {
    pub name: &'static str,
    type_: u32,
    config: u64,
}

/// The hardware events asked for, in bpftool's order (the order of the readings
/// decides which of them each window contains); those the PMU does not offer are
/// reported unavailable, with the reason, and the others still measured.
pub const METRICS: &[Event] = &[
    Event {
        name: "cycles",
        type_: perf::bindings::PERF_TYPE_HARDWARE,
        config: perf::bindings::PERF_COUNT_HW_CPU_CYCLES as u64,
    },
    INSTRUCTIONS,
    Event {
        name: "llc_misses",
        type_: perf::bindings::PERF_TYPE_HW_CACHE,
        config: perf::bindings::PERF_COUNT_HW_CACHE_LL as u64
            | (perf::bindings::PERF_COUNT_HW_CACHE_OP_READ as u64) << 8
            | (perf::bindings::PERF_COUNT_HW_CACHE_RESULT_MISS as u64) << 16,
    },
];

pub const INSTRUCTIONS: Event = Event {
    name: "instructions",
    type_: perf::bindings::PERF_TYPE_HARDWARE,
    config: perf::bindings::PERF_COUNT_HW_INSTRUCTIONS as u64,
};

/// One metric over the profiled runs.
#[derive(Debug, Clone)]
pub struct Counted {
    pub name: &'static str,
    /// Per run, scaled where the counter was multiplexed.
    pub per_run: Vec<f64>,
    /// Runs whose counter ran for less time than it was enabled (multiplexed):
    /// their values are scaled by enabled/running.
    pub scaled_runs: usize,
}

/// What a profile measured.
#[derive(Debug, Clone)]
pub struct Profile {
    pub counted: Vec<Counted>,
    /// Metrics the PMU would not open, with why.
    pub unavailable: Vec<(&'static str, String)>,
}

impl Profile {
    pub fn get(&self, name: &str) -> Option<&Counted> {
        self.counted.iter().find(|c| c.name == name)
    }

    /// `<metric>_per_run` (median) with its spread (`_q1`, `_q3`, `_min`, `_max`),
    /// `<metric>_scaled_runs`, and `profiled_runs`, for a record's metrics.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        for c in &self.counted {
            let s = Summary::of(&c.per_run);
            m.insert(format!("{}_per_run", c.name), s.median);
            m.insert(format!("{}_q1", c.name), s.q1);
            m.insert(format!("{}_q3", c.name), s.q3);
            m.insert(format!("{}_min", c.name), s.min);
            m.insert(format!("{}_max", c.name), s.max);
            m.insert(format!("{}_scaled_runs", c.name), c.scaled_runs as f64);
        }
        if let Some(c) = self.counted.first() {
            m.insert("profiled_runs".into(), c.per_run.len() as f64);
        }
        m
    }

    /// One line per metric: median and spread, and what was not measured.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .counted
            .iter()
            .map(|c| {
                let s = Summary::of(&c.per_run);
                let scaled = if c.scaled_runs > 0 {
                    format!(", SCALED in {} runs (counter multiplexed)", c.scaled_runs)
                } else {
                    String::new()
                };
                format!(
                    "{} {:.0}/run median (Q1 {:.0}, Q3 {:.0}, min {:.0}, max {:.0}; {} runs{scaled})",
                    c.name,
                    s.median,
                    s.q1,
                    s.q3,
                    s.min,
                    s.max,
                    c.per_run.len()
                )
            })
            .collect();
        parts.extend(self.unavailable.iter().map(|(n, why)| format!("{n} unavailable ({why})")));
        parts.join("; ")
    }
}

/// Opens a kernel-mode counter of `event` on `cpu` (any task), as bpftool does.
pub fn open_counter(event: &Event, cpu: i32) -> Result<OwnedFd, String> {
    let mut attr = perf::bindings::perf_event_attr {
        type_: event.type_,
        size: perf::bindings::PERF_ATTR_SIZE_VER5,
        config: event.config,
        ..Default::default()
    };
    attr.set_exclude_user(1);
    // SAFETY: `attr` is an initialised perf_event_attr, alive for the call, whose
    // `size` is within the struct; a counter of any task on `cpu`, no group, no flags.
    let fd = unsafe { perf::perf_event_open(&mut attr, -1, cpu, -1, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: a non-negative return of perf_event_open is a new fd that only we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Profiles `target` (a loaded program whose BTF names its function `func`)
/// over the runs `drive` makes (BPF_PROG_TEST_RUN with a repeat count, at most
/// [`MAX_RUNS`] are kept). Fails when no counter opens, the profiler does not
/// load or attach, or no run was recorded.
pub fn profile(
    target: BorrowedFd<'_>,
    func: &str,
    drive: impl FnOnce() -> Result<(), String>,
) -> Result<Profile, String> {
    let cpus = libbpf_rs::num_possible_cpus().map_err(|e| format!("counting CPUs: {e}"))?;
    // Counters first: without them nothing is worth loading.
    let (mut names, mut fds, mut unavailable) = (Vec::new(), Vec::new(), Vec::new());
    for event in METRICS.iter().take(MAX_METRICS) {
        match (0..cpus).map(|c| open_counter(event, c as i32)).collect::<Result<Vec<_>, _>>() {
            Ok(per_cpu) => {
                names.push(event.name);
                fds.push(per_cpu);
            }
            Err(e) => unavailable.push((event.name, format!("perf_event_open: {e}"))),
        }
    }
    if names.is_empty() {
        let why: Vec<String> = unavailable.iter().map(|(n, e)| format!("{n}: {e}")).collect();
        return Err(format!("no hardware counter opens ({})", why.join("; ")));
    }

    let mut open = ObjectBuilder::default().open_memory(OBJECT).map_err(|e| format!("opening the profiler: {e}"))?;
    for mut prog in open.progs_mut() {
        prog.set_attach_target(target.as_raw_fd(), Some(func.to_string()))
            .map_err(|e| format!("profiler attach target {func}: {e}"))?;
    }
    for mut map in open.maps_mut() {
        if map.name() == "events" {
            map.set_max_entries((cpus * names.len()) as u32).map_err(|e| format!("sizing the events map: {e}"))?;
        } else if map.name().to_string_lossy().ends_with(".rodata") {
            // `num_cpu` then `num_metric`, two u32s (the object's read-only data).
            let data = map.initial_value_mut().ok_or("the profiler's .rodata has no initial value")?;
            data[..4].copy_from_slice(&(cpus as u32).to_ne_bytes());
            data[4..8].copy_from_slice(&(names.len() as u32).to_ne_bytes());
        }
    }
    let (loaded, log) = libbpf_log::capture(|| open.load());
    let obj = loaded.map_err(|e| format!("loading the profiler (fentry/fexit on {func}): {e}\n{}", log.trim()))?;
    let map = |name: &str| obj.maps().find(|m| m.name() == name).ok_or(format!("no map {name} in the profiler"));
    let (events, recorded, runs) = (map("events")?, map("recorded")?, map("runs")?);
    for (i, per_cpu) in fds.iter().enumerate() {
        for (c, fd) in per_cpu.iter().enumerate() {
            let k = (c + i * cpus) as u32;
            events
                .update(&k.to_ne_bytes(), &(fd.as_raw_fd() as u32).to_ne_bytes(), MapFlags::ANY)
                .map_err(|e| format!("events[{k}]: {e}"))?;
        }
    }
    let links = obj
        .progs_mut()
        .map(|p| p.attach_trace().map_err(|e| format!("attaching {} to {func}: {e}", p.name().to_string_lossy())))
        .collect::<Result<Vec<_>, _>>()?;
    drive()?;
    drop(links);

    let recorded = recorded
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
        .map_err(|e| format!("recorded[0]: {e}"))?
        .map(|v| u32::from_ne_bytes(v[..4].try_into().expect("a u32 value")))
        .unwrap_or(0);
    if recorded == 0 {
        return Err(format!("the profiler attached to {func} but recorded no run"));
    }
    let mut counted: Vec<Counted> =
        names.iter().map(|n| Counted { name: n, per_run: Vec::new(), scaled_runs: 0 }).collect();
    for r in 0..recorded.min(MAX_RUNS) {
        for (i, c) in counted.iter_mut().enumerate() {
            let key = r * MAX_METRICS as u32 + i as u32;
            let v = runs
                .lookup(&key.to_ne_bytes(), MapFlags::ANY)
                .map_err(|e| format!("runs[{key}]: {e}"))?
                .ok_or(format!("runs[{key}] missing"))?;
            let word = |n: usize| u64::from_ne_bytes(v[n * 8..n * 8 + 8].try_into().expect("a u64"));
            let (counter, enabled, running) = (word(0), word(1), word(2));
            let value = if running > 0 && running < enabled {
                c.scaled_runs += 1;
                counter as f64 * enabled as f64 / running as f64
            } else {
                counter as f64
            };
            c.per_run.push(value);
        }
    }
    Ok(Profile { counted, unavailable })
}

/// Where a guest may carry bpftool for [`bpftool_profile`] (the arm64 benchmark
/// test puts Debian's there; a user's guest files can too).
pub const BPFTOOL: &str = "/usr/sbin/bpftool";

/// What `bpftool prog profile id ID ... METRICS` counted per run of program `id`
/// over the runs `drive` makes while bpftool is attached: (metric, per run), for
/// the cross-check of [`profile`] against the tool it imitates. bpftool is started
/// with a long duration, `drive` runs once both its programs are attached (their
/// links exist), and SIGINT makes it print what it counted and exit. `patience`
/// bounds the wait for the attach.
pub fn bpftool_profile(
    bpftool: &std::path::Path,
    id: u32,
    metrics: &[&str],
    patience: std::time::Duration,
    drive: impl FnOnce() -> Result<(), String>,
) -> Result<Vec<(String, f64)>, String> {
    use std::process::{Command, Stdio};
    let mut child = Command::new(bpftool)
        .args(["-j", "prog", "profile", "id", &id.to_string(), "duration", "3600"])
        .args(metrics)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {}: {e}", bpftool.display()))?;
    let started = std::time::Instant::now();
    let attached = loop {
        // bpftool's profiler programs are fentry_XXX and fexit_XXX.
        let ids: Vec<u32> = libbpf_rs::query::ProgInfoIter::default()
            .filter(|p| p.name == "fentry_XXX" || p.name == "fexit_XXX")
            .map(|p| p.id)
            .collect();
        let links = libbpf_rs::query::LinkInfoIter::default().filter(|l| ids.contains(&l.prog_id)).count();
        if ids.len() == 2 && links == 2 {
            break Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("bpftool exited ({status}) before it attached"));
        }
        if started.elapsed() > patience {
            break Err(format!("bpftool did not attach within {:.1} s", patience.as_secs_f64()));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let driven = attached.and_then(|()| drive());
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
    let out = child.wait_with_output().map_err(|e| format!("waiting for bpftool: {e}"))?;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    driven.map_err(|e| format!("{e}; bpftool said: {} {}", stdout.trim(), stderr.trim()))?;
    parse_bpftool_profile(&stdout, metrics)
        .ok_or_else(|| format!("bpftool's output has no counts: {} {}", stdout.trim(), stderr.trim()))
}

/// Per-run values from `bpftool -j prog profile` output: an array with one
/// object per metric (`metric`, `run_cnt`, `value`, `enabled`, `running`).
fn parse_bpftool_profile(json: &str, metrics: &[&str]) -> Option<Vec<(String, f64)>> {
    let v: serde_json::Value = serde_json::from_str(json.trim()).ok()?;
    let list = v.as_array()?;
    metrics
        .iter()
        .map(|m| {
            let entry = list.iter().find(|e| e.get("metric").and_then(|n| n.as_str()) == Some(*m))?;
            let runs = entry.get("run_cnt")?.as_f64().filter(|n| *n > 0.0)?;
            Some((m.to_string(), entry.get("value")?.as_f64()? / runs))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpftool_json_per_run() {
        let out = r#"[{"metric":"cycles","run_cnt":1000,"value":1334000,"enabled":5,"running":5},{"metric":"instructions","run_cnt":1000,"value":1335000,"enabled":5,"running":5}]"#;
        assert_eq!(
            parse_bpftool_profile(out, &["instructions", "cycles"]).unwrap(),
            [("instructions".to_string(), 1335.0), ("cycles".to_string(), 1334.0)]
        );
        assert!(parse_bpftool_profile(out, &["llc_misses"]).is_none());
        assert!(parse_bpftool_profile(r#"[{"metric":"cycles","run_cnt":0,"value":0}]"#, &["cycles"]).is_none());
        assert!(parse_bpftool_profile("Error: failed", &["cycles"]).is_none());
    }
}
