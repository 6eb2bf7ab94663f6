//! Programs users bring (see `km_protocol::byo`), one program of an object at a
//! time, the way veristat and real loaders do it: the object's other programs'
//! autoload off, the map sizes and attach target a loader sets (decided on the
//! host: `GuestProgram::maps`, `attach_to`), `.rodata` set, a custom BTF for
//! CO-RE where given. Trials: `load` (with the verifier's numbers in its
//! metrics), `attach` (libbpf auto-attach by section) and `test_run` (packets).
//!
//! A failed load names its cause by what happened ([`LoadCause`]): a need the
//! kernel lacks (each need decoded on the host is probed here; the missing ones
//! lead, `calls bpf_loop (helper 181), which 5.10 lacks; features.yaml: bpf_loop,
//! 5.17`), an attach target absent from the kernel's BTF (with the nearest names it
//! has), a map the kernel would not create (which parameter, how to set it), the
//! verifier (its log's tail and the instruction it stopped at), or anything else
//! with its errno; libbpf's words follow.
use std::{path::Path, time::Instant};

use libbpf_rs::{libbpf_sys as sys, AsRawLibbpf as _, ObjectBuilder, OpenObject, ProgramInput};

use super::*;
use crate::verifier::{failing_instruction, parse_stats, Insight, FULL_LOG, STATS_LOG};
use km_protocol::{
    byo::{GuestProgram, LoadCause, Need},
    checks::byo_checks,
};
use km_protocol::{stats::Summary, switches::BenchConfig};

/// `bench`: also time the program (`test_run` with packets; see [`test_run_trial`]).
pub fn run(
    p: &GuestProgram,
    dir: &Path,
    features: &BTreeMap<String, Probe>,
    bench: Option<BenchConfig>,
    emit: &mut dyn FnMut(Record),
) {
    let ids = byo_checks(p);
    let gated = ids.iter().find_map(|c| gate(c, features));
    if let Some(reason) = gated {
        for c in &ids {
            emit(check(&p.name, c.check, Verdict::Ignored(reason.clone()), BTreeMap::new(), String::new()));
        }
        return;
    }
    let Some(object) = read_object(p, dir, &ids, emit) else { return };
    let btf = p.btf_file.as_ref().map(|b| dir.join(b));
    let Some((obj, mut insight, mut metrics)) = load(p, &object, btf.as_deref(), features, emit) else { return };
    let Some(prog) = obj.progs_mut().find(|q| q.name() == p.program.as_str()) else {
        emit(check(
            &p.name,
            "load",
            Verdict::Fail(format!("no program {:?} in {}", p.program, p.object_file)),
            metrics,
            String::new(),
        ));
        skip_rest(p, emit);
        return;
    };
    program_info(p, &prog, &mut insight, &mut metrics);
    for (k, v) in insight.metrics() {
        metrics.insert(k, v);
    }
    metrics.insert("accepted".into(), 1.0);
    emit(check(&p.name, "load", Verdict::Pass, metrics, insight.summary()));
    if p.attach {
        emit(attach_trial(p, &prog));
    }
    if !p.packets.is_empty() {
        emit(test_run_trial(p, &prog, bench));
    }
}

/// The object's bytes; when they cannot be read, every check of `ids` fails
/// with why, and `None`.
fn read_object(p: &GuestProgram, dir: &Path, ids: &[CheckId], emit: &mut dyn FnMut(Record)) -> Option<Vec<u8>> {
    match std::fs::read(dir.join(&p.object_file)) {
        Ok(o) => Some(o),
        Err(e) => {
            for c in ids {
                emit(check(
                    &p.name,
                    c.check,
                    Verdict::Fail(format!("reading the object: {e}")),
                    BTreeMap::new(),
                    String::new(),
                ));
            }
            None
        }
    }
}

