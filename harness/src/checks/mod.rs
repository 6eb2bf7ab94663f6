//! The checks: what runs inside each kernel, and their names as trials.
//!
//! The catalogue is data shared by both sides: the host lists trials from it
//! without booting anything, and the guest agent runs it.
use std::collections::BTreeMap;

use crate::{features::Probe, protocol::{Record, Verdict}};

/// One cell kind of the matrix: `<kernel>::<program>::<check>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckId {
    pub program: &'static str,
    pub check: &'static str,
    /// Kernel features (by name, see `features`) the check cannot run without.
    pub needs: &'static [&'static str],
}

pub const CATALOGUE: &[CheckId] = &[
    CheckId { program: "xdp_classifier", check: "load", needs: &[] },
    CheckId { program: "xdp_classifier", check: "classify", needs: &["prog_test_run"] },
    // Instructions/cycles per run (`bpftool prog profile`): fentry/fexit + hardware PMU.
    CheckId { program: "xdp_classifier", check: "insn_profile", needs: &["prog_profile"] },
    CheckId { program: "xdp_classifier_loop", check: "load", needs: &["bpf_loop"] },
    CheckId { program: "xdp_classifier_loop", check: "classify", needs: &["bpf_loop", "prog_test_run"] },
    CheckId { program: "profiler", check: "load", needs: &["perf_event_prog", "ringbuf"] },
    CheckId { program: "profiler", check: "samples", needs: &["perf_event_prog", "ringbuf"] },
    CheckId { program: "usdt_tracer", check: "load", needs: &["ringbuf", "usdt"] },
    CheckId { program: "usdt_tracer", check: "hits", needs: &["ringbuf", "usdt"] },
];

pub use libbpf_log::{capture as capture_libbpf_log, tail};

/// The shape of the skeleton-based programs (profiler, USDT tracer): a `load`
/// check from the skeleton's load, then one behaviour check that runs only if the
/// program loaded.
pub(crate) fn run_skeleton(
    program: &str,
    loaded: Result<BTreeMap<String, f64>, (anyhow::Error, String)>,
    behaviour: &str,
    run: fn() -> anyhow::Result<(Verdict, BTreeMap<String, f64>, String)>,
    emit: &mut dyn FnMut(Record),
) {
    match loaded {
        Ok(metrics) => emit(check(program, "load", Verdict::Pass, metrics, String::new())),
        Err((e, log)) => {
            let msg = format!("{e:#}\n--- libbpf log (tail) ---\n{}", tail(&log, LOG_TAIL_LINES));
            emit(check(program, "load", Verdict::Fail(msg), BTreeMap::new(), String::new()));
            emit(check(program, behaviour, Verdict::Fail("not run: the program did not load".into()), BTreeMap::new(), String::new()));
            return;
        }
    }
    let (verdict, metrics, note) = run().unwrap_or_else(|e| (Verdict::Fail(format!("{e:#}")), BTreeMap::new(), String::new()));
    emit(check(program, behaviour, verdict, metrics, note));
}

/// The agent re-executed in one of its hidden modes (`--busy-spin`, `--usdt-loop`)
/// as the process a check observes. [`AgentChild::spawn`] returns only once the child
/// said `ready`: `spawn()` itself returns when exec has begun, before the binary is
/// mapped and the loader has run, and both the profiler (its sampling window) and
/// libbpf's USDT attach (it reads /proc/<pid>/maps; before 5.15, without BPF
/// cookies, it finds the probe by that address: every hit was -ESRCH on 5.10) need
/// the finished process. Killed and reaped when dropped, whatever happens in between.
pub(crate) struct AgentChild {
    pub child: std::process::Child,
    pub exe: std::path::PathBuf,
}

impl AgentChild {
    pub fn spawn(mode: &str, arg: &str, stdin: std::process::Stdio) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let exe = std::env::current_exe()?;
        let child = std::process::Command::new(&exe)
            .args([mode, arg])
            .stdin(stdin)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("re-executing the agent {} as {mode}", exe.display()))?;
        let mut me = Self { child, exe };
        let mut ready = String::new();
        if let Some(out) = me.child.stdout.take() {
            std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut ready)?;
        }
        anyhow::ensure!(ready.trim() == "ready", "the {mode} child exited before it was ready");
        Ok(me)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for AgentChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines of verifier log kept when a program is rejected.
const LOG_TAIL_LINES: usize = 25;

pub(crate) fn check(program: &str, check: &str, verdict: Verdict, metrics: BTreeMap<String, f64>, note: String) -> Record {
    Record::Check { program: program.into(), check: check.into(), verdict, metrics, note }
}

