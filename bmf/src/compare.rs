//! Baseline vs current: per benchmark cell, faster / slower / unchanged, with a
//! threshold that respects the measured noise.
//!
//! A latency change counts only if it exceeds both
//! - the relative threshold (`threshold_pct` of the baseline), and
//! - the noise the two runs themselves showed: for a slowdown, the baseline's upper
//!   half-spread (`upper - value`) plus the current run's lower half-spread
//!   (`value - lower`); mirrored for a speed-up. With quartiles as bounds this says
//!   "the two interquartile ranges do not overlap".
//!
//! Within-run spreads miss a disturbance that lasts a whole run (a busy neighbour on a
//! shared host shifted every sample of one run by 10-60%), so a baseline can be
//! several earlier runs: [`pool`] takes the median of their medians and widens the
//! bounds to the lowest Q1 and highest Q3 any of them saw, which puts the measured
//! run-to-run noise into the threshold.
//!
//! Verifier measures are exact (no noise): any difference is reported, but only a
//! latency regression makes `kernel-matrix compare` exit non-zero.
use std::fmt::Write as _;

use crate::{is_judged, Bmf, Meta, Metric};

/// The relative latency change (percent) that counts by default; the runs' own
/// spreads must be exceeded as well.
pub const DEFAULT_THRESHOLD_PCT: f64 = 10.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Faster,
    Slower,
    Unchanged,
    /// An exact measure (verifier numbers) differs.
    Changed,
    /// Only in the current run.
    New,
    /// Only in the baseline.
    Missing,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub bench: String,
    pub measure: String,
    pub base: Option<Metric>,
    pub current: Option<Metric>,
    pub status: Status,
    /// (current - base) / base, percent.
    pub change_pct: Option<f64>,
    /// The smallest change that would have counted, in the measure's unit.
    pub needed: Option<f64>,
}

impl Cell {
    pub fn is_regression(&self) -> bool {
        self.status == Status::Slower
    }
}

/// Judges one latency pair.
pub fn judge(base: &Metric, cur: &Metric, threshold_pct: f64) -> (Status, f64) {
    let delta = cur.value - base.value;
    let noise = if delta >= 0.0 {
        (base.upper() - base.value) + (cur.value - cur.lower())
    } else {
        (base.value - base.lower()) + (cur.upper() - cur.value)
    };
    let needed = (threshold_pct / 100.0 * base.value.abs()).max(noise);
    let status = if delta.abs() <= needed {
        Status::Unchanged
    } else if delta > 0.0 {
        Status::Slower
    } else {
        Status::Faster
    };
    (status, needed)
}

/// Several baseline runs as one: per latency cell the median of the runs' medians,
/// bounded by the lowest `lower` and the highest `upper` among them; exact measures
/// from the newest run that has them (the last file).
pub fn pool(runs: &[Bmf]) -> Bmf {
    let mut all: std::collections::BTreeMap<(String, String), Vec<Metric>> = Default::default();
    for run in runs {
        for (bench, ms) in run {
            for (measure, m) in ms {
                all.entry((bench.clone(), measure.clone())).or_default().push(*m);
            }
        }
    }
    let mut out = Bmf::new();
    for ((bench, measure), ms) in all {
        let pooled = if is_judged(&measure) && ms.len() > 1 {
            let medians: Vec<f64> = ms.iter().map(|m| m.value).collect();
            Metric {
                value: km_protocol::stats::Summary::of(&medians).median,
                lower_value: Some(ms.iter().map(Metric::lower).fold(f64::INFINITY, f64::min)),
                upper_value: Some(ms.iter().map(Metric::upper).fold(f64::NEG_INFINITY, f64::max)),
            }
        } else {
            *ms.last().expect("at least one")
        };
        out.entry(bench).or_default().insert(measure, pooled);
    }
    out
}

