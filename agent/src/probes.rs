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
use libbpf_rs::{
    btf::{types::Func, Btf},
    libbpf_sys as sys, MapHandle, MapType, ProgramType,
};

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
    ("trampolines", || match fentry() {
        Ok(()) => Probe::Present("an fentry program on bpf_fentry_test1 loaded and attached".into()),
        Err(failed) => failed,
    }),
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
    // No name: libbpf-rs passes a null name, as older kernels want. The map is
    // closed when the handle drops.
    match MapHandle::create(MapType::Array, None::<&str>, 4, 8, 1, &opts) {
        Ok(map) => {
            drop(map);
            Probe::Present("array map with BPF_F_RDONLY_PROG created".into())
        }
        Err(e) => by_errno(os_errno(&e), "array map with BPF_F_RDONLY_PROG"),
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
    let btf = Btf::from_vmlinux().map_err(|_| "no kernel BTF (/sys/kernel/btf/vmlinux) to look kfuncs up in")?;
    Ok(vmlinux_func_id(&btf, name).is_some_and(|id| id > 0))
}

/// The id of the first function (`BTF_KIND_FUNC`) named `name`, as libbpf's
/// `btf__find_by_name_kind` answers. libbpf-rs's `type_by_name` takes the first
/// type of that name whatever its kind: when that one is a function it is also the
/// first function of the name; otherwise the functions are searched in id order.
fn vmlinux_func_id(btf: &Btf<'_>, name: &str) -> Option<u32> {
    if let Some(f) = btf.type_by_name::<Func<'_>>(name) {
        return Some(f.type_id().into());
    }
    btf.type_by_kind::<Func<'_>>().find(|f| f.name() == Some(std::ffi::OsStr::new(name))).map(|f| f.type_id().into())
}

/// Generic probes for a user program's needs (`km_protocol::byo::Need`).
/// libbpf cannot probe helpers in tracing, LSM, ext or struct_ops programs (their
/// loads need an attach target): there, and wherever the probe itself errs, the
/// helper is probed in kprobe, sched_cls and XDP programs instead and counts as
/// present if any of them has it.
pub fn helper_in(prog_type: u32, id: u32) -> Probe {
    let rc = match probe_helper(prog_type, id) {
        Ok(true) => return Probe::Present(format!("libbpf probe: helper {id} in program type {prog_type} supported")),
        Ok(false) => {
            return Probe::Absent(format!("libbpf probe: helper {id} not supported in program type {prog_type}"))
        }
        Err(e) => -os_errno(&e),
    };
    let proxies = [sys::BPF_PROG_TYPE_KPROBE, sys::BPF_PROG_TYPE_SCHED_CLS, sys::BPF_PROG_TYPE_XDP];
    let answers: Vec<_> = proxies.iter().map(|t| probe_helper(*t, id)).collect();
    if answers.iter().any(|a| matches!(a, Ok(true))) {
        Probe::Present(format!(
            "helper {id} exists (probed in kprobe/sched_cls/xdp; type {prog_type} cannot be probed)"
        ))
    } else if answers.iter().all(|a| matches!(a, Ok(false))) {
        Probe::Absent(format!("helper {id} unknown to kprobe, sched_cls and xdp programs"))
    } else {
        // The proxies' own error, else the first probe's.
        let rc = answers.iter().find_map(|a| a.as_ref().err().map(|e| -os_errno(e))).unwrap_or(rc);
        by_errno(rc, &format!("helper {id}"))
    }
}
pub fn map_type_probe(id: u32) -> Probe {
    map_type(id)
}
pub fn prog_type_probe(id: u32) -> Probe {
    prog_type(id)
}

fn errno_text(rc: i32) -> String {
    if rc.abs() == 524 {
        return "ENOTSUPP (524)".into();
    }
    std::io::Error::from_raw_os_error(rc.abs()).to_string()
}

