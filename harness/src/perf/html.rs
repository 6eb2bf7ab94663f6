//! The per-kernel performance report: one self-contained HTML page (inline CSS and
//! SVG, no scripts, no external assets) from one or more BMF files.
//!
//! One chart per `<program>::<check>`: a bar per kernel (and per input file, side by
//! side, so a baseline and a current run can be read together), the median as the
//! bar, the quartiles as whiskers, the number and the accelerator written next to
//! it. Emulated (tcg) and native (host) numbers differ ~50x, so each chart has its
//! own linear scale starting at zero and every bar carries its value.
use std::{collections::BTreeSet, fmt::Write as _};

use crate::{
    escape::html as esc,
    perf::bmf::{describe_accel, split_name, Bmf, Meta, COUNTER_MEASURES, LATENCY, VERIFIER_MEASURES},
};

/// An input: a label (usually the file name), its BMF and its sidecar.
pub struct Input {
    pub label: String,
    pub bmf: Bmf,
    pub meta: Meta,
}

const COLOURS: &[&str] = &["#2f6db5", "#d9822b", "#3a9a5b", "#9b4dca", "#c23b3b"];

/// Kernels in matrix order as they appear in the inputs (names sort oddly: 5.10 < 6.1).
fn kernels(inputs: &[Input]) -> Vec<String> {
    let mut seen = Vec::new();
    for i in inputs {
        for b in i.bmf.keys() {
            let k = split_name(b).0.to_string();
            if k != "userspace" && !seen.contains(&k) {
                seen.push(k);
            }
        }
    }
    km_protocol::version::sort_kernel_names(&mut seen);
    seen
}

/// The whole report: the page head, where the numbers come from (kernels and
/// accelerators), a latency chart per program::check, the verifier numbers and
/// the userspace micro-benchmarks, each a section of its own.
/// `extra`: sections for the end (the history's trends), already HTML.
pub fn render(inputs: &[Input], title: &str, extra: &str) -> String {
    let mut h = page_head(title);
    let ks = kernels(inputs);
    kernels_table(&mut h, inputs, &ks);
    latency_charts(&mut h, inputs, &ks);
    counters_table(&mut h, inputs, &ks);
    verifier_table(&mut h, inputs, &ks);
    userspace_table(&mut h, inputs);
    h.push_str(extra);
    h.push_str("</body></html>\n");
    h
}

