//! The command line: run the matrix with a summary, refresh the lock, fetch kernels.
use std::{path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kernel_matrix::{
    config::{ConfigError, MatrixConfig},
    report,
    run::{Matrix, Options},
};

#[derive(Parser)]
#[command(version, about = "Boot a matrix of Linux kernels under QEMU and check eBPF programs in each")]
struct Cli {
    #[command(flatten)]
    settings: kernel_matrix::settings::Settings,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every check on every kernel (or those named) and print a summary table.
    Run {
        /// Only the kernels these names or globs match (`-k '6.*'`; repeatable).
        #[arg(long = "kernel", short = 'k', value_name = "GLOB")]
        kernels: Vec<String>,
        /// Also write the kernel table (as printed) here.
        #[arg(long, value_name = "FILE")]
        table: Option<PathBuf>,
        /// Deprecated name of --table.
        #[arg(long, hide = true, conflicts_with = "table")]
        summary: Option<PathBuf>,
        /// Write the verifier table (manifest programs x kernels) as JSON here
        /// (`compare` takes two of them).
        #[arg(long)]
        verifier_json: Option<PathBuf>,
        /// Write the verifier table as CSV here.
        #[arg(long)]
        verifier_csv: Option<PathBuf>,
        #[command(flatten)]
        out: kernel_matrix::report::results::RunOutputs,
    },
    /// What each program of BPF objects needs from a kernel (helpers, kfuncs, map and
    /// program types, ...) and the lowest version and matrix kernel that can load it;
    /// boots nothing.
    /// With kernels of the matrix in the cache, also predicts per program and kernel
    /// whether it loads and why not (versions, attach targets and kfuncs against
    /// each kernel's own BTF). A manifest (`.yaml`) in place of an object predicts
    /// its programs as `run` loads them (its `attach_to:` and map sizes).
    Explain {
        #[arg(required = true)]
        objects: Vec<PathBuf>,
        /// Only these kernels (names or globs; each must be in the cache).
        #[arg(long = "kernel", short = 'k', value_name = "GLOB")]
        kernels: Vec<String>,
        /// Print the predictions as a JSON array of
        /// {object, program, kernel, predicted: accept|reject, cause, reason}.
        #[arg(long)]
        json: bool,
    },
    /// Pin every Debian kernel to the newest build of its series (writes kernels.lock).
    Lock {
        /// Resolve again even where the lock already has an entry.
        #[arg(long)]
        update: bool,
    },
    /// Put the kernels into the cache without running anything: download and extract
    /// the pinned ones, build the `build:` ones.
    Fetch {
        /// Only the kernels these names or globs match (`-k '6.*'`; repeatable).
        #[arg(long = "kernel", short = 'k', value_name = "GLOB")]
        kernels: Vec<String>,
        /// Also each kernel's vmlinux with debug symbols (Debian's `-dbg` package),
        /// for `--gdb` and reading `--crash-dump`s with crash or drgn.
        #[arg(long)]
        debug_symbols: bool,
    },
    /// An interactive root shell in a kernel's VM (console on stdio, agent at /agent).
    Shell(kernel_matrix::report::repro::VmArgs),
    /// Run a program of yours in kernels' VMs as root (bpffs, tracefs, debugfs
    /// mounted), streaming its stdout/stderr; exits with its status (across several
    /// kernels: 0 when all exited 0). A cargo runner:
    /// CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="kernel-matrix exec -k 6.1 --".
    /// Without -c, KM_CONFIG names kernels.yaml when ./kernels.yaml does not exist.
    Exec(kernel_matrix::run::exec::ExecArgs),
    /// Print the QEMU command line of a kernel's VM.
    #[command(name = "qemu-cmd")]
    QemuCommand(kernel_matrix::report::repro::VmArgs),
    /// Merge the JSON/JUnit reports of CI shards into one (plus a Markdown summary).
    Merge(kernel_matrix::report::results::MergeArgs),
    /// Run the matrix with benchmarks; write Bencher Metric Format (and an HTML report).
    Bench(kernel_matrix::perf::BenchArgs),
    /// Boot to agent-ready against a busybox-only boot of the same kernel (and,
    /// with --matrix, the whole matrix against it); guest root sizes.
    BootBench(kernel_matrix::perf::boot::BootBenchArgs),
    /// Compare two BMF files; exits non-zero when a latency got significantly worse.
    Compare(kernel_matrix::perf::CompareArgs),
    /// A self-contained HTML performance report from one or more BMF files.
    Report(kernel_matrix::perf::ReportArgs),
    /// Upload a BMF file to Bencher as one report (what `bench --bencher` does
    /// after its run).
    Bencher(kernel_matrix::perf::bencher::UploadArgs),
    /// What changed in the latest run recorded in a results history (`run
    /// --history FILE`): cells newly failing or passing and why, flaky cells,
    /// verifier and benchmark drift.
    History(kernel_matrix::history::command::HistoryArgs),
    /// What the cache holds and weighs; `--prune` removes the entries no lock
    /// pins that went unused for `--older-than` days.
    Cache(kernel_matrix::cache::CacheArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    kernel_matrix::settings::install(cli.settings.clone());
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kernel-matrix: error: {e:#}");
            // Bad input is exit 2, like a usage error.
            if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    // These read result files only: no kernels.yaml needed.
    match &cli.cmd {
        // Two verifier tables (run --verifier-json) compare veristat -C style.
        Cmd::Compare(a)
            if a.files.len() == 2 && a.files.iter().all(|f| kernel_matrix::report::verifier::is_verifier_file(f)) =>
        {
            return kernel_matrix::perf::veristat::compare(&a.files[0], &a.files[1], a.all)
        }
        Cmd::Compare(a) => return kernel_matrix::perf::compare(a),
        Cmd::Explain { objects, kernels, json } => {
            use kernel_matrix::report::explain;
            // The matrix is optional: without it, only catalogue versions are shown.
            let path = cli.settings.config_path();
            let cfg = if path.exists() { Some(MatrixConfig::load(&path)?) } else { None };
            let (views, uncached) = match &cfg {
                Some(c) => explain::kernel_views(c, &kernel_matrix::images::default_cache_dir(), kernels)?,
                None if !kernels.is_empty() => {
                    return Err(ConfigError::Invalid {
                        path: path.display().to_string(),
                        message: "explain -k needs the matrix file (kernels.yaml or -c FILE)".into(),
                    }
                    .into())
                }
                None => Default::default(),
            };
            if *json {
                let mut all = Vec::new();
                for o in objects {
                    all.extend(explain::predictions(o, &views)?);
                }
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(ExitCode::SUCCESS);
            }
            for o in objects {
                println!("{}", explain::explain(o, cfg.as_ref(), &views)?);
            }
            if !uncached.is_empty() {
                println!(
                    "not predicted (not in the cache): {}; `kernel-matrix fetch -k NAME` fetches one",
                    uncached.join(", ")
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        Cmd::Report(a) => {
            // The history is a later stage than the report: its sections are
            // rendered here, at the edge, and handed over as HTML.
            let trends = match &a.history {
                Some(path) => {
                    use kernel_matrix::history::{trends, History};
                    trends::render(&trends::load(&History::open_read(path)?, a.window)?)
                }
                None => String::new(),
            };
            return kernel_matrix::perf::report(a, &trends);
        }
        Cmd::History(a) => return kernel_matrix::history::command::command(a),
        Cmd::Cache(a) => {
            let cache = kernel_matrix::images::default_cache_dir();
            kernel_matrix::cache::command(a, &cache, &cli.settings.config_path())?;
            return Ok(ExitCode::SUCCESS);
        }
        Cmd::Bencher(a) => return kernel_matrix::perf::bencher::command(a),
        Cmd::Merge(a) => return kernel_matrix::report::results::merge_command(a),
        Cmd::Exec(a) => {
            // As a cargo runner the working directory is the user's crate: KM_CONFIG names the matrix.
            let m = Arc::new(matrix(MatrixConfig::load(&cli.settings.config_path())?)?);
            let code = kernel_matrix::run::exec::command(m, a)?;
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)));
        }
        _ => {}
    }
    let config = MatrixConfig::load(&cli.settings.config_path())?;
    match cli.cmd {
        Cmd::Compare(_)
        | Cmd::Report(_)
        | Cmd::Merge(_)
        | Cmd::Explain { .. }
        | Cmd::Exec(_)
        | Cmd::History(_)
        | Cmd::Cache(_)
        | Cmd::Bencher(_) => {
            unreachable!("handled above")
        }
        Cmd::Shell(a) => kernel_matrix::report::repro::shell_command(&matrix(config)?, &a),
        Cmd::QemuCommand(a) => kernel_matrix::report::repro::qemu_cmd_command(&matrix(config)?, &a),
        Cmd::Bench(a) => {
            let mut m = matrix(config)?;
            m.opts.bench = true;
            m.opts.accel = m.opts.accel.clone().for_benchmarks();
            kernel_matrix::perf::bench(Arc::new(m), &a)
        }
        Cmd::BootBench(a) => kernel_matrix::perf::boot::boot_bench(Arc::new(matrix(config)?), &a),
        Cmd::Lock { update } => kernel_matrix::images::pin::pin(&config, update).map(|()| ExitCode::SUCCESS),
        Cmd::Fetch { kernels, debug_symbols } => {
            // Every kernel's image into the cache: Debian's downloaded and verified,
            // `build:` kernels built, `local:` ones extracted (the host needs none).
            let m = matrix(config)?;
            let names = m.select_kernels(&kernels)?;
            for k in m.config.kernels.iter().filter(|k| names.contains(&k.name)) {
                if let Some(img) = m.image(k)? {
                    println!("{}: {} ({})", k.name, img.boot_file().display(), img.release);
                }
                if debug_symbols {
                    match m.debug_symbols(k, true)? {
                        Some(p) => println!("{}: debug symbols {}", k.name, p.display()),
                        None => println!("{}: no debug symbols for this kernel", k.name),
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run { kernels, table: table_file, summary, verifier_json, verifier_csv, mut out } => {
            out.apply_deprecated();
            if summary.is_some() {
                kernel_matrix::settings::deprecated("run --summary", "--table");
            }
            let table_file = table_file.or(summary);
            let m = Arc::new(matrix(config)?);
            let names = m.select_kernels(&kernels)?;
            let names = match out.shard()? {
                Some(shard) => shard.select(&names),
                None => names,
            };
            m.announce("", &names);
            let runs = m.run_kernels(&names);
            let vrows = report::verifier::rows(&m, &runs);
            let mut table = format!(
                "{}\n{}\n{}",
                report::summary_table(&m, &runs),
                report::time_table(&m, &runs),
                report::feature_table(&m, &runs)
            );
            if !vrows.is_empty() {
                table.push_str(&format!("\n{}", report::verifier::markdown(&vrows)));
            }
            if let Some(p) = &verifier_json {
                report::verifier::write_json(p, &vrows)?;
            }
            if let Some(p) = &verifier_csv {
                std::fs::write(p, report::verifier::csv(&vrows)).with_context(|| format!("writing {}", p.display()))?;
            }
            println!("{table}");
            if let Some(p) = table_file {
                std::fs::write(&p, &table).with_context(|| format!("writing {}", p.display()))?;
            }
            let results = out.write(&m, &runs)?;
            kernel_matrix::history::record_run(&out, &m, &results)?;
            for f in report::flaky(&m, &runs) {
                println!("FLAKY {f}\n");
            }
            let failures = report::failures(&m, &runs);
            for f in &failures {
                println!("FAILED {f}\n");
            }
            Ok(if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

fn matrix(config: MatrixConfig) -> anyhow::Result<Matrix> {
    let exe = std::env::current_exe()?;
    let run_dir = kernel_matrix::settings::get()
        .run_dir
        .clone()
        .unwrap_or_else(|| exe.parent().unwrap().join("kernel-matrix-runs"));
    Matrix::new(config, Options::from_env(run_dir)?)
}
