//! The history as HTML sections for the performance report (`report --history`):
//! each kernel's benchmarks over runs, each program's verifier processed
//! instructions over runs and kernels, and the verdict grid's history (a row
//! per cell, a column per run). Inline SVG and tables only, like the rest of
//! the page (see `perf::html`, whose style these sections use).
use std::{collections::BTreeSet, fmt::Write as _};

use super::{History, HistoryError, RecordedRun};
use crate::{escape::html as esc, report::results::Outcome};

/// Series colours (the report's palette).
const COLOURS: &[&str] = &["#2f6db5", "#d9822b", "#3a9a5b", "#9b4dca", "#c23b3b", "#3b8bc2", "#8a6d3b"];

/// The last `window` runs of the history, oldest first.
pub fn load(h: &History, window: usize) -> Result<Vec<RecordedRun>, HistoryError> {
    let ids = h.run_ids()?;
    ids[ids.len().saturating_sub(window)..].iter().map(|id| h.run(*id)).collect()
}

/// The three sections, or a note when the history has no runs.
pub fn render(runs: &[RecordedRun]) -> String {
    let mut s = String::new();
    if runs.is_empty() {
        s.push_str("<h2>History</h2><p class=\"note\">The history has no runs yet.</p>");
        return s;
    }
    let _ = write!(
        s,
        "<h2>History: runs {} to {}</h2><p class=\"note\">From the results history, oldest run first: {}.</p>",
        runs[0].run.id,
        runs[runs.len() - 1].run.id,
        runs.iter().map(run_title).collect::<Vec<_>>().join("; ")
    );
    benchmarks(&mut s, runs);
    verifier(&mut s, runs);
    verdicts(&mut s, runs);
    s
}

fn run_title(r: &RecordedRun) -> String {
    let label = r.run.label.as_deref().map(|l| format!(", {}", esc(l))).unwrap_or_default();
    format!("run {} ({} UTC{label})", r.run.id, esc(&r.run.started))
}

/// Kernels in version order (names sort oddly: 5.10 < 6.1), others after.
fn kernels(runs: &[RecordedRun]) -> Vec<String> {
    let mut ks: Vec<String> =
        runs.iter().flat_map(|r| r.kernels.keys().cloned()).collect::<BTreeSet<_>>().into_iter().collect();
    km_protocol::version::sort_kernel_names(&mut ks);
    ks
}

/// Per kernel, a small chart per benchmark (a cell with a latency `value`): its
/// median over the runs.
fn benchmarks(s: &mut String, runs: &[RecordedRun]) {
    let mut any = false;
    for k in kernels(runs) {
        let trials: BTreeSet<&str> = runs
            .iter()
            .flat_map(|r| r.cells.iter())
            .filter(|((kk, t), c)| {
                *kk == k
                    && km_bmf::LATENCY_CHECKS.iter().any(|lc| t.ends_with(&format!("::{lc}")))
                    && c.metrics.contains_key("value")
            })
            .map(|((_, t), _)| t.as_str())
            .collect();
        if trials.is_empty() {
            continue;
        }
        if !any {
            s.push_str("<h3>Benchmarks over runs (median ns per run)</h3>");
            any = true;
        }
        let _ = write!(s, "<h4>{}</h4><div class=\"trends\">", esc(&k));
        for t in trials {
            let values: Vec<Option<f64>> =
                runs.iter().map(|r| r.cells.get(&(k.clone(), t.to_string()))?.metrics.get("value").copied()).collect();
            s.push_str(&line_chart(&format!("{k}::{t}"), runs, &[(t.to_string(), values)]));
        }
        s.push_str("</div>");
    }
}

