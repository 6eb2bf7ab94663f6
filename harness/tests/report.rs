//! The HTML performance report in a real browser (Debian's headless Chromium):
//! `report` of an x86 and an arm64 BMF file together, with the trends of a
//! results history, must render with no text cut off at an SVG's edge or over
//! another text, no page
//! wider than the window, every chart holding data, and no row for a kernel a
//! file never ran. The layout is measured by Chromium itself: the test runs a
//! copy of the page with a script appended that reads every text's bounding box
//! and prints what it found into the DOM, which `--dump-dom` returns.
use std::{path::PathBuf, process::Command};

use kernel_matrix::{
    history::{History, RunMeta},
    report::results::RunResults,
};

fn scratch() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-browser");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A BMF file and its sidecar: `kernels` as (name, release, accel), each with the
/// xdp_classifier benchmarks (latency `ns` scaled per kernel) and verifier numbers.
fn bmf(path: &std::path::Path, kernels: &[(&str, &str, &str)], ns: f64) {
    let mut b = serde_json::Map::new();
    let mut meta = serde_json::Map::new();
    for (i, (k, release, accel)) in kernels.iter().enumerate() {
        let v = ns * (1.0 + i as f64 * 0.3);
        let latency = serde_json::json!({"latency": {"value": v, "lower_value": v * 0.97, "upper_value": v * 1.04}});
        b.insert(format!("{k}::xdp_classifier::test_run"), latency.clone());
        b.insert(
            format!("{k}::xdp_classifier_slow::test_run"),
            serde_json::json!({"latency": {"value": v * 40.0, "lower_value": v * 39.0, "upper_value": v * 41.0}}),
        );
        b.insert(format!("{k}::xdp_classifier::fdinfo"), latency);
        b.insert(format!("{k}::xdp_classifier::load"), serde_json::json!({"processed_insns": {"value": 118.0}}));
        meta.insert(k.to_string(), serde_json::json!({"release": release, "accel": accel, "boot_secs": 2.1, "init_secs": 1.9, "agent_secs": 20.5}));
    }
    std::fs::write(path, serde_json::to_string(&b).unwrap()).unwrap();
    let sidecar = path.with_file_name(format!("{}.meta.json", path.file_stem().unwrap().to_string_lossy()));
    std::fs::write(sidecar, serde_json::to_string(&serde_json::json!({"kernels": meta, "note": "test"})).unwrap())
        .unwrap();
}

/// Four runs of two kernels in a history: a benchmark that slows down, a
/// verifier count that grows, a cell that fails once.
fn history(path: &std::path::Path) {
    let mut h = History::open(path).unwrap();
    for night in 0..4 {
        let cell = |trial: &str, verdict: &str, metrics: serde_json::Value| {
            serde_json::json!({"trial": trial, "verdict": verdict, "reason": (verdict == "fail").then_some("timed out"),
                "metrics": metrics, "reproduce": "cargo test", "secs": 1.0})
        };
        let kernel = |k: &str, scale: f64| {
            serde_json::json!({"kernel": k, "release": format!("{k}.0-test"), "accel": "tcg", "boot_secs": 2.0, "wall_secs": 30.0,
            "failure": null, "qemu_command": null, "cells": [
                cell("xdp_classifier::test_run", "pass", serde_json::json!({"value": scale * (100.0 + 50.0 * night as f64), "lower": 95.0, "upper": 110.0})),
                cell("xdp_classifier::load", "pass", serde_json::json!({"processed_insns": 118.0 + 10.0 * night as f64})),
                cell("usdt_tracer::hits", if night == 2 { "fail" } else { "pass" }, serde_json::json!({})),
                cell("features::ringbuf", "ignored", serde_json::json!({})),
            ]})
        };
        let r: RunResults = serde_json::from_value(serde_json::json!({
            "schema": kernel_matrix::report::results::SCHEMA, "tool": "kernel-matrix test",
            "kernels": [kernel("6.1", 1.0), kernel("6.12-arm64", 2.5)]}))
        .unwrap();
        let meta = RunMeta {
            started: 1_764_900_000 + night * 86_400,
            matrix: "kernels.yaml".into(),
            label: Some(format!("night {}", night + 1)),
            ..Default::default()
        };
        h.record(&r, &meta).unwrap();
    }
}

