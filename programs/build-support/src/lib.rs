//! What the build scripts of the BPF C programs share (a build-dependency of
//! `agent`, `profiler` and `usdt-tracer`).

/// The directory of the target's Linux UAPI `asm/` headers (asm/types.h,
/// asm/ptrace.h, ...) for clang's `-idirafter` when compiling BPF C.
///
/// BPF objects are target-independent, but what they read from registers is not:
/// libbpf-cargo passes `-D__TARGET_ARCH_<arch>` from `CARGO_CFG_TARGET_ARCH`, and
/// `bpf/usdt.bpf.h` and `bpf_tracing.h` then need that architecture's `pt_regs`
/// (`struct user_pt_regs` on arm64). Debian's multiarch directory for the target
/// (linux-libc-dev:<arch>), else the cross toolchain's (linux-libc-dev-<arch>-cross).
pub fn asm_include_dir() -> String {
    let triple = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    };
    let multiarch = format!("/usr/include/{triple}");
    if std::path::Path::new(&multiarch).join("asm").exists() {
        multiarch
    } else {
        format!("/usr/{triple}/include")
    }
}
