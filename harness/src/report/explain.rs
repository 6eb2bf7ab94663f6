//! `kernel-matrix explain OBJECT... [-k KERNEL] [--json]`: what each program of a
//! BPF object needs from a kernel, read from the object alone (nothing boots):
//! program and attach type, attach target, helpers and kfuncs it calls, the
//! object's map types, global data, callbacks, CO-RE relocations; each with the
//! first kernel version that has it (features.yaml, else bcc's
//! docs/kernel-versions.md). Then, per kernel of the matrix whose image is in the
//! cache, the predicted verdict and cause: versions against the kernel's, the
//! attach target and kfuncs against the kernel's own BTF (read from the cached
//! `vmlinux`, or the host's `/sys/kernel/btf/vmlinux`).
use std::{fmt::Write as _, path::Path};

use std::collections::BTreeMap;

use km_protocol::{
    btf::{AttachTarget, Btf, TargetKind},
    byo::{LoadCause, Need},
    KernelVersion,
};
use serde::Serialize;

use crate::config::{object, ConfigError, KernelSource, MatrixConfig};

/// The matrix's kernels with a version known without booting (Debian series, the host).
pub fn matrix_versions(cfg: &MatrixConfig) -> Vec<(String, KernelVersion)> {
    let mut v: Vec<(String, KernelVersion)> =
        cfg.kernels.iter().filter_map(|k| Some((k.name.clone(), version_of(k)?))).collect();
    v.sort_by_key(|x| x.1);
    v
}

fn version_of(k: &crate::config::KernelSpec) -> Option<KernelVersion> {
    match k.source() {
        KernelSource::Archive(d) => d.version(),
        KernelSource::Host => std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?.trim().parse().ok(),
        KernelSource::Local(_) | KernelSource::Build(_) => None,
    }
}

/// A kernel as `explain` sees it: its version and its BTF, from the cache.
pub struct KernelView {
    pub name: String,
    /// `None` where unknown without booting, or meaningless (`backports:`).
    pub version: Option<KernelVersion>,
    /// `None`: a kernel without BTF (CONFIG_DEBUG_INFO_BTF off).
    pub btf: Option<Btf>,
    /// Its build configuration (`CONFIG_X` -> `y`/`m`/value), when known: the
    /// package's `/boot/config-*`, the host's `/proc/config.gz`.
    pub config: Option<BTreeMap<String, String>>,
}

impl KernelView {
    /// Whether the kernel is known to be built without `option` (unknown: false).
    fn lacks(&self, option: &str) -> bool {
        self.config.as_ref().is_some_and(|c| !matches!(c.get(option).map(String::as_str), Some("y")))
    }
}

pub use crate::images::kconfig::parse as parse_config;

/// The running kernel's configuration: /proc/config.gz, else /boot/config-RELEASE.
fn host_config() -> Option<BTreeMap<String, String>> {
    use std::io::Read as _;
    let text = match std::fs::read("/proc/config.gz") {
        Ok(gz) => {
            let mut s = String::new();
            flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut s).ok()?;
            s
        }
        Err(_) => {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
            std::fs::read_to_string(format!("/boot/config-{}", release.trim())).ok()?
        }
    };
    Some(parse_config(&text))
}