pub fn compare(base: &Bmf, current: &Bmf, threshold_pct: f64) -> Vec<Cell> {
    let mut names: Vec<(&String, &String)> = base.iter().flat_map(|(b, ms)| ms.keys().map(move |m| (b, m))).collect();
    for (b, ms) in current {
        for m in ms.keys() {
            if !base.get(b).is_some_and(|x| x.contains_key(m)) {
                names.push((b, m));
            }
        }
    }
    names
        .into_iter()
        .map(|(bench, measure)| {
            let b = base.get(bench).and_then(|x| x.get(measure)).copied();
            let c = current.get(bench).and_then(|x| x.get(measure)).copied();
            let change_pct = match (b, c) {
                (Some(b), Some(c)) if b.value != 0.0 => Some((c.value - b.value) / b.value * 100.0),
                _ => None,
            };
            let (status, needed) = match (b, c) {
                (None, _) => (Status::New, None),
                (_, None) => (Status::Missing, None),
                (Some(b), Some(c)) if is_judged(measure) => {
                    let (s, n) = judge(&b, &c, threshold_pct);
                    (s, Some(n))
                }
                (Some(b), Some(c)) => (if b.value == c.value { Status::Unchanged } else { Status::Changed }, None),
            };
            Cell { bench: bench.clone(), measure: measure.clone(), base: b, current: c, status, change_pct, needed }
        })
        .collect()
}

/// Removes from both files the kernels whose numbers came from different
/// accelerators in the two runs (`tcg-icount` instruction counts against `kvm`
/// wall-clock time, say): they measure different things, so `compare` never
/// judges one against the other. Returns a note per kernel removed.
pub fn drop_mixed_accels(base: &mut Bmf, base_meta: &Meta, cur: &mut Bmf, cur_meta: &Meta) -> Vec<String> {
    let mut notes = Vec::new();
    for (k, km) in &cur_meta.kernels {
        let Some(b) = base_meta.kernels.get(k) else { continue };
        if b.accel != km.accel {
            let prefix = format!("{k}::");
            base.retain(|n, _| !n.starts_with(&prefix));
            cur.retain(|n, _| !n.starts_with(&prefix));
            notes.push(format!(
                "{k} not compared: measured under {} in the baseline and {} now, which are different measures",
                b.accel, km.accel
            ));
        }
    }
    notes
}

/// Judged cells (latency, hardware counts) present in both runs, and how many of
/// them were judged slower and faster: the tally `compare` prints and the
/// regression demo checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub judged: usize,
    pub slower: usize,
    pub faster: usize,
}

pub fn tally(cells: &[Cell]) -> Tally {
    let judged: Vec<&Cell> =
        cells.iter().filter(|c| is_judged(&c.measure) && c.base.is_some() && c.current.is_some()).collect();
    Tally {
        judged: judged.len(),
        slower: judged.iter().filter(|c| c.status == Status::Slower).count(),
        faster: judged.iter().filter(|c| c.status == Status::Faster).count(),
    }
}

/// [`tally`] of the cells of one measure only.
pub fn tally_of(cells: &[Cell], measure: &str) -> Tally {
    let mine: Vec<Cell> = cells.iter().filter(|c| c.measure == measure).cloned().collect();
    tally(&mine)
}

/// The benchmarks of program `from`, renamed as program `to` (`k::from::c` ->
/// `k::to::c`); everything else is dropped, so a comparison only sees those cells.
/// This is how a variant is compared against the program it replaces.
pub fn map_program(bmf: &Bmf, from: &str, to: &str) -> Bmf {
    bmf.iter()
        .filter_map(|(name, ms)| {
            let (k, p, c) = crate::split_name(name);
            (p == from).then(|| (format!("{k}::{to}::{c}"), ms.clone()))
        })
        .collect()
}

