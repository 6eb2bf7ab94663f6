//! `kernel-matrix explain OBJECT...`: what each program of a BPF object needs from
//! a kernel, read from the object alone (nothing boots): program and attach type,
//! helpers and kfuncs it calls, the object's map types, global data, callbacks,
//! CO-RE relocations; each with the features.yaml entry that covers it and so the
//! first kernel version that has it. Then the lowest version that has all of them
//! and the lowest kernel of the matrix at or above it.
use std::{fmt::Write as _, path::Path};

use km_protocol::KernelVersion;

use crate::config::{object, ConfigError, KernelSource, MatrixConfig};

/// The matrix's kernels with a version known without booting (Debian series, the host).
pub fn matrix_versions(cfg: &MatrixConfig) -> Vec<(String, KernelVersion)> {
    let mut v: Vec<(String, KernelVersion)> = cfg
        .kernels
        .iter()
        .filter_map(|k| {
            let ver = match k.source() {
                KernelSource::Debian(d) => d.series.parse().ok()?,
                KernelSource::Host => {
                    std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?.trim().parse().ok()?
                }
                KernelSource::Local(_) => return None,
            };
            Some((k.name.clone(), ver))
        })
        .collect();
    v.sort_by_key(|x| x.1);
    v
}

pub fn explain(path: &Path, matrix: Option<&MatrixConfig>) -> Result<String, ConfigError> {
    let obj =
        object::read(path).map_err(|message| ConfigError::Invalid { path: path.display().to_string(), message })?;
    let mut s = String::new();
    let maps: Vec<String> = obj
        .maps
        .iter()
        .map(|m| {
            let t = m.map_type.map(object::map_type_name).unwrap_or_else(|| "?".into());
            let n = match m.max_entries {
                Some(0) | None => ", max_entries 0: the loader sizes it".to_string(),
                Some(n) => format!(", {n}"),
            };
            format!("{} ({t}{n})", m.name)
        })
        .collect();
    let _ = writeln!(
        s,
        "{}: {} program(s); maps: {}",
        path.display(),
        obj.programs.len(),
        if maps.is_empty() { "none".into() } else { maps.join(", ") }
    );
    if !obj.rodata.is_empty() {
        let globals: Vec<String> = obj.rodata.iter().map(|g| format!("{} ({} B)", g.name, g.size)).collect();
        let _ = writeln!(s, "  rodata (settable with `rodata:`): {}", globals.join(", "));
    }
    let versions = matrix.map(matrix_versions).unwrap_or_default();
    for p in &obj.programs {
        let (ty, attach) = match p.sec_def {
            Some(d) => {
                (d.prog_type.to_string(), d.attach_type.map(|a| format!(", attach type {a}")).unwrap_or_default())
            }
            None => ("UNKNOWN SECTION: libbpf cannot load it".into(), String::new()),
        };
        let _ = writeln!(s, "\n  {} SEC(\"{}\"): {ty}{attach}, {} insns", p.name, p.section, p.insns);
        let needs = obj.needs(p);
        let width = needs.iter().map(|n| n.text.chars().count()).max().unwrap_or(0);
        for n in &needs {
            let cat = match (&n.feature, &n.since) {
                (Some(f), Some(v)) => format!("{v:>5}  features.yaml: {f}"),
                _ => "    ?  not in features.yaml".to_string(),
            };
            let _ = writeln!(s, "    {:<width$}  {cat}", n.text);
        }
        let min = object::min_version(&needs);
        let unknown = needs.iter().filter(|n| n.since.is_none()).count();
        let min_text = match min {
            Some(v) => format!("{}.{}", v.major, v.minor),
            None => "no catalogued need".into(),
        };
        let caveat =
            if unknown > 0 { format!(" ({unknown} need(s) without a catalogue version)") } else { String::new() };
        let lowest = match (min, versions.is_empty()) {
            (_, true) => String::new(),
            (Some(min), false) => match versions.iter().find(|(_, v)| *v >= min) {
                Some((name, _)) => format!("; lowest kernel in the matrix: {name}"),
                None => "; no kernel in the matrix is new enough".into(),
            },
            (None, false) => format!("; lowest kernel in the matrix: {}", versions[0].0),
        };
        let _ = writeln!(s, "    => loads from {min_text}{caveat}{lowest}");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_the_loop_object() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/corpus/obj/loop.bpf.o");
        let text = explain(&p, None).unwrap();
        assert!(text.contains("calls bpf_loop (helper 181)"), "{text}");
        assert!(text.contains("=> loads from 5.17"), "{text}");
    }
}
