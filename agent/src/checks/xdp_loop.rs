//! The bpf_loop variant of the classifier (C, loaded with libbpf-rs, which handles
//! the callback's BPF_PSEUDO_FUNC relocation): `load` and `classify`.
use libbpf_rs::{ObjectBuilder, ProgramInput};
use xdp_classifier::{packet, packet_source, SourceAddr};

use super::*;

const P: &str = "xdp_classifier_loop";
pub(crate) static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xdp_classifier_loop.bpf.o"));

pub fn run(emit: &mut dyn FnMut(Record)) {
    let (loaded, log) = capture_libbpf_log(|| ObjectBuilder::default().open_memory(OBJECT).and_then(|o| o.load()));
    let obj = match loaded {
        Ok(obj) => obj,
        Err(e) => {
            let msg = format!(
                "libbpf could not load {P}: {e}\n--- libbpf/verifier log (tail) ---\n{}",
                tail(&log, LOG_TAIL_LINES)
            );
            return load_failed(P, "classify", msg, emit);
        }
    };
    emit(check(P, "load", Verdict::Pass, BTreeMap::new(), String::new()));
    let Some(prog) = obj.progs_mut().find(|p| p.name() == P) else {
        emit(check(
            P,
            "classify",
            Verdict::Fail(format!("no program {P} in the object")),
            BTreeMap::new(),
            String::new(),
        ));
        return;
    };
    let mut wrong = Vec::new();
    for octet in 0..=255u8 {
        let data = packet(octet);
        let input = ProgramInput { data_in: Some(&data), repeat: 1, ..Default::default() };
        let want = SourceAddr::new(packet_source(octet)).verdict();
        match prog.test_run(input) {
            Ok(out) if out.return_value == want => {}
            Ok(out) => wrong.push(format!("10.0.0.{octet}: verdict {} want {want}", out.return_value)),
            Err(e) => wrong.push(format!("10.0.0.{octet}: test run failed: {e}")),
        }
    }
    let verdict = if wrong.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail(format!(
            "{} mismatches against SourceAddr::new:\n{}",
            wrong.len(),
            wrong[..wrong.len().min(20)].join("\n")
        ))
    };
    emit(check(P, "classify", verdict, BTreeMap::new(), String::new()));
}