/// Appended to a copy of the page: what Chromium's layout says.
const PROBE: &str = r#"<script>
const out = {overflow: [], overlap: [], empty: [], svgs: 0, page: document.documentElement.scrollWidth, window: window.innerWidth, labels: []};
for (const svg of document.querySelectorAll('svg')) {
  out.svgs++;
  const vb = svg.viewBox.baseVal;
  for (const t of svg.querySelectorAll('text')) {
    const b = t.getBBox();
    if (b.width === 0 || b.x < -0.5 || b.x + b.width > vb.width + 0.5 || b.y < -0.5 || b.y + b.height > vb.height + 0.5)
      out.overflow.push(svg.getAttribute('aria-label') + ': ' + t.textContent + ' ' + JSON.stringify([b.x, b.y, b.width, b.height, vb.width, vb.height]));
    out.labels.push(t.textContent);
  }
  const boxes = [...svg.querySelectorAll('text')].map(t => [t, t.getBBox()]);
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const [[s, a], [t, b]] = [boxes[i], boxes[j]];
    if (a.x < b.x + b.width - 0.5 && b.x < a.x + a.width - 0.5 && a.y < b.y + b.height - 0.5 && b.y < a.y + a.height - 0.5)
      out.overlap.push(svg.getAttribute('aria-label') + ': ' + s.textContent + ' / ' + t.textContent);
  }
  const data = [...svg.querySelectorAll('rect, circle')].filter(e => e.getBBox().width > 0).length;
  if (data === 0) out.empty.push(svg.getAttribute('aria-label'));
}
const pre = document.createElement('pre');
pre.id = 'km-layout';
pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>"#;

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Chromium's flags for a closed machine (as root, no sandbox; without the
/// background-networking ones it keeps trying to reach Google's hosts).
fn browser(dir: &std::path::Path) -> Command {
    let exe = match chromium() {
        Some(c) => c,
        None if std::env::var_os("CI").is_some() => {
            panic!("no Chromium: `cargo xtask setup` installs Debian's chromium")
        }
        None => panic!("no Chromium here (/usr/bin/chromium): run `cargo xtask setup`"),
    };
    let mut c = Command::new(exe);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1280,900",
    ])
    .arg(format!("--user-data-dir={}", dir.join("chromium-profile").display()));
    c
}

#[test]
fn report_renders_in_chromium_with_nothing_cut_off() {
    let dir = scratch();
    bmf(
        &dir.join("bench.json"),
        &[
            ("5.10", "5.10.0-36-cloud-amd64", "tcg-icount"),
            ("6.1", "6.1.0-50-cloud-amd64", "tcg-icount"),
            ("host", "6.18.44", "host"),
        ],
        90.0,
    );
    bmf(
        &dir.join("bench-arm64.json"),
        &[
            ("6.1-arm64", "6.1.0-50-cloud-arm64", "tcg-icount"),
            ("6.12-arm64", "6.12.117+deb12-cloud-arm64", "tcg-icount"),
        ],
        400.0,
    );
    history(&dir.join("h.sqlite"));
    let out = Command::new(env!("CARGO_BIN_EXE_kernel-matrix"))
        .current_dir(&dir)
        .args(["report", "bench.json", "bench-arm64.json", "--history", "h.sqlite", "-o", "report.html"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = std::fs::read_to_string(dir.join("report.html")).unwrap();
    // A kernel a file never ran gets no row for that file.
    assert!(page.contains("6.12-arm64 · bench-arm64.json") && !page.contains("6.12-arm64 · bench.json"), "{page}");
    assert!(!page.contains("not measured"), "every kernel of each file has every benchmark here");
    std::fs::write(dir.join("probe.html"), page.replace("</body>", &format!("{PROBE}</body>"))).unwrap();

    let dump =
        browser(&dir).arg("--dump-dom").arg(format!("file://{}", dir.join("probe.html").display())).output().unwrap();
    let dom = String::from_utf8_lossy(&dump.stdout);
    let json = dom
        .split_once("<pre id=\"km-layout\">")
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(j, _)| j.replace("&quot;", "\"").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
        .unwrap_or_else(|| panic!("Chromium did not run the probe:\n{dom}\n{}", String::from_utf8_lossy(&dump.stderr)));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    eprintln!("Chromium laid out {} charts; page {} px wide in a {} px window", v["svgs"], v["page"], v["window"]);
    assert!(v["overflow"].as_array().unwrap().is_empty(), "text outside its chart: {:#}", v["overflow"]);
    assert!(v["overlap"].as_array().unwrap().is_empty(), "texts over each other: {:#}", v["overlap"]);
    assert!(v["empty"].as_array().unwrap().is_empty(), "charts without data: {:#}", v["empty"]);
    assert!(v["page"].as_f64().unwrap() <= v["window"].as_f64().unwrap(), "the page scrolls sideways: {v}");
    // Three latency charts (test_run, slow test_run, fdinfo), a benchmark trend
    // per kernel of the history and a verifier trend.
    assert_eq!(v["svgs"], 3 + 2 + 1, "{v}");
    let labels: Vec<&str> = v["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert!(labels.contains(&"6.12-arm64 · bench-arm64.json"), "{labels:?}");
    // The verdict grid: the failed night of usdt_tracer::hits on both kernels.
    assert!(page.contains("<tr><td>6.12-arm64::usdt_tracer::hits</td><td class=\"P\""), "{page}");
    assert_eq!(page.matches("<td class=\"F\" title=\"timed out\">F</td>").count(), 2);

    // A look for people: a screenshot beside the page.
    let shot = dir.join("report.png");
    let s = browser(&dir)
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1280,3000")
        .arg(format!("file://{}", dir.join("report.html").display()))
        .output()
        .unwrap();
    assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&s.stderr));
}