/// A probe that failed with `rc` (a `-errno` or errno), read by cause: EINVAL,
/// E2BIG, EOPNOTSUPP and ENOTSUPP (524) are how a kernel says it lacks something;
/// any other errno (EPERM, EACCES, ENOMEM, EFAULT, EBUSY...) says nothing about
/// the feature, so the probe could not tell (cilium/ebpf `features/` reads them so).
fn by_errno(rc: i32, what: &str) -> Probe {
    let text = format!("{what}: {}", errno_text(rc));
    match rc.abs() {
        libc::EINVAL | libc::E2BIG | libc::EOPNOTSUPP | 524 => Probe::Absent(text),
        _ => Probe::Unprobed(format!("could not probe: {text}")),
    }
}

fn path_probe(p: &str) -> Probe {
    if std::path::Path::new(p).exists() {
        Probe::Present(format!("{p} exists"))
    } else {
        Probe::Absent(format!("no {p}"))
    }
}

/// The errno of a failed libbpf-rs probe. Its `is_supported`/`is_helper_supported`
/// turn libbpf's `-errno` into `Error::from_raw_os_error(errno)` without context, so
/// the error's text is the `io::Error`'s: "... (os error N)".
fn os_errno(e: &libbpf_rs::Error) -> i32 {
    let text = e.to_string();
    text.rsplit_once("(os error ").and_then(|(_, n)| n.strip_suffix(')')?.parse().ok()).unwrap_or(libc::EIO)
}

/// libbpf's answer, as libbpf-rs gives it: supported, not supported, or the
/// probe's own error (its text is `io::Error`'s, as `errno_text` writes it).
fn libbpf_answer(answer: libbpf_rs::Result<bool>, what: &str) -> Probe {
    match answer {
        Ok(true) => Probe::Present(format!("libbpf probe: {what} supported")),
        Ok(false) => Probe::Absent(format!("libbpf probe: {what} not supported")),
        Err(e) => by_errno(os_errno(&e), &format!("libbpf probe of {what}")),
    }
}

/// `libbpf_probe_bpf_map_type` through libbpf-rs. Its `MapType` turns an id it does
/// not know into `Unknown` (u32::MAX), which libbpf answers with EOPNOTSUPP even
/// where libbpf itself knows the id (BPF_MAP_TYPE_INSN_ARRAY, newer than
/// libbpf-rs 0.27.2): such ids go to libbpf directly, so every id gets libbpf's answer.
fn probe_map_type(t: sys::bpf_map_type) -> libbpf_rs::Result<bool> {
    let known = MapType::from(t);
    if known as u32 == t {
        return known.is_supported();
    }
    // SAFETY: libbpf_probe_bpf_map_type takes any map type id and a null options
    // pointer (it rejects non-null ones); it reads no memory of ours.
    let rc = unsafe { sys::libbpf_probe_bpf_map_type(t, std::ptr::null()) };
    match rc {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(libbpf_rs::Error::from_raw_os_error(-rc)),
    }
}

/// `libbpf_probe_bpf_helper` through libbpf-rs. A program type id that
/// `ProgramType` does not know becomes `Unknown`; libbpf answers that, as every
/// program type its probe does not know, with EOPNOTSUPP (and `ProgramType` knows
/// every type libbpf 1.7's probe does), so the answer is libbpf's for every id.
fn probe_helper(t: sys::bpf_prog_type, h: sys::bpf_func_id) -> libbpf_rs::Result<bool> {
    ProgramType::from(t).is_helper_supported(h)
}

fn map_type(t: sys::bpf_map_type) -> Probe {
    libbpf_answer(probe_map_type(t), &format!("map type {t}"))
}

/// `libbpf_probe_bpf_prog_type` through libbpf-rs (unknown ids: see `probe_helper`).
fn prog_type(t: sys::bpf_prog_type) -> Probe {
    libbpf_answer(ProgramType::from(t).is_supported(), &format!("program type {t}"))
}

