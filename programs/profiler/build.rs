//! Compiles programs-ebpf/profiler/profiler.bpf.c with clang and generates the
//! libbpf-rs skeleton into OUT_DIR (see src/lib.rs).
use std::{env, path::PathBuf};

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let src_dir = manifest.join("../../programs-ebpf/profiler");
    let src = src_dir.join("profiler.bpf.c");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("profiler.skel.rs");
    let clang = env::var_os("BPF_CLANG").unwrap_or_else(|| "clang-22".into());
    SkeletonBuilder::new()
        .source(&src)
        // Keep the object too: the matrix inspects it with the verifier (harness::verifier).
        .obj(PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("profiler.bpf.o"))
        .clang(clang)
        .clang_args([
            // ISA v2: no v3 atomics, so 5.10 loads the object.
            "-mcpu=v2".into(),
            "-I".into(),
            src_dir.clone().into_os_string(),
            // asm/types.h for the UAPI headers.
            "-idirafter".into(),
            km_build_support::asm_include_dir().into(),
        ])
        .build_and_generate(&out)
        .expect("building the profiler BPF object (needs clang-22, or set BPF_CLANG)");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed={}", src_dir.join("profiler.h").display());
    println!("cargo:rerun-if-env-changed=BPF_CLANG");
}
