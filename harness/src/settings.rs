//! Every `KM_*` environment variable the harness reads, declared once with clap:
//! `kernel-matrix` takes them as global flags (each `--help` lists its variable),
//! and the `cargo test` matrix, which cannot take our flags, reads the same
//! struct from the environment alone ([`Env::from_env`]). The rest of the crate
//! asks [`get`] instead of reading the environment.
use std::{path::PathBuf, sync::OnceLock};

use clap::{CommandFactory as _, FromArgMatches as _};

/// Harness settings shared by every command (global flags; each has a `KM_*` variable).
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Settings (each also from its KM_* variable)")]
pub struct Settings {
    /// The matrix definition [default: kernels.yaml].
    #[arg(long, short = 'c', global = true, env = "KM_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The cache of kernels, agents and guest roots [default: $XDG_CACHE_HOME/kernel-matrix].
    #[arg(long, global = true, env = "KM_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Where each run's consoles and logs go [default: kernel-matrix-runs next to the binary].
    #[arg(long, global = true, env = "KM_RUN_DIR", value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// QEMU accelerator, kvm or tcg [default: probed; `bench`: tcg with -icount unless kvm is named].
    #[arg(long, global = true, env = "KM_ACCEL", value_name = "kvm|tcg")]
    pub accel: Option<String>,
    /// VMs at once [default: the number of CPUs].
    #[arg(long, global = true, env = "KM_MAX_VMS", value_name = "N")]
    pub max_vms: Option<usize>,
    /// Debian mirror where kernels.yaml has no `mirror:` [default: the apt configuration's].
    #[arg(long, global = true, env = "KM_MIRROR", value_name = "URL")]
    pub mirror: Option<String>,
    /// Debian security mirror where kernels.yaml has no `security_mirror:` [default: apt's].
    #[arg(long, global = true, env = "KM_SECURITY_MIRROR", value_name = "URL")]
    pub security_mirror: Option<String>,
    /// Ubuntu archive where kernels.yaml has no `ubuntu_mirror:` (no default).
    #[arg(long, global = true, env = "KM_UBUNTU_MIRROR", value_name = "URL")]
    pub ubuntu_mirror: Option<String>,
    /// Ubuntu ports archive (arm64) where kernels.yaml has no `ubuntu_ports_mirror:`.
    #[arg(long, global = true, env = "KM_UBUNTU_PORTS_MIRROR", value_name = "URL")]
    pub ubuntu_ports_mirror: Option<String>,
    /// Ubuntu's mainline builds where kernels.yaml has no `ubuntu_mainline_url:`.
    #[arg(long, global = true, env = "KM_UBUNTU_MAINLINE_URL", value_name = "URL")]
    pub ubuntu_mainline_url: Option<String>,
    /// OCI registry of `oci:` kernels where kernels.yaml has no `oci_registry:` (no default).
    #[arg(long, global = true, env = "KM_OCI_REGISTRY", value_name = "URL")]
    pub oci_registry: Option<String>,
    /// User name for the OCI registry, with KM_OCI_PASSWORD [default: the credentials
    /// `docker login` / `podman login` stored for that registry, else anonymous].
    #[arg(long, global = true, env = "KM_OCI_USERNAME", value_name = "NAME")]
    pub oci_username: Option<String>,
    /// Password or access token for KM_OCI_USERNAME (prefer the variable to the flag:
    /// a flag shows in `ps`).
    #[arg(long, global = true, env = "KM_OCI_PASSWORD", hide_env_values = true, value_name = "SECRET")]
    pub oci_password: Option<String>,
    /// Progress display: bars, plain [default: bars on a terminal outside CI].
    #[arg(long, global = true, env = "KM_PROGRESS", value_name = "bars|plain")]
    pub progress: Option<String>,
    /// Run the agent's benchmarks in plain matrix runs too (`bench` always does).
    #[arg(long = "agent-bench", global = true, env = "KM_BENCH", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub bench: bool,
    /// Benchmark VMs under TCG: `off` measures emulated wall-clock time instead of -icount.
    #[arg(long, global = true, env = "KM_BENCH_ICOUNT", value_name = "on|off")]
    pub bench_icount: Option<String>,
    /// Run only these programs in the guests (comma-separated).
    #[arg(long, global = true, env = "KM_ONLY_PROGRAMS", value_delimiter = ',', value_name = "NAMES")]
    pub only_programs: Option<Vec<String>>,
    /// Another guest agent binary instead of the embedded one.
    #[arg(long, global = true, env = "KM_AGENT", value_name = "FILE")]
    pub agent: Option<PathBuf>,
    /// A statically linked busybox [default: busybox in /bin, /usr/bin, /sbin, /usr/sbin].
    #[arg(long, global = true, env = "KM_BUSYBOX", value_name = "FILE")]
    pub busybox: Option<PathBuf>,
    /// virtme-ng's `vng`, for `runner: vng` [default: vng on PATH].
    #[arg(long, global = true, env = "KM_VNG", value_name = "FILE")]
    pub vng: Option<PathBuf>,
    /// `exec`: what boots every kernel, `qemu` or `vng` (virtme-ng) [default: each
    /// kernel's `runner:` in kernels.yaml, else qemu].
    #[arg(long, global = true, env = "KM_RUNNER", value_name = "qemu|vng")]
    pub runner: Option<crate::config::Runner>,
    /// `exec`: print its wall, boot and program start times on stderr.
    #[arg(long, global = true, env = "KM_EXEC_TIMES", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub exec_times: bool,
    /// QEMU's gdb stub in every VM this command starts (a free port each), the
    /// kernel without KASLR; prints the gdb command line with the kernel's symbols.
    #[arg(long, global = true, env = "KM_GDB", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub gdb: bool,
    /// As --gdb, with the guest stopped at its first instruction until gdb continues it.
    #[arg(long, global = true, env = "KM_GDB_WAIT", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub gdb_wait: bool,
    /// On a guest kernel panic, dump the guest's memory (`vmcore`, ELF, the size of
    /// the guest's RAM) beside its console log, for crash or drgn.
    #[arg(long, global = true, env = "KM_CRASH_DUMP", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub crash_dump: bool,
    /// Rerun a kernel's VM up to N more times when it ended without a verdict (timeout
    /// without a splat, QEMU exit, agent never started) or a trial failed; a pass
    /// after a failure is reported flaky. A kernel splat is never retried.
    #[arg(long, global = true, env = "KM_RETRIES", value_name = "N")]
    pub retries: Option<u32>,
    /// The `cargo test` matrix only: run under cargo-nextest anyway (one boot per trial).
    #[arg(long, global = true, env = "KM_NEXTEST", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub nextest: bool,
}