/// `<head>` with the page's style, and the title.
fn page_head(title: &str) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{t}</title><style>
body{{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}}
h1{{font-size:22px}} h2{{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}}
table{{border-collapse:collapse;margin:8px 0}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
th{{background:#f3f3f3}} td.num{{text-align:right}} .note{{color:#555}}
.legend span{{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}}
svg{{max-width:100%;height:auto}} svg text{{font:12px system-ui,sans-serif}} h3{{font-size:15px;margin-top:22px}} h4{{font-size:14px;margin:12px 0 4px}}
.trends svg{{margin:4px 16px 8px 0;vertical-align:top}} .grid td{{text-align:center;min-width:18px}} .grid td:first-child{{text-align:left}}
.grid td.P{{background:#d8efd8}} .grid td.F{{background:#f6cccc;font-weight:bold}} .grid td.I{{color:#888}}
</style></head><body><h1>{t}</h1>"#,
        t = esc(title)
    );
    h
}

/// Where the numbers come from: per kernel and input, release, accelerator, boot
/// and guest times; then how to read the numbers and the legend.
fn kernels_table(h: &mut String, inputs: &[Input], ks: &[String]) {
    h.push_str("<h2>Kernels and accelerators</h2><table><tr><th>kernel</th>");
    for i in inputs {
        let _ = write!(h, "<th>{l} release</th><th>{l} accelerator</th><th>{l} boot s (QEMU to agent)</th><th>{l} guest clock at /init</th><th>{l} agent s</th>", l = esc(&i.label));
    }
    h.push_str("</tr>");
    for k in ks {
        let _ = write!(h, "<tr><td>{}</td>", esc(k));
        for i in inputs {
            if !ran(i, k) {
                h.push_str("<td colspan=\"5\" class=\"note\">not in this file</td>");
                continue;
            }
            let km = i.meta.kernels.get(k);
            let release = km.and_then(|m| m.release.clone()).unwrap_or_else(|| "-".into());
            let secs = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
            let (boot, init, agent) = km.map(|m| (m.boot_secs, m.init_secs, m.agent_secs)).unwrap_or_default();
            let _ = write!(
                h,
                "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
                esc(&release),
                esc(describe_accel(i.meta.accel_of(k))),
                secs(boot),
                secs(init),
                secs(agent)
            );
        }
        h.push_str("</tr>");
    }
    h.push_str(
        "</table><p class=\"note\">Latency is nanoseconds per program run, as the kernel measured it. \
         <b>test_run</b>: BPF_PROG_TEST_RUN with <code>repeat</code> on one 64-byte packet, run-time stats off. \
         <b>fdinfo</b>: <code>run_time_ns/run_cnt</code> deltas with run-time stats on (they add their own cost), \
         under real events: UDP packets through <code>lo</code> in generic XDP mode (XDP), probe hits of a traced child (USDT tracer), \
         99 Hz CPU-clock samples on one CPU while a child pinned there spins (profiler; includes its two stack walks). \
         Bars are medians of independent samples, whiskers the first and third quartiles. \
         Numbers under tcg are emulated and only comparable with other tcg numbers; under tcg-icount a guest &quot;ns&quot; is one guest instruction (deterministic virtual clock), not wall time.</p>",
    );
    if inputs.len() > 1 {
        h.push_str("<p class=\"legend\">");
        for (n, i) in inputs.iter().enumerate() {
            let _ = write!(h, "<span style=\"background:{}\"></span>{}", COLOURS[n % COLOURS.len()], esc(&i.label));
        }
        h.push_str("</p>");
    }
}

/// One chart per program::check with a latency: BPF_PROG_TEST_RUN first, then
/// real events; programs alphabetically within.
fn latency_charts(h: &mut String, inputs: &[Input], ks: &[String]) {
    let cells: BTreeSet<(String, String)> = inputs
        .iter()
        .flat_map(|i| i.bmf.iter())
        .filter(|(_, ms)| ms.contains_key(LATENCY))
        .map(|(b, _)| {
            let (_, p, c) = split_name(b);
            (p.to_string(), c.to_string())
        })
        .filter(|(p, _)| !p.is_empty())
        .collect();
    // BPF_PROG_TEST_RUN first, then real events; programs alphabetically within.
    let mut cells: Vec<_> = cells.into_iter().filter(|(_, c)| !c.is_empty()).collect();
    cells.sort_by_key(|(p, c)| {
        (crate::perf::bmf::LATENCY_CHECKS.iter().position(|x| x == c).unwrap_or(usize::MAX), p.clone())
    });
    for (program, check) in &cells {
        let _ = write!(h, "<h2>{}::{} latency (ns per run)</h2>", esc(program), esc(check));
        h.push_str(&chart(inputs, ks, program, check));
    }
}

/// Hardware counts per run (instructions, cycles) per benchmark, kernel and input,
/// where a PMU counted them: median with the quartiles.
fn counters_table(h: &mut String, inputs: &[Input], ks: &[String]) {
    let benches: BTreeSet<(String, String)> = inputs
        .iter()
        .flat_map(|i| i.bmf.iter())
        .filter(|(_, ms)| COUNTER_MEASURES.iter().any(|m| ms.contains_key(*m)))
        .map(|(b, _)| {
            let (_, p, c) = split_name(b);
            (p.to_string(), c.to_string())
        })
        .collect();
    if benches.is_empty() {
        return;
    }
    h.push_str("<h2>Hardware counts per run</h2><p class=\"note\">Counted by the PMU around each run (fentry/fexit, as <code>bpftool prog profile</code>), kernel mode; median [first – third quartile] over the profiled runs. Under tcg-icount instruction counts are exact and repeat run after run.</p><table><tr><th>benchmark</th><th>kernel</th>");
    if inputs.len() > 1 {
        h.push_str("<th>run</th>");
    }
    for m in COUNTER_MEASURES {
        let _ = write!(h, "<th>{m}</th>");
    }
    h.push_str("<th>accelerator</th></tr>");
    for (p, c) in &benches {
        for k in ks {
            for i in inputs {
                let Some(ms) = i.bmf.get(&format!("{k}::{p}::{c}")) else { continue };
                if !COUNTER_MEASURES.iter().any(|m| ms.contains_key(*m)) {
                    continue;
                }
                let _ = write!(h, "<tr><td>{}::{}</td><td>{}</td>", esc(p), esc(c), esc(k));
                if inputs.len() > 1 {
                    let _ = write!(h, "<td>{}</td>", esc(&i.label));
                }
                for m in COUNTER_MEASURES {
                    let v = ms
                        .get(*m)
                        .map(|x| format!("{:.0} [{:.0} – {:.0}]", x.value, x.lower(), x.upper()))
                        .unwrap_or_else(|| "-".into());
                    let _ = write!(h, "<td class=\"num\">{v}</td>");
                }
                let _ = write!(h, "<td>{}</td></tr>", esc(describe_accel(i.meta.accel_of(k))));
            }
        }
    }
    h.push_str("</table>");
}

/// The verifier's numbers per program, kernel and input.
fn verifier_table(h: &mut String, inputs: &[Input], ks: &[String]) {
    let programs: BTreeSet<String> = inputs
        .iter()
        .flat_map(|i| i.bmf.iter())
        .filter(|(b, ms)| b.ends_with("::load") && VERIFIER_MEASURES.iter().any(|m| ms.contains_key(*m)))
        .map(|(b, _)| split_name(b).1.to_string())
        .collect();
    if !programs.is_empty() {
        h.push_str("<h2>Verifier</h2><table><tr><th>program</th><th>kernel</th>");
        if inputs.len() > 1 {
            h.push_str("<th>run</th>");
        }
        for m in VERIFIER_MEASURES {
            let _ = write!(h, "<th>{m}</th>");
        }
        h.push_str("</tr>");
        for p in &programs {
            for k in ks {
                for i in inputs {
                    let Some(ms) = i.bmf.get(&format!("{k}::{p}::load")) else { continue };
                    let _ = write!(h, "<tr><td>{}</td><td>{}</td>", esc(p), esc(k));
                    if inputs.len() > 1 {
                        let _ = write!(h, "<td>{}</td>", esc(&i.label));
                    }
                    for m in VERIFIER_MEASURES {
                        let v = ms.get(*m).map(|x| format!("{}", x.value)).unwrap_or_else(|| "-".into());
                        let _ = write!(h, "<td class=\"num\">{v}</td>");
                    }
                    h.push_str("</tr>");
                }
            }
        }
        h.push_str("</table>");
    }
}

/// Userspace criterion benchmarks (native).
fn userspace_table(h: &mut String, inputs: &[Input]) {
    let user: Vec<(&String, &String, f64, f64, f64)> = inputs
        .iter()
        .flat_map(|i| i.bmf.iter().map(move |(b, ms)| (i, b, ms)))
        .filter(|(_, b, _)| b.starts_with("userspace::"))
        .filter_map(|(i, b, ms)| ms.get(LATENCY).map(|m| (&i.label, b, m.value, m.lower(), m.upper())))
        .collect();
    if !user.is_empty() {
        h.push_str("<h2>Userspace micro-benchmarks (criterion, native)</h2><table><tr><th>benchmark</th><th>run</th><th>median ns/iter</th><th>95% CI</th></tr>");
        for (label, b, v, l, u) in user {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{v:.1}</td><td class=\"num\">{l:.1} – {u:.1}</td></tr>",
                esc(b),
                esc(label)
            );
        }
        h.push_str("</table>");
    }
}

/// Whether `input` ran kernel `k` at all (an x86 file has no arm64 kernels): a
/// kernel it never ran gets no row, rather than one saying it was not measured.
fn ran(input: &Input, k: &str) -> bool {
    input.meta.kernels.contains_key(k) || input.bmf.keys().any(|b| split_name(b).0 == k)
}

/// Width in pixels of `text` in the charts' 12 px font, generously (7 px a
/// character), so no label is cut off at the SVG's edge.
fn text_width(text: &str) -> f64 {
    text.chars().count() as f64 * 7.0
}

fn chart(inputs: &[Input], kernels: &[String], program: &str, check: &str) -> String {
    let rows: Vec<(String, usize, Option<crate::perf::bmf::Metric>, String)> = kernels
        .iter()
        .flat_map(|k| {
            inputs.iter().enumerate().filter(move |(_, i)| ran(i, k)).map(move |(n, i)| {
                let m = i.bmf.get(&format!("{k}::{program}::{check}")).and_then(|ms| ms.get(LATENCY)).copied();
                (k.clone(), n, m, i.meta.accel_of(k).to_string())
            })
        })
        .collect();
    let max = rows.iter().filter_map(|r| r.2.map(|m| m.upper().max(m.value))).fold(0.0f64, f64::max).max(1e-9);
    let label = |kernel: &str, n: usize| {
        if inputs.len() > 1 {
            format!("{kernel} · {}", inputs[n].label)
        } else {
            kernel.to_string()
        }
    };
    let value_text = |m: &crate::perf::bmf::Metric, accel: &str| {
        format!("{} [{} – {}] {accel}", fmt_ns(m.value), fmt_ns(m.lower()), fmt_ns(m.upper()))
    };
    const NOT_MEASURED: &str = "not measured (gated or failed: see the run)";
    let label_w = rows.iter().map(|(k, n, ..)| text_width(&label(k, *n)) + 16.0).fold(150.0, f64::max);
    let value_w = rows
        .iter()
        .map(|(_, _, m, accel)| m.as_ref().map_or(0.0, |m| text_width(&value_text(m, accel)) + 16.0))
        .fold(320.0, f64::max);
    let (plot_w, row_h) = (600.0f64.max(text_width(NOT_MEASURED) + 8.0), 22.0);
    let height = rows.len() as f64 * row_h + 30.0;
    let width = label_w + plot_w + value_w;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{}::{} latency">"#,
        esc(program),
        esc(check)
    );
    // Axis ticks: 0, 25, 50, 75, 100% of the scale.
    for t in 0..=4 {
        let x = label_w + plot_w * t as f64 / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{x}" y1="0" x2="{x}" y2="{}" stroke="#e4e4e4"/><text x="{x}" y="{}" text-anchor="middle" fill="#777">{}</text>"##,
            height - 22.0,
            height - 8.0,
            fmt_ns(max * t as f64 / 4.0)
        );
    }
    for (idx, (kernel, n, m, accel)) in rows.iter().enumerate() {
        let y = idx as f64 * row_h + 4.0;
        let colour = COLOURS[n % COLOURS.len()];
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            label_w - 8.0,
            y + 13.0,
            esc(&label(kernel, *n))
        );
        match m {
            Some(m) => {
                let w = plot_w * m.value / max;
                let (lo, hi) = (label_w + plot_w * m.lower() / max, label_w + plot_w * m.upper() / max);
                let mid = y + 8.0;
                let _ = write!(
                    s,
                    r#"<rect x="{label_w}" y="{y}" width="{w:.1}" height="16" fill="{colour}" opacity="0.85"/>"#
                );
                let _ = write!(
                    s,
                    r##"<line x1="{lo:.1}" y1="{mid}" x2="{hi:.1}" y2="{mid}" stroke="#111" stroke-width="1.5"/><line x1="{lo:.1}" y1="{}" x2="{lo:.1}" y2="{}" stroke="#111"/><line x1="{hi:.1}" y1="{}" x2="{hi:.1}" y2="{}" stroke="#111"/>"##,
                    mid - 5.0,
                    mid + 5.0,
                    mid - 5.0,
                    mid + 5.0
                );
                let _ = write!(
                    s,
                    r#"<text x="{}" y="{}">{}</text>"#,
                    label_w + plot_w + 8.0,
                    y + 13.0,
                    esc(&value_text(m, accel))
                );
            }
            None => {
                let _ =
                    write!(s, r##"<text x="{}" y="{}" fill="#999">{NOT_MEASURED}</text>"##, label_w + 4.0, y + 13.0);
            }
        }
    }
    s.push_str("</svg>");
    s
}

