//! Just enough of BTF (`.BTF`, `.BTF.ext`) to answer the questions asked of a BPF
//! object and of a kernel: the object's maps (`.maps` DATASEC), `const volatile`
//! globals (`.rodata` DATASEC), the kfuncs it declares and how many CO-RE
//! relocations each section carries; a kernel's functions and BTF tracepoints
//! (attach targets, [`AttachTarget`]) and the names nearest a missing one. The
//! host reads a cached kernel's BTF with it (`explain`), the agent the running
//! kernel's `/sys/kernel/btf/vmlinux` (a failed load's cause): one reader.
//! Little-endian only (bpfel objects, x86-64 and arm64 kernels).
use std::collections::BTreeMap;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
pub struct Type {
    pub name: String,
    pub kind: u32,
    pub vlen: u32,
    /// `size` or `type`, depending on the kind.
    pub size_or_type: u32,
    /// STRUCT/UNION members (name, type), ARRAY (elem type, nelems) as one pair,
    /// DATASEC entries (type, offset, size), VAR/FUNC linkage in `linkage`.
    pub members: Vec<(String, u32)>,
    pub array: Option<(u32, u32)>,
    pub secinfo: Vec<(u32, u32, u32)>,
    pub linkage: u32,
}

#[derive(Debug, Clone, Default)]
pub struct Btf {
    /// Index 0 is `void`.
    pub types: Vec<Type>,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn str_at(strings: &[u8], off: u32) -> String {
    let s = strings.get(off as usize..).unwrap_or_default();
    let end = s.iter().position(|c| *c == 0).unwrap_or(s.len());
    String::from_utf8_lossy(&s[..end]).into_owned()
}

impl Btf {
    pub fn parse(b: &[u8]) -> Result<Self, String> {
        if b.len() < 24 || b[0..2] != [0x9f, 0xeb] {
            return Err("the .BTF section has no little-endian BTF header".into());
        }
        let hdr = u32_at(b, 4).ok_or("short BTF header")? as usize;
        let (type_off, type_len, str_off, str_len) = (u32_at(b, 8), u32_at(b, 12), u32_at(b, 16), u32_at(b, 20));
        let (type_off, type_len, str_off, str_len) = (
            type_off.ok_or("short")? as usize,
            type_len.ok_or("short")? as usize,
            str_off.ok_or("short")? as usize,
            str_len.ok_or("short")? as usize,
        );
        let types_b = b.get(hdr + type_off..hdr + type_off + type_len).ok_or("BTF type section out of bounds")?;
        let strings = b.get(hdr + str_off..hdr + str_off + str_len).ok_or("BTF string section out of bounds")?;
        let void = Type {
            name: String::new(),
            kind: 0,
            vlen: 0,
            size_or_type: 0,
            members: vec![],
            array: None,
            secinfo: vec![],
            linkage: 0,
        };
        let mut types = vec![void];
        let mut off = 0usize;
        let bad = || "truncated BTF type".to_string();
        while off + 12 <= types_b.len() {
            let name = str_at(strings, u32_at(types_b, off).ok_or_else(bad)?);
            let info = u32_at(types_b, off + 4).ok_or_else(bad)?;
            let size_or_type = u32_at(types_b, off + 8).ok_or_else(bad)?;
            let (kind, vlen) = ((info >> 24) & 0x1f, info & 0xffff);
            off += 12;
            let mut t =
                Type { name, kind, vlen, size_or_type, members: vec![], array: None, secinfo: vec![], linkage: 0 };
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => {
                    t.linkage = u32_at(types_b, off).ok_or_else(bad)?;
                    off += 4;
                }
                KIND_ARRAY => {
                    t.array = Some((u32_at(types_b, off).ok_or_else(bad)?, u32_at(types_b, off + 8).ok_or_else(bad)?));
                    off += 12;
                }
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen as usize {
                        let m = off + i * 12;
                        t.members.push((
                            str_at(strings, u32_at(types_b, m).ok_or_else(bad)?),
                            u32_at(types_b, m + 4).ok_or_else(bad)?,
                        ));
                    }
                    off += vlen as usize * 12;
                }
                KIND_ENUM => off += vlen as usize * 8,
                KIND_FUNC_PROTO => off += vlen as usize * 8,
                KIND_ENUM64 => off += vlen as usize * 12,
                KIND_DATASEC => {
                    for i in 0..vlen as usize {
                        let m = off + i * 12;
                        t.secinfo.push((
                            u32_at(types_b, m).ok_or_else(bad)?,
                            u32_at(types_b, m + 4).ok_or_else(bad)?,
                            u32_at(types_b, m + 8).ok_or_else(bad)?,
                        ));
                    }
                    off += vlen as usize * 12;
                }
                KIND_FUNC => t.linkage = vlen,
                KIND_PTR | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | 16 | KIND_TYPE_TAG => {}
                k => return Err(format!("unknown BTF kind {k}")),
            }
            types.push(t);
        }
        Ok(Self { types })
    }

    fn get(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// Through typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.get(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => id = t.size_or_type,
                _ => return Some(t),
            }
        }
        None
    }

    /// The size in bytes of type `id` (through typedefs and qualifiers).
    pub fn size_of(&self, id: u32) -> Option<u32> {
        let t = self.resolve(id)?;
        match t.kind {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | 16 => Some(t.size_or_type),
            KIND_PTR => Some(8),
            KIND_ARRAY => {
                let (elem, n) = t.array?;
                Some(self.size_of(elem)? * n)
            }
            _ => None,
        }
    }

    pub fn datasec(&self, name: &str) -> Option<&Type> {
        self.types.iter().find(|t| t.kind == KIND_DATASEC && t.name == name)
    }

    /// (variable name, offset, size) of a DATASEC (`.rodata`, `.maps`, ...).
    pub fn datasec_vars(&self, name: &str) -> Vec<(String, u32, u32)> {
        let Some(ds) = self.datasec(name) else {
            return vec![];
        };
        ds.secinfo.iter().filter_map(|(ty, off, size)| Some((self.get(*ty)?.name.clone(), *off, *size))).collect()
    }

    /// BTF-defined maps (`SEC(".maps")`): name -> the `__uint(...)` fields
    /// (`type`, `max_entries`, `key_size`, `map_flags`, ...), each encoded as a
    /// pointer to an array whose element count is the value, and `key_size` /
    /// `value_size` from `__type(key, T)` / `__type(value, T)` (T's size).
    pub fn btf_maps(&self) -> BTreeMap<String, BTreeMap<String, u32>> {
        let mut out = BTreeMap::new();
        let Some(ds) = self.datasec(".maps") else {
            return out;
        };
        for (var, _, _) in &ds.secinfo {
            let Some(v) = self.get(*var) else { continue };
            let Some(st) = self.resolve(v.size_or_type) else {
                continue;
            };
            let mut fields = BTreeMap::new();
            for (m, ty) in &st.members {
                let Some(p) = self.resolve(*ty) else { continue };
                if p.kind != KIND_PTR {
                    continue;
                }
                match (m.as_str(), self.resolve(p.size_or_type)) {
                    // `__type(key, T)` / `__type(value, T)`: the size of T.
                    ("key" | "value", _) => {
                        if let Some(n) = self.size_of(p.size_or_type) {
                            fields.insert(format!("{m}_size"), n);
                        }
                    }
                    (_, Some(Type { array: Some((_, n)), .. })) => {
                        fields.insert(m.clone(), *n);
                    }
                    _ => {}
                }
            }
            out.insert(v.name.clone(), fields);
        }
        out
    }

    /// Functions declared `extern` (kfuncs, `__ksym`).
    pub fn extern_funcs(&self) -> Vec<String> {
        self.types.iter().filter(|t| t.kind == KIND_FUNC && t.linkage == 2).map(|t| t.name.clone()).collect()
    }
}