/// The matrix kernels `patterns` name (all when empty) whose image is in the
/// cache. A kernel named by `-k` that is not cached is an error that says how to
/// fetch it; without `-k` the uncached ones are listed in the second value.
pub fn kernel_views(
    cfg: &MatrixConfig,
    cache: &Path,
    patterns: &[String],
) -> Result<(Vec<KernelView>, Vec<String>), ConfigError> {
    let invalid = |message: String| ConfigError::Invalid { path: cfg.path.display().to_string(), message };
    let names: Vec<String> = cfg.kernels.iter().map(|k| k.name.clone()).collect();
    let chosen = crate::run::select_kernels(&names, patterns).map_err(|e| invalid(e.to_string()))?;
    let lock = crate::images::lock::Lock::load(&crate::images::lock::Lock::path_for(&cfg.path))
        .map_err(|e| invalid(format!("{e:#}")))?;
    let (mut views, mut uncached) = (Vec::new(), Vec::new());
    for k in cfg.kernels.iter().filter(|k| chosen.contains(&k.name)) {
        let (btf_bytes, config): (Option<Vec<u8>>, _) = match k.source() {
            KernelSource::Host => (std::fs::read("/sys/kernel/btf/vmlinux").ok(), host_config()),
            KernelSource::Archive(src) => {
                let image = lock
                    .get(&k.name, &src, k.arch(), &crate::images::lock::Lock::path_for(&cfg.path))
                    .ok()
                    .and_then(|locked| crate::images::cached_archive(cache, locked).ok().flatten());
                let Some((vmlinux, config)) = image.and_then(|i| Some((i.vmlinux?, i.config))) else {
                    uncached.push(k.name.clone());
                    continue;
                };
                let bytes = std::fs::read(&vmlinux)
                    .map_err(|source| ConfigError::Io { path: vmlinux.display().to_string(), source })?;
                let config = config.and_then(|c| std::fs::read_to_string(c).ok()).map(|t| parse_config(&t));
                (Some(bytes), config)
            }
            KernelSource::Local(l) => {
                (std::fs::read(cfg.resolve_path(&l.kernel)).ok().filter(|d| d.starts_with(b"\x7fELF")), None)
            }
            KernelSource::Build(b) => {
                let image = crate::images::build::cached(cache, b, |p| cfg.resolve_path(p)).ok().flatten();
                let Some((vmlinux, config)) = image.and_then(|i| Some((i.vmlinux?, i.config))) else {
                    uncached.push(k.name.clone());
                    continue;
                };
                let config = config.and_then(|c| std::fs::read_to_string(c).ok()).map(|t| parse_config(&t));
                (std::fs::read(vmlinux).ok(), config)
            }
        };
        let btf = btf_bytes.and_then(|b| Btf::parse(km_protocol::btf::btf_of(&b).ok()?).ok());
        // A vendor kernel's version says nothing of its features (backports):
        // its BTF and config still do.
        let version = if k.has_backports() { None } else { version_of(k) };
        views.push(KernelView { name: k.name.clone(), version, btf, config });
    }
    if !patterns.is_empty() && !uncached.is_empty() {
        return Err(invalid(format!(
            "explain -k: kernel(s) {} not in the cache ({}): fetch with `kernel-matrix fetch -k {}` (nothing boots)",
            uncached.join(", "),
            cache.display(),
            uncached.join(" -k ")
        )));
    }
    Ok((views, uncached))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Predicted {
    Accept,
    Reject,
}

/// One program on one kernel: what a load there will do, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    /// The object's path as given.
    pub object: String,
    pub program: String,
    pub kernel: String,
    pub predicted: Predicted,
    /// A rejection's cause (as a run's `::load` cell names it).
    pub cause: Option<LoadCause>,
    /// The need that decides, in words (empty on accept).
    pub reason: String,
}