impl Settings {
    /// `--config`, else `KM_CONFIG`, else kernels.yaml.
    pub fn config_path(&self) -> PathBuf {
        self.config.clone().unwrap_or_else(|| PathBuf::from("kernels.yaml"))
    }
}

/// The settings and report outputs from the environment alone: what the
/// `cargo test` matrix reads (the same declarations as the command line).
#[derive(clap::Parser, Debug, Clone, Default)]
#[command(name = "kernel-matrix-env", no_binary_name = true)]
pub struct Env {
    #[command(flatten)]
    pub settings: Settings,
    #[command(flatten)]
    pub out: RunOutputs,
}

/// Report options of `kernel-matrix run` (and, from the environment, of the `cargo
/// test` matrix). Declared here with the other `KM_*` variables; `report::results`
/// writes the reports (`RunOutputs::write`) and re-exports it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunOutputs {
    /// Only this CI shard of the kernels, `i/n` numbered from 1, dealt round-robin
    /// in kernels.yaml order.
    #[arg(long, env = "KM_SHARD")]
    pub shard: Option<crate::shard::Shard>,
    /// Write every cell (verdict, reason, metrics, release, accelerator) as JSON
    /// (KM_RESULTS, deprecated, also works).
    #[arg(long, env = "KM_JSON", value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a JUnit XML report.
    #[arg(long, env = "KM_JUNIT", value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Append a Markdown summary, e.g. `--markdown "$GITHUB_STEP_SUMMARY"`
    /// (KM_SUMMARY, deprecated, also works).
    #[arg(long, env = "KM_MARKDOWN", value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Record the run in this results history (SQLite; created if absent), for
    /// `kernel-matrix history`.
    #[arg(long, env = "KM_HISTORY", value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// A note kept with the recorded run (`nightly`, a PR number).
    #[arg(long, env = "KM_HISTORY_LABEL", value_name = "TEXT", requires = "history")]
    pub history_label: Option<String>,
}