/// What a BTF-attached program (fentry/fexit/fmod_ret, lsm, tp_btf, iter) must
/// find in the kernel's BTF at load, the way libbpf looks it up: the function
/// `name`, `bpf_lsm_<name>`, the typedef `btf_trace_<name>` or `bpf_iter_<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachTarget {
    /// What the section (or `attach_to:`) names: `vfs_read`, `file_open`, `sched_switch`.
    pub name: String,
    pub kind: TargetKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// fentry, fexit, fmod_ret, fentry.s, ...: a kernel function.
    Function,
    /// lsm: `bpf_lsm_<hook>`.
    LsmHook,
    /// tp_btf: `btf_trace_<tracepoint>`.
    BtfTracepoint,
    /// iter: `bpf_iter_<name>`.
    Iterator,
}

impl TargetKind {
    /// The kind of target a section's prefix (`fentry`, `lsm.s`, `tp_btf`, ... the
    /// part before any `/`) needs; `None` for sections that need none at load.
    pub fn of_prefix(prefix: &str) -> Option<TargetKind> {
        Some(match prefix {
            "fentry" | "fexit" | "fmod_ret" | "fentry.s" | "fexit.s" | "fmod_ret.s" => TargetKind::Function,
            "lsm" | "lsm.s" | "lsm_cgroup" => TargetKind::LsmHook,
            "tp_btf" => TargetKind::BtfTracepoint,
            "iter" | "iter.s" => TargetKind::Iterator,
            _ => return None,
        })
    }

