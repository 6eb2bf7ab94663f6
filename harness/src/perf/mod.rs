//! The performance subcommands of `kernel-matrix`: `bench` (run the matrix with
//! benchmarks, write BMF + report), `compare` (baseline vs current, non-zero exit on
//! a regression) and `report` (HTML from BMF files). Kept out of the binary so the
//! command line only dispatches.
use std::{fmt::Write as _, path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context as _;

pub mod bencher;
pub mod bmf;
pub mod boot;
pub use km_bmf::compare;
pub mod html;
pub mod veristat;

use km_protocol::Verdict;

use crate::run::{KernelRun, Matrix};
use bmf::Bmf;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Only the kernels these names or globs match (`-k '6.*'`; repeatable).
    #[arg(long = "kernel", short = 'k', value_name = "GLOB")]
    pub kernels: Vec<String>,
    /// The BMF file to write (its sidecar `<stem>.meta.json` goes next to it).
    #[arg(long, short = 'o', default_value = "target/bench/bench.json")]
    pub out: PathBuf,
    /// Also write the HTML report here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Merge criterion results from this directory (e.g. target/criterion) into the BMF.
    #[arg(long)]
    pub criterion: Option<PathBuf>,
    #[command(flatten)]
    pub bencher: bencher::BencherArgs,
}

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// One or more baseline BMF files, then the current one. Several baselines
    /// (earlier runs) are pooled: their medians' median, bounded by the lowest Q1
    /// and highest Q3 they saw, so run-to-run noise counts as noise.
    #[arg(required = true, num_args = 2.., value_name = "BASELINE... CURRENT")]
    pub files: Vec<PathBuf>,
    /// Smallest relative latency change (percent) that counts; the runs' own spreads
    /// must be exceeded as well.
    #[arg(long, default_value_t = compare::DEFAULT_THRESHOLD_PCT)]
    pub threshold: f64,
    /// List every cell, not only the ones that changed.
    #[arg(long)]
    pub all: bool,
    /// Read the current file's program FROM as program TO (`xdp_classifier_slow=xdp_classifier`
    /// compares the slow variant against the fixed one); its other cells are dropped.
    #[arg(long = "map", value_name = "FROM=TO")]
    pub map: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// BMF files (each with its optional `.meta.json` sidecar).
    #[arg(required_unless_present = "history")]
    pub files: Vec<PathBuf>,
    /// Add trends from this results history: each kernel's benchmarks and each
    /// program's verifier instructions over runs, and the verdicts over runs.
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// How many of the history's latest runs the trends show.
    #[arg(long, default_value_t = 20, value_name = "N", requires = "history")]
    pub window: usize,
    #[arg(long, short = 'o', default_value = "target/bench/report.html")]
    pub out: PathBuf,
    #[arg(long, default_value = "kernel-matrix performance report")]
    pub title: String,
}

/// Runs the kernels with benchmarks on (in parallel, bounded by the VM slots).
pub fn run_kernels(m: &Arc<Matrix>, kernels: &[String]) -> anyhow::Result<Vec<Arc<KernelRun>>> {
    let names = m.select_kernels(kernels)?;
    m.announce("benchmarking ", &names);
    Ok(m.run_kernels(&names))
}

/// A Markdown table of every benchmark cell: value, quartiles, accelerator.
pub fn bench_table(m: &Matrix, runs: &[Arc<KernelRun>]) -> (String, Vec<String>) {
    let mut s = String::from("| kernel | release | accel | benchmark | ns/run (median) | Q1 | Q3 | min | max |\n|---|---|---|---|---|---|---|---|---|\n");
    let mut problems = Vec::new();
    for r in runs {
        let accel = bmf::accel_label(r);
        let release = r.release.as_deref().unwrap_or("-");
        for id in km_protocol::checks::BENCHES {
            let cell = format!("{}::{}", id.program, id.check);
            let v = crate::verdict::check(m, r, *id);
            let metrics = r.checks.get(&(id.program.to_string(), id.check.to_string())).map(|o| &o.metrics);
            let n = |k: &str| metrics.and_then(|m| m.get(k)).map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
            let value = match &v {
                Verdict::Pass => n("value"),
                Verdict::Ignored(why) => format!("ignored ({why})"),
                Verdict::Fail(msg) => {
                    problems.push(format!("{}::{cell} ({}): {msg}", r.kernel, r.where_()));
                    "**FAIL**".into()
                }
            };
            let _ = writeln!(
                s,
                "| {} | {release} | {accel} | {cell} | {value} | {} | {} | {} | {} |",
                r.kernel,
                n("lower"),
                n("upper"),
                n("min"),
                n("max")
            );
        }
    }
    (s, problems)
}

