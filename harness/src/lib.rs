//! kernel-matrix: boots a matrix of Linux kernels under QEMU and checks eBPF
//! programs in each.
//!
//! Data flows one way: [`config`] -> [`lock`]/[`images`] -> [`vm`] -> guest agent
//! ([`checks`], [`protocol`]) -> [`matrix`] -> [`trials`]/[`report`].
pub mod accel;
pub mod bench;
pub mod bmf;
pub mod compare;
pub mod html;
pub mod byo;
pub mod bzimage;
pub mod cache_gc;
pub mod checks;
pub mod config;
pub mod console;
pub mod debian;
pub mod expect;
pub mod features;
pub mod fetch;
pub mod images;
pub mod initramfs;
pub mod junit;
pub mod kernel_version;
pub mod lock;
pub mod matrix;
pub mod mirror;
pub mod perf;
pub mod progress;
pub mod protocol;
pub mod report;
pub mod repro;
pub mod results;
pub mod shard;
pub mod trials;
pub mod verifier;
pub mod vm;

pub use kernel_version::KernelVersion;