    /// The BTF name libbpf looks up, and the BTF kind it must have.
    fn btf_name(self, name: &str) -> (String, u32) {
        match self {
            TargetKind::Function => (name.to_string(), KIND_FUNC),
            TargetKind::LsmHook => (format!("bpf_lsm_{name}"), KIND_FUNC),
            TargetKind::BtfTracepoint => (format!("btf_trace_{name}"), KIND_TYPEDEF),
            TargetKind::Iterator => (format!("bpf_iter_{name}"), KIND_FUNC),
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            TargetKind::Function => "",
            TargetKind::LsmHook => "bpf_lsm_",
            TargetKind::BtfTracepoint => "btf_trace_",
            TargetKind::Iterator => "bpf_iter_",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            TargetKind::Function => "kernel function",
            TargetKind::LsmHook => "LSM hook",
            TargetKind::BtfTracepoint => "BTF tracepoint",
            TargetKind::Iterator => "BPF iterator",
        }
    }
}

impl AttachTarget {
    /// The target of a libbpf section that needs one at load: `fentry/vfs_read`,
    /// `fexit/...`, `fmod_ret/...`, `lsm/...`, `lsm.s/...`, `tp_btf/...`, `iter/...`
    /// (with their `.s` sleepable forms). `None` for other sections and for bare
    /// ones (`fentry`), which name no target.
    pub fn of_section(section: &str) -> Option<AttachTarget> {
        let (prefix, name) = section.split_once('/')?;
        let kind = TargetKind::of_prefix(prefix)?;
        (!name.is_empty()).then(|| AttachTarget { name: name.to_string(), kind })
    }

    /// The same kind of target under another name (`attach_to:`).
    pub fn renamed(&self, name: &str) -> AttachTarget {
        AttachTarget { name: name.to_string(), kind: self.kind }
    }
}

impl Btf {
    /// Whether the kernel whose BTF this is has `t` where libbpf looks for it.
    pub fn has_target(&self, t: &AttachTarget) -> bool {
        let (name, kind) = t.kind.btf_name(&t.name);
        self.types.iter().any(|x| x.kind == kind && x.name == name)
    }

    /// Up to `n` names of the same kind that this kernel has, nearest to `t`'s
    /// (edit distance, then the longest common prefix): a renamed function's new
    /// name (`do_unlinkat` -> `filename_unlinkat`) or the target a placeholder stood for.
    pub fn nearest_targets(&self, t: &AttachTarget, n: usize) -> Vec<String> {
        let (_, kind) = t.kind.btf_name(&t.name);
        let prefix = t.kind.prefix();
        let wanted: Vec<&str> = t.name.split('_').filter(|w| !w.is_empty()).collect();
        let mut scored: Vec<(std::cmp::Reverse<usize>, usize, bool, &str)> = self
            .types
            .iter()
            .filter(|x| x.kind == kind)
            .filter_map(|x| x.name.strip_prefix(prefix))
            .map(|name| {
                // Kernel renames keep the words and change the prefix
                // (`do_unlinkat` -> `filename_unlinkat`): the words both names share
                // count by their length, the last word of the wanted name (what the
                // function does) twice; then the edit distance; then names without
                // a leading `__` (wrappers) first.
                let words: Vec<&str> = name.split('_').filter(|w| !w.is_empty()).collect();
                let shared: usize = wanted
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| words.contains(w))
                    .map(|(i, w)| if i + 1 == wanted.len() { 2 * w.len() } else { w.len() })
                    .sum();
                (std::cmp::Reverse(shared), strsim::levenshtein(name, &t.name), name.starts_with('_'), name)
            })
            .collect();
        scored.sort();
        scored.dedup_by(|a, b| a.3 == b.3);
        scored.into_iter().take(n).map(|(_, _, _, name)| name.to_string()).collect()
    }
}

/// The `.BTF` section of an ELF file (a kernel's `vmlinux`), or the bytes
/// themselves when they are raw BTF (`/sys/kernel/btf/vmlinux`).
pub fn btf_of(data: &[u8]) -> Result<&[u8], String> {
    if data.starts_with(&[0x9f, 0xeb]) {
        return Ok(data);
    }
    if !data.starts_with(b"\x7fELF") || data.get(4) != Some(&2) || data.get(5) != Some(&1) {
        return Err("neither raw BTF nor a little-endian 64-bit ELF file".into());
    }
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u64_at = |o: usize| data.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize);
    let shoff = u64_at(0x28).ok_or("short ELF header")?;
    let (shentsize, shnum, shstrndx) =
        (u16_at(0x3a).ok_or("short")?, u16_at(0x3c).ok_or("short")?, u16_at(0x3e).ok_or("short")?);
    let section = |i: usize| -> Option<(u32, usize, usize)> {
        let h = shoff + i * shentsize;
        Some((u32_at(data, h)?, u64_at(h + 0x18)?, u64_at(h + 0x20)?))
    };
    let (_, str_off, str_size) = section(shstrndx).ok_or("no section name table")?;
    let names = data.get(str_off..str_off + str_size).ok_or("section names out of bounds")?;
    for i in 0..shnum {
        let Some((name, off, size)) = section(i) else { continue };
        if str_at(names, name) == ".BTF" {
            return data.get(off..off + size).ok_or_else(|| "the .BTF section is out of bounds".to_string());
        }
    }
    Err("no .BTF section (a kernel built without CONFIG_DEBUG_INFO_BTF)".into())
}

