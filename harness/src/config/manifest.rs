//! Bring your own program: a YAML manifest describes compiled BPF objects and how
//! to exercise them, and each one joins the matrix as `<kernel>::<name>::<check>`
//! (`load`, and `test_run` when packets are given), with no Rust written.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

pub use km_protocol::byo::{GuestPacket, GuestProgram, ProgType, GUEST_DIR, MANIFEST_JSON};
use serde::Deserialize;

use crate::config::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    programs: Vec<ProgramSpec>,
}

/// One program as the user writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramSpec {
    /// Trial prefix after the kernel: `<kernel>::<name>::load`.
    pub name: String,
    /// The compiled object (path relative to the manifest).
    pub object: PathBuf,
    /// The BPF program (function) name inside the object.
    pub program: String,
    /// Program type, for the reader and for choosing verdict names: xdp | tc | socket_filter.
    #[serde(rename = "type")]
    pub prog_type: ProgType,
    /// Feature ids from features.yaml the program cannot run without.
    #[serde(default)]
    pub needs: Vec<String>,
    /// Packets for BPF_PROG_TEST_RUN and the verdict each must get.
    #[serde(default)]
    pub test_run: Vec<PacketSpec>,
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
}

/// Reads a manifest; every error names the file (and line/column where YAML can tell).
pub fn load(path: &Path) -> Result<Vec<ByoProgram>, ConfigError> {
    let shown = path.display().to_string();
    let text = crate::config::read_limited(path)?;
    let file: ManifestFile = crate::config::parse_yaml(&text, path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let invalid = |message: String| ConfigError::Invalid { path: shown.clone(), message };
    let mut out = Vec::new();
    for p in file.programs {
        if p.name.is_empty() || !p.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(invalid(format!("program name {:?} must be letters, digits and '_'", p.name)));
        }
        if out.iter().any(|o: &ByoProgram| o.guest.name == p.name) {
            return Err(invalid(format!("program {:?} is listed twice", p.name)));
        }
        for n in &p.needs {
            if km_protocol::features::by_id(n).is_none() {
                return Err(invalid(format!("program {:?} needs unknown feature {n:?} (see features.yaml)", p.name)));
            }
        }
        let object_path = if p.object.is_relative() { dir.join(&p.object) } else { p.object.clone() };
        if !object_path.exists() {
            return Err(invalid(format!("program {:?}: object {} does not exist", p.name, object_path.display())));
        }
        let mut packets = Vec::new();
        for pk in &p.test_run {
            let data = match (&pk.hex, &pk.ipv4) {
                (Some(h), None) => hex::decode(h.replace([' ', '\n'], ""))
                    .map_err(|e| invalid(format!("program {:?} packet {:?}: bad hex: {e}", p.name, pk.name)))?,
                (None, Some(v4)) => ipv4_frame(v4).map_err(|e| invalid(format!("program {:?} packet {:?}: {e}", p.name, pk.name)))?,
                _ => return Err(invalid(format!("program {:?} packet {:?}: give exactly one of hex: or ipv4:", p.name, pk.name))),
            };
            let expect = verdict_value(&pk.expect, p.prog_type)
                .map_err(|e| invalid(format!("program {:?} packet {:?}: {e}", p.name, pk.name)))?;
            packets.push(GuestPacket { name: pk.name.clone(), data, expect });
        }
        out.push(ByoProgram {
            guest: GuestProgram {
                object_file: format!("{}.o", p.name),
                name: p.name,
                program: p.program,
                prog_type: p.prog_type,
                needs: p.needs,
                packets,
            },
            object_path,
        });
    }
    Ok(out)
}

fn verdict_value(e: &Expect, t: ProgType) -> Result<u32, String> {
    let name = match e {
        Expect::Number(n) => return Ok(*n),
        Expect::Name(n) => n.as_str(),
    };
    let table: &[(&str, u32)] = match t {
        ProgType::Xdp => &[("XDP_ABORTED", 0), ("XDP_DROP", 1), ("XDP_PASS", 2), ("XDP_TX", 3), ("XDP_REDIRECT", 4)],
        ProgType::Tc => &[("TC_ACT_UNSPEC", u32::MAX), ("TC_ACT_OK", 0), ("TC_ACT_RECLASSIFY", 1), ("TC_ACT_SHOT", 2), ("TC_ACT_PIPE", 3), ("TC_ACT_REDIRECT", 7)],
        ProgType::SocketFilter => &[],
    };
    table
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("unknown verdict {name:?} for a {t:?} program (use a number or one of {:?})", table.iter().map(|t| t.0).collect::<Vec<_>>()))
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
        let f = ipv4_frame(&Ipv4Spec { src: [10, 0, 0, 1].into(), dst: [10, 0, 0, 2].into(), proto: "tcp".into(), sport: 1234, dport: 80, payload: 0 }).unwrap();
        assert_eq!(f.len(), 54);
        assert_eq!(f[23], 6);
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 80);
    }

    #[test]
    fn verdict_names() {
        assert_eq!(verdict_value(&Expect::Name("XDP_DROP".into()), ProgType::Xdp), Ok(1));
        assert_eq!(verdict_value(&Expect::Number(7), ProgType::SocketFilter), Ok(7));
        assert!(verdict_value(&Expect::Name("TC_ACT_SHOT".into()), ProgType::Xdp).is_err());
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
}
