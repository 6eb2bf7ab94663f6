//! The kernel-matrix guest agent: everything that runs inside the kernel under
//! test (checks, feature probes, benchmarks' guest side, verifier insight). It
//! talks to the host only through `km_protocol` records.
pub mod bench;
pub mod checks;
pub mod insn_profile;
pub mod probes;
pub mod verifier;

/// Seconds since the kernel started (`CLOCK_BOOTTIME`, the clock `/proc/uptime`
/// shows), the time base of every record: kernel start is 0.
pub fn uptime() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 * 1e-9)
        .unwrap_or(0.0)
}