/// Loads the object with the verifier's stats log: the loaded object, what the
/// log said and `load_secs`. When it does not load, emits the failed `load`
/// (explained: see [`failed_load`]) and the trials it skips, and `None`.
fn load(
    p: &GuestProgram,
    object: &[u8],
    btf: Option<&Path>,
    features: &BTreeMap<String, Probe>,
    emit: &mut dyn FnMut(Record),
) -> Option<(libbpf_rs::Object, Insight, Metrics)> {
    let start = Instant::now();
    let mut buf = vec![0u8; 256 << 10];
    let (loaded, libbpf_log) =
        capture_libbpf_log(|| open(p, object, btf, STATS_LOG, &mut buf).and_then(|o| Ok(o.load()?)));
    let load_secs = start.elapsed().as_secs_f64();
    let log = c_string(&buf);
    let mut insight = Insight::default();
    parse_stats(&log, &mut insight);
    let mut metrics = BTreeMap::new();
    metrics.insert("load_secs".to_string(), load_secs);
    match loaded {
        Ok(obj) => {
            insight.accepted = true;
            Some((obj, insight, metrics))
        }
        Err(e) => {
            let full_log = full_log(p, object, btf, log);
            parse_stats(&full_log, &mut insight);
            let error = format!("{e:#}");
            let failure = Failure { object, error: &error, verifier_log: &full_log, libbpf_log: &libbpf_log };
            emit(failed_load(p, features, &failure, &insight, metrics));
            skip_rest(p, emit);
            None
        }
    }
}

/// The verifier's full log of a load that failed: loads again at `FULL_LOG`, to
/// show why (`log`, the stats-only one, if this time it loads).
fn full_log(p: &GuestProgram, object: &[u8], btf: Option<&Path>, log: String) -> String {
    let mut full = vec![0u8; 16 << 20];
    let (again, _) =
        capture_libbpf_log(|| open(p, object, btf, FULL_LOG | STATS_LOG, &mut full).and_then(|o| Ok(o.load()?)));
    if again.is_err() {
        c_string(&full)
    } else {
        log
    }
}

/// The failed `load` record: the verifier's numbers, `accepted` 0, and what this
/// kernel lacks or refused (its message and `cause`).
fn failed_load(
    p: &GuestProgram,
    features: &BTreeMap<String, Probe>,
    f: &Failure<'_>,
    insight: &Insight,
    mut metrics: Metrics,
) -> Record {
    for (k, v) in insight.metrics() {
        metrics.insert(k, v);
    }
    metrics.insert("accepted".into(), 0.0);
    let (cause, message) = explain_failure(p, features, f);
    let mut r = check(&p.name, "load", Verdict::Fail(message), metrics, insight.summary());
    if let Record::Check { cause: c, .. } = &mut r {
        *c = Some(cause);
    }
    r
}

/// What the kernel says of the loaded program: verified instructions,
/// translated and JITed sizes, its program type and expected attach type.
fn program_info(p: &GuestProgram, prog: &libbpf_rs::ProgramMut<'_>, insight: &mut Insight, metrics: &mut Metrics) {
    if let Some(info) = crate::verifier::prog_info(prog, insight) {
        metrics.insert("prog_type".into(), info.type_ as f64);
    }
    // SAFETY: the pointer is libbpf's bpf_program of `prog`, valid while `obj`
    // lives. (libbpf-rs's `Program::attach_type` maps attach types its enum lacks,
    // e.g. BPF_TRACE_UPROBE_SESSION, to `Unknown` = u32::MAX: not the number.)
    let attach_type = unsafe { sys::bpf_program__expected_attach_type(prog.as_libbpf_object().as_ptr()) };
    // 0 is both "none" and BPF_CGROUP_INET_INGRESS: only cgroup_skb means the latter.
    if attach_type != 0 || p.prog_type_id == sys::BPF_PROG_TYPE_CGROUP_SKB {
        metrics.insert("attach_type".into(), attach_type as f64);
    }
}

/// The `attach` trial: libbpf's auto-attach by section, detached at once.
fn attach_trial(p: &GuestProgram, prog: &libbpf_rs::ProgramMut<'_>) -> Record {
    let start = Instant::now();
    let (link, log) = capture_libbpf_log(|| prog.attach());
    let secs = start.elapsed().as_secs_f64();
    let v = match &link {
        Ok(_) => Verdict::Pass,
        Err(e) => Verdict::Fail(format!(
            "{} loads but does not attach here: {e}\n--- libbpf log (tail) ---\n{}",
            p.program,
            tail(&log, 8)
        )),
    };
    drop(link);
    check(&p.name, "attach", v, [("attach_secs".to_string(), secs)].into(), String::new())
}

