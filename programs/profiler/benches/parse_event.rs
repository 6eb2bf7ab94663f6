//! Userspace hot path of the profiler: decoding one ring-buffer record (header,
//! comm, kernel and user stacks) per sample. At 99 Hz x CPUs this runs for every
//! sample the BPF program emits, before symbolization.
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use profiler::{bench_parse_event, EVENT_SIZE};

/// A record as the BPF program writes it: 20 kernel and 12 user frames.
fn event() -> Vec<u8> {
    let mut b = vec![0u8; EVENT_SIZE];
    b[0..8].copy_from_slice(&123_456_789u64.to_ne_bytes()); // ts
    b[8..12].copy_from_slice(&4242u32.to_ne_bytes()); // pid
    b[12..16].copy_from_slice(&4243u32.to_ne_bytes()); // tid
    b[16..20].copy_from_slice(&1u32.to_ne_bytes()); // cpu
    b[20..24].copy_from_slice(&(20i32 * 8).to_ne_bytes()); // kernel stack bytes
    b[24..28].copy_from_slice(&(12i32 * 8).to_ne_bytes()); // user stack bytes
    b[32..40].copy_from_slice(b"km-agent");
    let kstack = 32 + 16;
    let ustack = kstack + profiler::MAX_STACK_DEPTH * 8;
    for i in 0..20 {
        b[kstack + i * 8..kstack + i * 8 + 8]
            .copy_from_slice(&(0xffff_ffff_8100_0000u64 + i as u64 * 0x40).to_ne_bytes());
    }
    for i in 0..12 {
        b[ustack + i * 8..ustack + i * 8 + 8].copy_from_slice(&(0x5555_5555_0000u64 + i as u64 * 0x10).to_ne_bytes());
    }
    b
}

fn parse(c: &mut Criterion) {
    let ev = event();
    assert_eq!(bench_parse_event(&ev), Some((4242, 20, 12)));
    c.bench_function("profiler::parse_event", |b| b.iter(|| black_box(bench_parse_event(black_box(&ev)))));
}

criterion_group!(benches, parse);
criterion_main!(benches);
