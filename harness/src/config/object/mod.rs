//! A compiled BPF object read on the host, without libbpf: its programs (global
//! functions in executable sections other than `.text`, as libbpf finds them),
//! their sections against libbpf's own section table, and what each needs from a
//! kernel, decoded from the instructions: helpers (`call` with src_reg 0, the
//! immediate is the helper id), kfuncs (`call` relocated against an undefined
//! symbol; libbpf turns it into src_reg 2 with the kernel's BTF id), maps and their
//! types (BTF `.maps` or legacy `maps`), global data, callbacks (`ld_imm64` with
//! src_reg 4) and CO-RE relocations (`.BTF.ext`).
//!
//! Why here and with the `object` crate rather than by asking the agent: the host
//! must list the trials (one per program) and reject a wrong manifest before any
//! kernel boots, and `explain` must work on a machine where nothing may load BPF;
//! ELF and BTF are stable formats, `object` is the crate the Rust toolchain itself
//! reads ELF with, and the little BTF needed here is a page of code (`btf`).
pub use km_protocol::btf;
use km_protocol::byo::MapSizes;
pub mod tables;
pub mod versions;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use km_protocol::byo::Need;
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SectionFlags, SectionIndex};

pub use tables::SecDef;

/// One BPF program of an object.
#[derive(Debug, Clone)]
pub struct Program {
    pub name: String,
    pub section: String,
    /// libbpf's entry for the section; `None`: libbpf cannot load it.
    pub sec_def: Option<&'static SecDef>,
    pub insns: usize,
    pub helpers: BTreeSet<u32>,
    pub kfuncs: BTreeSet<String>,
    /// Typed or untyped `__ksym` variables and `__kconfig` externs.
    pub ksyms: BTreeSet<String>,
    pub maps: BTreeSet<String>,
    pub core_relos: usize,
    /// Passes a callback (bpf_loop, bpf_for_each_map_elem, timers...).
    pub callbacks: bool,
    /// Reads or writes `.rodata`/`.data`/`.bss`.
    pub global_data: bool,
    /// Calls a subprogram in `.text` (its needs are counted here too).
    pub subprogs: bool,
}

#[derive(Debug, Clone)]
pub struct Map {
    pub name: String,
    pub map_type: Option<u32>,
    pub max_entries: Option<u32>,
    /// As the object defines them (absent: 0, for the loader to set).
    pub key_size: Option<u32>,
    pub value_size: Option<u32>,
}

/// A `const volatile` global (`.rodata`): name, offset and size in bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Global {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

#[derive(Debug, Clone)]
pub struct BpfObject {
    pub path: PathBuf,
    pub programs: Vec<Program>,
    pub maps: Vec<Map>,
    pub rodata: Vec<Global>,
    /// The object has global data maps (`.rodata`, `.data`, `.bss`, ...).
    pub global_data: bool,
}

const BPF_CALL: u8 = 0x85;
const BPF_LD_IMM64: u8 = 0x18;

/// Finds libbpf's section definition for a section name (same matching rules as
/// libbpf's `sec_def_matches`: `name+` is `name` or `name/...`, else exact).
pub fn sec_def(section: &str) -> Option<&'static SecDef> {
    tables::SECTIONS.iter().find(|d| match d.sec.strip_suffix('+') {
        Some(p) => section == p || section.strip_prefix(p).is_some_and(|r| r.starts_with('/')),
        None if d.sec.ends_with('/') => section.starts_with(d.sec),
        None => section == d.sec,
    })
}

pub fn helper_name(id: u32) -> String {
    tables::HELPERS.iter().find(|(i, _)| *i == id).map(|(_, n)| n.to_string()).unwrap_or_else(|| format!("helper#{id}"))
}
pub fn map_type_name(id: u32) -> String {
    tables::MAP_TYPES.get(id as usize).map(|s| s.to_string()).unwrap_or_else(|| format!("map type {id}"))
}
pub fn prog_type_id(name: &str) -> Option<u32> {
    tables::PROG_TYPES.iter().position(|p| *p == name).map(|i| i as u32)
}
pub fn prog_type_name(id: u32) -> String {
    tables::PROG_TYPES.get(id as usize).map(|s| s.to_string()).unwrap_or_else(|| format!("prog type {id}"))
}
pub fn attach_type_name(id: u32) -> String {
    tables::ATTACH_TYPES.get(id as usize).map(|s| s.to_string()).unwrap_or_else(|| format!("attach type {id}"))
}

