//! The FizzBuzzFibonacci XDP classifier: `load` and `classify`.
use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp};
use xdp_classifier::{drain, packet, packet_source, SourceAddr, OBJECT, PROGRAM};

use super::*;
use crate::insn_profile::PROFILE_RUNS;

const P: &str = "xdp_classifier";

pub fn run(emit: &mut dyn FnMut(Record)) {
    let loaded = load();
    let mut ebpf = match loaded {
        Ok((ebpf, metrics)) => {
            emit(check(P, "load", Verdict::Pass, metrics, String::new()));
            ebpf
        }
        Err(msg) => {
            let not_run = Verdict::Fail("not run: the program did not load".into());
            emit(check(P, "insn_profile", not_run, BTreeMap::new(), String::new()));
            return load_failed(P, "classify", msg, emit);
        }
    };
    let verdict = match classify(&mut ebpf) {
        Ok(()) => Verdict::Pass,
        Err(e) => Verdict::Fail(format!("{e:#}")),
    };
    emit(check(P, "classify", verdict, BTreeMap::new(), String::new()));
    emit(insn_profile(&ebpf));
}

/// The catalogue check `<program>::insn_profile`: instructions and cycles (and any
/// other counter the PMU offers) per run of the classifier on the benchmark packet,
/// measured in the kernel by fentry/fexit programs as `bpftool prog profile` does
/// ([`crate::insn_profile`]). Gated on `prog_profile` (trampolines and a hardware
/// counter): where that is missing the gate replaces this verdict with its reason.
///
/// Where the guest carries bpftool ([`crate::insn_profile::BPFTOOL`]), the same runs
/// are profiled by `bpftool prog profile` too, and the check fails unless both
/// count the same instructions per run within [`BPFTOOL_AGREEMENT_PCT`].
fn insn_profile(ebpf: &aya::Ebpf) -> Record {
    let result = (|| -> Result<_, String> {
        let prog: &Xdp = ebpf.program(PROGRAM).ok_or("no program")?.try_into().map_err(|e| format!("{e}"))?;
        let fd = prog.fd().map_err(|e| format!("{e}"))?;
        let data = packet(crate::bench::BENCH_OCTET);
        let drive = || {
            let opts = TestRunOptions { data_in: Some(&data), repeat: PROFILE_RUNS, ..Default::default() };
            prog.test_run(opts).map(|_| ()).map_err(|e| format!("BPF_PROG_TEST_RUN: {e}"))
        };
        let started = std::time::Instant::now();
        let ours = crate::insn_profile::profile(std::os::fd::AsFd::as_fd(fd), PROGRAM, drive)?;
        let bpftool = std::path::Path::new(crate::insn_profile::BPFTOOL);
        if !bpftool.exists() {
            return Ok((ours, None));
        }
        // bpftool loads and attaches what we did: as long as ours took, with room.
        let patience = (started.elapsed() * 50).max(std::time::Duration::from_secs(10));
        let id = prog.info().map_err(|e| format!("{e}"))?.id();
        let names: Vec<&str> = ours.counted.iter().map(|c| c.name).collect();
        let theirs = crate::insn_profile::bpftool_profile(bpftool, id, &names, patience, drive)
            .map_err(|e| format!("the cross-check with {}: {e}", bpftool.display()))?;
        Ok((ours, Some(theirs)))
    })();
    let (ours, theirs) = match result {
        Ok(r) => r,
        Err(e) => return check(P, "insn_profile", Verdict::Fail(e), BTreeMap::new(), String::new()),
    };
    let mut metrics = ours.metrics();
    let mut note = format!(
        "{}; BPF_PROG_TEST_RUN repeat {PROFILE_RUNS} on a 64-byte UDP packet from 10.0.0.{}",
        ours.describe(),
        crate::bench::BENCH_OCTET
    );
    let mut verdict = Verdict::Pass;
    match theirs {
        None => note.push_str(&format!("; no {} in this guest for a cross-check", crate::insn_profile::BPFTOOL)),
        Some(theirs) => {
            for (name, per_run) in &theirs {
                metrics.insert(format!("bpftool_{name}_per_run"), *per_run);
                let mine = ours.get(name).map(|c| km_protocol::stats::Summary::of(&c.per_run).median).unwrap_or(0.0);
                let diff = (mine - per_run) / per_run * 100.0;
                note.push_str(&format!("; bpftool prog profile: {name} {per_run:.1}/run ({diff:+.2}% from ours)"));
                if name == "instructions" && diff.abs() > BPFTOOL_AGREEMENT_PCT {
                    verdict = Verdict::Fail(format!(
                        "instructions per run: ours {mine:.0}, bpftool prog profile {per_run:.1} ({diff:+.2}%, more than ±{BPFTOOL_AGREEMENT_PCT}%)"
                    ));
                }
            }
        }
    }
    check(P, "insn_profile", verdict, metrics, note)
}