fn helper(t: sys::bpf_prog_type, h: sys::bpf_func_id) -> Probe {
    libbpf_answer(probe_helper(t, h), &format!("helper {h} in program type {t}"))
}

/// Encodes one BPF instruction (struct bpf_insn is 8 bytes with 4-bit register fields).
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> sys::bpf_insn {
    let mut i = sys::bpf_insn { code, off, imm, ..Default::default() };
    i.set_dst_reg(dst & 0xf);
    i.set_src_reg(src & 0xf);
    i
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
    // SAFETY: a null name is allowed; the license is a NUL-terminated string and
    // `insns` a slice of `insns.len()` instructions, both alive for the call; `opts`
    // is a valid options struct whose `sz` is its size.
    let fd = unsafe {
        sys::bpf_prog_load(t, std::ptr::null(), license.as_ptr(), insns.as_ptr(), insns.len() as _, &mut opts)
    };
    if fd < 0 {
        Err(fd)
    } else {
        // SAFETY: a non-negative return of bpf_prog_load is a new fd that only we own.
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
    // SAFETY: `fd` is an open program fd; `opts` is a valid options struct (`sz` set)
    // whose input points to `data`, alive for the call; no output buffers are given.
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
        Err(e) => return by_errno(e, "loading a 2-instruction XDP program"),
    };
    match test_run(&fd, 0, 1, 0) {
        Ok(2) => Probe::Present("test run returned XDP_PASS".into()),
        Ok(r) => Probe::Absent(format!("test run returned {r}, expected 2")),
        Err(e) => by_errno(e, "BPF_PROG_TEST_RUN"),
    }
}

fn xdp_live_frames() -> Probe {
    let fd = match load(sys::BPF_PROG_TYPE_XDP, &return_prog(1), 0) {
        Ok(fd) => fd,
        Err(e) => return by_errno(e, "loading an XDP program"),
    };
    // Kernels before 5.18 ignore unknown test-run flags for XDP, but reject the
    // non-zero `batch_size` attribute that came with live frames.
    match test_run(&fd, sys::BPF_F_TEST_XDP_LIVE_FRAMES, 1, 1) {
        Ok(_) => Probe::Present("test run with BPF_F_TEST_XDP_LIVE_FRAMES accepted".into()),
        Err(e) => by_errno(e, "BPF_F_TEST_XDP_LIVE_FRAMES"),
    }
}

fn enable_stats() -> Probe {
    // aya's BPF_ENABLE_STATS(BPF_STATS_RUN_TIME); the fd closes when dropped.
    match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
        Ok(fd) => {
            drop(fd);
            Probe::Present("BPF_ENABLE_STATS returned an fd".into())
        }
        Err(e) => by_errno(e.io_error.raw_os_error().unwrap_or(libc::EIO), "BPF_ENABLE_STATS"),
    }
}

