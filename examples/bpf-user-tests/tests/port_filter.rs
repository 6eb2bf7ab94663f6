//! Needs root and a kernel with BPF_PROG_TEST_RUN for XDP: run it with
//! `kernel-matrix exec` as the cargo runner (see Cargo.toml), or as a suite.
use aya::{
    programs::{ProgramError, TestRunOptions, Xdp},
    TestRun as _,
};
use bpf_user_tests::{packet, TCP, UDP};

/// Read at run time (not include_bytes!) from the crate's directory: in the
/// guest it is there because `--file tests/data` (or `files:`) put it there.
fn object() -> Vec<u8> {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/port_filter.bpf.o");
    std::fs::read(p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn verdict(proto: u8, dport: u16) -> u32 {
    let mut ebpf = aya::Ebpf::load(&object()).expect("parse the object");
    let prog: &mut Xdp = ebpf.program_mut("port_filter").unwrap().try_into().unwrap();
    if let Err(ProgramError::LoadError { io_error, verifier_log }) = prog.load() {
        panic!("verifier rejected port_filter: {io_error}\n{verifier_log}");
    }
    let data = packet(proto, dport);
    let mut out = [0u8; 128];
    prog.test_run(TestRunOptions { data_in: Some(&data), data_out: Some(&mut out), ..Default::default() }).expect("BPF_PROG_TEST_RUN").return_value
}

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

#[test]
fn drops_telnet() {
    assert_eq!(verdict(TCP, 23), XDP_DROP);
}

#[test]
fn passes_https() {
    assert_eq!(verdict(TCP, 443), XDP_PASS);
}

#[test]
fn drops_tftp() {
    assert_eq!(verdict(UDP, 69), XDP_DROP);
}

#[test]
fn runs_in_the_kernel_it_says() {
    // The guest's kernel, not the host's: printed so `--nocapture` shows it.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    println!("kernel {}", release.trim());
    assert!(std::path::Path::new("/sys/fs/bpf").is_dir());
}
