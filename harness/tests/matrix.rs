//! `cargo test` runs the kernel matrix: one libtest trial per kernel x program x
//! check, from the workspace's kernels.yaml (or `KM_CONFIG`).
use std::{path::PathBuf, process::ExitCode, sync::Arc};

use kernel_matrix::{config::MatrixConfig, matrix::{Matrix, Options}, trials::trials};

fn main() -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let config = std::env::var_os("KM_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kernels.yaml"));
    let config = match MatrixConfig::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let agent = PathBuf::from(env!("CARGO_BIN_EXE_km-agent"));
    let run_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("matrix");
    let matrix = match Options::from_env(agent, run_dir).and_then(|o| Matrix::new(config, o)) {
        Ok(m) => Arc::new(m),
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if !args.list {
        eprintln!("kernel matrix: accelerator {} ({}), up to {} VMs at once", matrix.opts.accel.accel, matrix.opts.accel.reason, matrix.opts.max_vms);
    }
    libtest_mimic::run(&args, trials(matrix)).exit_code()
}
