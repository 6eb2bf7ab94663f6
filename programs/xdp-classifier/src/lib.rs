//! Userspace side of the FizzBuzzFibonacci XDP classifier: the compiled BPF object,
//! test packets, and draining the classifications map.
use std::collections::BTreeMap;

use anyhow::Context as _;
use aya::{maps::HashMap, Ebpf};
pub use xdp_classifier_common::{SourceAddr, XDP_DROP, XDP_PASS};

/// The BPF object built by aya-build (see build.rs), aligned for the ELF parser.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-classifier"));

/// Program names inside [`OBJECT`].
pub const PROGRAM: &str = "xdp_classifier";
pub const PROGRAM_SLOW: &str = "xdp_classifier_slow";

/// A 64-byte Ethernet + IPv4 + UDP frame from `10.0.0.<last_octet>` to `10.0.0.1`.
pub fn packet(last_octet: u8) -> [u8; 64] {
    let mut p = [0u8; 64];
    p[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // dst mac
    p[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // src mac
    p[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut p[14..34];
    ip[0] = 0x45; // v4, ihl 5
    ip[2..4].copy_from_slice(&50u16.to_be_bytes()); // total length
    ip[8] = 64; // ttl
    ip[9] = 17; // udp
    ip[12..16].copy_from_slice(&[10, 0, 0, last_octet]);
    ip[16..20].copy_from_slice(&[10, 0, 0, 1]);
    let csum = ipv4_checksum(ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    let udp = &mut p[34..42];
    udp[0..2].copy_from_slice(&4242u16.to_be_bytes());
    udp[2..4].copy_from_slice(&4243u16.to_be_bytes());
    udp[4..6].copy_from_slice(&30u16.to_be_bytes());
    p
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]) as u32).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The source address (host order) [`packet`] carries.
pub fn packet_source(last_octet: u8) -> u32 {
    u32::from_be_bytes([10, 0, 0, last_octet])
}

/// Reads and deletes every entry of the classifications map.
pub fn drain(ebpf: &mut Ebpf) -> anyhow::Result<BTreeMap<u32, u32>> {
    let map = ebpf
        .map_mut(xdp_classifier_common::CLASSIFICATIONS_MAP)
        .context("map CLASSIFICATIONS missing from the object")?;
    let mut map: HashMap<_, u32, u32> = HashMap::try_from(map)?;
    let entries: BTreeMap<u32, u32> = map.iter().collect::<Result<_, _>>()?;
    for k in entries.keys() {
        map.remove(k)?;
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_has_valid_ipv4_checksum_and_source() {
        let p = packet(13);
        assert_eq!(ipv4_checksum(&p[14..34]), 0, "checksum over a valid header folds to 0");
        assert_eq!(&p[26..30], &[10, 0, 0, 13]);
        assert_eq!(SourceAddr::new(packet_source(13)), SourceAddr::Fibonacci);
    }

    #[test]
    fn object_is_a_bpf_elf_with_both_programs() {
        assert_eq!(&OBJECT[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([OBJECT[18], OBJECT[19]]), 247, "EM_BPF");
        let text = String::from_utf8_lossy(OBJECT);
        assert!(text.contains(PROGRAM) && text.contains(PROGRAM_SLOW));
    }
}
