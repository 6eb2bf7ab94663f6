//! The FizzBuzzFibonacci XDP classifier.
//!
//! Reads the IPv4 source address of each Ethernet frame, classifies its last octet
//! with the shared `xdp-classifier-common` crate, records the class in a BTF-defined
//! hash map (so libbpf and bpftool can load the same object) and returns
//! `SourceAddr::verdict`. Non-IPv4 or truncated frames pass untouched.
//!
//! Two programs share the code: `xdp_classifier` (table lookup) and
//! `xdp_classifier_slow` (recomputes Fibonacci per packet, the regression the
//! benchmarks must catch). No atomics are used so the object loads on 5.10.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod prog {
    use aya_ebpf::{bindings::xdp_action, btf_maps::HashMap, macros::btf_map, macros::xdp, programs::XdpContext};
    use xdp_classifier_common::{SourceAddr, CLASSIFICATIONS_MAX};

    const ETH_HLEN: usize = 14;
    const ETH_P_IP: u16 = 0x0800;
    /// Offset of `saddr` in the IPv4 header.
    const IPV4_SADDR: usize = 12;

    #[btf_map]
    static CLASSIFICATIONS: HashMap<u32, u32, CLASSIFICATIONS_MAX> = HashMap::new();

    #[xdp]
    pub fn xdp_classifier(ctx: XdpContext) -> u32 {
        classify::<false>(&ctx)
    }

    #[xdp]
    pub fn xdp_classifier_slow(ctx: XdpContext) -> u32 {
        classify::<true>(&ctx)
    }

    #[inline(always)]
    fn classify<const SLOW: bool>(ctx: &XdpContext) -> u32 {
        let start = ctx.data();
        let end = ctx.data_end();
        if start + ETH_HLEN + IPV4_SADDR + 4 > end {
            return xdp_action::XDP_PASS;
        }
        // SAFETY: bounds checked against data_end just above.
        let ethertype = u16::from_be(unsafe { core::ptr::read_unaligned((start + 12) as *const u16) });
        if ethertype != ETH_P_IP {
            return xdp_action::XDP_PASS;
        }
        let saddr = u32::from_be(unsafe { core::ptr::read_unaligned((start + ETH_HLEN + IPV4_SADDR) as *const u32) });
        let class = if SLOW { SourceAddr::new_slow(saddr) } else { SourceAddr::new(saddr) };
        // A full map only loses the record, never the verdict.
        let _ = CLASSIFICATIONS.insert(saddr, class as u32, 0);
        class.verdict()
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("this crate is a BPF program; it is built for bpfel-unknown-none by aya-build");
}

#[cfg(target_arch = "bpf")]
#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
pub static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
