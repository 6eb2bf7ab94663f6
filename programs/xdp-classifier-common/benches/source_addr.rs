//! Userspace micro-benchmark of the classification hot path (`SourceAddr::new`
//! over every last octet), next to the slow variant so a regression is visible.
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use xdp_classifier_common::SourceAddr;

fn source_addr(c: &mut Criterion) {
    c.bench_function("SourceAddr::new 0..256", |b| {
        b.iter(|| {
            for a in 0..256u32 {
                black_box(SourceAddr::new(black_box(a)));
            }
        })
    });
    c.bench_function("SourceAddr::new_slow 0..256", |b| {
        b.iter(|| {
            for a in 0..256u32 {
                black_box(SourceAddr::new_slow(black_box(a)));
            }
        })
    });
}

criterion_group!(benches, source_addr);
criterion_main!(benches);
