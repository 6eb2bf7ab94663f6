//! Bring your own program: a YAML manifest describes compiled BPF objects and how
//! to exercise them, and each one joins the matrix as `<kernel>::<name>::<check>`
//! (`load`, and `test_run` when packets are given), with no Rust written.
use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

pub use km_protocol::byo::{GuestPacket, GuestProgram, MapSizes, ProgType, GUEST_DIR, MANIFEST_JSON};
use serde::Deserialize;

use crate::config::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    programs: Vec<ProgramSpec>,
}

/// One entry as the user writes it: an object, and which of its programs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramSpec {
    /// Trial prefix after the kernel: `<kernel>::<name>::<program>::load`, or
    /// `<kernel>::<name>::load` when `program:` picks one.
    pub name: String,
    /// The compiled object (path relative to the manifest).
    pub object: PathBuf,
    /// One program (function) of the object; keeps the trial `<name>::load`.
    #[serde(default)]
    pub program: Option<String>,
    /// Several programs, by name or glob (`handle_*`); default: every program.
    #[serde(default)]
    pub programs: Option<Vec<String>>,
    /// Only for naming test-run verdicts (xdp | tc | socket_filter); libbpf's
    /// section name decides the program type.
    #[serde(rename = "type", default)]
    pub prog_type: Option<ProgType>,
    /// Feature ids from features.yaml the program cannot run without.
    #[serde(default)]
    pub needs: Vec<String>,
    /// Packets for BPF_PROG_TEST_RUN and the verdict each must get.
    #[serde(default)]
    pub test_run: Vec<PacketSpec>,
    /// Map sizes the loader sets (`counts: { max_entries: 10240 }`, `stacks: {
    /// value_size: 1016 }`), checked against what the map type can take. Unless
    /// named here, maps the object leaves at `max_entries` 0 get 1 (a page for
    /// ring buffers; local storage stays 0) and stack trace maps at `value_size` 0
    /// get 127 frames (`STACK_TRACE_VALUE_SIZE`), as real loaders set them.
    #[serde(default)]
    pub maps: BTreeMap<String, MapSizes>,
    /// The attach target to set before loading (`bpf_program__set_attach_target`)
    /// for fentry/fexit/fmod_ret, lsm, tp_btf and iter programs whose SEC() name
    /// is a placeholder (or bare): a name with `program:`, else `{ program: target }`.
    #[serde(default)]
    pub attach_to: Option<AttachTo>,
    /// `const volatile` globals to set before loading, by name (checked against
    /// the object's BTF `.rodata`): numbers, booleans or strings.
    #[serde(default)]
    pub rodata: BTreeMap<String, serde_norway::Value>,
    /// A BTF file for CO-RE on kernels without `/sys/kernel/btf/vmlinux`.
    #[serde(default)]
    pub btf: Option<PathBuf>,
    /// Also attach each loaded program the way its section says (libbpf
    /// auto-attach): a trial `::attach` per program whose section libbpf can attach.
    #[serde(default)]
    pub attach: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AttachTo {
    /// The target of the one program `program:` picks.
    One(String),
    /// program name -> target.
    Each(BTreeMap<String, String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketSpec {
    /// Shown in mismatch messages.
    pub name: String,
    /// Either raw bytes in hex (an Ethernet frame) ...
    #[serde(default)]
    pub hex: Option<String>,
    /// ... or an IPv4 packet built for you.
    #[serde(default)]
    pub ipv4: Option<Ipv4Spec>,
    /// Verdict name (XDP_PASS, XDP_DROP, XDP_TX, XDP_ABORTED, XDP_REDIRECT, TC_ACT_OK,
    /// TC_ACT_SHOT, ...) or a number.
    pub expect: Expect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Expect {
    Number(u32),
    Name(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ipv4Spec {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// tcp | udp | icmp
    pub proto: String,
    #[serde(default)]
    pub sport: u16,
    #[serde(default)]
    pub dport: u16,
    /// Payload length after the L4 header.
    #[serde(default)]
    pub payload: usize,
}

/// A manifest program, resolved on the host.
#[derive(Debug, Clone)]
pub struct ByoProgram {
    pub guest: GuestProgram,
    pub object_path: PathBuf,
    /// (file name in the guest's BYO directory, host path) of `btf:`.
    pub btf: Option<(String, PathBuf)>,
}

/// Reads a manifest; every error names the file (and line/column where it can tell).
pub fn load(path: &Path) -> Result<Vec<ByoProgram>, ConfigError> {
    let text = crate::config::read_limited(path)?;
    let file: ManifestFile = crate::config::parse_yaml(&text, path)?;
    let m = Manifest { path, text: &text, dir: path.parent().unwrap_or(Path::new(".")) };
    let mut out: Vec<ByoProgram> = Vec::new();
    for p in file.programs {
        if out.iter().any(|o| o.guest.name == p.name || o.guest.name.starts_with(&format!("{}::", p.name))) {
            return Err(m.at(&p.name, "name", format!("entry {:?} is listed twice", p.name)));
        }
        out.extend(m.entry(&p)?);
    }
    Ok(out)
}

/// The manifest being read: where errors point.
struct Manifest<'a> {
    path: &'a Path,
    text: &'a str,
    dir: &'a Path,
}

type Program<'o> = &'o crate::config::object::Program;

impl Manifest<'_> {
    fn invalid(&self, message: String) -> ConfigError {
        ConfigError::Invalid { path: self.path.display().to_string(), message }
    }

    /// A semantic error about a key of an entry, pointing at that key's line.
    fn at(&self, entry: &str, key: &str, message: String) -> ConfigError {
        match locate_key(self.text, entry, key) {
            Some((line, column)) => {
                ConfigError::Syntax { path: self.path.display().to_string(), line, column, message }
            }
            None => self.invalid(message),
        }
    }

    fn relative(&self, p: &Path) -> PathBuf {
        if p.is_relative() {
            self.dir.join(p)
        } else {
            p.to_path_buf()
        }
    }

    /// One entry: its programs, each with what the loader sets before load.
    fn entry(&self, p: &ProgramSpec) -> Result<Vec<ByoProgram>, ConfigError> {
        if p.name.is_empty() || !p.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(self.at(&p.name, "name", format!("program name {:?} must be letters, digits and '_'", p.name)));
        }
        for n in &p.needs {
            if km_protocol::features::by_id(n).is_none() {
                let message = format!("entry {:?} needs unknown feature {n:?} (see features.yaml)", p.name);
                return Err(self.at(&p.name, "needs", message));
            }
        }
        let object_path = self.relative(&p.object);
        if !object_path.exists() {
            let message = format!("entry {:?}: object {} does not exist", p.name, object_path.display());
            return Err(self.at(&p.name, "object", message));
        }
        let obj = crate::config::object::read(&object_path)
            .map_err(|e| self.at(&p.name, "object", format!("entry {:?}: {e}", p.name)))?;
        let (chosen, single) = self.select(p, &obj, &object_path)?;
        let maps = self.map_sizes(p, &obj, &object_path)?;
        let targets = self.attach_targets(p, &chosen, single, &object_path, &obj)?;
        let rodata = self.rodata(p, &obj, &object_path)?;
        let btf = self.btf(p)?;
        let packets = self.packets(p, &chosen)?;
        let mut out = Vec::new();
        for prog in chosen {
            let def = prog.sec_def.expect("checked in select");
            let attach_to = targets.get(&prog.name).cloned();
            // A bare `kprobe`/`uprobe`/`tp_btf`... names no target: libbpf cannot
            // attach it on its own (EOPNOTSUPP), the loader must (or `attach_to:`).
            let names_target = attach_to.is_some() || def.sec.strip_suffix('+').is_none_or(|bare| prog.section != bare);
            out.push(ByoProgram {
                guest: GuestProgram {
                    name: if single { p.name.clone() } else { format!("{}::{}", p.name, prog.name) },
                    program: prog.name.clone(),
                    prog_type: p.prog_type,
                    needs: p.needs.clone(),
                    object_file: format!("{}.o", p.name),
                    packets: packets.clone(),
                    requires: obj.needs_with(prog, attach_to.as_deref(), &maps),
                    prog_type_id: crate::config::object::prog_type_id(def.prog_type).unwrap_or(0),
                    maps: maps.clone(),
                    attach_to,
                    rodata: rodata.clone(),
                    btf_file: btf.as_ref().map(|b| b.0.clone()),
                    attach: p.attach && def.auto_attach && names_target,
                },
                object_path: object_path.clone(),
                btf: btf.clone(),
            });
        }
        Ok(out)
    }

    /// Which programs: one (`program:`, keeps the trial `<name>::load`), a list of
    /// names/globs, or all; each in a section libbpf knows.
    fn select<'o>(
        &self,
        p: &ProgramSpec,
        obj: &'o crate::config::object::BpfObject,
        object_path: &Path,
    ) -> Result<(Vec<Program<'o>>, bool), ConfigError> {
        let (chosen, single): (Vec<Program<'o>>, bool) = match (&p.program, &p.programs) {
            (Some(_), Some(_)) => {
                let message = format!("entry {:?}: give `program:` or `programs:`, not both", p.name);
                return Err(self.at(&p.name, "programs", message));
            }
            (Some(one), None) => match obj.program(one) {
                Some(prog) => (vec![prog], true),
                None => {
                    let message = format!(
                        "entry {:?}: no program {one:?} in {} (it has: {})",
                        p.name,
                        object_path.display(),
                        names(obj)
                    );
                    return Err(self.at(&p.name, "program", message));
                }
            },
            (None, Some(globs)) => {
                let mut v: Vec<Program<'o>> = Vec::new();
                for g in globs {
                    let hits: Vec<_> = obj.programs.iter().filter(|q| crate::glob::matches(g, &q.name)).collect();
                    if hits.is_empty() {
                        let message = format!(
                            "entry {:?}: {g:?} matches no program in {} (it has: {})",
                            p.name,
                            object_path.display(),
                            names(obj)
                        );
                        return Err(self.at(&p.name, "programs", message));
                    }
                    for h in hits {
                        if !v.iter().any(|x| x.name == h.name) {
                            v.push(h);
                        }
                    }
                }
                (v, false)
            }
            (None, None) => (obj.programs.iter().collect(), false),
        };
        for prog in &chosen {
            if prog.sec_def.is_none() {
                return Err(self.at(&p.name, "object", format!(
                    "entry {:?}: program {:?} is in section {:?}, which libbpf 1.7 does not know (see libbpf's program types and ELF sections)",
                    p.name, prog.name, prog.section
                )));
            }
        }
        Ok((chosen, single))
    }

    /// The sizes the loader sets per map: the manifest's, each checked against
    /// what the map type can take, then the loader's own (`loader_sizes`).
    fn map_sizes(
        &self,
        p: &ProgramSpec,
        obj: &crate::config::object::BpfObject,
        object_path: &Path,
    ) -> Result<BTreeMap<String, MapSizes>, ConfigError> {
        let mut overrides = BTreeMap::new();
        for (name, spec) in &p.maps {
            let Some(m) = obj.maps.iter().find(|x| &x.name == name) else {
                let have: Vec<_> = obj.maps.iter().map(|x| x.name.as_str()).collect();
                let message = format!(
                    "entry {:?}: maps: no map {name:?} in {} (it has: {})",
                    p.name,
                    object_path.display(),
                    have.join(", ")
                );
                return Err(self.at(&p.name, name, message));
            };
            let sizes =
                MapSizes { key_size: spec.key_size, value_size: spec.value_size, max_entries: spec.max_entries };
            overrides.insert(name.clone(), sizes);
            let t = m.map_type.unwrap_or(0);
            let (k, v, n) = m.created_with(obj.loader_sizes(&overrides).get(name));
            if let Some(problem) = km_protocol::byo::map_size_problem(t, k, v, n) {
                let message = format!(
                    "entry {:?}: maps: {name} ({} map) cannot take {problem}",
                    p.name,
                    crate::config::object::map_type_name(t)
                );
                return Err(self.at(&p.name, name, message));
            }
        }
        Ok(obj.loader_sizes(&overrides))
    }

    /// `attach_to:` as program -> target, each program's section one that takes
    /// a BTF attach target.
    fn attach_targets(
        &self,
        p: &ProgramSpec,
        chosen: &[Program<'_>],
        single: bool,
        object_path: &Path,
        obj: &crate::config::object::BpfObject,
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        let wanted: BTreeMap<String, String> = match &p.attach_to {
            None => return Ok(BTreeMap::new()),
            Some(AttachTo::One(t)) if single => [(chosen[0].name.clone(), t.clone())].into(),
            Some(AttachTo::One(_)) => {
                let message = format!(
                    "entry {:?}: attach_to: a single target needs `program:`; for several programs give {{ program: target }}",
                    p.name
                );
                return Err(self.at(&p.name, "attach_to", message));
            }
            Some(AttachTo::Each(m)) => m.clone(),
        };
        for (prog, target) in &wanted {
            let Some(q) = chosen.iter().find(|q| &q.name == prog) else {
                let message = format!(
                    "entry {:?}: attach_to: no program {prog:?} in {} among those this entry loads (it has: {})",
                    p.name,
                    object_path.display(),
                    names(obj)
                );
                return Err(self.at(&p.name, "attach_to", message));
            };
            let prefix = q.section.split('/').next().unwrap_or_default();
            if km_protocol::btf::TargetKind::of_prefix(prefix).is_none() {
                let message = format!(
                    "entry {:?}: attach_to: {prog} is in section {:?}, which takes no BTF attach target (fentry/fexit/fmod_ret, lsm, tp_btf, iter do){}",
                    p.name,
                    q.section,
                    if prefix == "freplace" { "; freplace needs a target program, which manifests cannot name yet" } else { "" }
                );
                return Err(self.at(&p.name, "attach_to", message));
            }
            if target.is_empty() || target.contains(char::is_whitespace) {
                return Err(self.at(
                    &p.name,
                    "attach_to",
                    format!("entry {:?}: attach_to: {target:?} is not a name", p.name),
                ));
            }
        }
        Ok(wanted)
    }

    /// `.rodata` patches (offset, bytes) by global name, checked against the object's BTF.
    fn rodata(
        &self,
        p: &ProgramSpec,
        obj: &crate::config::object::BpfObject,
        object_path: &Path,
    ) -> Result<Vec<(u32, Vec<u8>)>, ConfigError> {
        let mut rodata = Vec::new();
        for (var, value) in &p.rodata {
            let Some(g) = obj.rodata.iter().find(|g| &g.name == var) else {
                let have: Vec<_> = obj.rodata.iter().map(|g| g.name.as_str()).collect();
                let message = format!(
                    "entry {:?}: rodata: no const volatile global {var:?} in {} (it has: {})",
                    p.name,
                    object_path.display(),
                    if have.is_empty() { "none".to_string() } else { have.join(", ") }
                );
                return Err(self.at(&p.name, var, message));
            };
            let bytes = encode(value, g.size).map_err(|e| {
                self.at(&p.name, var, format!("entry {:?}: rodata {var:?} ({} bytes): {e}", p.name, g.size))
            })?;
            rodata.push((g.offset, bytes));
        }
        Ok(rodata)
    }

    /// `btf:`: (file name in the guest's BYO directory, host path).
    fn btf(&self, p: &ProgramSpec) -> Result<Option<(String, PathBuf)>, ConfigError> {
        let Some(b) = &p.btf else { return Ok(None) };
        let b = self.relative(b);
        let head = std::fs::read(&b)
            .map_err(|e| self.at(&p.name, "btf", format!("entry {:?}: btf {}: {e}", p.name, b.display())))?;
        if !(head.starts_with(&[0x9f, 0xeb]) || head.starts_with(b"\x7fELF")) {
            let message =
                format!("entry {:?}: btf {} is neither raw BTF nor an ELF file with .BTF", p.name, b.display());
            return Err(self.at(&p.name, "btf", message));
        }
        Ok(Some((format!("{}.btf", p.name), b)))
    }

    /// `test_run:` packets with the verdict number each must get.
    fn packets(&self, p: &ProgramSpec, chosen: &[Program<'_>]) -> Result<Vec<GuestPacket>, ConfigError> {
        let mut packets = Vec::new();
        for pk in &p.test_run {
            let bad = |e: String| self.invalid(format!("program {:?} packet {:?}: {e}", p.name, pk.name));
            let data = match (&pk.hex, &pk.ipv4) {
                (Some(h), None) => hex::decode(h.replace([' ', '\n'], "")).map_err(|e| bad(format!("bad hex: {e}")))?,
                (None, Some(v4)) => ipv4_frame(v4).map_err(bad)?,
                _ => return Err(bad("give exactly one of hex: or ipv4:".into())),
            };
            let t = p.prog_type.or_else(|| match chosen[0].sec_def.map(|d| d.prog_type) {
                Some("xdp") => Some(ProgType::Xdp),
                Some("sched_cls") => Some(ProgType::Tc),
                Some("socket_filter") => Some(ProgType::SocketFilter),
                _ => None,
            });
            let expect = verdict_value(&pk.expect, t).map_err(bad)?;
            packets.push(GuestPacket { name: pk.name.clone(), data, expect });
        }
        if !packets.is_empty() && chosen.len() != 1 {
            let message = format!("entry {:?}: test_run needs one program (`program:`)", p.name);
            return Err(self.at(&p.name, "test_run", message));
        }
        Ok(packets)
    }
}

fn names(obj: &crate::config::object::BpfObject) -> String {
    obj.programs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// A `const volatile` value as the bytes of a global of `size` bytes
/// (little-endian integers, booleans as 0/1, strings NUL-padded).
fn encode(v: &serde_norway::Value, size: u32) -> Result<Vec<u8>, String> {
    use serde_norway::Value;
    let size = size as usize;
    let int = |n: i128| -> Result<Vec<u8>, String> {
        if ![1, 2, 4, 8].contains(&size) {
            return Err(format!("a number does not fit a {size}-byte global"));
        }
        let bits = size * 8;
        let (min, max) = (-(1i128 << (bits - 1)), (1i128 << bits) - 1);
        if n < min || n > max {
            return Err(format!("{n} does not fit in {size} bytes"));
        }
        Ok(n.to_le_bytes()[..size].to_vec())
    };
    match v {
        Value::Bool(b) => int(*b as i128),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => int(i as i128),
            (_, Some(u)) => int(u as i128),
            _ => Err("floating-point values are not supported".into()),
        },
        Value::String(s) => {
            if s.len() >= size {
                return Err(format!("the string is {} bytes; with its NUL it must fit in {size}", s.len()));
            }
            let mut b = s.as_bytes().to_vec();
            b.resize(size, 0);
            Ok(b)
        }
        _ => Err("give a number, a boolean or a string".into()),
    }
}

/// 1-based (line, column) of `key:` inside the manifest entry named `entry`:
/// the first such key after that entry's `name:` line (or the `name:` itself).
fn locate_key(text: &str, entry: &str, key: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| {
        l.find("name:").is_some_and(|pos| {
            l[pos + 5..]
                .trim()
                .trim_matches(|c| c == '"' || c == '\'' || c == ',' || c == '}')
                .split(',')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches(|c| c == '"' || c == '\'')
                == entry
        })
    })?;
    if key == "name" {
        return Some((start + 1, lines[start].find("name:")? + 1));
    }
    for (i, l) in lines.iter().enumerate().skip(start) {
        if i > start && l.trim_start().starts_with("- name:") {
            break;
        }
        let mut from = 0;
        while let Some(pos) = l[from..].find(key) {
            let p = from + pos;
            let before = l[..p].chars().last();
            let after = &l[p + key.len()..];
            let quoted = after.starts_with('"') || after.starts_with('\'');
            let rest = if quoted { &after[1..] } else { after };
            if before.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_')) && rest.trim_start().starts_with(':') {
                let col = if matches!(before, Some('"') | Some('\'')) { p } else { p + 1 };
                return Some((i + 1, col));
            }
            from = p + key.len();
        }
    }
    None
}

fn verdict_value(e: &Expect, t: Option<ProgType>) -> Result<u32, String> {
    let name = match e {
        Expect::Number(n) => return Ok(*n),
        Expect::Name(n) => n.as_str(),
    };
    let Some(t) = t else {
        return Err(format!("verdict {name:?} needs `type:` (xdp, tc or socket_filter) or a number"));
    };
    let table: &[(&str, u32)] = match t {
        ProgType::Xdp => &[("XDP_ABORTED", 0), ("XDP_DROP", 1), ("XDP_PASS", 2), ("XDP_TX", 3), ("XDP_REDIRECT", 4)],
        ProgType::Tc => &[
            ("TC_ACT_UNSPEC", u32::MAX),
            ("TC_ACT_OK", 0),
            ("TC_ACT_RECLASSIFY", 1),
            ("TC_ACT_SHOT", 2),
            ("TC_ACT_PIPE", 3),
            ("TC_ACT_REDIRECT", 7),
        ],
        ProgType::SocketFilter => &[],
    };
    table.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).ok_or_else(|| {
        format!(
            "unknown verdict {name:?} for a {t:?} program (use a number or one of {:?})",
            table.iter().map(|t| t.0).collect::<Vec<_>>()
        )
    })
}