/// Reads and checks an object; the error says what is wrong with the file.
pub fn read(path: &Path) -> Result<BpfObject, String> {
    let data = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    parse(&data, path)
}

pub fn parse(data: &[u8], path: &Path) -> Result<BpfObject, String> {
    let file = check_elf(data, path)?;
    let btf_raw = section_data(&file, ".BTF");
    let btf = if btf_raw.is_empty() {
        None
    } else {
        Some(btf::Btf::parse(btf_raw).map_err(|e| format!("{}: {e}", path.display()))?)
    };
    let relos = btf::core_relos(section_data(&file, ".BTF.ext"), btf::strings(btf_raw));
    let maps = maps(&file, btf.as_ref());
    let data_sections = data_sections(&file);
    let rodata = rodata(btf.as_ref());
    let programs = programs(&file, &relos, &data_sections);
    if programs.is_empty() {
        return Err(format!(
            "{} holds no BPF programs (no global functions in an executable section other than .text)",
            path.display()
        ));
    }
    // Kfuncs declared in BTF but reached only through .text are covered by
    // `merge_text`; a weak kfunc that is never called needs nothing.
    let _ = btf.as_ref().map(|b| b.extern_funcs());
    Ok(BpfObject { path: path.to_path_buf(), programs, maps, rodata, global_data: !data_sections.is_empty() })
}

/// `data` as an ELF object for little-endian BPF; the error says what it is instead.
fn check_elf<'d>(data: &'d [u8], path: &Path) -> Result<object::File<'d>, String> {
    if !data.starts_with(b"\x7fELF") {
        return Err(format!("{} is not an ELF file (a compiled BPF object starts with \\x7fELF)", path.display()));
    }
    let file =
        object::File::parse(data).map_err(|e| format!("{} is not a readable ELF object: {e}", path.display()))?;
    if file.architecture() != object::Architecture::Bpf {
        return Err(format!(
            "{} is an ELF object for {:?}, not BPF (build it with clang -target bpf)",
            path.display(),
            file.architecture()
        ));
    }
    if !file.is_little_endian() {
        return Err(format!(
            "{} is big-endian BPF; the matrix's kernels (x86_64, arm64) are little-endian: build with -target bpfel",
            path.display()
        ));
    }
    Ok(file)
}

/// The bytes of section `name` (empty when it is absent or unreadable).
fn section_data<'d>(file: &object::File<'d>, name: &str) -> &'d [u8] {
    file.section_by_name(name).and_then(|s| s.data().ok()).unwrap_or_default()
}

/// Maps: BTF-defined first, then legacy `struct bpf_map_def` in `maps`.
fn maps(file: &object::File, btf: Option<&btf::Btf>) -> Vec<Map> {
    let mut maps = Vec::new();
    if let Some(b) = btf {
        for (name, fields) in b.btf_maps() {
            maps.push(Map {
                name,
                map_type: fields.get("type").copied(),
                max_entries: fields.get("max_entries").copied(),
                key_size: fields.get("key_size").copied(),
                value_size: fields.get("value_size").copied(),
            });
        }
    }
    if let Some(legacy) = file.section_by_name("maps") {
        let bytes = legacy.data().unwrap_or_default();
        for sym in file.symbols().filter(|s| s.section_index() == Some(legacy.index())) {
            let off = sym.address() as usize;
            let word =
                |i: usize| bytes.get(off + i * 4..off + i * 4 + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()));
            maps.push(Map {
                name: sym.name().unwrap_or_default().to_string(),
                map_type: word(0),
                max_entries: word(3),
                key_size: word(1),
                value_size: word(2),
            });
        }
    }
    maps
}

