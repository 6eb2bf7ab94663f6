//! kernel-matrix: boots a matrix of Linux kernels under QEMU and checks eBPF
//! programs in each. This crate is the host side; what runs in the guest is the
//! `km-agent` crate, and the two share only `km-protocol`.
//!
//! Folders in pipeline order; a module uses only those above it in this list:
//! [`settings`] (every `KM_*` variable, declared once with clap) -> [`config`] (kernels.yaml, manifests, expected failures) -> [`images`] (lock,
//! Debian index, mirror, fetch, vmlinux, cache) -> [`guest_root`] (the agent and
//! the initramfs) -> [`vm`] (QEMU, accelerator, console parsing) -> [`run`]
//! (kernels over VM slots, the host target) -> [`verdict`] (the one place a
//! trial's verdict is decided) -> [`report`] (trials and bench trials, results,
//! JUnit, tables) -> [`perf`] (BMF, compare, HTML report) -> [`history`] (the
//! SQLite results history and what changed between runs). The engine ([`run`])
//! prints nothing: it emits [`run::events::Event`]s, which [`ui`] (beside
//! [`progress`], both leaf utilities) renders.
//!
//! More leaf modules, which use nothing of the crate so any folder may use them:
//! [`glob`] (the one name matcher), [`escape`] (the one shell quoter and HTML
//! escaper) and [`shard`] (`--shard i/n`).
pub mod cache;
pub mod config;
pub mod escape;
pub mod glob;
pub mod guest_root;
pub mod history;
pub mod images;
pub mod perf;
pub mod progress;
pub mod report;
pub mod run;
pub mod settings;
pub mod shard;
pub mod ui;
pub mod verdict;
pub mod vm;

pub use km_protocol::{KernelVersion, Probe, Record, Verdict};
pub use run::{KernelRun, Matrix, Options};