fn fmt_ns(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} µs", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0} ns")
    } else {
        format!("{v:.1} ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::bmf::{KernelMeta, Metric};

    #[test]
    fn page_is_self_contained_and_states_the_accelerator() {
        let mut bmf = Bmf::new();
        bmf.entry("6.1::xdp_classifier::test_run".into())
            .or_default()
            .insert(LATENCY.into(), Metric { value: 4000.0, lower_value: Some(3900.0), upper_value: Some(4100.0) });
        bmf.entry("host::xdp_classifier::test_run".into())
            .or_default()
            .insert(LATENCY.into(), Metric { value: 80.0, lower_value: Some(78.0), upper_value: Some(85.0) });
        bmf.entry("6.1::xdp_classifier::load".into())
            .or_default()
            .insert("verified_insns".into(), Metric::exact(118.0));
        bmf.entry("6.1::xdp_classifier::test_run".into()).or_default().insert(
            "instructions".into(),
            Metric { value: 1334.0, lower_value: Some(1334.0), upper_value: Some(1335.0) },
        );
        let mut meta = Meta::default();
        meta.kernels.insert(
            "6.1".into(),
            KernelMeta {
                release: Some("6.1.0-47-cloud-amd64".into()),
                accel: "tcg".into(),
                boot_secs: Some(4.2),
                init_secs: Some(3.1),
                agent_secs: Some(20.5),
            },
        );
        meta.kernels.insert(
            "host".into(),
            KernelMeta {
                release: Some("6.18.44".into()),
                accel: "host".into(),
                boot_secs: None,
                init_secs: None,
                agent_secs: Some(9.0),
            },
        );
        let page = render(&[Input { label: "a.json".into(), bmf, meta }], "report <x>", "");
        assert!(page.contains("<svg") && page.contains("report &lt;x&gt;"));
        assert!(!page.contains("src=\"http") && !page.contains("href=\"http") && !page.contains("<script"));
        assert!(page.contains("tcg (emulated") && page.contains("host (native)"));
        assert!(page.contains("4000 ns") && page.contains("80.0 ns") && page.contains(">118</td>"));
        // Hardware counts: their own table, the host (no profile) not in it.
        assert!(
            page.contains("Hardware counts per run")
                && page.contains(">1334 [1334 – 1335]</td><td class=\"num\">-</td>"),
            "{page}"
        );
        // Where each kernel's time went: host boot, guest clock at /init, agent.
        assert!(
            page.contains("<td>4.20</td><td>3.10</td><td>20.50</td>")
                && page.contains("<td>-</td><td>-</td><td>9.00</td>"),
            "{page}"
        );
        // 5.10 sorts before 6.1 and host last.
        assert_eq!(
            kernels(&[Input {
                label: String::new(),
                bmf: [
                    ("host::p::c".to_string(), Default::default()),
                    ("6.1::p::c".to_string(), Default::default()),
                    ("5.10::p::c".to_string(), Default::default())
                ]
                .into(),
                meta: Meta::default()
            }]),
            ["5.10", "6.1", "host"]
        );
    }
}