/// The `test_run` trial: each packet through BPF_PROG_TEST_RUN, for its verdict.
/// With `bench` (the `bench` command, `--agent-bench`) and every verdict right, it
/// also times the program as the benchmarks time ours: `samples` runs of
/// BPF_PROG_TEST_RUN with `repeat` on the first packet, the kernel's ns per run
/// each, summarised as median (`value`) and quartiles (`lower`, `upper`).
fn test_run_trial(p: &GuestProgram, prog: &libbpf_rs::ProgramMut<'_>, bench: Option<BenchConfig>) -> Record {
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
        Verdict::Fail(format!(
            "{} of {} packets got the wrong verdict:\n{}",
            wrong.len(),
            p.packets.len(),
            wrong.join("\n")
        ))
    };
    let mut note = format!("{} packets", p.packets.len());
    let mut metrics = BTreeMap::new();
    if let (Verdict::Pass, Some(cfg), Some(first)) = (&v, bench, p.packets.first()) {
        match time_packet(prog, &first.data, cfg) {
            Ok(samples) => {
                let s = Summary::of(&samples);
                metrics = s.metrics(&samples);
                metrics.insert("repeat".into(), cfg.repeat as f64);
                note.push_str(&format!(
                    "; {:.1} ns/run median (Q1 {:.1}, Q3 {:.1}) over {} samples of BPF_PROG_TEST_RUN repeat {} on packet {:?}",
                    s.median,
                    s.q1,
                    s.q3,
                    samples.len(),
                    cfg.repeat,
                    first.name
                ));
            }
            Err(e) => return check(&p.name, "test_run", Verdict::Fail(format!("timing it: {e}")), metrics, note),
        }
    }
    check(&p.name, "test_run", v, metrics, note)
}

/// `cfg.samples` timings of `data` through the program, in ns per run.
fn time_packet(prog: &libbpf_rs::ProgramMut<'_>, data: &[u8], cfg: BenchConfig) -> Result<Vec<f64>, String> {
    (0..cfg.samples)
        .map(|_| {
            let input = ProgramInput { data_in: Some(data), repeat: cfg.repeat, ..Default::default() };
            prog.test_run(input).map(|o| o.duration.as_nanos() as f64).map_err(|e| format!("BPF_PROG_TEST_RUN: {e}"))
        })
        .collect()
}

/// Opens the object with only `p.program` autoloaded, logging into `buf` at `level`,
/// with what a real loader sets before load: the manifest's map sizes (and those
/// the host filled in for maps the object leaves at 0), the attach target
/// (`attach_to:`, as `bpf_program__set_attach_target`) and `.rodata`.
fn open(p: &GuestProgram, object: &[u8], btf: Option<&Path>, level: u32, buf: &mut [u8]) -> anyhow::Result<OpenObject> {
    let mut b = ObjectBuilder::default();
    if let Some(btf) = btf {
        b.btf_custom_path(btf)?;
    }
    let mut open = b.open_memory(object)?;
    let found = crate::verifier::only_program(&mut open, &p.program, level, buf);
    anyhow::ensure!(found, "no program {:?} in {}", p.program, p.object_file);
    if let Some(target) = &p.attach_to {
        let mut prog = open.progs_mut().find(|q| q.name() == p.program.as_str()).expect("found above");
        prog.set_attach_target(0, Some(target.clone()))?;
    }
    for mut m in open.maps_mut() {
        let name = m.name().to_string_lossy().into_owned();
        if let Some(sizes) = p.maps.get(&name) {
            if let Some(n) = sizes.key_size {
                m.set_key_size(n)?;
            }
            if let Some(n) = sizes.value_size {
                m.set_value_size(n)?;
            }
            if let Some(n) = sizes.max_entries {
                m.set_max_entries(n)?;
            }
        }
        if !p.rodata.is_empty() && name.ends_with(".rodata") {
            let value = m.initial_value_mut().ok_or_else(|| anyhow::anyhow!("map {name} has no initial value"))?;
            for (off, bytes) in &p.rodata {
                let (o, n) = (*off as usize, bytes.len());
                anyhow::ensure!(o + n <= value.len(), "rodata patch at {o}+{n} outside {name} ({} bytes)", value.len());
                value[o..o + n].copy_from_slice(bytes);
            }
        }
    }
    Ok(open)
}

fn c_string(buf: &[u8]) -> String {
    String::from_utf8_lossy(&buf[..buf.iter().position(|b| *b == 0).unwrap_or(buf.len())]).into_owned()
}