/// The verdict `needs` predict on kernel `k`: a need newer than its version, a
/// kfunc or attach target missing from its BTF, each a rejection with its cause.
/// The agent's order: missing needs first, then what libbpf meets first (maps,
/// then the attach target).
pub fn predict(needs: &[Need], k: &KernelView) -> (Predicted, Option<LoadCause>, String) {
    let mut missing = Vec::new();
    let mut target = None;
    let mut map = None;
    for n in needs {
        match n.kind.as_str() {
            "map_size" => map = map.or(Some(n.text.clone())),
            "attach_target" => {
                let t = attach_target_of(n);
                // BPF_PROG_TYPE_LSM exists only in kernels built with CONFIG_BPF_LSM
                // (include/linux/bpf_types.h).
                if t.kind == TargetKind::LsmHook && k.lacks("CONFIG_BPF_LSM") {
                    missing.push(format!("{}: {} is built without CONFIG_BPF_LSM", n.text, k.name));
                    continue;
                }
                let Some(btf) = &k.btf else {
                    missing.push(format!("{}: this kernel has no BTF", n.text));
                    continue;
                };
                if !btf.has_target(&t) {
                    let near = btf.nearest_targets(&t, 5);
                    let near = if near.is_empty() { String::new() } else { format!("; nearest: {}", near.join(", ")) };
                    target = Some(format!("no {} {} in {}'s BTF{near}", t.kind.describe(), t.name, k.name));
                }
            }
            "kfunc" => match &k.btf {
                Some(btf) if btf.types.iter().any(|t| t.kind == 12 && t.name == n.name) => {}
                _ => missing.push(format!("{}: not in {}'s BTF", n.text, k.name)),
            },
            _ => {
                let since: Option<KernelVersion> = n.since.as_deref().and_then(|s| s.parse().ok());
                if let (Some(since), Some(v)) = (since, k.version) {
                    if since > v {
                        missing.push(format!("{}: {}.{}", n.text, since.major, since.minor));
                    }
                }
            }
        }
    }
    // libbpf's order: every map is created before any program loads (and looks
    // up its attach target).
    if !missing.is_empty() {
        (Predicted::Reject, Some(LoadCause::MissingNeed), missing.join("; "))
    } else if let Some(m) = map {
        (Predicted::Reject, Some(LoadCause::MapCreate), m)
    } else if let Some(t) = target {
        (Predicted::Reject, Some(LoadCause::AttachTarget), t)
    } else {
        (Predicted::Accept, None, String::new())
    }
}

fn attach_target_of(n: &Need) -> AttachTarget {
    let kind = [TargetKind::Function, TargetKind::LsmHook, TargetKind::BtfTracepoint, TargetKind::Iterator]
        .into_iter()
        .find(|k| n.text.starts_with(&format!("attaches to the {}", k.describe())))
        .unwrap_or(TargetKind::Function);
    AttachTarget { name: n.name.clone(), kind }
}

/// Whether `path` is a program manifest (YAML) rather than a BPF object.
pub fn is_manifest(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "yaml" || e == "yml")
}

/// Every program of a manifest on every kernel, as the run loads them: with the
/// manifest's `attach_to:` and map sizes (what `run` would do, predicted).
pub fn manifest_predictions(path: &Path, kernels: &[KernelView]) -> Result<Vec<Prediction>, ConfigError> {
    let mut out = Vec::new();
    for p in crate::config::manifest::load(path)? {
        for k in kernels {
            let (predicted, cause, reason) = predict(&p.guest.requires, k);
            out.push(Prediction {
                object: p.object_path.display().to_string(),
                program: p.guest.name.clone(),
                kernel: k.name.clone(),
                predicted,
                cause,
                reason,
            });
        }
    }
    Ok(out)
}

/// Every program of the object (or manifest) at `path` on every kernel of `kernels`.
pub fn predictions(path: &Path, kernels: &[KernelView]) -> Result<Vec<Prediction>, ConfigError> {
    if is_manifest(path) {
        return manifest_predictions(path, kernels);
    }
    let obj =
        object::read(path).map_err(|message| ConfigError::Invalid { path: path.display().to_string(), message })?;
    let mut out = Vec::new();
    for p in &obj.programs {
        let needs = obj.needs(p);
        for k in kernels {
            let (predicted, cause, reason) = predict(&needs, k);
            out.push(Prediction {
                object: path.display().to_string(),
                program: p.name.clone(),
                kernel: k.name.clone(),
                predicted,
                cause,
                reason,
            });
        }
    }
    Ok(out)
}

