//! `cargo test` runs the kernel matrix: one libtest trial per kernel x program x
//! check, from the workspace's kernels.yaml (or `KM_CONFIG`).
use std::{path::PathBuf, process::ExitCode, sync::Arc};

use kernel_matrix::{config::MatrixConfig, report::trials::trials, run::{Matrix, Options}};

fn main() -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let config = std::env::var_os("KM_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kernels.yaml"));
    let mut config = match MatrixConfig::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // `KM_SHARD=i/n`: this CI job's share of the kernels (round-robin in kernels.yaml order).
    match kernel_matrix::run::shard::Shard::from_env() {
        Ok(Some(shard)) => config.kernels = shard.select(&config.kernels),
        Ok(None) => {}
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    }
    let run_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("matrix");
    let matrix = match Options::from_env(run_dir).and_then(|mut o| {
        // `--bench` runs the benchmark trials, so the kernels must run them too.
        o.bench |= args.bench;
        Matrix::new(config, o)
    }) {
        Ok(m) => Arc::new(m),
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if !args.list {
        eprintln!("kernel matrix: accelerator {} ({}), up to {} VMs at once", matrix.opts.accel.accel, matrix.opts.accel.reason, matrix.opts.max_vms);
    }
    let conclusion = libtest_mimic::run(&args, trials(matrix));
    // `KM_RESULTS=out.json`, `KM_JUNIT=out.xml`, `KM_SUMMARY=out.md` (e.g. $GITHUB_STEP_SUMMARY):
    // the trials that ran, in the formats `kernel-matrix run` writes.
    if !args.list {
        if let Err(e) = kernel_matrix::report::results::write_reports_from_env(kernel_matrix::report::results::observed()) {
            eprintln!("error: writing reports: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    conclusion.exit_code()
}
