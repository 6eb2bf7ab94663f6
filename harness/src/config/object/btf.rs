//! Just enough of BTF (`.BTF`, `.BTF.ext`) to answer the questions the host asks of a
//! BPF object: the maps' definitions (`.maps` DATASEC), the `const volatile`
//! globals (`.rodata` DATASEC), the kfuncs it declares and how many CO-RE
//! relocations each section carries. Little-endian objects only (bpfel, what
//! `-target bpf` gives on x86).
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
    /// (`type`, `max_entries`, `map_flags`, ...), each encoded as a pointer to an
    /// array whose element count is the value.
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
                if let Some(Type { array: Some((_, n)), .. }) = self.resolve(p.size_or_type) {
                    fields.insert(m.clone(), *n);
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