/// The text report of one object: its maps and globals, then per program its
/// needs with their versions, the lowest version and matrix kernel that has them
/// all, and the prediction on each cached kernel.
pub fn explain(path: &Path, matrix: Option<&MatrixConfig>, kernels: &[KernelView]) -> Result<String, ConfigError> {
    if is_manifest(path) {
        return Ok(render_manifest(path, &manifest_predictions(path, kernels)?));
    }
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
            let v = if m.map_type == Some(7) && m.value_size.unwrap_or(0) == 0 {
                ", value_size 0: the loader sets 127 frames"
            } else {
                ""
            };
            format!("{} ({t}{n}{v})", m.name)
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
            let source = match (&n.feature, &n.since, n.kind.as_str()) {
                (Some(f), Some(v), _) => format!("{v:>5}  features.yaml: {f}"),
                (None, Some(v), _) => format!("{v:>5}  {}", object::versions::SOURCE),
                (_, _, "attach_target") => "    -  resolved per kernel in its BTF".to_string(),
                (_, _, "map_size") => "    -  no kernel creates it".to_string(),
                (_, _, "kfunc") => "    -  resolved per kernel in its BTF".to_string(),
                _ => "    ?  no catalogued version".to_string(),
            };
            let _ = writeln!(s, "    {:<width$}  {source}", n.text);
        }
        let min = object::min_version(&needs);
        let unknown = needs.iter().filter(|n| n.since.is_none() && n.kind == "feature").count();
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
        for k in kernels {
            let line = match predict(&needs, k) {
                (Predicted::Accept, _, _) => "accept".to_string(),
                (Predicted::Reject, cause, reason) => {
                    format!("reject ({}): {reason}", cause.map(LoadCause::as_str).unwrap_or("?"))
                }
            };
            let _ = writeln!(s, "    {:>8}: {line}", k.name);
        }
    }
    Ok(s)
}

/// A manifest's predictions: one line per program and kernel.
fn render_manifest(path: &Path, predictions: &[Prediction]) -> String {
    let mut s =
        format!("{}: {} program x kernel prediction(s), as `run` loads them\n", path.display(), predictions.len());
    let width = predictions.iter().map(|p| p.program.len() + p.kernel.len() + 2).max().unwrap_or(0);
    for p in predictions {
        let name = format!("{}::{}", p.kernel, p.program);
        let line = match (p.predicted, p.cause) {
            (Predicted::Accept, _) => "accept".to_string(),
            (Predicted::Reject, cause) => {
                format!("reject ({}): {}", cause.map(LoadCause::as_str).unwrap_or("?"), p.reason)
            }
        };
        let _ = writeln!(s, "  {name:<width$}  {line}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/corpus/obj").join(name)
    }

    #[test]
    fn explains_the_loop_object() {
        let text = explain(&corpus("loop.bpf.o"), None, &[]).unwrap();
        assert!(text.contains("calls bpf_loop (helper 181)"), "{text}");
        assert!(text.contains("=> loads from 5.17"), "{text}");
        assert!(!text.contains("    ?  "), "every helper, map and program type has a version:\n{text}");
    }

    #[test]
    fn predicts_by_version_and_by_btf() {
        let v = |s: &str| Some(s.parse::<KernelVersion>().unwrap());
        let old = KernelView { name: "5.10".into(), version: v("5.10"), btf: None, config: None };
        let new = KernelView { name: "6.12".into(), version: v("6.12"), btf: None, config: None };
        let p = predictions(&corpus("loop.bpf.o"), &[old, new]).unwrap();
        assert_eq!(p[0].predicted, Predicted::Reject);
        assert_eq!(p[0].cause, Some(LoadCause::MissingNeed));
        assert!(p[0].reason.contains("bpf_loop"), "{}", p[0].reason);
        assert_eq!(p[1].predicted, Predicted::Accept);
    }

    #[test]
    fn lsm_programs_need_bpf_lsm_in_the_config() {
        let k = |config: &str| KernelView {
            name: "k".into(),
            version: "6.18".parse().ok(),
            btf: None,
            config: Some(parse_config(config)),
        };
        let p =
            predictions(&corpus("btf_tracing.bpf.o"), &[k("# CONFIG_BPF_LSM is not set\n"), k("CONFIG_BPF_LSM=y\n")])
                .unwrap();
        let lsm: Vec<_> = p.iter().filter(|x| x.program == "lsm_file_open").collect();
        assert!(lsm[0].reason.contains("built without CONFIG_BPF_LSM"), "{}", lsm[0].reason);
        // With BPF_LSM, what decides next is the (here absent) BTF.
        assert!(lsm[1].reason.contains("has no BTF"), "{}", lsm[1].reason);
    }
}