/// `major.minor` of this kernel, as the matrix names kernels.
fn this_kernel() -> String {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = r.trim().split(|c: char| !c.is_ascii_digit());
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => format!("{a}.{b}"),
        _ => "this kernel".into(),
    }
}

/// Whether this kernel has `n`, probed for real.
pub fn probe_need(n: &Need, prog_type: u32, features: &BTreeMap<String, Probe>) -> Probe {
    match n.kind.as_str() {
        "helper" => crate::probes::helper_in(prog_type, n.id),
        "map_type" => crate::probes::map_type_probe(n.id),
        "prog_type" => crate::probes::prog_type_probe(n.id),
        "kfunc" => crate::probes::kfunc(&n.name),
        _ => features.get(&n.name).cloned().unwrap_or_else(|| Probe::Unavailable(format!("no probe for {}", n.name))),
    }
}

/// What libbpf and the kernel said about a failed load.
struct Failure<'a> {
    /// The object's bytes (to read the failed map's sizes and the program's section).
    object: &'a [u8],
    /// libbpf's error (`{e:#}`).
    error: &'a str,
    /// The verifier's log (the kernel's, through our log buffer): empty when the
    /// load never reached the verifier.
    verifier_log: &'a str,
    /// libbpf's own messages.
    libbpf_log: &'a str,
}

/// The errno name in libbpf's words (`-EINVAL`, `-ESRCH`, ...), if it gave one.
fn errno_in(text: &str) -> Option<&str> {
    let i = text.find("-E")?;
    let rest = &text[i + 1..];
    let end = rest.find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit())).unwrap_or(rest.len());
    (end > 1).then(|| &rest[..end])
}

/// The text between the quotes after `marker` in libbpf's log.
fn quoted_after<'a>(log: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &log[log.find(marker)? + marker.len()..];
    let rest = rest.strip_prefix('\'')?;
    Some(&rest[..rest.find('\'')?])
}

/// A failed load's cause, by what happened, and its message: the kernel lacks a
/// need; the attach target is not in its BTF (with the nearest names it has); a
/// map could not be created (which, which parameter, how to set it); the
/// verifier said no (log tail, failing instruction); anything else (errno, libbpf).
fn explain_failure(p: &GuestProgram, features: &BTreeMap<String, Probe>, f: &Failure<'_>) -> (LoadCause, String) {
    let kernel = this_kernel();
    let mut missing = Vec::new();
    for n in &p.requires {
        if let Probe::Absent(_) = probe_need(n, p.prog_type_id, features) {
            let catalogue = match (&n.feature, &n.since) {
                (Some(f), Some(s)) => format!("features.yaml: {f}, {s}"),
                (None, Some(s)) => format!("{}: {s}", km_protocol::byo::VERSIONS_SOURCE),
                _ => "no catalogued version".into(),
            };
            let since = n.since.as_deref().and_then(|s| s.parse::<km_protocol::KernelVersion>().ok());
            missing.push((since, format!("{}, which {kernel} lacks; {catalogue}", n.text)));
        }
    }
    // The newest catalogued need first: it is the one that decides; uncatalogued last.
    missing.sort_by_key(|m| std::cmp::Reverse(m.0));
    let missing: Vec<String> = missing.into_iter().map(|m| m.1).collect();
    let target = quoted_after(f.libbpf_log, "failed to find kernel BTF type ID of ");
    let map = quoted_after(f.libbpf_log, "map ").filter(|_| f.libbpf_log.contains("failed to create"));
    let (cause, head) = if !missing.is_empty() {
        (LoadCause::MissingNeed, format!("{} cannot load on {kernel}: it {}", p.program, missing.join("; it ")))
    } else if let Some(target) = target {
        (LoadCause::AttachTarget, attach_target_absent(p, f.object, target, &kernel))
    } else if let Some(map) = map {
        (LoadCause::MapCreate, map_not_created(p, f.object, map, errno_in(f.libbpf_log).unwrap_or("an error"), &kernel))
    } else if !f.verifier_log.trim().is_empty() {
        (LoadCause::Verifier, format!("the verifier of {kernel} rejects {}", p.program))
    } else {
        let errno = errno_in(f.error).or_else(|| errno_in(f.libbpf_log)).unwrap_or("no errno");
        (
            LoadCause::Other,
            format!("{} does not load on {kernel} ({errno}), before the verifier said anything", p.program),
        )
    };
    let mut msg = format!("{head}\nlibbpf: {}", f.error);
    let log_tail = tail(f.verifier_log, LOG_TAIL_LINES);
    if !log_tail.trim().is_empty() {
        msg.push_str(&format!("\n--- verifier log (tail) ---\n{log_tail}"));
    } else {
        msg.push_str(&format!("\n--- libbpf log (tail) ---\n{}", tail(f.libbpf_log, 12)));
    }
    if let Some(insn) = failing_instruction(f.verifier_log) {
        msg.push_str(&format!("\nfailing instruction: {insn}"));
    }
    (cause, msg)
}

