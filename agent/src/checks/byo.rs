//! Programs users bring (see `crate::byo`): `load` through libbpf with the
//! verifier's verdict, and `test_run` of the manifest's packets.
use std::path::Path;

use libbpf_rs::{ObjectBuilder, ProgramInput};

use super::*;
use km_protocol::{byo::GuestProgram, checks::byo_checks};

pub fn run(p: &GuestProgram, dir: &Path, features: &BTreeMap<String, Probe>, emit: &mut dyn FnMut(Record)) {
    let ids = byo_checks(p);
    let gated = ids.iter().find_map(|c| gate(c, features));
    if let Some(reason) = gated {
        for c in &ids {
            emit(check(&p.name, c.check, Verdict::Ignored(reason.clone()), BTreeMap::new(), String::new()));
        }
        return;
    }
    let object = match std::fs::read(dir.join(&p.object_file)) {
        Ok(o) => o,
        Err(e) => {
            for c in &ids {
                emit(check(&p.name, c.check, Verdict::Fail(format!("reading the object: {e}")), BTreeMap::new(), String::new()));
            }
            return;
        }
    };
    let (loaded, log) = capture_libbpf_log(|| {
        let mut open = ObjectBuilder::default().open_memory(&object)?;
        for mut prog in open.progs_mut() {
            let ours = prog.name() == p.program.as_str();
            prog.set_autoload(ours);
        }
        open.load()
    });
    let mut metrics = BTreeMap::new();
    let mut note = String::new();
    let obj = match loaded {
        Ok(obj) if obj.progs().any(|q| q.name() == p.program.as_str()) => obj,
        Ok(_) => {
            let mut v = Verdict::Fail(format!("no program {:?} in {}", p.program, p.object_file));
            add_verifier_insight(&object, &p.program, &mut v, &mut metrics, &mut note);
            emit(check(&p.name, "load", v, metrics, note));
            skip_rest(p, emit);
            return;
        }
        Err(e) => {
            let mut v = Verdict::Fail(format!(
                "the verifier (or libbpf) rejected {}: {e}\n--- libbpf/verifier log (tail) ---\n{}",
                p.program,
                tail(&log, LOG_TAIL_LINES)
            ));
            add_verifier_insight(&object, &p.program, &mut v, &mut metrics, &mut note);
            emit(check(&p.name, "load", v, metrics, note));
            skip_rest(p, emit);
            return;
        }
    };
    let mut v = Verdict::Pass;
    add_verifier_insight(&object, &p.program, &mut v, &mut metrics, &mut note);
    emit(check(&p.name, "load", v, metrics, note));
    if p.packets.is_empty() {
        return;
    }
    let prog = obj.progs_mut().find(|q| q.name() == p.program.as_str()).expect("checked above");
    let mut wrong = Vec::new();
    for pk in &p.packets {
        let input = ProgramInput { data_in: Some(&pk.data), repeat: 1, ..Default::default() };
        match prog.test_run(input) {
            Ok(out) if out.return_value == pk.expect => {}
            Ok(out) => wrong.push(format!("packet {:?}: verdict {} want {}", pk.name, out.return_value, pk.expect)),
            Err(e) => wrong.push(format!("packet {:?}: BPF_PROG_TEST_RUN failed: {e}", pk.name)),
        }
    }
    let v = if wrong.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail(format!("{} of {} packets got the wrong verdict:\n{}", wrong.len(), p.packets.len(), wrong.join("\n")))
    };
    emit(check(&p.name, "test_run", v, BTreeMap::new(), format!("{} packets", p.packets.len())));
}

fn skip_rest(p: &GuestProgram, emit: &mut dyn FnMut(Record)) {
    if !p.packets.is_empty() {
        emit(check(&p.name, "test_run", Verdict::Fail("not run: the program did not load".into()), BTreeMap::new(), String::new()));
    }
}
