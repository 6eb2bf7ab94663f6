//! What the kernel-matrix guest agent and the host share, and nothing else:
//! the records on the agent's channel, verdicts, the check, benchmark and feature
//! catalogues as data, the `km.*` kernel command-line switches and kernel versions.
//! Serde only (and a BTF reader both sides use): no BPF, no QEMU.
pub mod arch;
pub mod btf;
pub mod byo;
pub mod checks;
pub mod features;
pub mod record;
pub mod stats;
pub mod suites;
pub mod switches;
pub mod version;

pub use arch::Arch;
pub use checks::CheckId;
pub use features::{Feature, Probe};
pub use record::{Line, Record, Verdict};
pub use version::KernelVersion;
