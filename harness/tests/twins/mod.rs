//! "The same kernel from elsewhere gives the same verdicts": a kernel built or
//! repackaged from one of Debian's is held to what Debian's own build gives, check
//! by check and feature by feature (tests/build.rs, tests/archives.rs).
use kernel_matrix::{run::KernelRun, run::Matrix, verdict};
use km_protocol::{features::catalogue, Verdict};

/// What a verdict is, without its reason (the reasons name the kernel).
fn kind(v: &Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail(_) => "fail",
        Verdict::Ignored(_) => "ignored",
    }
}

/// Every check and feature probe on which `twin` differs from `reference`, as
/// lines naming both verdicts.
pub fn differences(m: &Matrix, reference: &KernelRun, twin: &KernelRun) -> Vec<String> {
    let mut differ = Vec::new();
    for id in m.checks() {
        let (a, b) = (verdict::check(m, reference, *id), verdict::check(m, twin, *id));
        if kind(&a) != kind(&b) {
            differ.push(format!("{} on {}: {} gives {a:?}, here {b:?}", id.trial(), twin.kernel, reference.kernel));
        }
    }
    for f in catalogue() {
        let (a, b) = (reference.features.get(&f.id), twin.features.get(&f.id));
        if a.map(|p| p.word()) != b.map(|p| p.word()) {
            differ.push(format!("features::{} on {}: {} gives {a:?}, here {b:?}", f.id, twin.kernel, reference.kernel));
        }
    }
    differ
}

/// How many checks passed on `run` (so that "the same" cannot mean "all ignored").
pub fn passed(m: &Matrix, run: &KernelRun) -> usize {
    m.checks().iter().filter(|id| verdict::check(m, run, **id) == Verdict::Pass).count()
}
