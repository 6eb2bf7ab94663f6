//! The CPU architectures a guest can be. The JIT, BPF trampolines, USDT argument
//! specs and stack walks differ between them, so the feature catalogue can state
//! a minimum version per architecture and trials of foreign-architecture kernels
//! run in emulated guests of their own.
use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Arch {
    /// x86_64; Debian calls it amd64.
    #[serde(rename = "x86_64", alias = "amd64")]
    X86_64,
    /// aarch64; Debian calls it arm64.
    #[serde(rename = "arm64", alias = "aarch64")]
    Arm64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Arm64];

    /// The architecture this program was built for.
    pub const fn host() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Arm64
        } else {
            Arch::X86_64
        }
    }

    /// The name in kernels.yaml and reports (`x86_64`, `arm64`).
    pub const fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }

    /// Debian's architecture name (`binary-<this>` indices, `-<this>` package suffixes).
    pub const fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The Rust target triple guest binaries are built for.
    pub const fn rust_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
            Arch::Arm64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// The ELF `e_machine` of its binaries.
    pub const fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => 62,
            Arch::Arm64 => 183,
        }
    }

    /// Parses any of the names kernels.yaml accepts.
    pub fn parse(s: &str) -> Option<Arch> {
        match s {
            "x86_64" | "amd64" => Some(Arch::X86_64),
            "arm64" | "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_debian_aliases_parse() {
        for a in Arch::ALL {
            assert_eq!(Arch::parse(a.name()), Some(a));
            assert_eq!(Arch::parse(a.debian()), Some(a));
            let yaml: Arch = serde_json::from_str(&format!("{:?}", a.debian())).unwrap();
            assert_eq!(yaml, a);
        }
        assert_eq!(Arch::parse("s390x"), None);
    }
}
