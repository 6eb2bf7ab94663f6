//! A tiny library of the kind a BPF project has: the packets its tests feed in.

/// An Ethernet + IPv4 + TCP/UDP header (no payload) to `dport`.
pub fn packet(proto: u8, dport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 14 + 20 + 20];
    p[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    p[14] = 0x45; // IPv4, 5 words
    p[14 + 2..14 + 4].copy_from_slice(&40u16.to_be_bytes());
    p[14 + 8] = 64; // TTL
    p[14 + 9] = proto;
    p[14 + 12..14 + 16].copy_from_slice(&[192, 0, 2, 1]);
    p[14 + 16..14 + 20].copy_from_slice(&[192, 0, 2, 2]);
    p[34 + 2..34 + 4].copy_from_slice(&dport.to_be_bytes());
    p
}

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