pub fn bench(m: Arc<Matrix>, a: &BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(m.opts.bench, "the matrix must be in bench mode");
    let started = std::time::SystemTime::now();
    let runs = run_kernels(&m, &a.kernels)?;
    let (table, problems) = bench_table(&m, &runs);
    println!("{table}");
    let (mut out, mut meta) = bmf::from_runs(&runs);
    if let Some(dir) = &a.criterion {
        let crit = bmf::from_criterion(dir)?;
        eprintln!("kernel-matrix: {} criterion benchmarks from {}", crit.len(), dir.display());
        out.extend(crit);
    }
    meta.note = format!(
        "kernel-matrix bench, host kernel {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim()
    );
    bmf::write(&a.out, &out, &meta)?;
    eprintln!(
        "kernel-matrix: wrote {} ({} benchmarks) and {}",
        a.out.display(),
        out.len(),
        bmf::meta_path(&a.out).display()
    );
    if a.bencher.bencher {
        println!("{}", bencher::upload(&a.bencher, &a.out, started, std::time::SystemTime::now())?);
    }
    if let Some(h) = &a.html {
        write_report(
            &[html::Input { label: file_label(&a.out), bmf: out, meta }],
            h,
            "kernel-matrix performance report",
            "",
        )?;
    }
    for p in &problems {
        println!("FAILED {p}\n");
    }
    for f in crate::report::failures(&m, &runs) {
        println!("FAILED {f}\n");
    }
    Ok(if problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub fn compare(a: &CompareArgs) -> anyhow::Result<ExitCode> {
    let (current, baselines) = a.files.split_last().context("compare needs a baseline and a current file")?;
    let mut runs = Vec::new();
    let mut base_meta = bmf::Meta::default();
    for b in baselines {
        let (bmf, meta) = bmf::read(b)?;
        runs.push(bmf);
        base_meta = meta;
    }
    let mut base = compare::pool(&runs);
    let (mut cur, cur_meta) = bmf::read(current)?;
    if let Some(map) = &a.map {
        let (from, to) = map.split_once('=').context("--map wants FROM=TO")?;
        cur = compare::map_program(&cur, from, to);
        base = compare::map_program(&base, to, to);
        anyhow::ensure!(!cur.is_empty(), "no benchmark of program {from} in {}", current.display());
    }
    for note in compare::drop_mixed_accels(&mut base, &base_meta, &mut cur, &cur_meta) {
        println!("note: {note}");
    }
    let cells = compare::compare(&base, &cur, a.threshold);
    for (k, km) in &cur_meta.kernels {
        if let Some(b) = base_meta.kernels.get(k) {
            if b.release != km.release {
                println!("note: {k} differs between the runs: {:?} vs {:?}", b.release, km.release);
            }
        }
    }
    print!("{}", compare::table(&cells, &cur_meta, !a.all));
    let t = compare::tally(&cells);
    println!(
        "\n{} latency and hardware-count cells compared against {} baseline run(s) (threshold {}% and the runs' quartile spreads): {} slower, {} faster",
        t.judged,
        baselines.len(),
        a.threshold,
        t.slower,
        t.faster
    );
    Ok(if cells.iter().any(compare::Cell::is_regression) { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn file_label(p: &std::path::Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}

/// `extra`: more sections for the end of the page (the history's trends).
fn write_report(inputs: &[html::Input], out: &std::path::Path, title: &str, extra: &str) -> anyhow::Result<()> {
    if let Some(d) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(out, html::render(inputs, title, extra)).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("kernel-matrix: wrote {}", out.display());
    Ok(())
}

/// `kernel-matrix report`; `trends`: the history's sections (rendered by the
/// caller from `--history`, a later stage than this one).
pub fn report(a: &ReportArgs, trends: &str) -> anyhow::Result<ExitCode> {
    let mut inputs = Vec::new();
    for f in &a.files {
        let (bmf, meta): (Bmf, _) = bmf::read(f)?;
        inputs.push(html::Input { label: file_label(f), bmf, meta });
    }
    write_report(&inputs, &a.out, &a.title, trends)?;
    Ok(ExitCode::SUCCESS)
}
