//! The checks: what runs inside each kernel. Their names and needs are data in
//! `km_protocol::checks::CATALOGUE`, which the host lists trials from.
use std::collections::BTreeMap;

pub use km_protocol::record::check;
use km_protocol::{
    byo::GuestProgram,
    checks::{gate, CheckId, CATALOGUE},
    Probe, Record, Verdict,
};

pub use libbpf_log::{capture as capture_libbpf_log, tail};

/// Numbers a check measured, by name.
pub(crate) type Metrics = BTreeMap<String, f64>;
/// What a behaviour check found: its verdict, numbers and note.
pub(crate) type Finding = anyhow::Result<(Verdict, Metrics, String)>;

/// The shape of the skeleton-based programs (profiler, USDT tracer): a `load`
/// check from the skeleton's load, then one behaviour check that runs only if the
/// program loaded.
pub(crate) fn run_skeleton(
    program: &str,
    loaded: Result<Metrics, (anyhow::Error, String)>,
    behaviour: &str,
    run: fn() -> Finding,
    emit: &mut dyn FnMut(Record),
) {
    match loaded {
        Ok(metrics) => emit(check(program, "load", Verdict::Pass, metrics, String::new())),
        Err((e, log)) => {
            let msg = format!("{e:#}\n--- libbpf log (tail) ---\n{}", tail(&log, LOG_TAIL_LINES));
            return load_failed(program, behaviour, msg, emit);
        }
    }
    let (verdict, metrics, note) =
        run().unwrap_or_else(|e| (Verdict::Fail(format!("{e:#}")), BTreeMap::new(), String::new()));
    emit(check(program, behaviour, verdict, metrics, note));
}

/// A program that did not load: its `load` fails with `msg`, and its behaviour
/// check says it did not run (rather than having no record at all).
pub(crate) fn load_failed(program: &str, behaviour: &str, msg: String, emit: &mut dyn FnMut(Record)) {
    emit(check(program, "load", Verdict::Fail(msg), BTreeMap::new(), String::new()));
    let not_run = Verdict::Fail("not run: the program did not load".into());
    emit(check(program, behaviour, not_run, BTreeMap::new(), String::new()));
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

/// Guest side: runs every check and hands each record to `emit` as soon as it exists,
/// so a crash later on still leaves the earlier results with the host.
///
/// A check whose `needs` name a feature this kernel lacks is reported ignored with
/// the reason (`needs bpf_loop, 5.17`): when every check of a program is gated the
/// program is not even loaded; otherwise the gated checks' verdicts are replaced.
pub fn run_all(
    emit: &mut dyn FnMut(Record),
    features: &BTreeMap<String, Probe>,
    byo: &[GuestProgram],
    byo_dir: &std::path::Path,
    wanted: &dyn Fn(&str) -> bool,
    bench: Option<km_protocol::switches::BenchConfig>,
) {
    type Run = fn(&mut dyn FnMut(Record));
    // (trial program name, runner, (object, program name inside it) for verifier insight)
    type Program = (&'static str, Run, (&'static [u8], &'static str));
    let programs: &[Program] = &[
        ("xdp_classifier", xdp::run, (xdp_classifier::OBJECT, xdp_classifier::PROGRAM)),
        ("xdp_classifier_loop", xdp_loop::run, (LOOP_OBJECT, "xdp_classifier_loop")),
        ("profiler", profiling::run, (::profiler::OBJECT, "profile")),
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
        byo::run(p, byo_dir, features, bench, emit);
    }
}

/// Every `load` record carries what the verifier did (instructions processed,
/// states, sizes); a rejection also names the instruction it stopped at.
fn add_verifier_insight(
    object: &[u8],
    program: &str,
    verdict: &mut Verdict,
    metrics: &mut BTreeMap<String, f64>,
    note: &mut String,
) {
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

mod byo;
pub(crate) mod profiling;
pub(crate) mod usdt;
mod xdp;
mod xdp_loop;

pub(crate) use xdp_loop::OBJECT as LOOP_OBJECT;
