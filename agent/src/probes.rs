//! The agent's kernel feature probes: each id of `features.yaml` has one, which
//! really asks the kernel (a two-instruction program load, a map creation,
//! libbpf's `libbpf_probe_*` as bpftool uses, a syscall). The host holds the
//! results against the declared versions.
use std::{
    collections::BTreeMap,
    ffi::CString,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use km_protocol::{features::catalogue, Probe};
use libbpf_rs::libbpf_sys as sys;

/// Guest side: runs every probe of the catalogue.
pub fn probe_all() -> BTreeMap<String, Probe> {
    catalogue()
        .iter()
        .map(|f| {
            let probe = match PROBES.iter().find(|(n, _)| *n == f.probe) {
                Some((_, probe)) => probe(),
                None => Probe::Unavailable(format!("this agent has no probe named {:?}", f.probe)),
            };
            (f.id.clone(), probe)
        })
        .collect()
}

type ProbeFn = fn() -> Probe;

const PROBES: &[(&str, ProbeFn)] = &[
    ("prog_test_run", prog_test_run),
    ("bpf_stats_sysctl", || path_probe("/proc/sys/kernel/bpf_stats_enabled")),
    ("enable_stats", enable_stats),
    ("prog_profile", prog_profile),
    ("ringbuf", || map_type(sys::BPF_MAP_TYPE_RINGBUF)),
    ("btf_vmlinux", || path_probe("/sys/kernel/btf/vmlinux")),
    ("bpf_loop", || helper(sys::BPF_PROG_TYPE_XDP, sys::BPF_FUNC_loop)),
    ("verified_insns", verified_insns),
    ("attach_cookie", || helper(sys::BPF_PROG_TYPE_KPROBE, sys::BPF_FUNC_get_attach_cookie)),
    ("uprobe_multi", uprobe_multi),
    ("xdp_live_frames", xdp_live_frames),
    ("perf_event_prog", || prog_type(sys::BPF_PROG_TYPE_PERF_EVENT)),
    ("usdt", || path_probe("/sys/bus/event_source/devices/uprobe/type")),
    ("lru_hash", || map_type(sys::BPF_MAP_TYPE_LRU_HASH)),
    ("global_data", global_data),
    ("probe_read_kernel", || helper(sys::BPF_PROG_TYPE_KPROBE, sys::BPF_FUNC_probe_read_kernel)),
    ("callbacks", || helper(sys::BPF_PROG_TYPE_KPROBE, sys::BPF_FUNC_for_each_map_elem)),
    ("syscall_prog", || prog_type(sys::BPF_PROG_TYPE_SYSCALL)),
    ("user_ringbuf", || map_type(sys::BPF_MAP_TYPE_USER_RINGBUF)),
    ("task_kfuncs", || kfunc("bpf_task_from_pid")),
    ("iter_num_kfuncs", || kfunc("bpf_iter_num_new")),
];

/// Global data: libbpf maps `.rodata` to an array map frozen read-only for programs
/// (`BPF_F_RDONLY_PROG`, 5.2); older kernels reject the flag.
fn global_data() -> Probe {
    let opts = sys::bpf_map_create_opts {
        sz: std::mem::size_of::<sys::bpf_map_create_opts>() as _,
        map_flags: sys::BPF_F_RDONLY_PROG,
        ..Default::default()
    };
    // SAFETY: a null name is allowed; `opts` is a valid, sized options struct.
    let fd = unsafe { sys::bpf_map_create(sys::BPF_MAP_TYPE_ARRAY, std::ptr::null(), 4, 8, 1, &opts) };
    if fd >= 0 {
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        Probe::Present("array map with BPF_F_RDONLY_PROG created".into())
    } else {
        Probe::Absent(format!("array map with BPF_F_RDONLY_PROG: {}", errno_text(fd)))
    }
}

/// A kfunc is there when the kernel's BTF has a function of that name (the
/// verifier also checks the program type may call it; a load says so).
pub fn kfunc(name: &str) -> Probe {
    match kfunc_in_vmlinux(name) {
        Ok(true) => Probe::Present(format!("{name} in /sys/kernel/btf/vmlinux")),
        Ok(false) => Probe::Absent(format!("no function {name} in /sys/kernel/btf/vmlinux")),
        Err(e) => Probe::Absent(e),
    }
}

pub fn kfunc_in_vmlinux(name: &str) -> Result<bool, String> {
    let btf = unsafe { sys::btf__load_vmlinux_btf() };
    if btf.is_null() {
        return Err("no kernel BTF (/sys/kernel/btf/vmlinux) to look kfuncs up in".into());
    }
    let c = CString::new(name).unwrap();
    let id = unsafe { sys::btf__find_by_name_kind(btf, c.as_ptr(), sys::BTF_KIND_FUNC) };
    unsafe { sys::btf__free(btf) };
    Ok(id > 0)
}

/// Generic probes for a user program's needs (`km_protocol::byo::Need`).
/// libbpf cannot probe helpers in tracing, LSM, ext or struct_ops programs (their
/// loads need an attach target): there, and wherever the probe itself errs, the
/// helper is probed in kprobe, sched_cls and XDP programs instead and counts as
/// present if any of them has it.
pub fn helper_in(prog_type: u32, id: u32) -> Probe {
    let rc = unsafe { sys::libbpf_probe_bpf_helper(prog_type, id, std::ptr::null()) };
    match rc {
        1 => return Probe::Present(format!("libbpf probe: helper {id} in program type {prog_type} supported")),
        0 => return Probe::Absent(format!("libbpf probe: helper {id} not supported in program type {prog_type}")),
        _ => {}
    }
    let proxies = [sys::BPF_PROG_TYPE_KPROBE, sys::BPF_PROG_TYPE_SCHED_CLS, sys::BPF_PROG_TYPE_XDP];
    let answers: Vec<i32> =
        proxies.iter().map(|t| unsafe { sys::libbpf_probe_bpf_helper(*t, id, std::ptr::null()) }).collect();
    if answers.contains(&1) {
        Probe::Present(format!(
            "helper {id} exists (probed in kprobe/sched_cls/xdp; type {prog_type} cannot be probed)"
        ))
    } else if answers.iter().all(|a| *a == 0) {
        Probe::Absent(format!("helper {id} unknown to kprobe, sched_cls and xdp programs"))
    } else {
        Probe::Unavailable(format!("helper {id} could not be probed ({rc})"))
    }
}
pub fn map_type_probe(id: u32) -> Probe {
    map_type(id)
}
pub fn prog_type_probe(id: u32) -> Probe {
    prog_type(id)
}

fn errno_text(rc: i32) -> String {
    std::io::Error::from_raw_os_error(rc.abs()).to_string()
}

fn path_probe(p: &str) -> Probe {
    if std::path::Path::new(p).exists() {
        Probe::Present(format!("{p} exists"))
    } else {
        Probe::Absent(format!("no {p}"))
    }
}

fn libbpf_answer(rc: i32, what: &str) -> Probe {
    match rc {
        1 => Probe::Present(format!("libbpf probe: {what} supported")),
        0 => Probe::Absent(format!("libbpf probe: {what} not supported")),
        e => Probe::Absent(format!("libbpf probe of {what} failed: {}", errno_text(e))),
    }
}

fn map_type(t: sys::bpf_map_type) -> Probe {
    libbpf_answer(unsafe { sys::libbpf_probe_bpf_map_type(t, std::ptr::null()) }, &format!("map type {t}"))
}

fn prog_type(t: sys::bpf_prog_type) -> Probe {
    libbpf_answer(unsafe { sys::libbpf_probe_bpf_prog_type(t, std::ptr::null()) }, &format!("program type {t}"))
}

fn helper(t: sys::bpf_prog_type, h: sys::bpf_func_id) -> Probe {
    libbpf_answer(
        unsafe { sys::libbpf_probe_bpf_helper(t, h, std::ptr::null()) },
        &format!("helper {h} in program type {t}"),
    )
}

/// Encodes one BPF instruction (struct bpf_insn is 8 bytes with 4-bit register fields).
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> sys::bpf_insn {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (src << 4) | (dst & 0xf);
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    // SAFETY: bpf_insn is a plain 8-byte C struct.
    unsafe { std::mem::transmute::<[u8; 8], sys::bpf_insn>(b) }
}

/// `r0 = ret; exit`
fn return_prog(ret: i32) -> [sys::bpf_insn; 2] {
    [insn(0xb7, 0, 0, 0, ret), insn(0x95, 0, 0, 0, 0)]
}

fn load(t: sys::bpf_prog_type, insns: &[sys::bpf_insn], attach: sys::bpf_attach_type) -> Result<OwnedFd, i32> {
    load_btf(t, insns, attach, 0)
}

fn load_btf(
    t: sys::bpf_prog_type,
    insns: &[sys::bpf_insn],
    attach: sys::bpf_attach_type,
    attach_btf_id: u32,
) -> Result<OwnedFd, i32> {
    let license = CString::new("GPL").unwrap();
    let mut opts = sys::bpf_prog_load_opts {
        sz: std::mem::size_of::<sys::bpf_prog_load_opts>() as _,
        expected_attach_type: attach,
        attach_btf_id,
        ..Default::default()
    };
    let fd = unsafe {
        sys::bpf_prog_load(t, std::ptr::null(), license.as_ptr(), insns.as_ptr(), insns.len() as _, &mut opts)
    };
    if fd < 0 {
        Err(fd)
    } else {
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

fn test_run(fd: &OwnedFd, flags: u32, repeat: i32, batch_size: u32) -> Result<u32, i32> {
    let data = [0u8; 64];
    let mut opts = sys::bpf_test_run_opts {
        sz: std::mem::size_of::<sys::bpf_test_run_opts>() as _,
        data_in: data.as_ptr().cast(),
        data_size_in: data.len() as u32,
        repeat,
        flags,
        batch_size,
        ..Default::default()
    };
    let rc = unsafe { sys::bpf_prog_test_run_opts(fd.as_raw_fd(), &mut opts) };
    if rc < 0 {
        Err(rc)
    } else {
        Ok(opts.retval)
    }
}

fn prog_test_run() -> Probe {
    let fd = match load(sys::BPF_PROG_TYPE_XDP, &return_prog(2), 0) {
        Ok(fd) => fd,
        Err(e) => return Probe::Absent(format!("loading a 2-instruction XDP program: {}", errno_text(e))),
    };
    match test_run(&fd, 0, 1, 0) {
        Ok(2) => Probe::Present("test run returned XDP_PASS".into()),
        Ok(r) => Probe::Absent(format!("test run returned {r}, expected 2")),
        Err(e) => Probe::Absent(format!("BPF_PROG_TEST_RUN: {}", errno_text(e))),
    }
}

fn xdp_live_frames() -> Probe {
    let fd = match load(sys::BPF_PROG_TYPE_XDP, &return_prog(1), 0) {
        Ok(fd) => fd,
        Err(e) => return Probe::Absent(format!("loading an XDP program: {}", errno_text(e))),
    };
    // Kernels before 5.18 ignore unknown test-run flags for XDP, but reject the
    // non-zero `batch_size` attribute that came with live frames.
    match test_run(&fd, sys::BPF_F_TEST_XDP_LIVE_FRAMES, 1, 1) {
        Ok(_) => Probe::Present("test run with BPF_F_TEST_XDP_LIVE_FRAMES accepted".into()),
        Err(e) => Probe::Absent(format!("BPF_F_TEST_XDP_LIVE_FRAMES: {}", errno_text(e))),
    }
}

fn enable_stats() -> Probe {
    let fd = unsafe { sys::bpf_enable_stats(sys::BPF_STATS_RUN_TIME) };
    if fd >= 0 {
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        Probe::Present("BPF_ENABLE_STATS returned an fd".into())
    } else {
        Probe::Absent(format!("BPF_ENABLE_STATS: {}", errno_text(fd)))
    }
}

fn verified_insns() -> Probe {
    let fd = match load(sys::BPF_PROG_TYPE_SOCKET_FILTER, &return_prog(0), 0) {
        Ok(fd) => fd,
        Err(e) => return Probe::Absent(format!("loading a socket filter: {}", errno_text(e))),
    };
    let mut info = sys::bpf_prog_info::default();
    let mut len = std::mem::size_of::<sys::bpf_prog_info>() as u32;
    let rc = unsafe { sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    if rc < 0 {
        return Probe::Absent(format!("BPF_OBJ_GET_INFO_BY_FD: {}", errno_text(rc)));
    }
    if info.verified_insns > 0 {
        Probe::Present(format!("verified_insns = {}", info.verified_insns))
    } else {
        Probe::Absent("prog info carries verified_insns = 0".into())
    }
}

/// Same idea as libbpf's own probe: a uprobe-multi link on "/" fails with EBADF
/// exactly when the kernel knows the link type.
fn uprobe_multi() -> Probe {
    let fd = match load(sys::BPF_PROG_TYPE_KPROBE, &return_prog(0), sys::BPF_TRACE_UPROBE_MULTI) {
        Ok(fd) => fd,
        Err(e) => return Probe::Absent(format!("loading a kprobe program for uprobe_multi: {}", errno_text(e))),
    };
    let path = CString::new("/").unwrap();
    let offset: std::os::raw::c_ulong = 0;
    let mut opts =
        sys::bpf_link_create_opts { sz: std::mem::size_of::<sys::bpf_link_create_opts>() as _, ..Default::default() };
    opts.__bindgen_anon_1.uprobe_multi = sys::bpf_link_create_opts__bindgen_ty_1__bindgen_ty_3 {
        path: path.as_ptr(),
        offsets: &offset,
        cnt: 1,
        ..Default::default()
    };
    let rc = unsafe { sys::bpf_link_create(fd.as_raw_fd(), -1, sys::BPF_TRACE_UPROBE_MULTI, &opts) };
    if rc >= 0 {
        drop(unsafe { OwnedFd::from_raw_fd(rc) });
        return Probe::Present("uprobe_multi link created".into());
    }
    if -rc == libc::EBADF {
        Probe::Present("uprobe_multi link on \"/\" rejected with EBADF: the link type exists".into())
    } else {
        Probe::Absent(format!("BPF_LINK_CREATE(uprobe_multi): {}", errno_text(rc)))
    }
}

/// `bpftool prog profile` needs fentry/fexit (BPF trampolines) and hardware counters.
fn prog_profile() -> Probe {
    if let Err(why) = fentry() {
        return Probe::Absent(why);
    }
    match hardware_pmu() {
        Ok(()) => Probe::Present("tracing programs load and a hardware instructions counter opens".into()),
        Err(e) => Probe::Unavailable(format!("no hardware PMU here ({e}); needs real hardware or KVM with a vPMU")),
    }
}

/// Loads an fentry program on `bpf_fentry_test1` (the kernel's own test target, 5.5+),
/// found through the kernel's BTF the way libbpf resolves attach points.
fn fentry() -> Result<(), String> {
    let btf = unsafe { sys::btf__load_vmlinux_btf() };
    if btf.is_null() {
        return Err("no kernel BTF to resolve an fentry target".into());
    }
    let name = CString::new("bpf_fentry_test1").unwrap();
    let id = unsafe { sys::btf__find_by_name_kind(btf, name.as_ptr(), sys::BTF_KIND_FUNC) };
    unsafe { sys::btf__free(btf) };
    if id < 0 {
        return Err("bpf_fentry_test1 not in the kernel BTF".into());
    }
    load_btf(sys::BPF_PROG_TYPE_TRACING, &return_prog(0), sys::BPF_TRACE_FENTRY, id as u32)
        .map(drop)
        .map_err(|e| format!("loading an fentry program: {}", errno_text(e)))
}

/// Opens (and closes) a hardware instructions counter on this thread.
pub fn hardware_pmu() -> Result<(), String> {
    // struct perf_event_attr, v5 layout (112 bytes): type, size, config; rest zero.
    let mut attr = [0u8; 112];
    attr[0..4].copy_from_slice(&0u32.to_le_bytes()); // PERF_TYPE_HARDWARE
    attr[4..8].copy_from_slice(&112u32.to_le_bytes());
    attr[8..16].copy_from_slice(&1u64.to_le_bytes()); // PERF_COUNT_HW_INSTRUCTIONS
    attr[40] = 0b0110_0001; // disabled | exclude_kernel | exclude_hv
    let fd = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    unsafe { libc::close(fd as i32) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogued_feature_has_a_probe() {
        for f in catalogue() {
            assert!(PROBES.iter().any(|(n, _)| *n == f.probe), "features.yaml: {}: unknown probe {}", f.id, f.probe);
        }
        let ids: Vec<_> = catalogue().iter().map(|f| f.id.as_str()).collect();
        for want in [
            "prog_test_run",
            "bpf_stats_sysctl",
            "enable_stats",
            "prog_profile",
            "ringbuf",
            "btf_vmlinux",
            "bpf_loop",
            "verified_insns",
            "attach_cookie",
            "uprobe_multi",
            "xdp_live_frames",
            "perf_event_prog",
            "usdt",
        ] {
            assert!(ids.contains(&want), "{want} missing from features.yaml");
        }
        assert_eq!(km_protocol::features::by_id("ringbuf").unwrap().need_reason(), "needs ring buffer, 5.8");
    }
}
