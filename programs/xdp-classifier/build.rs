//! Builds the BPF object with aya-build (nightly + bpf-linker) into OUT_DIR, where
//! `src/lib.rs` embeds it.
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let meta = cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = meta
        .packages
        .iter()
        .find(|p| p.name.as_str() == "xdp-classifier-ebpf")
        .ok_or_else(|| anyhow!("xdp-classifier-ebpf is not in the workspace"))?;
    let root_dir = ebpf.manifest_path.parent().ok_or_else(|| anyhow!("manifest path has no parent"))?;
    // The shared classification crate is compiled into the object too.
    let common = root_dir.join("../../programs/xdp-classifier-common/src");
    println!("cargo:rerun-if-changed={common}");
    aya_build::build_ebpf(
        [aya_build::Package { name: ebpf.name.as_str(), root_dir: root_dir.as_str(), ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