/// A Markdown table of the cells (all, or only the changed ones), each latency row
/// with the accelerator it was measured under.
pub fn table(cells: &[Cell], meta: &Meta, only_changes: bool) -> String {
    let mut s = String::from("| benchmark | measure | accel | baseline | current | change | needed | verdict |\n|---|---|---|---|---|---|---|---|\n");
    let fmt = |m: &Option<Metric>| match m {
        Some(m) if m.lower_value.is_some() || m.upper_value.is_some() => {
            format!("{:.1} [{:.1}, {:.1}]", m.value, m.lower(), m.upper())
        }
        Some(m) => format!("{}", m.value),
        None => "-".into(),
    };
    for c in cells {
        if only_changes && c.status == Status::Unchanged {
            continue;
        }
        let (kernel, _, _) = crate::split_name(&c.bench);
        let verdict = match c.status {
            Status::Faster => "faster",
            Status::Slower => "**SLOWER**",
            Status::Unchanged => "unchanged",
            Status::Changed => "changed",
            Status::New => "new",
            Status::Missing => "missing",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {verdict} |",
            c.bench,
            c.measure,
            if kernel == "userspace" { "native" } else { meta.accel_of(kernel) },
            fmt(&c.base),
            fmt(&c.current),
            c.change_pct.map(|p| format!("{p:+.1}%")).unwrap_or_else(|| "-".into()),
            c.needed.map(|n| format!("±{n:.1}")).unwrap_or_else(|| "-".into()),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LATENCY;

    fn m(v: f64, l: f64, u: f64) -> Metric {
        Metric { value: v, lower_value: Some(l), upper_value: Some(u) }
    }

    #[test]
    fn threshold_and_noise_both_have_to_be_exceeded() {
        // 40% slower, tight spreads: a regression.
        assert_eq!(judge(&m(100.0, 98.0, 102.0), &m(140.0, 138.0, 142.0), 10.0).0, Status::Slower);
        // 40% faster: an improvement, not a failure.
        assert_eq!(judge(&m(140.0, 138.0, 142.0), &m(100.0, 98.0, 102.0), 10.0).0, Status::Faster);
        // 8%: under the 10% threshold.
        assert_eq!(judge(&m(100.0, 99.0, 101.0), &m(108.0, 107.0, 109.0), 10.0).0, Status::Unchanged);
        // 30% but the spreads overlap (noisy runs): not significant.
        assert_eq!(judge(&m(100.0, 80.0, 125.0), &m(130.0, 110.0, 150.0), 10.0).0, Status::Unchanged);
        // Without bounds only the threshold applies.
        assert_eq!(judge(&Metric::exact(100.0), &Metric::exact(111.0), 10.0).0, Status::Slower);
    }

    #[test]
    fn hardware_counts_are_judged_like_latency() {
        let one = |measure: &str, v: f64, l: f64, u: f64| -> Bmf {
            [("k::p::test_run".to_string(), [(measure.to_string(), m(v, l, u))].into())].into()
        };
        for measure in ["instructions", "cycles"] {
            // Exact counts under -icount: a rerun is unchanged, a 2x slower variant flagged.
            let base = one(measure, 1334.0, 1334.0, 1334.0);
            let rerun = compare(&base, &one(measure, 1334.0, 1334.0, 1334.0), 10.0);
            assert_eq!(rerun[0].status, Status::Unchanged, "{measure}");
            let slow = compare(&base, &one(measure, 2650.0, 2650.0, 2651.0), 10.0);
            assert_eq!(slow[0].status, Status::Slower, "{measure}");
            assert_eq!(tally(&slow), Tally { judged: 1, slower: 1, faster: 0 });
            assert_eq!(tally_of(&slow, "latency"), Tally::default());
        }
        // Verifier numbers stay exact: changed, never slower.
        let exact = |v: f64| -> Bmf {
            [("k::p::load".to_string(), [("verified_insns".to_string(), Metric::exact(v))].into())].into()
        };
        assert_eq!(compare(&exact(1.0), &exact(2.0), 10.0)[0].status, Status::Changed);
    }

    #[test]
    fn different_accelerators_are_never_compared() {
        let one = |k: &str| -> Bmf {
            [(format!("{k}::p::test_run"), [(LATENCY.to_string(), m(100.0, 99.0, 101.0))].into())].into()
        };
        let meta = |accel: &str| Meta {
            kernels: [("6.1".to_string(), crate::KernelMeta { accel: accel.into(), ..Default::default() })].into(),
            ..Default::default()
        };
        let (mut base, mut cur) = (one("6.1"), one("6.1"));
        base.extend(one("7.2"));
        cur.extend(one("7.2"));
        let notes = drop_mixed_accels(&mut base, &meta("tcg-icount"), &mut cur, &meta("kvm"));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("tcg-icount") && notes[0].contains("kvm"));
        assert_eq!(base.keys().collect::<Vec<_>>(), ["7.2::p::test_run"]);
        assert_eq!(cur.keys().collect::<Vec<_>>(), ["7.2::p::test_run"]);
        let (mut base, mut cur) = (one("6.1"), one("6.1"));
        assert!(drop_mixed_accels(&mut base, &meta("tcg"), &mut cur, &meta("tcg")).is_empty());
        assert_eq!(base.len(), 1);
    }

    #[test]
    fn pooled_baselines_carry_run_to_run_noise() {
        let one = |v: f64, l: f64, u: f64| -> Bmf {
            [("k::p::c".to_string(), [(LATENCY.to_string(), m(v, l, u))].into())].into()
        };
        let pooled = pool(&[one(100.0, 99.0, 101.0), one(120.0, 119.0, 121.0), one(104.0, 103.0, 105.0)]);
        assert_eq!(pooled["k::p::c"][LATENCY], m(104.0, 99.0, 121.0));
        // 118 against the first run alone: slower; against the pool: within the noise
        // the three runs showed together.
        let cur = one(118.0, 117.0, 119.0);
        assert_eq!(
            judge(&one(100.0, 99.0, 101.0)["k::p::c"][LATENCY], &cur["k::p::c"][LATENCY], 10.0).0,
            Status::Slower
        );
        assert_eq!(judge(&pooled["k::p::c"][LATENCY], &cur["k::p::c"][LATENCY], 10.0).0, Status::Unchanged);
        // A real regression (2x) still stands out of the pool.
        assert_eq!(judge(&pooled["k::p::c"][LATENCY], &m(210.0, 209.0, 211.0), 10.0).0, Status::Slower);
        // One run pools to itself; exact measures come from the newest run.
        assert_eq!(pool(&[one(100.0, 99.0, 101.0)]), one(100.0, 99.0, 101.0));
        let exact = |v: f64| -> Bmf {
            [("k::p::load".to_string(), [("verified_insns".to_string(), Metric::exact(v))].into())].into()
        };
        assert_eq!(pool(&[exact(1.0), exact(2.0)])["k::p::load"]["verified_insns"].value, 2.0);
    }

    #[test]
    fn cells_cover_both_files_and_exact_measures() {
        let mut base = Bmf::new();
        let mut cur = Bmf::new();
        base.entry("6.1::p::test_run".into()).or_default().insert(LATENCY.into(), m(100.0, 99.0, 101.0));
        cur.entry("6.1::p::test_run".into()).or_default().insert(LATENCY.into(), m(150.0, 149.0, 151.0));
        base.entry("6.1::p::load".into()).or_default().insert("verified_insns".into(), Metric::exact(118.0));
        cur.entry("6.1::p::load".into()).or_default().insert("verified_insns".into(), Metric::exact(120.0));
        base.entry("6.1::gone::test_run".into()).or_default().insert(LATENCY.into(), m(1.0, 1.0, 1.0));
        cur.entry("6.1::new::test_run".into()).or_default().insert(LATENCY.into(), m(1.0, 1.0, 1.0));
        let cells = compare(&base, &cur, 10.0);
        let status = |b: &str| cells.iter().find(|c| c.bench == b).unwrap().status;
        assert_eq!(status("6.1::p::test_run"), Status::Slower);
        assert_eq!(status("6.1::p::load"), Status::Changed);
        assert_eq!(status("6.1::gone::test_run"), Status::Missing);
        assert_eq!(status("6.1::new::test_run"), Status::New);
        assert_eq!(cells.iter().filter(|c| c.is_regression()).count(), 1);
        assert!(table(&cells, &Meta::default(), true).contains("**SLOWER**"));
        let mapped = map_program(&cur, "new", "p");
        assert_eq!(mapped.keys().collect::<Vec<_>>(), ["6.1::p::test_run"]);
    }
}
