//! The FizzBuzzFibonacci XDP classifier: `load` and `classify`.
use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp};
use xdp_classifier::{drain, packet, packet_source, SourceAddr, OBJECT, PROGRAM};

use super::*;

const P: &str = "xdp_classifier";

pub fn run(emit: &mut dyn FnMut(Record)) {
    // Gated on a hardware PMU; the gate replaces this verdict with its reason.
    emit(insn_profile_record(P));
    let loaded = load();
    let mut ebpf = match loaded {
        Ok((ebpf, metrics)) => {
            emit(check(P, "load", Verdict::Pass, metrics, String::new()));
            ebpf
        }
        Err(msg) => return load_failed(P, "classify", msg, emit),
    };
    let verdict = match classify(&mut ebpf) {
        Ok(()) => Verdict::Pass,
        Err(e) => Verdict::Fail(format!("{e:#}")),
    };
    emit(check(P, "classify", verdict, BTreeMap::new(), String::new()));
}

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

/// The catalogue check `<program>::insn_profile`: instruction counts per run need
/// `bpftool prog profile` (fentry/fexit + hardware counters). The gate on
/// `prog_profile` replaces this verdict with the missing-PMU reason wherever there is
/// no PMU (everywhere this project has run); where there is one, the agent still
/// has no profiler of its own, and says so rather than invent numbers.
pub fn insn_profile_record(program: &str) -> Record {
    check(
        program,
        "insn_profile",
        Verdict::Ignored("instruction-count profiling is not implemented in the agent; run `bpftool prog profile id <id> duration 5 instructions cycles` on this machine".into()),
        BTreeMap::new(),
        String::new(),
    )
}