fn verified_insns() -> Probe {
    let fd = match load(sys::BPF_PROG_TYPE_SOCKET_FILTER, &return_prog(0), 0) {
        Ok(fd) => fd,
        Err(e) => return by_errno(e, "loading a socket filter"),
    };
    let mut info = sys::bpf_prog_info::default();
    let mut len = std::mem::size_of::<sys::bpf_prog_info>() as u32;
    // SAFETY: `fd` is an open program fd; `info` is a bpf_prog_info of `len` bytes.
    let rc = unsafe { sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    if rc < 0 {
        return by_errno(rc, "BPF_OBJ_GET_INFO_BY_FD");
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
        Err(e) => return by_errno(e, "loading a kprobe program for uprobe_multi"),
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
    // SAFETY: `fd` is an open program fd; `opts` is a valid options struct (`sz` set)
    // whose path and offsets point to `path` and `offset`, alive for the call.
    let rc = unsafe { sys::bpf_link_create(fd.as_raw_fd(), -1, sys::BPF_TRACE_UPROBE_MULTI, &opts) };
    if rc >= 0 {
        // SAFETY: a non-negative return of bpf_link_create is a new fd that only we own.
        drop(unsafe { OwnedFd::from_raw_fd(rc) });
        return Probe::Present("uprobe_multi link created".into());
    }
    if -rc == libc::EBADF {
        Probe::Present("uprobe_multi link on \"/\" rejected with EBADF: the link type exists".into())
    } else {
        by_errno(rc, "BPF_LINK_CREATE(uprobe_multi)")
    }
}

/// `bpftool prog profile` needs fentry/fexit (BPF trampolines) and hardware counters.
fn prog_profile() -> Probe {
    if let Err(failed) = fentry() {
        return failed;
    }
    // The counters the profiler opens itself (kernel mode, CPU 0), so the gate and
    // the check agree: instructions, else cycles alone (the check then measures
    // cycles and reports instructions unavailable, with this reason).
    use crate::insn_profile::{open_counter, METRICS};
    let opens = |name: &str| {
        let event = METRICS.iter().find(|e| e.name == name).expect("a catalogued counter");
        open_counter(event, 0).map(drop)
    };
    match (opens("instructions"), opens("cycles")) {
        (Ok(()), _) => Probe::Present("tracing programs load and a hardware instructions counter opens".into()),
        (Err(e), Ok(())) => Probe::Present(format!(
            "tracing programs load and a cycles counter opens; instructions do not ({e}: under TCG only with -icount)"
        )),
        (Err(e), Err(_)) => Probe::Unavailable(format!(
            "no hardware counter here ({e}); needs real hardware, KVM with a vPMU, or (arm64 under TCG) its PMU"
        )),
    }
}

/// Loads an fentry program on `bpf_fentry_test1` (the kernel's own test target, 5.5+),
/// found through the kernel's BTF the way libbpf resolves attach points, and
/// attaches it. Loading alone proves little: arm64 kernels before 6.0 load fentry
/// programs but cannot build the trampoline, so attaching fails there (ENOTSUPP).
fn fentry() -> Result<(), Probe> {
    let btf = Btf::from_vmlinux().map_err(|_| Probe::Absent("no kernel BTF to resolve an fentry target".into()))?;
    let Some(id) = vmlinux_func_id(&btf, "bpf_fentry_test1") else {
        return Err(Probe::Absent("bpf_fentry_test1 not in the kernel BTF".into()));
    };
    drop(btf);
    let prog = load_btf(sys::BPF_PROG_TYPE_TRACING, &return_prog(0), sys::BPF_TRACE_FENTRY, id)
        .map_err(|e| by_errno(e, "loading an fentry program"))?;
    // SAFETY: a null name is what tracing programs attach with; `prog` is an open
    // program fd for the duration of the call.
    let link = unsafe { sys::bpf_raw_tracepoint_open(std::ptr::null(), prog.as_raw_fd()) };
    if link < 0 {
        let what = if -link == 524 {
            "an fentry program loads, attaching it fails (no trampoline on this architecture)"
        } else {
            "an fentry program loads, attaching it fails"
        };
        return Err(by_errno(link, what));
    }
    // SAFETY: a non-negative return is a new link fd that only we own (closed here, detaching).
    drop(unsafe { OwnedFd::from_raw_fd(link) });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unsupported_errnos_mean_absent() {
        for rc in [libc::EINVAL, libc::E2BIG, libc::EOPNOTSUPP, 524] {
            assert!(matches!(by_errno(-rc, "x"), Probe::Absent(_)), "{rc}");
        }
        for rc in [libc::EPERM, libc::EACCES, libc::ENOMEM, libc::EFAULT] {
            let p = by_errno(-rc, "loading");
            assert!(matches!(&p, Probe::Unprobed(t) if t.starts_with("could not probe: loading: ")), "{p:?}");
        }
    }

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
