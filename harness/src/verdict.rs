//! The one place a trial's verdict is decided. Inputs, in order of precedence:
//! a kernel whose console showed a splat (nothing it reported is trusted), the
//! agent's record for the cell (or, for a feature, its probe held against the
//! declared minimum), a program left out by `--only-programs` (ignored, with that
//! reason), the reason the kernel produced no record, and finally the
//! expected-failures list of kernels.yaml.
//!
//! Feature judging is modeled on cilium/ebpf's feature tests: a probe that says
//! "missing" on a kernel at or above the declared minimum (or "present" below it)
//! is a failure, not a skip.
use km_protocol::{Arch, CheckId, Feature, KernelVersion, Probe, Verdict};

use crate::run::{KernelRun, Matrix};

/// The verdict of check `id` on `run`'s kernel.
pub fn check(m: &Matrix, run: &KernelRun, id: CheckId) -> Verdict {
    let trial = id.trial();
    let own = match run.checks.get(&(id.program.to_string(), id.check.to_string())) {
        Some(o) => o.verdict.clone(),
        // Left out on purpose: said so, not counted as a failure.
        None if !m.opts.selects(id.program) => {
            Verdict::Ignored(format!("{} not selected (--only-programs / KM_ONLY_PROGRAMS)", id.program))
        }
        None => {
            Verdict::Fail(run.failure.clone().unwrap_or_else(|| "the agent reported no result for this check".into()))
        }
    };
    let v = match &run.untrusted {
        // Even a pass: the kernel misbehaved while the check ran.
        Some(why) => Verdict::Fail(format!("{why}\n(the check itself reported: {})", brief(&own))),
        None => own,
    };
    expected(m, run, &trial, v)
}

/// The `features::<id>` trial: the probe held against the declared minimum.
pub fn feature(m: &Matrix, run: &KernelRun, f: &Feature) -> Verdict {
    let v = match (&run.untrusted, run.features.get(&f.id)) {
        // Feature probes from a broken kernel are not evidence either.
        (Some(why), _) => Verdict::Fail(why.clone()),
        (None, None) => {
            Verdict::Fail(run.failure.clone().unwrap_or_else(|| "the agent reported no probe for this feature".into()))
        }
        (None, Some(probe)) => match run.release.as_deref().map(str::parse::<KernelVersion>) {
            Some(Ok(v)) => {
                let backports = m.config.kernel(&run.kernel).is_some_and(crate::config::KernelSpec::has_backports);
                judge(f, m.config.arch_of(&run.kernel), v, probe, backports)
            }
            _ => Verdict::Fail(format!("cannot tell the kernel version from release {:?}", run.release)),
        },
    };
    expected(m, run, &format!("features::{}", f.id), v)
}

/// A probe's result on a kernel of version `v` and architecture `arch`, against
/// the declared minimum for that architecture. On a kernel with `backports` (a
/// vendor's), a disagreement is the vendor's doing, not the catalogue's: the
/// trial is ignored with what the probe found.
pub fn judge(f: &Feature, arch: Arch, v: KernelVersion, p: &Probe, backports: bool) -> Verdict {
    let since = f.min_version_on(arch);
    let min = if f.since_arch.contains_key(&arch) { format!("{since} on {arch}") } else { since.to_string() };
    match p {
        Probe::Unavailable(why) => Verdict::Ignored(why.clone()),
        // Neither present nor absent: the probe failed here, which a guest (root,
        // its own kernel) should never see; a failure to look into, not a skip.
        Probe::Unprobed(why) => Verdict::Fail(format!("{}: {why}", f.title)),
        Probe::Present(_) if v >= since => Verdict::Pass,
        Probe::Absent(_) if v < since => Verdict::Pass,
        Probe::Present(d) if backports => Verdict::Ignored(format!(
            "backported: {} is present on {v}, which mainline has from {min} ({d}); no version gate holds on this kernel",
            f.title
        )),
        Probe::Absent(d) if backports => Verdict::Ignored(format!(
            "{} is absent on {v} though mainline has it from {min} ({d}): this kernel left it out; no version gate holds on it",
            f.title
        )),
        Probe::Present(d) => Verdict::Fail(format!(
            "{} is present on {v}, below its declared minimum {min} ({d}): the catalogue or the kernel (a backport?) disagrees",
            f.title
        )),
        Probe::Absent(d) => Verdict::Fail(format!("{} is missing on {v}, at or above its declared minimum {min}: {d}", f.title)),
    }
}

fn expected(m: &Matrix, run: &KernelRun, trial: &str, v: Verdict) -> Verdict {
    crate::config::expect::apply(&m.config.expected_failures, &run.kernel, trial, v)
}

fn brief(v: &Verdict) -> String {
    match v {
        Verdict::Pass => "pass".to_string(),
        Verdict::Fail(m) => format!("fail: {}", m.lines().next().unwrap_or("")),
        Verdict::Ignored(r) => format!("ignored: {r}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use km_protocol::features::by_id;

    #[test]
    fn judging_against_the_declared_minimum() {
        let f = by_id("bpf_loop").unwrap();
        let v = |s: &str| s.parse::<KernelVersion>().unwrap();
        let present = Probe::Present("x".into());
        let absent = Probe::Absent("y".into());
        assert_eq!(judge(f, Arch::X86_64, v("6.1"), &present, false), Verdict::Pass);
        assert_eq!(judge(f, Arch::X86_64, v("5.10"), &absent, false), Verdict::Pass);
        assert!(
            matches!(judge(f, Arch::X86_64, v("6.1"), &absent, false), Verdict::Fail(m) if m.contains("missing on 6.1.0"))
        );
        assert!(
            matches!(judge(f, Arch::X86_64, v("5.10"), &present, false), Verdict::Fail(m) if m.contains("below its declared minimum"))
        );
        assert!(matches!(
            judge(f, Arch::X86_64, v("6.1"), &Probe::Unavailable("no PMU".into()), false),
            Verdict::Ignored(_)
        ));
    }

    #[test]
    fn a_vendor_kernel_disagrees_with_mainline_without_failing() {
        let f = by_id("ringbuf").unwrap();
        let v = |s: &str| s.parse::<KernelVersion>().unwrap();
        // RHEL 8's 4.18 with the ring buffer backported.
        let rhel8 = v("4.18.0-553.el8_10.x86_64");
        let present = Probe::Present("BPF_MAP_TYPE_RINGBUF created".into());
        assert!(
            matches!(judge(f, Arch::X86_64, rhel8, &present, false), Verdict::Fail(m) if m.contains("a backport?")),
            "an upstream kernel's disagreement is the catalogue's problem"
        );
        assert_eq!(
            judge(f, Arch::X86_64, rhel8, &present, true),
            Verdict::Ignored(
                "backported: ring buffer is present on 4.18.0, which mainline has from 5.8.0 (BPF_MAP_TYPE_RINGBUF created); no version gate holds on this kernel".into()
            )
        );
        let absent = Probe::Absent("EINVAL".into());
        assert!(
            matches!(judge(f, Arch::X86_64, v("5.14.0-503.el9"), &absent, true), Verdict::Ignored(m) if m.contains("left it out"))
        );
        // Agreement is still a pass, and a failed probe still a failure.
        assert_eq!(judge(f, Arch::X86_64, v("5.14.0-503.el9"), &present, true), Verdict::Pass);
        assert_eq!(judge(f, Arch::X86_64, rhel8, &absent, true), Verdict::Pass);
        assert!(matches!(judge(f, Arch::X86_64, rhel8, &Probe::Unprobed("E2BIG".into()), true), Verdict::Fail(_)));
    }
}