/// The global data sections (`.rodata`, `.data`, `.bss` and their `.name`
/// variants; not the compiler's string and constant pools).
fn data_sections(file: &object::File) -> Vec<String> {
    file.sections()
        .filter_map(|s| s.name().ok().map(str::to_string))
        .filter(|n| [".rodata", ".data", ".bss"].iter().any(|p| n == p || n.starts_with(&format!("{p}."))))
        .filter(|n| !n.starts_with(".rodata.str") && !n.starts_with(".rodata.cst"))
        .collect()
}

/// The `.rodata` variables BTF describes (none without BTF).
fn rodata(btf: Option<&btf::Btf>) -> Vec<Global> {
    btf.map(|b| {
        b.datasec_vars(".rodata").into_iter().map(|(name, offset, size)| Global { name, offset, size }).collect()
    })
    .unwrap_or_default()
}

/// What each executable section's instructions use, by instruction offset: one
/// program per global function outside `.text`, with `.text`'s needs merged into
/// the programs that call into it.
fn programs(file: &object::File, relos: &BTreeMap<String, Vec<u32>>, data_sections: &[String]) -> Vec<Program> {
    let mut programs = Vec::new();
    let mut text_needs: Option<Program> = None;
    let exec = |s: &object::Section| matches!(s.flags(), SectionFlags::Elf { sh_flags } if sh_flags & 4 != 0);
    for section in file.sections().filter(|s| exec(s)) {
        let sname = section.name().unwrap_or_default().to_string();
        let bytes = section.data().unwrap_or_default();
        let rel = relocations(file, &section);
        let section_relos = relos.get(&sname).map(Vec::as_slice).unwrap_or_default();
        let scan_one = |name: String, start: u64, size: u64| {
            let mut p = program(name, &sname, section_relos, start, size);
            scan(&mut p, bytes, &rel, data_sections, start, size);
            p
        };
        if sname == ".text" {
            text_needs = Some(scan_one(".text".into(), 0, bytes.len() as u64));
            continue;
        }
        for sym in file.symbols().filter(|s| {
            s.section_index() == Some(section.index()) && s.kind() == object::SymbolKind::Text && s.is_global()
        }) {
            programs.push(scan_one(sym.name().unwrap_or_default().to_string(), sym.address(), sym.size()));
        }
    }
    if let Some(t) = text_needs {
        merge_text(&mut programs, &t);
    }
    programs
}

/// A section's relocations: instruction offset -> (symbol name, symbol section, undefined?)
fn relocations(file: &object::File, section: &object::Section) -> BTreeMap<u64, (String, Option<String>, bool)> {
    let mut rel = BTreeMap::new();
    for (off, r) in section.relocations() {
        if let RelocationTarget::Symbol(i) = r.target() {
            if let Ok(sym) = file.symbol_by_index(i) {
                let sec = sym
                    .section_index()
                    .and_then(|si: SectionIndex| file.section_by_index(si).ok())
                    .and_then(|s| s.name().ok().map(str::to_string));
                let name = sym.name().unwrap_or_default().to_string();
                rel.insert(off, (name, sec, sym.is_undefined()));
            }
        }
    }
    rel
}

/// The program `name` at `start`, `size` bytes long, in `section`, before its
/// instructions are read: its CO-RE relocations are those of its byte range.
fn program(name: String, section: &str, core_relos: &[u32], start: u64, size: u64) -> Program {
    Program {
        name,
        section: section.to_string(),
        sec_def: sec_def(section),
        insns: (size / 8) as usize,
        helpers: BTreeSet::new(),
        kfuncs: BTreeSet::new(),
        ksyms: BTreeSet::new(),
        maps: BTreeSet::new(),
        core_relos: core_relos.iter().filter(|o| (**o as u64) >= start && (**o as u64) < start + size).count(),
        callbacks: false,
        global_data: false,
        subprogs: false,
    }
}