/// `.BTF.ext` CO-RE relocations: section name -> instruction byte offsets.
pub fn core_relos(ext: &[u8], btf_strings_of: &[u8]) -> BTreeMap<String, Vec<u32>> {
    let mut out = BTreeMap::new();
    (|| -> Option<()> {
        if ext.get(0..2)? != [0x9f, 0xeb] {
            return None;
        }
        let hdr = u32_at(ext, 4)? as usize;
        if hdr < 32 {
            return None;
        }
        let (off, len) = (u32_at(ext, 24)? as usize, u32_at(ext, 28)? as usize);
        let sec = ext.get(hdr + off..hdr + off + len)?;
        let rec = u32_at(sec, 0)? as usize;
        let mut p = 4;
        while p + 8 <= sec.len() {
            let name = str_at(btf_strings_of, u32_at(sec, p)?);
            let n = u32_at(sec, p + 4)? as usize;
            p += 8;
            let offs: Vec<u32> = (0..n).filter_map(|i| u32_at(sec, p + i * rec)).collect();
            p += n * rec;
            out.insert(name, offs);
        }
        Some(())
    })();
    out
}

/// The string section of a `.BTF` blob (for `.BTF.ext`'s names).
pub fn strings(b: &[u8]) -> &[u8] {
    (|| {
        let hdr = u32_at(b, 4)? as usize;
        let (off, len) = (u32_at(b, 16)? as usize, u32_at(b, 20)? as usize);
        b.get(hdr + off..hdr + off + len)
    })()
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Raw BTF holding the given FUNC and TYPEDEF names (each FUNC's type is void,
    /// which is all the name lookups read).
    fn raw(funcs: &[&str], typedefs: &[&str]) -> Vec<u8> {
        let mut strings = vec![0u8];
        let mut types = Vec::new();
        for (names, kind) in [(funcs, KIND_FUNC), (typedefs, KIND_TYPEDEF)] {
            for n in names {
                types.extend_from_slice(&(strings.len() as u32).to_le_bytes());
                types.extend_from_slice(&(kind << 24).to_le_bytes());
                types.extend_from_slice(&0u32.to_le_bytes());
                strings.extend_from_slice(n.as_bytes());
                strings.push(0);
            }
        }
        let mut b = vec![0x9f, 0xeb, 1, 0];
        for v in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend(types);
        b.extend(strings);
        b
    }

    #[test]
    fn attach_targets_are_found_where_libbpf_looks() {
        let btf = Btf::parse(&raw(
            &["vfs_read", "bpf_lsm_file_open", "filename_unlinkat", "do_rmdir"],
            &["btf_trace_sched_switch"],
        ))
        .unwrap();
        let t = |s: &str| AttachTarget::of_section(s).unwrap();
        assert!(btf.has_target(&t("fentry/vfs_read")));
        assert!(btf.has_target(&t("fexit.s/vfs_read")));
        assert!(btf.has_target(&t("lsm/file_open")));
        assert!(btf.has_target(&t("tp_btf/sched_switch")));
        assert!(!btf.has_target(&t("tp_btf/vfs_read")), "a tracepoint is a typedef, not a function");
        assert!(!btf.has_target(&t("fentry/do_unlinkat")));
        assert_eq!(btf.nearest_targets(&t("fentry/do_unlinkat"), 1), ["filename_unlinkat"]);
        assert_eq!(btf.nearest_targets(&t("lsm/file_opn"), 3), ["file_open"]);
        assert_eq!(AttachTarget::of_section("kprobe/vfs_read"), None);
        assert_eq!(AttachTarget::of_section("fentry"), None);
    }

    #[test]
    fn btf_of_reads_raw_btf_and_refuses_other_files() {
        let b = raw(&["f"], &[]);
        assert_eq!(btf_of(&b).unwrap().len(), b.len());
        assert!(btf_of(b"not btf").is_err());
    }
}
