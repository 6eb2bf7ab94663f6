//! The USDT tracer: `load` and `hits`.
//!
//! `hits` re-executes the agent (which links usdt-tracer and so carries
//! test_grp:test_idx in its .note.stapsdt) as `--usdt-loop N`, waiting on its
//! standard input; attaches to the agent binary filtered to that child's pid;
//! releases it; and requires exactly N hits with arg0 summing to N(N-1)/2.
use std::{
    io::Write as _,
    process::Stdio,
    time::{Duration, Instant},
};

use usdt_tracer::{load_only, trace, verify_loop, UsdtReport};

use super::*;

const P: &str = "usdt_tracer";
const N: u32 = 1000;
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(emit: &mut dyn FnMut(Record)) {
    let loaded = load_only().map(|info| [("insns".to_string(), info.insns as f64)].into());
    run_skeleton(P, loaded, "hits", hits, emit);
}

/// One traced run of the agent as `--usdt-loop n`: the probe attached to the agent
/// binary for that child's pid only, the child released and waited for. Shared by
/// the `hits` check and the USDT fdinfo benchmark.
pub(crate) struct TracedRun {
    pub report: UsdtReport,
    pub pid: i32,
    pub exe: std::path::PathBuf,
    pub loop_secs: f64,
}

pub(crate) fn traced_child(n: u32) -> anyhow::Result<TracedRun> {
    // Mapped and waiting on its stdin once spawn returns: the probe can be placed.
    let mut agent = AgentChild::spawn("--usdt-loop", &n.to_string(), Stdio::piped())?;
    let pid = agent.pid() as i32;
    let exe = agent.exe.clone();
    let child = &mut agent.child;
    let mut loop_secs = 0.0;
    let traced = trace(&exe, Some(pid), || {
        let start = Instant::now();
        // Release the child: it runs the loop once its stdin yields a byte.
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(b"go\n")?;
        drop(stdin);
        loop {
            if let Some(status) = child.try_wait()? {
                anyhow::ensure!(status.success(), "the --usdt-loop child exited with {status}");
                break;
            }
            if start.elapsed() > CHILD_TIMEOUT {
                anyhow::bail!("the --usdt-loop child did not finish in {CHILD_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        loop_secs = start.elapsed().as_secs_f64();
        Ok(())
    });
    drop(agent);
    Ok(TracedRun { report: traced?, pid, exe, loop_secs })
}

fn hits() -> anyhow::Result<(Verdict, BTreeMap<String, f64>, String)> {
    let TracedRun { report, pid, exe, loop_secs } = traced_child(N)?;
    let want_sum = N as u64 * (N as u64 - 1) / 2;
    let mut metrics = BTreeMap::new();
    metrics.insert("hits".into(), report.hits as f64);
    metrics.insert("sum".into(), report.sum as f64);
    metrics.insert("expected_hits".into(), N as f64);
    metrics.insert("dropped".into(), report.dropped as f64);
    metrics.insert("loop_seconds".into(), loop_secs);
    let note = format!(
        "{} hits (want {N}), sum {} (want {want_sum}), traced binary {}",
        report.hits,
        report.sum,
        exe.display()
    );
    let verdict = match verify_loop(&report, N) {
        Ok(()) => Verdict::Pass,
        Err(e) => Verdict::Fail(format!("pid {pid}, binary {}: {e}", exe.display())),
    };
    Ok((verdict, metrics, note))
}