impl RunOutputs {
    /// The shard from `--shard` or `KM_SHARD`.
    pub fn shard(&self) -> anyhow::Result<Option<crate::shard::Shard>> {
        Ok(self.shard)
    }

    /// The old names of the report variables, with a note: `KM_RESULTS` is now
    /// `KM_JSON`, `KM_SUMMARY` is now `KM_MARKDOWN`.
    pub fn apply_deprecated(&mut self) {
        for (old, new, slot) in [
            ("KM_RESULTS", "KM_JSON (--json)", &mut self.json),
            ("KM_SUMMARY", "KM_MARKDOWN (--markdown)", &mut self.markdown),
        ] {
            if let Some(v) = std::env::var_os(old).filter(|v| !v.is_empty()) {
                deprecated(old, new);
                slot.get_or_insert_with(|| v.into());
            }
        }
    }
}

impl Env {
    /// Parses the `KM_*` variables (no arguments); a bad value names its variable.
    pub fn from_env() -> anyhow::Result<Self> {
        let mut cmd = Self::command();
        let m = cmd.try_get_matches_from_mut(std::iter::empty::<String>()).map_err(|e| env_error(&cmd, e))?;
        let mut env = Self::from_arg_matches(&m).map_err(|e| env_error(&cmd, e))?;
        env.out.apply_deprecated();
        Ok(env)
    }
}

fn env_error(cmd: &clap::Command, e: clap::Error) -> anyhow::Error {
    let arg = e.get(clap::error::ContextKind::InvalidArg).map(|v| v.to_string()).unwrap_or_default();
    let var = cmd
        .get_arguments()
        .find(|a| a.get_long().is_some_and(|l| arg.starts_with(&format!("--{l} ")) || arg == format!("--{l}")))
        .and_then(|a| a.get_env())
        .map_or_else(|| "a KM_* variable".to_string(), |v| v.to_string_lossy().into_owned());
    anyhow::anyhow!("{var}: {}", e.to_string().trim().trim_start_matches("error: "))
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Makes `s` what [`get`] returns (the command line calls it once, first).
pub fn install(s: Settings) {
    let _ = SETTINGS.set(s);
}

/// The installed settings, else those of the environment (a bad value is an error).
pub fn try_get() -> anyhow::Result<&'static Settings> {
    if let Some(s) = SETTINGS.get() {
        return Ok(s);
    }
    let s = Env::from_env()?.settings;
    Ok(SETTINGS.get_or_init(|| s))
}

/// As [`try_get`]; panics on a bad `KM_*` value (which [`crate::run::Options::from_env`]
/// reports as an error first).
pub fn get() -> &'static Settings {
    try_get().unwrap_or_else(|e| panic!("{e:#}"))
}

/// Prints "`old` is deprecated, use `new`" once per process and name.
pub fn deprecated(old: &str, new: &str) {
    static NOTES: OnceLock<std::sync::Mutex<Vec<String>>> = OnceLock::new();
    let mut seen = NOTES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if !seen.iter().any(|s| s == old) {
        seen.push(old.to_string());
        eprintln!("kernel-matrix: {old} is deprecated, use {new}");
    }
}