/// Reads the instructions of `bytes[start..start + size]` into `p`: helper and
/// kfunc calls, subprogram calls, and what `ld_imm64` loads (maps, global data,
/// callbacks, ksyms), by the relocation at each instruction.
fn scan(
    p: &mut Program,
    bytes: &[u8],
    rel: &BTreeMap<u64, (String, Option<String>, bool)>,
    data_sections: &[String],
    start: u64,
    size: u64,
) {
    let end = (start + size).min(bytes.len() as u64);
    let mut off = start;
    while off + 8 <= end {
        let i = &bytes[off as usize..off as usize + 8];
        let (code, src) = (i[0], i[1] >> 4);
        let imm = i32::from_le_bytes(i[4..8].try_into().unwrap());
        let r = rel.get(&off);
        match (code, src) {
            (BPF_CALL, _) if r.is_some_and(|r| r.2) => {
                p.kfuncs.insert(r.unwrap().0.clone());
            }
            (BPF_CALL, 0) if r.is_none() => {
                p.helpers.insert(imm as u32);
            }
            (BPF_CALL, 1) => p.subprogs = true,
            (BPF_CALL, 2) => {
                if let Some(r) = r {
                    p.kfuncs.insert(r.0.clone());
                }
            }
            (BPF_LD_IMM64, s) => {
                if s == 4 {
                    p.callbacks = true;
                }
                if let Some((sym, sec, undefined)) = r {
                    match sec.as_deref() {
                        Some(".maps") | Some("maps") => {
                            p.maps.insert(sym.clone());
                        }
                        Some(s) if data_sections.iter().any(|d| d == s) => p.global_data = true,
                        Some(".text") if code == BPF_LD_IMM64 => p.callbacks = true,
                        _ if *undefined => {
                            p.ksyms.insert(sym.clone());
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        // ld_imm64 takes two slots.
        off += if code == BPF_LD_IMM64 { 16 } else { 8 };
    }
}

/// Subprograms in .text: a program that calls into them needs what they use.
fn merge_text(programs: &mut [Program], t: &Program) {
    for p in programs.iter_mut().filter(|p| p.subprogs || p.callbacks) {
        p.helpers.extend(t.helpers.iter().copied());
        p.kfuncs.extend(t.kfuncs.iter().cloned());
        p.ksyms.extend(t.ksyms.iter().cloned());
        p.maps.extend(t.maps.iter().cloned());
        p.global_data |= t.global_data;
        p.core_relos += t.core_relos;
    }
}

impl Map {
    /// (key_size, value_size, max_entries) this map is created with when the
    /// loader sets `set` (each size it gives wins over the object's).
    pub fn created_with(&self, set: Option<&MapSizes>) -> (u32, u32, u32) {
        let s = set.copied().unwrap_or_default();
        (
            s.key_size.or(self.key_size).unwrap_or(0),
            s.value_size.or(self.value_size).unwrap_or(0),
            s.max_entries.or(self.max_entries).unwrap_or(0),
        )
    }
}

impl BpfObject {
    /// The sizes a real loader sets before load: the user's `overrides`, then for
    /// what the object leaves at 0, `max_entries` 1 (4096 for ring buffers; local
    /// storage and perf_event_array stay 0: the kernel wants 0, libbpf sizes the
    /// latter) and a stack trace map's `value_size` 127 frames (libbpf-tools set
    /// `perf_max_stack_depth * 8`). Maps with nothing to set are left out.
    pub fn loader_sizes(&self, overrides: &BTreeMap<String, MapSizes>) -> BTreeMap<String, MapSizes> {
        use km_protocol::byo::{MAX_ENTRIES_STAYS_0, STACK_TRACE_VALUE_SIZE};
        let mut out = overrides.clone();
        for m in &self.maps {
            let t = m.map_type.unwrap_or(0);
            let sizes = out.entry(m.name.clone()).or_default();
            if m.max_entries.unwrap_or(0) == 0 && !MAX_ENTRIES_STAYS_0.contains(&t) && sizes.max_entries.is_none() {
                sizes.max_entries = Some(if matches!(t, 27 | 31) { 4096 } else { 1 });
            }
            if t == 7 && m.value_size.unwrap_or(0) == 0 && sizes.value_size.is_none() {
                sizes.value_size = Some(STACK_TRACE_VALUE_SIZE);
            }
        }
        out.retain(|_, s| *s != MapSizes::default());
        out
    }

    pub fn program(&self, name: &str) -> Option<&Program> {
        self.programs.iter().find(|p| p.name == name)
    }

    /// What `p` needs from a kernel, each with the catalogue feature that covers it
    /// (and so the first version that has it), in the order a reader wants them:
    /// program type, helpers, kfuncs, map types (every map of the object: libbpf
    /// creates them all whatever is autoloaded), then the rest.
    pub fn needs(&self, p: &Program) -> Vec<Need> {
        self.needs_with(p, None, &self.loader_sizes(&BTreeMap::new()))
    }

    /// [`Self::needs`] as a loader that sets the attach target `attach_to` and the
    /// map sizes `sizes` (see [`Self::loader_sizes`]) loads it: the BTF attach
    /// target as a need of its own (`kind: attach_target`, resolved against each
    /// kernel's BTF by `explain`), and every map the kernel cannot create with
    /// those sizes (`kind: map_size`; libbpf creates every map of the object).
    pub fn needs_with(&self, p: &Program, attach_to: Option<&str>, sizes: &BTreeMap<String, MapSizes>) -> Vec<Need> {
        let mut out = self.needs_of(p);
        for m in &self.maps {
            let (k, v, n) = m.created_with(sizes.get(&m.name));
            let t = m.map_type.unwrap_or(0);
            if let Some(problem) = km_protocol::byo::map_size_problem(t, k, v, n) {
                out.push(Need {
                    kind: "map_size".into(),
                    id: t,
                    name: m.name.clone(),
                    text: format!("creates map '{}' ({}) with {problem}", m.name, map_type_name(t)),
                    feature: None,
                    since: None,
                });
            }
        }
        if let Some(t) = attach_target(p, attach_to) {
            out.insert(
                1.min(out.len()),
                Need {
                    kind: "attach_target".into(),
                    id: 0,
                    name: t.name.clone(),
                    text: format!("attaches to the {} {}", t.kind.describe(), t.name),
                    feature: None,
                    since: None,
                },
            );
        }
        out
    }

    fn needs_of(&self, p: &Program) -> Vec<Need> {
        let mut out = Vec::new();
        let cat = km_protocol::features::catalogue();
        let feature_for = |pred: &dyn Fn(&km_protocol::Feature) -> bool| {
            cat.iter().find(|f| pred(f)).map(|f| (f.id.clone(), f.since.clone()))
        };
        // features.yaml first (its entries are probed); else bcc's table.
        let mut push = |kind: &str, id: u32, name: String, text: String, f: Option<(String, String)>| {
            let since = match &f {
                Some(f) => Some(f.1.clone()),
                None => versions::since(kind, &name).map(|v| format!("{}.{}", v.major, v.minor)),
            };
            out.push(Need { kind: kind.into(), id, name, text, feature: f.map(|f| f.0), since });
        };
        if let Some(d) = p.sec_def {
            let id = prog_type_id(d.prog_type).unwrap_or(0);
            let attach = d.attach_type.map(|a| format!(", attach type {a}")).unwrap_or_default();
            push(
                "prog_type",
                id,
                d.prog_type.into(),
                format!("is a {} program (SEC(\"{}\"){attach})", d.prog_type, p.section),
                feature_for(&|f| f.prog_types.iter().any(|t| t == d.prog_type)),
            );
        }
        for h in &p.helpers {
            let name = helper_name(*h);
            push(
                "helper",
                *h,
                name.clone(),
                format!("calls {name} (helper {h})"),
                feature_for(&|f| f.helpers.contains(h)),
            );
        }
        for k in &p.kfuncs {
            push("kfunc", 0, k.clone(), format!("calls kfunc {k}"), feature_for(&|f| f.kfuncs.iter().any(|x| x == k)));
        }
        let mut seen = BTreeSet::new();
        for m in &self.maps {
            let Some(t) = m.map_type else { continue };
            if !seen.insert(t) {
                continue;
            }
            let tn = map_type_name(t);
            let whose = if p.maps.contains(&m.name) { "uses" } else { "its object creates" };
            push(
                "map_type",
                t,
                tn.clone(),
                format!(
                    "{whose} {} {tn} map ('{}', map type {t})",
                    if tn.starts_with(['a', 'e', 'i', 'o']) { "an" } else { "a" },
                    m.name
                ),
                feature_for(&|f| f.map_types.contains(&tn)),
            );
        }
        if self.global_data {
            push(
                "feature",
                0,
                "global_data".into(),
                "has global data (.rodata/.data/.bss maps)".into(),
                feature_for(&|f| f.id == "global_data"),
            );
        }
        if p.callbacks {
            push(
                "feature",
                0,
                "callbacks".into(),
                "passes a callback function (BPF_PSEUDO_FUNC)".into(),
                feature_for(&|f| f.id == "callbacks"),
            );
        }
        if p.core_relos > 0 {
            push(
                "feature",
                0,
                "btf_vmlinux".into(),
                format!("has {} CO-RE relocations (needs the kernel's BTF, or `btf:`)", p.core_relos),
                feature_for(&|f| f.id == "btf_vmlinux"),
            );
        }
        out
    }
}

/// The BTF attach target `p` needs at load: its section's (`fentry/vfs_read`), or
/// `attach_to` for a section of that kind (a placeholder or a bare `fentry`).
pub fn attach_target(p: &Program, attach_to: Option<&str>) -> Option<km_protocol::btf::AttachTarget> {
    let prefix = p.section.split('/').next()?;
    let kind = km_protocol::btf::TargetKind::of_prefix(prefix)?;
    match attach_to {
        Some(t) => Some(km_protocol::btf::AttachTarget { name: t.to_string(), kind }),
        None => km_protocol::btf::AttachTarget::of_section(&p.section),
    }
}

/// The lowest catalogue version that has every need with a catalogue entry
/// (`None` when no need has one).
pub fn min_version(needs: &[Need]) -> Option<km_protocol::KernelVersion> {
    needs.iter().filter_map(|n| n.since.as_deref()?.parse().ok()).max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_matching_follows_libbpf() {
        assert_eq!(sec_def("kprobe/do_unlinkat").unwrap().prog_type, "kprobe");
        assert_eq!(sec_def("kprobe").unwrap().prog_type, "kprobe");
        assert!(sec_def("kprobex").is_none());
        assert_eq!(sec_def("tp_btf/sched_switch").unwrap().attach_type, Some("trace_raw_tp"));
        assert_eq!(sec_def("xdp").unwrap().prog_type, "xdp");
        assert_eq!(sec_def("cgroup_skb/egress").unwrap().prog_type, "cgroup_skb");
        assert_eq!(sec_def("uprobe//lib/libc.so.6:malloc").unwrap().prog_type, "kprobe");
        assert!(sec_def("not_a_section").is_none());
        assert_eq!(helper_name(181), "bpf_loop");
        assert_eq!(map_type_name(27), "ringbuf");
    }

    #[test]
    fn the_byo_example_object() {
        let o = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/byo/xdp_port_filter.bpf.o")).unwrap();
        assert_eq!(o.programs.len(), 1);
        assert_eq!(o.programs[0].sec_def.unwrap().prog_type, "xdp");
    }

    #[test]
    fn not_elf_not_bpf() {
        assert!(parse(b"hello", Path::new("x.o")).unwrap_err().contains("not an ELF"));
        let me = std::fs::read("/proc/self/exe").unwrap();
        assert!(parse(&me, Path::new("exe")).unwrap_err().contains("not BPF"));
    }
}