/// Per program with a `load` cell, processed instructions over the runs, one line
/// per kernel.
fn verifier(s: &mut String, runs: &[RecordedRun]) {
    let programs: BTreeSet<&str> = runs
        .iter()
        .flat_map(|r| r.cells.iter())
        .filter(|(_, c)| c.metrics.contains_key("processed_insns"))
        .filter_map(|((_, t), _)| t.strip_suffix("::load"))
        .collect();
    if programs.is_empty() {
        return;
    }
    s.push_str("<h3>Verifier: processed instructions over runs and kernels</h3><div class=\"trends\">");
    for p in programs {
        let trial = format!("{p}::load");
        let series: Vec<(String, Vec<Option<f64>>)> = kernels(runs)
            .into_iter()
            .map(|k| {
                let values = runs
                    .iter()
                    .map(|r| r.cells.get(&(k.clone(), trial.clone()))?.metrics.get("processed_insns").copied())
                    .collect();
                (k, values)
            })
            .filter(|(_, v): &(String, Vec<Option<f64>>)| v.iter().any(Option::is_some))
            .collect();
        s.push_str(&line_chart(p, runs, &series));
    }
    s.push_str("</div>");
}

/// A row per cell that was not ignored in every run, a column per run.
fn verdicts(s: &mut String, runs: &[RecordedRun]) {
    let mut cells: Vec<(String, String)> = runs
        .iter()
        .flat_map(|r| r.cells.iter())
        .filter(|(_, c)| c.verdict != Outcome::Ignored)
        .map(|(key, _)| key.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let order = kernels(runs);
    cells.sort_by_key(|(k, t)| (order.iter().position(|o| o == k), t.clone()));
    s.push_str("<h3>Verdicts over runs</h3><p class=\"note\">P pass, F fail, I ignored, blank: not in that run; a cell that passed and failed within one run (<code>--retries</code>) shows its attempts.</p><table class=\"grid\"><tr><th>cell</th>");
    for r in runs {
        let _ = write!(s, "<th title=\"{}\">{}</th>", run_title(r), r.run.id);
    }
    s.push_str("</tr>");
    for key in &cells {
        let _ = write!(s, "<tr><td>{}::{}</td>", esc(&key.0), esc(&key.1));
        for r in runs {
            match r.cells.get(key) {
                None => s.push_str("<td></td>"),
                Some(c) => {
                    let letter = c.verdict.letter();
                    let shown = c.attempts.clone().unwrap_or_else(|| letter.to_string());
                    let reason = c.reason.as_deref().and_then(|r| r.lines().next()).unwrap_or("");
                    let _ = write!(s, "<td class=\"{letter}\" title=\"{}\">{}</td>", esc(reason), esc(&shown));
                }
            }
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
}

/// A small SVG line chart: x = the runs, y from zero to the largest value; one
/// polyline per series (gaps where a run has no value), a dot per value with its
/// number as a tooltip, the last value written at the right.
fn line_chart(title: &str, runs: &[RecordedRun], series: &[(String, Vec<Option<f64>>)]) -> String {
    // The title on its own line above the plot (and its top value label).
    let (left, plot_w, plot_h, top) = (56.0, 260.0, 90.0, 32.0);
    let legend_w = series.iter().map(|(n, _)| n.chars().count()).max().unwrap_or(0) as f64 * 7.0 + 90.0;
    let (width, height) = (left + plot_w + legend_w, top + plot_h + 24.0);
    let max = series.iter().flat_map(|(_, v)| v.iter().flatten()).fold(0.0f64, |a, b| a.max(*b)).max(1e-9);
    let x = |i: usize| left + if runs.len() > 1 { plot_w * i as f64 / (runs.len() - 1) as f64 } else { plot_w / 2.0 };
    let y = |v: f64| top + plot_h - plot_h * v / max;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="trend" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{t}"><text x="0" y="13" font-weight="bold">{t}</text><line x1="{left}" y1="{b}" x2="{r}" y2="{b}" stroke="#bbb"/><text x="{lx}" y="{ty}" text-anchor="end" fill="#777">{top_label}</text><text x="{lx}" y="{b}" text-anchor="end" fill="#777">0</text>"##,
        t = esc(title),
        b = top + plot_h,
        r = left + plot_w,
        lx = left - 4.0,
        ty = top + 4.0,
        top_label = number(max),
    );
    for (i, r) in runs.iter().enumerate() {
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#777">{}</text>"##,
            x(i),
            top + plot_h + 16.0,
            r.run.id
        );
    }
    for (n, (name, values)) in series.iter().enumerate() {
        let colour = COLOURS[n % COLOURS.len()];
        // One polyline per run of consecutive values.
        let mut segment: Vec<String> = Vec::new();
        let flush = |seg: &mut Vec<String>, s: &mut String| {
            if seg.len() > 1 {
                let _ = write!(
                    s,
                    r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                    seg.join(" ")
                );
            }
            seg.clear();
        };
        for (i, v) in values.iter().enumerate() {
            match v {
                Some(v) => {
                    segment.push(format!("{:.1},{:.1}", x(i), y(*v)));
                    let _ = write!(
                        s,
                        r#"<circle class="point" cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>run {}: {}</title></circle>"#,
                        x(i),
                        y(*v),
                        runs[i].run.id,
                        number(*v)
                    );
                }
                None => flush(&mut segment, &mut s),
            }
        }
        flush(&mut segment, &mut s);
        let last = values.iter().rev().flatten().next().map(|v| number(*v)).unwrap_or_else(|| "-".into());
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" fill="{colour}">{} {}</text>"#,
            left + plot_w + 10.0,
            top + 12.0 + 16.0 * n as f64,
            esc(name),
            last
        );
    }
    s.push_str("</svg>");
    s
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 || v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::history::{KernelBuild, RecordedCell, RunRef};

    /// (kernel, trial, verdict, metrics).
    type Cell<'a> = (&'a str, &'a str, Outcome, &'a [(&'a str, f64)]);

    fn run(id: i64, cells: &[Cell]) -> RecordedRun {
        let build = KernelBuild { release: None, accel: "tcg".into(), build: None, checksum: None };
        RecordedRun {
            run: RunRef {
                id,
                started: format!("2026-12-0{id} 02:00:00"),
                commit: None,
                matrix: "kernels.yaml".into(),
                label: Some(format!("night <{id}>")),
            },
            kernels: cells.iter().map(|(k, ..)| (k.to_string(), build.clone())).collect(),
            cells: cells
                .iter()
                .map(|(k, t, v, m)| {
                    let metrics: BTreeMap<String, f64> = m.iter().map(|(n, x)| (n.to_string(), *x)).collect();
                    let cell = RecordedCell { verdict: *v, reason: None, metrics, attempts: None };
                    ((k.to_string(), t.to_string()), cell)
                })
                .collect(),
            objects: BTreeMap::new(),
        }
    }

    #[test]
    fn sections_carry_every_value_and_verdict() {
        use Outcome::*;
        let runs = vec![
            run(
                1,
                &[
                    ("6.1", "p::test_run", Pass, &[("value", 90.0)]),
                    ("6.1", "p::load", Pass, &[("processed_insns", 43.0)]),
                ],
            ),
            run(
                2,
                &[
                    ("6.1", "p::test_run", Pass, &[("value", 7272.0)]),
                    ("6.1", "p::load", Fail, &[("processed_insns", 2.0)]),
                ],
            ),
            run(
                3,
                &[
                    ("6.1", "p::load", Pass, &[("processed_insns", 43.0)]),
                    ("5.10", "p::load", Pass, &[("processed_insns", 50.0)]),
                ],
            ),
        ];
        let html = render(&runs);
        assert!(html.contains("History: runs 1 to 3") && html.contains("night &lt;1&gt;"), "{html}");
        assert!(html.contains("<h4>6.1</h4>") && html.contains("run 2: 7272"), "{html}");
        // The verifier chart: a line per kernel, 5.10 first.
        let v = &html[html.find("Verifier: processed").unwrap()..];
        assert!(v.find(">5.10 50<").unwrap() < v.find(">6.1 43<").unwrap(), "{v}");
        // The grid: a row per cell, a column per run, blank where absent.
        assert!(html.contains("<tr><td>6.1::p::load</td><td class=\"P\" title=\"\">P</td><td class=\"F\" title=\"\">F</td><td class=\"P\" title=\"\">P</td></tr>"), "{html}");
        assert!(html.contains("<tr><td>6.1::p::test_run</td><td class=\"P\" title=\"\">P</td><td class=\"P\" title=\"\">P</td><td></td></tr>"), "{html}");
        assert_eq!(html.matches("<circle").count(), 2 + 3 + 1, "{html}");
        assert!(render(&[]).contains("no runs yet"));
    }
}
