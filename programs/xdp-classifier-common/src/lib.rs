//! FizzBuzzFibonacci: the classification the XDP classifier applies to the last
//! octet of each IPv4 source address.
//!
//! This crate is `no_std` so the very same code runs in the kernel (compiled to BPF
//! through aya-ebpf) and in userspace, where it is the oracle the matrix checks the
//! kernel's answers against, and what criterion micro-benchmarks.
#![no_std]

/// XDP verdicts (from `enum xdp_action` in the kernel UAPI); duplicated here so
/// userspace needs no bindings crate to interpret a test-run return value.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// Name of the BPF hash map (source address -> [`SourceAddr`] as u32) the program fills.
pub const CLASSIFICATIONS_MAP: &str = "CLASSIFICATIONS";
/// Maximum number of distinct source addresses the map holds before userspace drains it.
pub const CLASSIFICATIONS_MAX: usize = 1024;

/// Fibonacci numbers that fit in a `u8`, in ascending order.
pub const FIBONACCI_U8: [u8; 13] = [0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233];

/// The class of a source address.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceAddr {
    None = 0,
    Fibonacci = 1,
    FizzBuzz = 2,
    Fizz = 3,
    Buzz = 4,
}

impl SourceAddr {
    /// Classifies a source address (host byte order) by its last octet:
    /// Fibonacci first, then FizzBuzz, Fizz, Buzz, else None.
    #[inline(always)]
    pub fn new(addr: u32) -> Self {
        Self::classify(addr as u8, is_fibonacci(addr as u8))
    }

    /// The deliberately slow variant: recomputes the Fibonacci sequence for every
    /// packet. Same answers as [`SourceAddr::new`]; it exists so the benchmarks can
    /// prove that they catch a regression.
    #[inline(always)]
    pub fn new_slow(addr: u32) -> Self {
        Self::classify(addr as u8, is_fibonacci_slow(addr as u8))
    }

    #[inline(always)]
    // `%` as the measured BPF object has it (`is_multiple_of` also tests for a zero divisor).
    #[allow(clippy::manual_is_multiple_of)]
    fn classify(n: u8, fibonacci: bool) -> Self {
        if fibonacci {
            SourceAddr::Fibonacci
        } else if n % 15 == 0 {
            SourceAddr::FizzBuzz
        } else if n % 3 == 0 {
            SourceAddr::Fizz
        } else if n % 5 == 0 {
            SourceAddr::Buzz
        } else {
            SourceAddr::None
        }
    }

    /// The XDP verdict for a packet of this class: Fizz, Buzz and FizzBuzz traffic
    /// is dropped, everything else passes.
    #[inline(always)]
    pub fn verdict(self) -> u32 {
        match self {
            SourceAddr::Fizz | SourceAddr::Buzz | SourceAddr::FizzBuzz => XDP_DROP,
            SourceAddr::None | SourceAddr::Fibonacci => XDP_PASS,
        }
    }

    /// Decodes the value the BPF program stores in its map.
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => SourceAddr::None,
            1 => SourceAddr::Fibonacci,
            2 => SourceAddr::FizzBuzz,
            3 => SourceAddr::Fizz,
            4 => SourceAddr::Buzz,
            _ => return None,
        })
    }
}

/// Table lookup, unrolled by the compiler; cheap enough for every packet.
#[inline(always)]
pub fn is_fibonacci(n: u8) -> bool {
    matches!(n, 0 | 1 | 2 | 3 | 5 | 8 | 13 | 21 | 34 | 55 | 89 | 144 | 233)
}

/// The naive way: for each k, recomputes fib(k) from fib(0) and fib(1) and compares
/// (fib(13) = 233 is the last one below 256), about 105 additions per call instead of
/// one table test. This is the regression the benchmarks must catch.
///
/// The running terms go through the stack with volatile accesses: with plain locals
/// the compiler folds any such walk into the 13 comparisons of [`is_fibonacci`]
/// (measured: a single-pass walk written that way ran within 5% of the fast program).
#[inline(always)]
pub fn is_fibonacci_slow(n: u8) -> bool {
    let mut k = 0u32;
    while k < 14 {
        let (mut a, mut b) = (0u16, 1u16);
        let mut i = 0u32;
        while i < k {
            // SAFETY: plain reads and writes of two live locals.
            unsafe {
                let (x, y) = (core::ptr::read_volatile(&a), core::ptr::read_volatile(&b));
                core::ptr::write_volatile(&mut a, y);
                core::ptr::write_volatile(&mut b, x.wrapping_add(y));
            }
            i += 1;
        }
        if unsafe { core::ptr::read_volatile(&a) } == n as u16 {
            return true;
        }
        k += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fibonacci_table_matches_slow_walk() {
        for n in 0..=255u8 {
            assert_eq!(is_fibonacci(n), is_fibonacci_slow(n), "n={n}");
            assert_eq!(is_fibonacci(n), FIBONACCI_U8.contains(&n), "n={n}");
        }
    }

    #[test]
    fn classification_by_last_octet() {
        assert_eq!(SourceAddr::new(0x0a00_0000), SourceAddr::Fibonacci); // .0
        assert_eq!(SourceAddr::new(0x0a00_000d), SourceAddr::Fibonacci); // .13
        assert_eq!(SourceAddr::new(0x0a00_001e), SourceAddr::FizzBuzz); // .30
        assert_eq!(SourceAddr::new(0x0a00_0006), SourceAddr::Fizz); // .6
        assert_eq!(SourceAddr::new(0x0a00_000a), SourceAddr::Buzz); // .10
        assert_eq!(SourceAddr::new(0x0a00_0004), SourceAddr::None); // .4
        assert_eq!(SourceAddr::new(0xffff_ff90), SourceAddr::Fibonacci); // .144
        for a in 0..=u8::MAX as u32 {
            assert_eq!(SourceAddr::new(a), SourceAddr::new_slow(a));
            assert_eq!(SourceAddr::from_u32(SourceAddr::new(a) as u32), Some(SourceAddr::new(a)));
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(SourceAddr::Fizz.verdict(), XDP_DROP);
        assert_eq!(SourceAddr::Fibonacci.verdict(), XDP_PASS);
        assert_eq!(SourceAddr::None.verdict(), XDP_PASS);
    }
}
