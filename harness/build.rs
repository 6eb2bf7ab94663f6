//! Builds the guest agent (`agent/`, crate km-agent) for the guest root: optimised,
//! without debug info, in a target directory of its own (`target/agent`, so this
//! nested cargo never waits on the outer one's lock), and hands the binary's path
//! and digest to the harness, which embeds it (`guest_root::agent`).
//!
//! Why a nested cargo: the harness has no BPF dependencies of its own, and cargo
//! cannot depend on another package's binary on stable (artifact dependencies are
//! nightly-only); the agent must be built release-mode whatever profile builds the
//! harness, because a 100 MB debug agent cost 2-3 s of every boot (DESIGN.md).
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    for p in ["agent", "protocol", "programs", "programs-ebpf", "features.yaml", "Cargo.lock", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=KM_AGENT_PREBUILT");
    println!("cargo:rerun-if-env-changed=KM_AGENT_PREBUILT_ARM64");
    println!("cargo:rerun-if-env-changed=KM_GUEST_ARCHES");
    let host = env::var("TARGET").unwrap();
    // Foreign guests: arm64 when the harness runs on x86_64 and the cross
    // toolchain is there (`cargo xtask setup` installs it); without it the harness
    // still builds, and an arm64 kernel fails with the reason.
    let want_arm64 = host.starts_with("x86_64")
        && env::var("KM_GUEST_ARCHES").map_or(true, |a| a.split(',').any(|a| a.trim() == "arm64"));
    let arm64_ready = want_arm64 && cross_toolchain_ready();
    if want_arm64 && !arm64_ready {
        println!(
            "cargo:warning=no aarch64 cross toolchain (aarch64-linux-gnu-gcc, libelf-dev:arm64, rustup target aarch64-unknown-linux-gnu): this kernel-matrix cannot run arm64 kernels; `cargo xtask setup` installs it"
        );
    }
    // A prebuilt agent (for packagers, or a cross-built one) skips the nested build.
    let (agent, arm64) = match env::var_os("KM_AGENT_PREBUILT") {
        Some(p) => (PathBuf::from(p), env::var_os("KM_AGENT_PREBUILT_ARM64").map(PathBuf::from)),
        None => {
            let mut targets = vec![host.clone()];
            if arm64_ready {
                targets.push(ARM64.to_string());
            }
            let built = build_agents(&root, &targets);
            (built[0].clone(), built.get(1).cloned())
        }
    };
    let bytes = std::fs::read(&agent).unwrap_or_else(|e| panic!("reading the agent {}: {e}", agent.display()));
    println!("cargo:rustc-env=KM_AGENT_BIN={}", agent.display());
    println!("cargo:rustc-env=KM_AGENT_SIZE={}", bytes.len());
    // No arm64 agent: an empty file, which the harness reads as "not built".
    let arm64 = arm64.unwrap_or_else(|| {
        let empty = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("no-arm64-agent");
        std::fs::write(&empty, b"").unwrap();
        empty
    });
    println!("cargo:rustc-env=KM_AGENT_BIN_ARM64={}", arm64.display());
}

const ARM64: &str = "aarch64-unknown-linux-gnu";

/// The cross linker runs and the Rust standard library for aarch64 is installed.
fn cross_toolchain_ready() -> bool {
    let gcc = Command::new("aarch64-linux-gnu-gcc").arg("--version").output().is_ok_and(|o| o.status.success());
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(rustc).args(["--print", "sysroot"]).output().ok().filter(|o| o.status.success());
    let std = sysroot
        .is_some_and(|o| Path::new(String::from_utf8_lossy(&o.stdout).trim()).join("lib/rustlib").join(ARM64).exists());
    gcc && std && Path::new("/usr/lib/aarch64-linux-gnu/libelf.so").exists()
}

/// Builds km-agent for each target in one nested cargo (host build scripts and
/// proc macros are shared), returning the binaries in the same order.
fn build_agents(root: &Path, targets: &[String]) -> Vec<PathBuf> {
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let target = out.ancestors().nth(4).expect("OUT_DIR inside a target directory").join("agent");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--locked", "--profile", "agent", "-p", "km-agent", "--bin", "km-agent", "--target-dir"])
        .arg(&target);
    for t in targets {
        cmd.args(["--target", t]);
    }
    // The Debian cross toolchain for aarch64 (linker, and the C compiler libbpf-sys
    // builds libbpf with), unless the user chose others.
    for (k, v) in [
        ("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER", "aarch64-linux-gnu-gcc"),
        ("CC_aarch64_unknown_linux_gnu", "aarch64-linux-gnu-gcc"),
        ("AR_aarch64_unknown_linux_gnu", "aarch64-linux-gnu-ar"),
    ] {
        if env::var_os(k).is_none() {
            cmd.env(k, v);
        }
    }
    // Statically linked (glibc's static-pie, libbpf's libelf and zlib from their
    // `.a`): under TCG a dynamic agent spent 0.12 s of a 2.4 s boot in the dynamic
    // loader before main, a static one 0.05 s, and the root lost its 2.3 MB of
    // shared libraries (6.1, DESIGN.md). The user's own flags come first; with
    // `--target`, they reach the agent's crates and not the build scripts.
    let mut flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    for f in ["-C", "target-feature=+crt-static"] {
        if !flags.is_empty() {
            flags.push('\x1f');
        }
        flags.push_str(f);
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", flags);
    // What cargo set for this build script describes the harness's build, not the agent's.
    for (k, _) in env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("CARGO_FEATURE_")
            || k.starts_with("CARGO_CFG_")
            || k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || [
                "OUT_DIR",
                "TARGET",
                "HOST",
                "PROFILE",
                "OPT_LEVEL",
                "DEBUG",
                "NUM_JOBS",
                "CARGO_TARGET_DIR",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&k.as_str())
        {
            cmd.env_remove(&k);
        }
    }
    let status = cmd.status().expect("running cargo for the guest agent");
    assert!(status.success(), "building the guest agent (cargo build --profile agent -p km-agent {targets:?}) failed");
    targets.iter().map(|t| target.join(t).join("agent").join("km-agent")).collect()
}
