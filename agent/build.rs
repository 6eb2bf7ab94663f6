//! Compiles the C BPF programs the agent embeds (clang, BPF ISA v2 so 5.10 loads them).
use std::{env, path::PathBuf, process::Command};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang-22".into());
    println!("cargo:rerun-if-env-changed=CLANG");
    for (src, obj) in [
        ("../programs-ebpf/xdp-classifier-loop/xdp_classifier_loop.bpf.c", "xdp_classifier_loop.bpf.o"),
        ("../programs-ebpf/insn-profile/insn_profile.bpf.c", "insn_profile.bpf.o"),
    ] {
        println!("cargo:rerun-if-changed={src}");
        let status = Command::new(&clang)
            .args([
                "-target",
                "bpf",
                "-mcpu=v2",
                "-O2",
                "-g",
                "-Wall",
                "-idirafter",
                km_build_support::asm_include_dir().as_str(),
                "-c",
                src,
                "-o",
            ])
            .arg(out.join(obj))
            .status()
            .unwrap_or_else(|e| panic!("running {clang} (install clang-22 or set CLANG): {e}"));
        assert!(status.success(), "{clang} failed on {src}");
    }
}