/// `fentry/do_unlinkat` on a kernel without `do_unlinkat`: say so, and which
/// names of that kind this kernel's BTF does have nearest it.
fn attach_target_absent(p: &GuestProgram, object: &[u8], target: &str, kernel: &str) -> String {
    let section = section_of(p, object).unwrap_or_default();
    let wanted = km_protocol::btf::AttachTarget::of_section(&section)
        .map(|t| t.renamed(p.attach_to.as_deref().unwrap_or(&t.name)))
        .unwrap_or(km_protocol::btf::AttachTarget {
            name: target.to_string(),
            kind: km_protocol::btf::TargetKind::Function,
        });
    let how = if p.attach_to.is_some() { "attach_to:" } else { "its section" };
    let nearest = std::fs::read("/sys/kernel/btf/vmlinux")
        .map_err(|e| e.to_string())
        .and_then(|b| km_protocol::btf::Btf::parse(&b))
        .map(|btf| btf.nearest_targets(&wanted, 5));
    let near = match nearest {
        Ok(n) if !n.is_empty() => format!("; nearest in its BTF: {}", n.join(", ")),
        Ok(_) => String::new(),
        Err(e) => format!("; (could not read its BTF: {e})"),
    };
    format!(
        "attach target {:?} ({} named by {how}) is not in {kernel}'s BTF{near}. Set the target with `attach_to:` if the SEC() name is a placeholder",
        wanted.name,
        wanted.kind.describe()
    )
}

/// Which parameter of `map` the kernel refused, and how to set it.
fn map_not_created(p: &GuestProgram, object: &[u8], map: &str, errno: &str, kernel: &str) -> String {
    let mut buf = vec![0u8; 4096];
    let sizes = open(p, object, None, 0, &mut buf).ok().and_then(|o| {
        o.maps()
            .find(|m| m.name().to_string_lossy() == map)
            .map(|m| (u32::from(m.map_type()), m.key_size(), m.value_size(), m.max_entries()))
    });
    let (why, fix) = match sizes {
        Some((t, k, v, n)) => match km_protocol::byo::map_size_problem(t, k, v, n) {
            Some(why) => {
                let param = why.split_whitespace().next().unwrap_or("max_entries").to_string();
                (why, format!("set it with `maps: {{ {map}: {{ {param}: N }} }}`"))
            }
            None => (
                format!("key_size {k}, value_size {v}, max_entries {n}: sizes this map type can take"),
                "the kernel refuses something else (its flags or type: see the libbpf log)".into(),
            ),
        },
        None => ("its sizes could not be read".into(), "see the libbpf log".into()),
    };
    format!("map '{map}' could not be created on {kernel} ({errno}): {why}; {fix}")
}

/// The program's section in the object, as libbpf reads it.
fn section_of(p: &GuestProgram, object: &[u8]) -> Option<String> {
    let open = ObjectBuilder::default().open_memory(object).ok()?;
    let section = open.progs().find(|q| q.name() == p.program.as_str())?.section().to_string_lossy().into_owned();
    Some(section)
}

fn skip_rest(p: &GuestProgram, emit: &mut dyn FnMut(Record)) {
    if p.attach {
        // The load trial carries the failure; attach just was not tried.
        emit(check(
            &p.name,
            "attach",
            Verdict::Ignored("not run: the program did not load (see its ::load trial)".into()),
            BTreeMap::new(),
            String::new(),
        ));
    }
    if !p.packets.is_empty() {
        emit(check(
            &p.name,
            "test_run",
            Verdict::Fail("not run: the program did not load".into()),
            BTreeMap::new(),
            String::new(),
        ));
    }
}
