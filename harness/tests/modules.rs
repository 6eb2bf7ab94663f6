//! Every guest gets its kernel's own modules (harness/src/images/modules.rs and
//! vm-images/modprobe), for real on Debian's 5.10 and 6.12 (cached kernels,
//! QEMU/TCG here): a veth pair, a clsact qdisc with a BPF program attached by
//! iproute2's `tc` (the kernel loads sch_ingress and cls_bpf itself through
//! /sbin/modprobe), modules with dependencies (bridge, vxlan) by `modprobe`, a
//! built-in module succeeds and an unknown one fails, and `bpf_preload`, which the
//! kernel asks for at every bpffs mount and these kernels lack, fails at once
//! (`km.nomod=`) instead of waiting for the disk.
use std::{path::PathBuf, process::Command};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// A tc program that passes every packet, compiled with the project's clang.
fn tc_object(dir: &std::path::Path) -> PathBuf {
    let src = dir.join("tc.bpf.c");
    std::fs::write(
        &src,
        "#include <linux/bpf.h>\n#define SEC(n) __attribute__((section(n), used))\n\
         SEC(\"tc\") int km_tc_pass(struct __sk_buff *skb) { return 0; }\n\
         char LICENSE[] SEC(\"license\") = \"GPL\";\n",
    )
    .unwrap();
    let obj = dir.join("tc.o");
    let st = Command::new("clang-22")
        .args(["-target", "bpf", "-mcpu=v2", "-O2", "-idirafter", "/usr/include/x86_64-linux-gnu", "-c"])
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .status()
        .unwrap();
    assert!(st.success(), "compiling {}", src.display());
    obj
}

#[test]
fn guests_load_their_kernels_modules() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("modules");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let obj = tc_object(&dir);
    // iproute2's tc (set-up installs it) with its libraries; busybox's tc knows no clsact.
    let ldd = Command::new("ldd").arg("/usr/sbin/tc").output().unwrap();
    let libs: Vec<String> = String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(str::to_string)
        .collect();
    assert!(!libs.is_empty(), "ldd /usr/sbin/tc: {}", String::from_utf8_lossy(&ldd.stdout));
    let script = format!(
        "set -e; ip link add km0 type veth; ip link set km0 up; \
         /usr/sbin/tc qdisc add dev km0 clsact; \
         /usr/sbin/tc filter add dev km0 ingress bpf direct-action obj {obj} sec tc; \
         /usr/sbin/tc filter show dev km0 ingress; \
         modprobe bridge; modprobe vxlan; modprobe nvme && echo builtin-ok; \
         if modprobe km_no_such_module; then echo unknown-loaded; fi; \
         if modprobe bpf_preload; then echo preload-loaded; fi; \
         grep -q ' /sys/fs/bpf bpf ' /proc/mounts && echo bpffs-ok; lsmod",
        obj = obj.display()
    );
    for kernel in ["5.10", "6.12"] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kernel-matrix"));
        c.arg("-c").arg(workspace().join("kernels.yaml")).env("KM_RUN_DIR", dir.join("runs")).current_dir(&dir);
        c.args(["exec", "-k", kernel, "--file"]).arg(&obj).args(["--file", "/usr/sbin/tc"]);
        for lib in &libs {
            c.args(["--file", lib]);
        }
        c.args(["--", "/bin/busybox", "sh", "-c", &script]);
        let o = c.output().unwrap();
        let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        eprintln!("{kernel}:\n{out}\n{err}");
        assert_eq!(o.status.code(), Some(0), "{kernel}: stdout: {out}\nstderr: {err}");
        assert!(out.contains("direct-action") && out.contains("name km_tc_pass"), "{kernel}: no tc program: {out}");
        let loaded: Vec<&str> = out.lines().filter_map(|l| l.split_whitespace().next()).collect();
        for m in ["veth", "sch_ingress", "cls_bpf", "bridge", "stp", "llc", "vxlan", "udp_tunnel"] {
            assert!(loaded.contains(&m), "{kernel}: module {m} not loaded: {out}");
        }
        assert!(out.contains("builtin-ok"), "{kernel}: modprobe of a built-in module failed: {err}");
        assert!(!out.contains("unknown-loaded") && err.contains("km_no_such_module"), "{kernel}: {err}");
        assert!(
            !out.contains("preload-loaded")
                && err.contains("module bpf_preload not found in")
                && out.contains("bpffs-ok"),
            "{kernel}: stdout: {out}\nstderr: {err}"
        );
    }
}
