//! `cargo test` runs the kernel matrix: one libtest trial per kernel x program x
//! check, from the workspace's kernels.yaml (or `KM_CONFIG`).
use std::{path::PathBuf, process::ExitCode, sync::Arc};

use kernel_matrix::{
    config::MatrixConfig,
    report::trials::trials,
    run::{Matrix, Options},
};

/// Under cargo-nextest (`NEXTEST_RUN_ID` set) every trial is its own process: each would boot its own VM of its kernel, and `KM_MAX_VMS`
/// could not hold across them. Listing is fine; running is refused with the way
/// out, unless `KM_NEXTEST=1` says the cost is accepted.
const NEXTEST_REFUSAL: &str = "kernel-matrix: the matrix boots each kernel once per test process, but cargo-nextest runs every trial in a process of its own, so each trial would boot its own VM (and KM_MAX_VMS would not hold across processes).
Run the matrix with libtest:   cargo test -p kernel-matrix --test matrix [-- FILTER]
and the rest with nextest:     cargo nextest run --workspace -E 'not binary(matrix)'
(KM_NEXTEST=1 runs it under nextest anyway, one boot per trial.)";

fn main() -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    // The KM_* variables, declared once (kernel_matrix::settings) for the CLI and here.
    let env = match kernel_matrix::settings::Env::from_env() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    kernel_matrix::settings::install(env.settings.clone());
    let nextest = std::env::var_os("NEXTEST_RUN_ID").is_some()
        || std::env::var("NEXTEST_EXECUTION_MODE").is_ok_and(|m| m == "process-per-test");
    if !args.list && nextest && !env.settings.nextest {
        eprintln!("{NEXTEST_REFUSAL}");
        return ExitCode::from(2);
    }
    let config = env
        .settings
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kernels.yaml"));
    let mut config = match MatrixConfig::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // `KM_SHARD=i/n`: this CI job's share of the kernels (round-robin in kernels.yaml order).
    if let Some(shard) = env.out.shard {
        config.kernels = shard.select(&config.kernels);
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
        eprintln!(
            "kernel matrix: accelerator {} ({}), up to {} VMs at once",
            matrix.opts.accel.accel, matrix.opts.accel.reason, matrix.opts.max_vms
        );
    }
    let conclusion = libtest_mimic::run(&args, trials(matrix.clone()));
    // `KM_JSON=out.json`, `KM_JUNIT=out.xml`, `KM_MARKDOWN=out.md` (e.g. $GITHUB_STEP_SUMMARY):
    // the trials that ran, in the formats `kernel-matrix run` writes.
    if !args.list {
        if let Err(e) =
            kernel_matrix::report::results::write_reports_from_env(kernel_matrix::report::results::observed())
                .and_then(|(r, out)| kernel_matrix::history::record_run(&out, &matrix, &r))
        {
            eprintln!("error: writing reports: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    conclusion.exit_code()
}
