//! The benchmark cells as libtest bench trials (`cargo test --test matrix -- --bench`),
//! listed by [`super::trials::trials`] after the checks. Here rather than in `perf`
//! (which writes their numbers as BMF) so that `report` needs nothing of `perf`.
use std::sync::Arc;

use km_protocol::Verdict;

use crate::{run::Matrix, vm::accel::Accel};

fn vm_kind(m: &Matrix) -> String {
    match (m.opts.accel.accel, m.icount()) {
        (Accel::Tcg, Some(_)) => "tcg-icount".into(),
        (a, _) => a.to_string(),
    }
}

/// The benchmark cells as libtest bench trials, `<kernel>::<program>::<check>`, kind
/// `[tcg]`/`[kvm]`/`[host]` so the output says where each number was measured.
///
/// They are listed always but only run with `--bench` (`cargo test --test matrix --
/// --bench`), which also puts the matrix in bench mode; a plain `cargo test` shows
/// them ignored and boots nothing for them. Cells whose kernel series is known to be
/// older than a needed feature (bpf_loop on 5.10) are ignored up front, because a
/// libtest bench cannot turn "ignored" after it started. The measurement printed is
/// the median ns per run, `+/-` the interquartile range.
pub fn trials(matrix: Arc<Matrix>) -> Vec<libtest_mimic::Trial> {
    // cargo-nextest reads `--list` as libtest's `name: test|benchmark` lines and
    // rejects libtest-mimic's `[kind] name: bench`; benchmarks are libtest-only
    // anyway (`--bench`), so under nextest (NEXTEST_RUN_ID is set while it lists,
    // 0.9.138+) they are not listed.
    if std::env::var_os("NEXTEST_RUN_ID").is_some() {
        return Vec::new();
    }
    use crate::config::KernelSource;
    use libtest_mimic::{Failed, Measurement, Trial};
    let mut out = Vec::new();
    for b in km_protocol::checks::BENCHES {
        for kernel in matrix.kernel_names() {
            let spec = matrix.config.kernel(&kernel).expect("kernel from the config");
            let (version, kind) = match spec.source() {
                KernelSource::Archive(src) => (src.version(), vm_kind(&matrix)),
                KernelSource::Local(_) | KernelSource::Build(_) => (None, vm_kind(&matrix)),
                KernelSource::Host => (km_protocol::KernelVersion::current().ok(), "host".to_string()),
            };
            let too_old = version.is_some_and(|v| {
                b.needs
                    .iter()
                    .any(|n| km_protocol::features::by_id(n).is_some_and(|f| v < f.min_version_on(spec.arch())))
            });
            let m = matrix.clone();
            let id = *b;
            let name = format!("{kernel}::{}", id.trial());
            let trial = Trial::bench(name, move |test_mode| {
                let run = m.run_kernel(&kernel);
                let where_ = run.where_();
                match crate::verdict::check(&m, &run, id) {
                    Verdict::Pass => {}
                    Verdict::Fail(msg) => {
                        return Err(Failed::from(format!(
                            "{msg}
(on {where_})"
                        )))
                    }
                    Verdict::Ignored(why) => {
                        return Err(Failed::from(format!(
                            "not measured: {why}
(on {where_})"
                        )))
                    }
                }
                if test_mode {
                    return Ok(None);
                }
                let metrics = &run.checks[&(id.program.to_string(), id.check.to_string())].metrics;
                let get = |k: &str| {
                    metrics.get(k).copied().ok_or_else(|| Failed::from(format!("the record has no {k} (on {where_})")))
                };
                let (value, lower, upper) = (get("value")?, get("lower")?, get("upper")?);
                Ok(Some(Measurement { avg: value.round() as u64, variance: (upper - lower).round() as u64 }))
            })
            .with_ignored_flag(!matrix.opts.bench || too_old);
            let trial = trial.with_kind(kind);
            out.push(trial);
        }
    }
    out
}