/// How far our instructions per run may be from bpftool's (percent).
pub const BPFTOOL_AGREEMENT_PCT: f64 = 1.0;

fn load() -> Result<(aya::Ebpf, BTreeMap<String, f64>), String> {
    let mut ebpf = aya::Ebpf::load(OBJECT).map_err(|e| format!("loading the object: {e}"))?;
    let prog: &mut Xdp = ebpf
        .program_mut(PROGRAM)
        .ok_or("program xdp_classifier missing from the object")?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    if let Err(e) = prog.load() {
        return Err(match e {
            ProgramError::LoadError { io_error, verifier_log } => format!(
                "verifier rejected {PROGRAM}: {io_error}\n--- verifier log (tail) ---\n{}",
                tail(&verifier_log.to_string(), LOG_TAIL_LINES)
            ),
            other => format!("loading {PROGRAM}: {other}"),
        });
    }
    let mut metrics = BTreeMap::new();
    if let Ok(info) = prog.info() {
        if let Some(n) = info.size_translated() {
            metrics.insert("xlated_bytes".into(), n as f64);
        }
        metrics.insert("jited_bytes".into(), info.size_jitted() as f64);
        if let Some(n) = info.verified_instruction_count() {
            metrics.insert("verified_insns".into(), n as f64);
        }
    }
    Ok((ebpf, metrics))
}

/// Every last octet through BPF_PROG_TEST_RUN; verdicts and map entries must
/// equal the userspace oracle exactly.
fn classify(ebpf: &mut aya::Ebpf) -> anyhow::Result<()> {
    drain(ebpf)?;
    let prog: &Xdp = ebpf.program(PROGRAM).expect("loaded above").try_into()?;
    let mut wrong = Vec::new();
    for octet in 0..=255u8 {
        let data = packet(octet);
        let mut out = [0u8; 128];
        let r =
            prog.test_run(TestRunOptions { data_in: Some(&data), data_out: Some(&mut out), ..Default::default() })?;
        let want = SourceAddr::new(packet_source(octet)).verdict();
        if r.return_value != want {
            wrong.push(format!("10.0.0.{octet}: verdict {} want {want}", r.return_value));
        }
    }
    let map = drain(ebpf)?;
    for octet in 0..=255u8 {
        let addr = packet_source(octet);
        let want = SourceAddr::new(addr);
        match map.get(&addr).map(|v| SourceAddr::from_u32(*v)) {
            Some(Some(got)) if got == want => {}
            Some(got) => wrong.push(format!("10.0.0.{octet}: map says {got:?}, want {want:?}")),
            None => wrong.push(format!("10.0.0.{octet}: no map entry")),
        }
    }
    if map.len() != 256 {
        wrong.push(format!("map holds {} entries, want 256", map.len()));
    }
    if !wrong.is_empty() {
        anyhow::bail!(
            "{} mismatches against SourceAddr::new:\n{}",
            wrong.len(),
            wrong[..wrong.len().min(20)].join("\n")
        );
    }
    Ok(())
}
