//! `cargo xtask`: this repository's automation, in Rust (the cargo-xtask convention),
//! with xshell for the commands it runs.
//!
//! README's two commands are `cargo xtask run` and `cargo xtask test`; each sets up
//! the machine first (idempotent), so a fresh Debian 12 machine with rustup needs
//! nothing else. The crate depends on nothing that needs set-up (no C, no BPF): it
//! has to build before set-up has installed anything.
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser as _, Subcommand};
use xshell::{cmd, Shell};

mod codegen;
mod demo;
mod setup;

#[derive(Debug, clap::Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "kernel-matrix's set-up, run, test, bench, lint and regression demo"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what kernel-matrix needs (apt packages, nightly + rust-src, rustfmt and
    /// clippy, bpf-linker, actionlint); says what it installs, does nothing the second time.
    Setup {
        /// Only what a built kernel-matrix needs to run a matrix (QEMU, busybox and
        /// the tools that unpack kernels), for a machine that has the binary already.
        #[arg(long)]
        runtime: bool,
    },
    /// Set up, then run the default matrix and print the kernel x check table
    /// (arguments go to `kernel-matrix run`, e.g. `-k 6.1`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then run every test: unit tests and the matrix as libtest trials
    /// (arguments go to `cargo test`, e.g. `-- 6.1::`).
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then criterion micro-benchmarks and the matrix with benchmarks: BMF in
    /// target/bench/bench.json, HTML report in target/bench/report.html.
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then the lint gates: `cargo fmt --all --check` and
    /// `cargo clippy --workspace --all-targets -- -D warnings`.
    Lint,
    /// Set up, then the regression demo: N full benchmark runs, each judged by the
    /// same comparison `kernel-matrix compare` uses (see `cargo xtask regression-demo --help`).
    RegressionDemo(demo::Args),
    /// Regenerate harness/src/config/object/tables.rs from the libbpf-sys sources in
    /// the cargo registry (no set-up); `--check` fails when the committed file differs.
    Codegen(codegen::Args),
}

fn main() -> ExitCode {
    match run(parse(std::env::args().collect())) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The task. `run`, `test` and `bench` hand everything after their name on
/// verbatim (clap would swallow a `--`, which `cargo test -- <filter>` needs).
fn parse(argv: Vec<String>) -> Task {
    let rest = || argv[2..].to_vec();
    match argv.get(1).map(String::as_str) {
        Some("run") => Task::Run { args: rest() },
        Some("test") => Task::Test { args: rest() },
        Some("bench") => Task::Bench { args: rest() },
        _ => Cli::parse_from(argv).task,
    }
}

fn run(task: Task) -> anyhow::Result<ExitCode> {
    let sh = shell()?;
    // Codegen only reads sources and writes one file: it must work before set-up.
    match task {
        Task::Codegen(_) => {}
        Task::Setup { runtime: true } => setup::runtime(&sh)?,
        _ => setup::setup(&sh)?,
    }
    Ok(match task {
        Task::Setup { .. } => ExitCode::SUCCESS,
        Task::Codegen(args) => codegen::run(&sh.current_dir(), &args)?,
        Task::Run { args } => {
            cmd!(sh, "cargo build --quiet --package kernel-matrix").run()?;
            let km = harness_binary(&sh);
            status(cmd!(sh, "{km} run --table target/kernel-matrix-summary.md {args...}"))?
        }
        Task::Test { args } => status(cmd!(sh, "cargo test {args...}"))?,
        Task::Bench { args } => {
            cmd!(sh, "cargo build --quiet --package kernel-matrix").run()?;
            cmd!(
                sh,
                "cargo bench --quiet -p xdp-classifier-common -p profiler --bench source_addr --bench parse_event"
            )
            .run()?;
            let km = harness_binary(&sh);
            status(cmd!(
                sh,
                "{km} bench -o target/bench/bench.json --html target/bench/report.html --criterion target/criterion {args...}"
            ))?
        }
        Task::Lint => {
            cmd!(sh, "cargo fmt --all --check").run()?;
            status(cmd!(sh, "cargo clippy --workspace --all-targets -- -D warnings"))?
        }
        Task::RegressionDemo(args) => {
            cmd!(sh, "cargo build --quiet --package kernel-matrix").run()?;
            demo::run(&sh, &harness_binary(&sh), &args)?
        }
    })
}

/// A shell at the workspace root, with cargo's install directory on PATH (where
/// set-up puts bpf-linker).
fn shell() -> anyhow::Result<Shell> {
    let sh = Shell::new()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask/ is inside the workspace");
    sh.change_dir(root);
    if let Some(home) = std::env::var_os("HOME") {
        let mut paths = vec![PathBuf::from(home).join(".cargo/bin")];
        paths.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
        sh.set_var("PATH", std::env::join_paths(paths)?);
    }
    Ok(sh)
}

/// target/debug/kernel-matrix (or under CARGO_TARGET_DIR).
fn harness_binary(sh: &Shell) -> PathBuf {
    let target = sh.var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| sh.current_dir().join("target"));
    target.join("debug/kernel-matrix")
}

/// Runs a command to the end and hands its exit status on (a failing test run is
/// the command's answer, not an xtask error).
fn status(c: xshell::Cmd<'_>) -> anyhow::Result<ExitCode> {
    eprintln!("$ {c}");
    let s = std::process::Command::from(c).status()?;
    Ok(match s.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(n) => ExitCode::from(u8::try_from(n).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_after_the_task_go_through_unchanged() {
        let args = |v: &[&str]| match parse(v.iter().map(|s| s.to_string()).collect()) {
            Task::Test { args } | Task::Run { args } | Task::Bench { args } => args,
            t => panic!("{t:?}"),
        };
        assert_eq!(args(&["xtask", "test", "--", "6.1::"]), ["--", "6.1::"]);
        assert_eq!(
            args(&["xtask", "test", "-p", "kernel-matrix", "--test", "cli"]),
            ["-p", "kernel-matrix", "--test", "cli"]
        );
        assert_eq!(args(&["xtask", "run", "-k", "6.*"]), ["-k", "6.*"]);
    }

    #[test]
    fn codegen_takes_check() {
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        assert!(matches!(parse(argv(&["xtask", "codegen", "--check"])), Task::Codegen(a) if a.check));
        assert!(matches!(parse(argv(&["xtask", "codegen"])), Task::Codegen(a) if !a.check));
    }
}
