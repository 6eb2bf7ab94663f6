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
    // A prebuilt agent (for packagers, or a cross-built one) skips the nested build.
    let agent = match env::var_os("KM_AGENT_PREBUILT") {
        Some(p) => PathBuf::from(p),
        None => build_agent(&root),
    };
    let bytes = std::fs::read(&agent).unwrap_or_else(|e| panic!("reading the agent {}: {e}", agent.display()));
    println!("cargo:rustc-env=KM_AGENT_BIN={}", agent.display());
    println!("cargo:rustc-env=KM_AGENT_SIZE={}", bytes.len());
}

fn build_agent(root: &Path) -> PathBuf {
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let target = out.ancestors().nth(4).expect("OUT_DIR inside a target directory").join("agent");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--locked", "--profile", "agent", "-p", "km-agent", "--bin", "km-agent", "--target-dir"])
        .arg(&target);
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
    assert!(status.success(), "building the guest agent (cargo build --profile agent -p km-agent) failed");
    target.join("agent").join("km-agent")
}