/// Ethernet + IPv4 + TCP/UDP/ICMP header + zero payload, checksummed IPv4 header.
fn ipv4_frame(s: &Ipv4Spec) -> Result<Vec<u8>, String> {
    let (proto, l4_len) = match s.proto.as_str() {
        "tcp" => (6u8, 20usize),
        "udp" => (17, 8),
        "icmp" => (1, 8),
        other => return Err(format!("proto {other:?} must be tcp, udp or icmp")),
    };
    let total = 20 + l4_len + s.payload;
    let mut f = vec![0u8; 14 + total];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&s.src.octets());
    ip[16..20].copy_from_slice(&s.dst.octets());
    let mut sum: u32 = ip.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]) as u32).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let l4 = &mut f[34..34 + l4_len];
    match proto {
        6 | 17 => {
            l4[0..2].copy_from_slice(&s.sport.to_be_bytes());
            l4[2..4].copy_from_slice(&s.dport.to_be_bytes());
            if proto == 6 {
                l4[12] = 5 << 4; // data offset
            } else {
                l4[4..6].copy_from_slice(&((8 + s.payload) as u16).to_be_bytes());
            }
        }
        _ => l4[0] = 8, // echo request
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_tcp_frame_with_ports() {
        let f = ipv4_frame(&Ipv4Spec {
            src: [10, 0, 0, 1].into(),
            dst: [10, 0, 0, 2].into(),
            proto: "tcp".into(),
            sport: 1234,
            dport: 80,
            payload: 0,
        })
        .unwrap();
        assert_eq!(f.len(), 54);
        assert_eq!(f[23], 6);
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 80);
    }

    #[test]
    fn verdict_names() {
        assert_eq!(verdict_value(&Expect::Name("XDP_DROP".into()), Some(ProgType::Xdp)), Ok(1));
        assert_eq!(verdict_value(&Expect::Number(7), Some(ProgType::SocketFilter)), Ok(7));
        assert!(verdict_value(&Expect::Name("TC_ACT_SHOT".into()), Some(ProgType::Xdp)).is_err());
    }

    #[test]
    fn manifest_errors_point_at_the_file() {
        let dir = std::env::temp_dir().join(format!("km-byo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let m = dir.join("m.yaml");
        std::fs::write(&m, "programs:\n  - name: x\n    objekt: a.o\n").unwrap();
        let e = load(&m).unwrap_err().to_string();
        assert!(e.contains("m.yaml:3:5: ") && e.contains("unknown field `objekt`"), "{e}");
        std::fs::write(&m, "programs:\n  - { name: x, object: missing.o, program: p, type: xdp }\n").unwrap();
        assert!(load(&m).unwrap_err().to_string().contains("does not exist"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A scratch manifest next to copies of the corpus objects.
    fn scratch(tag: &str, yaml: &str) -> Result<Vec<ByoProgram>, ConfigError> {
        let dir = std::env::temp_dir().join(format!("km-byo-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/corpus/obj");
        for o in ["tracing.bpf.o", "profile.bpf.o", "cookie.bpf.o", "btf_tracing.bpf.o"] {
            std::fs::copy(corpus.join(o), dir.join(o)).unwrap();
        }
        std::fs::write(dir.join("notelf.o"), "just text\n").unwrap();
        std::fs::copy("/proc/self/exe", dir.join("host.o")).unwrap();
        let mut bad = std::fs::read(corpus.join("cookie.bpf.o")).unwrap();
        // The section name `kprobe` becomes `kprobx`, which libbpf does not know.
        // (ELF string tables share suffixes: `kprobe` is the tail of `.relkprobe`.)
        let at = bad.windows(11).position(|w| w == b".relkprobe\0").unwrap();
        bad[at + 9] = b'x';
        std::fs::write(dir.join("unknown_section.o"), bad).unwrap();
        let m = dir.join("m.yaml");
        std::fs::write(&m, yaml).unwrap();
        let r = load(&m);
        std::fs::remove_dir_all(&dir).unwrap();
        r
    }

    #[test]
    fn whole_objects_become_one_trial_per_program() {
        let p = scratch("whole", "programs:\n  - { name: tracing, object: tracing.bpf.o, attach: true }\n").unwrap();
        let names: Vec<_> = p.iter().map(|p| p.guest.name.as_str()).collect();
        assert_eq!(
            names,
            ["tracing::unlink_entry", "tracing::unlink_exit", "tracing::openat_enter", "tracing::sched_switch_raw"]
        );
        assert!(p.iter().all(|p| p.guest.attach && p.guest.object_file == "tracing.o"));
        let p = scratch("one", "programs:\n  - { name: t, object: tracing.bpf.o, program: unlink_exit }\n").unwrap();
        assert_eq!((p.len(), p[0].guest.name.as_str()), (1, "t"));
        let p =
            scratch("globs", "programs:\n  - { name: t, object: tracing.bpf.o, programs: [\"unlink_*\"] }\n").unwrap();
        assert_eq!(p.len(), 2);
        // A bare `kprobe` section names no target: no attach trial for it.
        let p = scratch("bare", "programs:\n  - { name: c, object: cookie.bpf.o, attach: true }\n").unwrap();
        assert!(!p[0].guest.attach);
    }

    #[test]
    fn loader_fixups_max_entries_and_rodata() {
        let p = scratch("fix", "programs:\n  - name: profile\n    object: profile.bpf.o\n    rodata: { targ_pid: -1, user_stacks_only: true }\n").unwrap();
        assert_eq!(p[0].guest.maps["counts"].max_entries, Some(1), "a map left at 0 gets 1");
        assert!(
            p[0].guest.rodata.contains(&(0, vec![0xff; 4]))
                || p[0].guest.rodata.iter().any(|(_, b)| b == &vec![0xff; 4])
        );
        let p = scratch(
            "fix2",
            "programs:\n  - name: profile\n    object: profile.bpf.o\n    maps: { counts: { max_entries: 10240 } }\n",
        )
        .unwrap();
        assert_eq!(p[0].guest.maps["counts"].max_entries, Some(10240));
    }

    #[test]
    fn bad_input_is_a_clear_error_with_a_position() {
        let cases: &[(&str, &str, &str)] = &[
            ("programs:\n  - { name: x, object: notelf.o }\n", "m.yaml:2:", "is not an ELF file"),
            ("programs:\n  - { name: x, object: host.o }\n", "m.yaml:2:", "not BPF"),
            (
                "programs:\n  - { name: x, object: tracing.bpf.o, program: nope }\n",
                "m.yaml:2:",
                "no program \"nope\" in",
            ),
            (
                "programs:\n  - { name: x, object: tracing.bpf.o, programs: [\"zz*\"] }\n",
                "m.yaml:2:",
                "matches no program",
            ),
            (
                "programs:\n  - { name: x, object: unknown_section.o }\n",
                "m.yaml:2:",
                "section \"kprobx\", which libbpf 1.7 does not know",
            ),
            (
                "programs:\n  - name: x\n    object: tracing.bpf.o\n    rodata:\n      targ_pidd: 1\n",
                "m.yaml:5:7: ",
                "no const volatile global \"targ_pidd\"",
            ),
            (
                "programs:\n  - name: x\n    object: tracing.bpf.o\n    rodata:\n      targ_failed_only: 300\n",
                "m.yaml:5:7: ",
                "300 does not fit in 1 bytes",
            ),
            (
                "programs:\n  - name: x\n    object: tracing.bpf.o\n    rodata: { targ_tgid: \"a long string\" }\n",
                "m.yaml:4:15: ",
                "must fit in 4",
            ),
            (
                "programs:\n  - name: x\n    object: profile.bpf.o\n    maps:\n      countz: { max_entries: 4 }\n",
                "m.yaml:5:7: ",
                "no map \"countz\"",
            ),
            (
                "programs:\n  - name: x\n    object: profile.bpf.o\n    maps:\n      counts: { key_size: 0 }\n",
                "m.yaml:5:7: ",
                "counts (hash map) cannot take key_size 0",
            ),
            (
                "programs:\n  - name: x\n    object: btf_tracing.bpf.o\n    attach_to: { read_fentyr: vfs_write }\n",
                "m.yaml:4:5: ",
                "attach_to: no program \"read_fentyr\"",
            ),
            (
                "programs:\n  - name: x\n    object: tracing.bpf.o\n    program: unlink_entry\n    attach_to: vfs_write\n",
                "m.yaml:5:5: ",
                "takes no BTF attach target",
            ),
        ];
        for (i, (yaml, at, want)) in cases.iter().enumerate() {
            let e = scratch(&format!("bad{i}"), yaml).unwrap_err();
            let text = e.to_string();
            assert!(matches!(e, ConfigError::Syntax { .. }), "case {i}: no position: {text}");
            assert!(text.contains(at) && text.contains(want), "case {i}: want {at}..{want:?} in {text}");
        }
    }
}
