//! Two builds: the probe C file (cc crate) into the library, so any binary that
//! links it carries the USDT note; and the BPF object + libbpf-rs skeleton.
use std::{env, path::PathBuf};

use libbpf_cargo::SkeletonBuilder;

fn main() {
    cc::Build::new().file("src/probe.c").opt_level(2).compile("km_usdt_probe");
    println!("cargo:rerun-if-changed=src/probe.c");

    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let src = manifest.join("../../programs-ebpf/usdt/usdt.bpf.c");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("usdt.skel.rs");
    let clang = env::var_os("BPF_CLANG").unwrap_or_else(|| "clang-22".into());
    SkeletonBuilder::new()
        .source(&src)
        // Keep the object too: the matrix inspects it with the verifier (harness::verifier).
        .obj(PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("usdt.bpf.o"))
        .clang(clang)
        .clang_args([
            // ISA v2: no v3 atomics, so 5.10 loads the object.
            "-mcpu=v2",
            // asm/types.h and friends for the UAPI headers.
            "-idirafter",
            km_build_support::asm_include_dir().as_str(),
        ])
        .build_and_generate(&out)
        .expect("building the USDT BPF object (needs clang-22, or set BPF_CLANG)");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-env-changed=BPF_CLANG");
}