/// Guest side: runs every check and hands each record to `emit` as soon as it exists,
/// so a crash later on still leaves the earlier results with the host.
///
/// A check whose `needs` name a feature this kernel lacks is reported ignored with
/// the reason (`needs bpf_loop, 5.17`): when every check of a program is gated the
/// program is not even loaded; otherwise the gated checks' verdicts are replaced.
pub fn run_all(
    emit: &mut dyn FnMut(Record),
    features: &BTreeMap<String, Probe>,
    byo: &[crate::byo::GuestProgram],
    byo_dir: &std::path::Path,
    wanted: &dyn Fn(&str) -> bool,
) {
    type Run = fn(&mut dyn FnMut(Record));
    // (trial program name, runner, (object, program name inside it) for verifier insight)
    let programs: &[(&str, Run, (&[u8], &str))] = &[
        ("xdp_classifier", xdp::run, (xdp_classifier::OBJECT, xdp_classifier::PROGRAM)),
        ("xdp_classifier_loop", xdp_loop::run, (xdp_loop::OBJECT, "xdp_classifier_loop")),
        ("profiler", profiler::run, (::profiler::OBJECT, "profile")),
        ("usdt_tracer", usdt::run, (::usdt_tracer::OBJECT, "test_idx")),
    ];
    for (program, run, (object, prog_name)) in programs.iter().filter(|p| wanted(p.0)) {
        let checks: Vec<&CheckId> = CATALOGUE.iter().filter(|c| c.program == *program).collect();
        let gated: BTreeMap<&str, String> = checks.iter().filter_map(|c| Some((c.check, gate(c, features)?))).collect();
        if gated.len() == checks.len() {
            for c in &checks {
                emit(check(program, c.check, Verdict::Ignored(gated[c.check].clone()), BTreeMap::new(), String::new()));
            }
            continue;
        }
        run(&mut |mut r: Record| {
            if let Record::Check { check, verdict, metrics, note, .. } = &mut r {
                if let Some(reason) = gated.get(check.as_str()) {
                    *verdict = Verdict::Ignored(reason.clone());
                } else if check == "load" {
                    add_verifier_insight(object, prog_name, verdict, metrics, note);
                }
            }
            emit(r)
        });
    }
    for p in byo {
        byo::run(p, byo_dir, features, emit);
    }
}

/// Every `load` record carries what the verifier did (instructions processed,
/// states, sizes); a rejection also names the instruction it stopped at.
fn add_verifier_insight(object: &[u8], program: &str, verdict: &mut Verdict, metrics: &mut BTreeMap<String, f64>, note: &mut String) {
    let insight = crate::verifier::inspect(object, program);
    for (k, v) in insight.metrics() {
        metrics.entry(k).or_insert(v);
    }
    if !note.is_empty() {
        note.push('\n');
    }
    note.push_str(&insight.summary());
    if let (Verdict::Fail(msg), Some(insn)) = (verdict, &insight.failing_insn) {
        msg.push_str(&format!("\nfailing instruction: {insn}"));
    }
}

/// The checks of a manifest program: `load`, and `test_run` when it has packets.
/// Names are leaked once per program so they fit the `'static` catalogue type.
pub fn byo_checks(p: &crate::byo::GuestProgram) -> Vec<CheckId> {
    let program: &'static str = Box::leak(p.name.clone().into_boxed_str());
    let needs: &'static [&'static str] =
        Box::leak(p.needs.iter().map(|n| &*Box::leak(n.clone().into_boxed_str())).collect::<Vec<&'static str>>().into_boxed_slice());
    let mut out = vec![CheckId { program, check: "load", needs }];
    if !p.packets.is_empty() {
        let mut test_needs = needs.to_vec();
        test_needs.push("prog_test_run");
        out.push(CheckId { program, check: "test_run", needs: Box::leak(test_needs.into_boxed_slice()) });
    }
    out
}

/// Why `c` cannot run here, if a feature it needs was probed absent or unavailable.
pub fn gate(c: &CheckId, features: &BTreeMap<String, Probe>) -> Option<String> {
    c.needs.iter().find_map(|id| {
        let f = crate::features::by_id(id)
            .unwrap_or_else(|| panic!("check {}::{} needs unknown feature {id}", c.program, c.check));
        match features.get(*id) {
            Some(Probe::Present(_)) => None,
            Some(Probe::Unavailable(why)) => Some(format!("{} ({why})", f.need_reason())),
            _ => Some(f.need_reason()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_need_is_a_catalogued_feature() {
        for c in CATALOGUE {
            for n in c.needs {
                assert!(crate::features::by_id(n).is_some(), "{}::{} needs unknown feature {n}", c.program, c.check);
            }
        }
    }

    #[test]
    fn gate_names_the_missing_feature_and_version() {
        let c = CATALOGUE.iter().find(|c| c.program == "xdp_classifier_loop" && c.check == "load").unwrap();
        let mut f = BTreeMap::new();
        f.insert("bpf_loop".to_string(), Probe::Absent("no".into()));
        assert_eq!(gate(c, &f).as_deref(), Some("needs bpf_loop, 5.17"));
        f.insert("bpf_loop".to_string(), Probe::Present("yes".into()));
        assert_eq!(gate(c, &f), None);
    }
}

pub(crate) mod profiler;
pub(crate) mod usdt;
mod byo;
mod xdp;
mod xdp_loop;
