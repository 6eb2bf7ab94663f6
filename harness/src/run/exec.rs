//! `kernel-matrix exec [-k GLOB]... [--file HOST:GUEST]... -- PROGRAM [ARGS]`: a
//! program of the user's in kernels' VMs (the matrix's QEMU line), its stdout
//! and stderr streamed as it runs, its exit status returned. In one kernel it is
//! a cargo runner: `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="kernel-matrix
//! exec -k 6.1 --"`. Across several (`-k '*'`, or no `-k`), as many at once as
//! `--max-vms` allows, each line prefixed by its kernel, with a kernel × exit
//! status table at the end and `--json`/`--junit` results (one `exec` trial per
//! kernel). `--host-root` runs it in the host's own root instead of a packed one
//! ([`crate::vm::host_root`]).
use std::{
    ffi::OsString,
    io::{Read as _, Seek as _, Write as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::events::{Event, ExecRow};
use crate::{
    config::ConfigError,
    guest_root::exec::{self as root, ExecRequest},
    report::results::{Cell, KernelResult, Outcome, RunResults},
    run::Matrix,
    vm,
};

/// Exit status when the guest never reported the program's (boot failure, panic):
/// like `docker run`'s 125, outside what most programs use.
pub const NO_STATUS: i32 = 125;
/// Exit status when `--timeout` (or the kernel's timeout) ended the program, as
/// `timeout(1)` says it.
pub const TIMED_OUT: i32 = 124;

#[derive(clap::Args, Debug, Clone)]
pub struct ExecArgs {
    /// The kernels: names in kernels.yaml or globs (`-k '6.*'`, `-k '*'`);
    /// repeatable. None: every kernel of the matrix.
    #[arg(long = "kernel", short = 'k', value_name = "NAME|GLOB")]
    pub kernels: Vec<String>,
    /// Copy a host file or directory into the guest: `HOST:GUEST` (a relative GUEST
    /// is relative to the working directory) or `HOST` (same path). Repeatable.
    #[arg(long = "file")]
    pub files: Vec<String>,
    /// Set an environment variable in the guest: `NAME=VALUE`, or `NAME` to pass
    /// the host's value (CARGO_* and RUST_* are passed always). Repeatable.
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// Kill the VM after this many seconds (default: the kernel's timeout in
    /// kernels.yaml); the exit status is then 124.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Run in the host's own root (shared read-only over virtiofs, with a throwaway
    /// writable layer) instead of a packed one: scripts, interpreters and programs
    /// that read the host's files work; the host's environment is passed.
    #[arg(long)]
    pub host_root: bool,
    /// Boot each kernel once to "ready", save that VM (in the cache), and restore
    /// it for this and every later `exec --snapshot` of the same kernel instead
    /// of booting: for a cargo runner with many test binaries. Cold boot where a
    /// VM cannot be saved (`--host-root`, `--gdb`, `--crash-dump`, a kernel
    /// without virtio_blk), said on stderr.
    #[arg(long, env = "KM_EXEC_SNAPSHOT")]
    pub snapshot: bool,
    /// Keep each kernel's output in DIR/<kernel>.stdout and DIR/<kernel>.stderr.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Write the results (one `exec` trial per kernel) as JSON, `run --json`'s format.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the results as JUnit XML.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// The program and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
}

/// How the program ended in one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecStatus {
    /// Its exit status (128+N for signal N).
    Exited(i32),
    /// Killed after the timeout.
    TimedOut(Duration),
    /// The guest never reported a status: why (the console tail went to stderr).
    NoStatus(String),
    /// Not run in this kernel: why (a program for another architecture).
    Refused(String),
}

impl ExecStatus {
    /// The exit status `exec` returns for it.
    pub fn code(&self) -> i32 {
        match self {
            ExecStatus::Exited(c) => *c,
            ExecStatus::TimedOut(_) => TIMED_OUT,
            ExecStatus::NoStatus(_) => NO_STATUS,
            ExecStatus::Refused(_) => 2,
        }
    }
    fn describe(&self) -> String {
        match self {
            ExecStatus::Exited(0) => "exit 0".into(),
            ExecStatus::Exited(c) if *c > 128 => format!("exit {c} (signal {})", c - 128),
            ExecStatus::Exited(c) => format!("exit {c}"),
            ExecStatus::TimedOut(t) => format!("timed out after {}s (exit {TIMED_OUT})", t.as_secs()),
            ExecStatus::NoStatus(why) => format!("no status: {why} (exit {NO_STATUS})"),
            ExecStatus::Refused(why) => format!("not run: {why}"),
        }
    }
}

/// What one kernel's run of the program gave.
#[derive(Debug, Clone)]
pub struct ExecOutcome {
    pub kernel: String,
    pub status: ExecStatus,
    /// `uname -r` of the kernel (its image's release), `None` for the host or a refusal.
    pub release: Option<String>,
    /// `tcg`, `kvm`, `host`, or `-` (not run).
    pub accel: String,
    pub wall: Duration,
    pub boot: Option<Duration>,
}

/// Checks the program, its libraries and the files before anything boots: every
/// problem here is a [`ConfigError`] (exit 2).
pub fn prepare(a: &ExecArgs, arch: km_protocol::Arch) -> Result<ExecRequest, ConfigError> {
    let cwd = std::env::current_dir().map_err(|source| ConfigError::Io { path: ".".into(), source })?;
    let program = if a.host_root {
        if arch != km_protocol::Arch::host() {
            return Err(ConfigError::Invalid {
                path: "--host-root".into(),
                message: format!(
                    "the host's root holds {} programs and this kernel is {arch}: use a packed root (no --host-root) with an {arch} program",
                    km_protocol::Arch::host()
                ),
            });
        }
        if !a.files.is_empty() {
            return Err(ConfigError::Invalid {
                path: "--file".into(),
                message: "with --host-root the guest sees the host's files already; drop --file".into(),
            });
        }
        root::find_program(Path::new(&a.command[0]))?
    } else {
        root::resolve_program(Path::new(&a.command[0]), arch)?
    };
    let files = a.files.iter().map(|f| root::parse_file_arg(f, &cwd)).collect::<Result<Vec<_>, _>>()?;
    // In the host's root the program sees the host's environment, as on the host.
    let env = requested_env(a, a.host_root)?;
    Ok(ExecRequest { program, args: a.command[1..].to_vec(), files, env, cwd, host_root: a.host_root })
}

/// The guest program's environment: the host's whole one (`all`, for the host's
/// root) or `CARGO_*` and `RUST_*`, then `--env`.
fn requested_env(a: &ExecArgs, all: bool) -> Result<Vec<(String, String)>, ConfigError> {
    let mut env = if all { root::host_env() } else { root::passed_env() };
    for e in &a.env {
        let (k, v) = match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), std::env::var(e).unwrap_or_default()),
        };
        if !root::is_variable_name(&k) {
            return Err(ConfigError::Invalid { path: format!("--env {e}"), message: "not a variable name".into() });
        }
        env.retain(|(old, _)| *old != k);
        env.push((k, v));
    }
    Ok(env)
}

/// `exec` as the command line asks: in one kernel, the program's own output and
/// exit status; in several, the prefixed outputs, the table and the results
/// files, and 0 only when every kernel that ran it exited 0.
pub fn command(m: Arc<Matrix>, a: &ExecArgs) -> anyhow::Result<i32> {
    let names = m.select_kernels(&a.kernels)?;
    let opts = ExecOptions { timeout: a.timeout, output_dir: a.output_dir.clone(), snapshot: a.snapshot };
    // Each kernel's request, checked before anything boots (a program of one
    // architecture is refused in the kernels of another).
    let mut plans = Vec::new();
    for k in &names {
        let arch = m.config.arch_of(k);
        let plan = match m.runner(k) {
            // virtme-ng runs the command in the host's own root, as --host-root does.
            crate::config::Runner::Vng if arch != km_protocol::Arch::host() => Err(ConfigError::Invalid {
                path: format!("{k}: runner: vng"),
                message: format!(
                    "virtme-ng runs the host's ({}) userspace; {k} is {arch}: use runner: qemu",
                    km_protocol::Arch::host()
                ),
            }),
            // Its script goes on the kernel command line: the variables asked
            // for, not the host's whole environment.
            crate::config::Runner::Vng => prepare(&ExecArgs { host_root: true, ..a.clone() }, arch)
                .and_then(|req| Ok(ExecRequest { env: requested_env(a, false)?, ..req })),
            crate::config::Runner::Qemu => prepare(a, arch),
        };
        plans.push((k.clone(), plan));
    }
    if plans.len() == 1 {
        let (kernel, plan) = plans.remove(0);
        let out = exec(&m, &kernel, &plan?, &opts, Output::Direct)?;
        write_outputs(&m, a, std::slice::from_ref(&out))?;
        return Ok(out.status.code());
    }
    // A request no kernel can take (no such program, a bad --file) is bad input.
    if plans.iter().all(|(_, p)| p.is_err()) {
        let (_, first) = plans.swap_remove(0);
        return Err(first.expect_err("all refused").into());
    }
    let start = Instant::now();
    let handles: Vec<_> = plans
        .into_iter()
        .map(|(kernel, plan)| {
            let (m, opts) = (m.clone(), opts.clone());
            std::thread::spawn(move || {
                let not_run = |status| ExecOutcome {
                    status,
                    release: None,
                    accel: "-".into(),
                    wall: Duration::ZERO,
                    boot: None,
                    kernel: kernel.clone(),
                };
                match plan {
                    Err(e) => not_run(ExecStatus::Refused(e.to_string())),
                    Ok(req) => {
                        let _slot = m.vm_slot();
                        let tag = format!("[{kernel}] ");
                        // One kernel that cannot start (a download, QEMU) is its row of
                        // the table; the others still run.
                        exec(&m, &kernel, &req, &opts, Output::Prefixed(tag))
                            .unwrap_or_else(|e| not_run(ExecStatus::NoStatus(format!("{e:#}"))))
                    }
                }
            })
        })
        .collect();
    let outcomes: Vec<ExecOutcome> = handles.into_iter().map(|h| h.join().expect("exec thread")).collect();
    m.emit(Event::ExecTable {
        rows: outcomes
            .iter()
            .map(|o| ExecRow {
                kernel: o.kernel.clone(),
                release: o.release.clone().unwrap_or_else(|| "-".into()),
                accel: o.accel.clone(),
                wall: o.wall,
                result: o.status.describe(),
                ok: matches!(o.status, ExecStatus::Exited(0)),
            })
            .collect(),
        wall: start.elapsed(),
    });
    write_outputs(&m, a, &outcomes)?;
    let ran: Vec<_> = outcomes.iter().filter(|o| !matches!(o.status, ExecStatus::Refused(_))).collect();
    Ok(match () {
        () if ran.is_empty() => 2,
        () if ran.iter().all(|o| o.status == ExecStatus::Exited(0)) => 0,
        () => 1,
    })
}

/// `--json` and `--junit`: one `exec` trial per kernel (a refusal ignored, with its reason).
fn write_outputs(m: &Matrix, a: &ExecArgs, outcomes: &[ExecOutcome]) -> anyhow::Result<()> {
    if a.json.is_none() && a.junit.is_none() {
        return Ok(());
    }
    let words: Vec<String> = a.command.iter().map(|w| crate::escape::shell_word(&w.to_string_lossy())).collect();
    let results = RunResults {
        schema: crate::report::results::SCHEMA.into(),
        tool: format!("kernel-matrix {}", env!("CARGO_PKG_VERSION")),
        shards: Vec::new(),
        kernels: outcomes
            .iter()
            .map(|o| {
                let (verdict, reason) = match &o.status {
                    ExecStatus::Exited(0) => (Outcome::Pass, None),
                    ExecStatus::Refused(why) => (Outcome::Ignored, Some(why.clone())),
                    other => (Outcome::Fail, Some(other.describe())),
                };
                let host_root = if a.host_root { " --host-root" } else { "" };
                KernelResult {
                    kernel: o.kernel.clone(),
                    release: o.release.clone(),
                    accel: o.accel.clone(),
                    boot_secs: o.boot.map(|b| b.as_secs_f64()),
                    wall_secs: o.wall.as_secs_f64(),
                    guest: None,
                    failure: None,
                    qemu_command: None,
                    cells: vec![Cell {
                        trial: "exec".into(),
                        verdict,
                        reason,
                        metrics: Default::default(),
                        note: String::new(),
                        reproduce: format!(
                            "kernel-matrix -c {} exec -k {}{host_root} -- {}",
                            crate::escape::shell_word(&m.config.path.to_string_lossy()),
                            crate::escape::shell_word(&o.kernel),
                            words.join(" ")
                        ),
                        secs: Some(o.wall.as_secs_f64()),
                        cause: None,
                        attempts: Vec::new(),
                    }],
                }
            })
            .collect(),
    };
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &a.junit {
        std::fs::write(p, crate::report::junit::render(&results))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// How `exec` runs, the same in every kernel.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Seconds before the VM is killed (default: the kernel's timeout).
    pub timeout: Option<u64>,
    /// Where each kernel's stdout and stderr are kept (`--output-dir`).
    pub output_dir: Option<PathBuf>,
    /// Restore a saved ready VM instead of booting (`--snapshot`).
    pub snapshot: bool,
}

/// Where a kernel's program output goes on the host.
#[derive(Debug, Clone)]
pub enum Output {
    /// As it comes, to this process's stdout and stderr (one kernel: a cargo runner).
    Direct,
    /// Line by line, each line after this prefix (several kernels at once).
    Prefixed(String),
}

/// Runs `req` in `kernel`'s VM (or, for the host, as a child process).
pub fn exec(
    m: &Matrix,
    kernel: &str,
    req: &ExecRequest,
    opts: &ExecOptions,
    output: Output,
) -> anyhow::Result<ExecOutcome> {
    let Some(spec) = m.config.kernel(kernel) else {
        return Err(ConfigError::Invalid {
            path: m.config.path.display().to_string(),
            message: format!("no kernel {kernel:?} (kernels: {})", m.kernel_names().join(", ")),
        }
        .into());
    };
    let timeout = opts.timeout.map(Duration::from_secs).unwrap_or_else(|| m.config.timeout(spec));
    let workdir = m.opts.run_dir.join("exec").join(format!("{kernel}-{}", std::process::id()));
    std::fs::create_dir_all(&workdir).with_context(|| format!("creating {}", workdir.display()))?;
    let (out_path, err_path) = (workdir.join("stdout"), workdir.join("stderr"));
    let mut out = Stream::new(out_path.clone(), &output);
    let mut err = Stream::new(err_path.clone(), &output);
    let Some(image) = m.image(spec)? else {
        let outcome = run_on_host(kernel, req, timeout, &workdir, &mut out, &mut err)?;
        keep_output(opts, kernel, &workdir, &outcome)?;
        return Ok(outcome);
    };
    if m.runner(kernel) == crate::config::Runner::Vng {
        let outcome = run_vng(m, spec, &image, req, timeout, &workdir, &mut out, &mut err)?;
        keep_output(opts, kernel, &workdir, &outcome)?;
        return Ok(outcome);
    }
    let serials = vec![out_path, err_path];
    let restored = match opts.snapshot {
        true => match snapshot_vm(m, spec, &image, req, &workdir, timeout, serials.clone()) {
            Ok(Ok(vm_spec)) => Some(vm_spec),
            Ok(Err(why)) => {
                m.emit(Event::ExecNote { kernel: kernel.to_string(), note: format!("booting cold: {why}") });
                None
            }
            Err(e) => {
                m.emit(Event::ExecNote { kernel: kernel.to_string(), note: format!("booting cold: {e:#}") });
                None
            }
        },
        false => None,
    };
    let (vm_spec, share) = match restored {
        Some(vm_spec) => (vm_spec, None),
        None => exec_vm(m, spec, &image, req, &workdir, timeout, serials)?,
    };
    m.announce_gdb(spec, &image, &vm_spec);
    let run = vm::run_watching(&vm_spec, &mut || {
        out.copy(false);
        err.copy(false);
    })?;
    drop(share);
    out.copy(true);
    err.copy(true);
    let channel = std::fs::read_to_string(vm_spec.channel_path()).unwrap_or_default();
    let reported =
        channel.lines().find_map(|l| l.strip_prefix("km-exec status ")).and_then(|s| s.trim().parse::<i32>().ok());
    if let Some(splat) = &run.splat {
        m.emit(Event::ExecSplat {
            kernel: kernel.to_string(),
            splat: splat.to_string(),
            console: vm_spec.console_path(),
        });
    }
    let status = match (reported, &run.end) {
        (Some(code), _) => ExecStatus::Exited(code),
        (None, end) => {
            let started = channel.contains("km-exec start ");
            let mut how = super::describe(end).replace("the agent", "the program");
            if !started && *end == vm::VmEnd::Panicked && unpacking_failed(&run.console) {
                how = "the guest kernel panicked unpacking the guest root, before the program started (a root too large for memory_mb?)".into();
            }
            how.push_str(&m.vmcore_note(spec, &run));
            m.emit(Event::ExecNoStatus {
                kernel: kernel.to_string(),
                how: how.clone(),
                console: vm_spec.console_path(),
                tail: vm::console::tail(&run.console, 40),
            });
            match end {
                vm::VmEnd::TimedOut(t) => ExecStatus::TimedOut(*t),
                _ => ExecStatus::NoStatus(how),
            }
        }
    };
    if crate::settings::get().exec_times {
        let start = channel.lines().find_map(|l| l.strip_prefix("km-exec start ")).unwrap_or("?").trim().to_string();
        m.emit(Event::ExecTimes {
            kernel: kernel.to_string(),
            wall: run.wall,
            boot: run.boot.unwrap_or_default(),
            guest_start: start,
            accel: vm_spec.accel.to_string(),
            restored: matches!(vm_spec.snapshot, Some(vm::snapshot::Role::Restore { .. })),
        });
    }
    let outcome = ExecOutcome {
        kernel: kernel.to_string(),
        release: Some(image.release.clone()),
        accel: vm_spec.accel.to_string(),
        wall: run.wall,
        boot: run.boot,
        status,
    };
    keep_output(opts, kernel, &workdir, &outcome)?;
    Ok(outcome)
}

/// The VM that runs `req` in `kernel`: its guest root built in `workdir` and,
/// for `--host-root`, the virtiofs share of the host's root, which must live as
/// long as the VM.
fn exec_vm(
    m: &Matrix,
    spec: &crate::config::KernelSpec,
    image: &crate::images::KernelImage,
    req: &ExecRequest,
    workdir: &Path,
    timeout: Duration,
    serials: Vec<PathBuf>,
) -> anyhow::Result<(vm::VmSpec, Option<vm::host_root::HostRootShare>)> {
    if req.host_root && image.modules.is_none() {
        anyhow::bail!(
            "{}: --host-root needs the kernel's virtiofs and overlay modules, and the harness found no modules for {}",
            spec.name,
            image.release
        );
    }
    let mut initramfs = workdir.join("root.cpio.gz");
    // The kernel unpacks the archive into RAM while holding it: a root near the
    // guest's memory panics the guest before the program starts.
    root::build(req, spec.arch(), &m.busybox(spec)?, &initramfs, u64::from(m.config.memory_mb) << 20)?;
    if let Some(boot) = image.modules.as_ref().and_then(|m| m.boot.as_ref()) {
        initramfs = crate::guest_root::with_boot_modules(&initramfs, boot, workdir)?;
    }
    let share = req.host_root.then(|| vm::host_root::HostRootShare::start(workdir)).transpose()?;
    let vm_spec = vm::VmSpec {
        host_root: share.as_ref().map(|s| s.socket.clone()),
        debug: vm::debug::DebugOptions::from_settings()?,
        ..exec_vm_spec(m, spec, image, initramfs, workdir, timeout, serials)
    };
    Ok((vm_spec, share))
}

/// An exec VM of `spec` booting `initramfs`: the kernel's modules disk, no host
/// root, no debugger, not saved or restored (callers change what differs).
fn exec_vm_spec(
    m: &Matrix,
    spec: &crate::config::KernelSpec,
    image: &crate::images::KernelImage,
    initramfs: PathBuf,
    workdir: &Path,
    timeout: Duration,
    serials: Vec<PathBuf>,
) -> vm::VmSpec {
    vm::VmSpec {
        arch: spec.arch(),
        kernel: image.boot_file().to_path_buf(),
        initramfs,
        accel: m.accel(spec),
        memory_mb: m.config.memory_mb,
        cpus: 1,
        extra_cmdline: spec.cmdline.clone(),
        timeout,
        workdir: workdir.to_path_buf(),
        icount: None,
        serials,
        modules: image.modules.clone(),
        host_root: None,
        debug: vm::debug::DebugOptions::default(),
        snapshot: None,
    }
}

/// With `--snapshot`: the VM that restores `spec`'s saved ready guest to run
/// `req` (saving one first, into the cache, when there is none yet), or why
/// this run boots cold instead.
fn snapshot_vm(
    m: &Matrix,
    spec: &crate::config::KernelSpec,
    image: &crate::images::KernelImage,
    req: &ExecRequest,
    workdir: &Path,
    timeout: Duration,
    serials: Vec<PathBuf>,
) -> anyhow::Result<Result<vm::VmSpec, String>> {
    use sha2::Digest as _;
    use vm::snapshot::{self, Role};
    if req.host_root {
        return Ok(Err("--host-root shares the host's root through vhost-user-fs, which QEMU cannot save".into()));
    }
    if vm::debug::DebugOptions::from_settings()?.any() {
        return Ok(Err("--gdb and --crash-dump watch a kernel from its boot".into()));
    }
    let Some(modules) = &image.modules else {
        return Ok(Err(format!(
            "no modules for {}: a saved guest reads its disks with the kernel's virtio_blk",
            image.release
        )));
    };
    let Some(boot) = crate::images::modules::snapshot_boot_modules(modules, &image.release)? else {
        return Ok(Err(format!("{} has no virtio_blk driver for a saved guest's disks", image.release)));
    };
    let ready = root::snapshot_root(&m.derived_dir(), &m.busybox(spec)?)?;
    let initramfs = match std::fs::read_to_string(boot.join("order"))?.trim().is_empty() {
        true => ready,
        false => crate::guest_root::with_boot_modules(&ready, &boot, &m.derived_dir())?,
    };
    let vm_spec = |role: Role, workdir: &Path, serials: Vec<PathBuf>| vm::VmSpec {
        snapshot: Some(role),
        ..exec_vm_spec(m, spec, image, initramfs.clone(), workdir, timeout, serials)
    };
    // A saved VM is restored only into the same machine: everything that shapes
    // it is in the key (its files are content-addressed in the cache).
    let mut h = sha2::Sha256::new();
    // (Its command line with the per-run paths left empty.)
    let probe = vm_spec(Role::Save { job_disk: PathBuf::new() }, Path::new(""), vec![PathBuf::new(); serials.len()]);
    h.update(format!("{:?}\0{}\0", probe.command(), qemu_version(probe.qemu_binary())).as_bytes());
    let dir = m.derived_dir().join("snapshots").join(&hex::encode(h.finalize())[..32]);
    let state = dir.join("state");
    if !state.exists() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let save_dir = workdir.join("snapshot-save");
        std::fs::create_dir_all(&save_dir)?;
        let job_disk = save_dir.join("job.img");
        snapshot::empty_job(&job_disk)?;
        m.emit(Event::ExecNote { kernel: spec.name.clone(), note: "booting to ready, to save it".into() });
        let save_serials = vec![save_dir.join("stdout"), save_dir.join("stderr")];
        let saved = snapshot::save(&vm_spec(Role::Save { job_disk }, &save_dir, save_serials), &state)?;
        m.emit(Event::ExecNote {
            kernel: spec.name.clone(),
            note: format!(
                "saved: ready {:.2} s after QEMU started, saved in {:.2} s ({:.0} MB, {})",
                saved.ready.as_secs_f64(),
                saved.save.as_secs_f64(),
                saved.bytes as f64 / 1e6,
                dir.display()
            ),
        });
    }
    let archive = workdir.join("job.cpio");
    root::build_job(req, spec.arch(), &archive, u64::from(m.config.memory_mb) << 20)?;
    let job_disk = workdir.join("job.img");
    if snapshot::write_job(&archive, &job_disk, std::time::SystemTime::now())?.is_none() {
        return Ok(Err(format!(
            "the program and its files are larger than a saved guest's job disk ({} MiB)",
            snapshot::JOB_DISK_BYTES >> 20
        )));
    }
    Ok(Ok(vm_spec(Role::Restore { state, job_disk }, workdir, serials)))
}

/// `qemu-system-<arch> --version`'s first line: a VM saved by one QEMU is
/// restored by the same.
fn qemu_version(binary: &str) -> String {
    std::process::Command::new(binary)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// `kernel-matrix shell --host-root`: a root shell (the host's `$SHELL`, else
/// /bin/sh) in `kernel`, in the host's own root under a throwaway writable layer,
/// in the host's working directory with the host's environment, its console on
/// this terminal. Returns QEMU's exit code.
pub fn shell_in_host_root(m: &Matrix, kernel: &str) -> anyhow::Result<i32> {
    let spec = m.config.kernel(kernel).with_context(|| format!("no kernel {kernel:?}"))?;
    if spec.arch() != km_protocol::Arch::host() {
        anyhow::bail!(
            "{kernel} is an {} kernel and the host's root holds {} programs: use `shell` without --host-root",
            spec.arch(),
            km_protocol::Arch::host()
        );
    }
    let Some(image) = m.image(spec)? else {
        anyhow::bail!("kernel {kernel:?} is the host kernel: it runs without a VM");
    };
    let shell = std::env::var_os("SHELL").filter(|s| Path::new(s).is_absolute()).unwrap_or_else(|| "/bin/sh".into());
    let req = ExecRequest {
        program: root::find_program(Path::new(&shell))?,
        args: Vec::new(),
        files: Vec::new(),
        env: root::host_env(),
        cwd: std::env::current_dir().context("the working directory")?,
        host_root: true,
    };
    let workdir = m.opts.run_dir.join("shell").join(format!("{kernel}-{}", std::process::id()));
    std::fs::create_dir_all(&workdir).with_context(|| format!("creating {}", workdir.display()))?;
    let serials = vec![workdir.join("stdout"), workdir.join("stderr")];
    let (vm_spec, _share) = exec_vm(m, spec, &image, &req, &workdir, m.config.timeout(spec), serials)?;
    m.announce_gdb(spec, &image, &vm_spec);
    eprintln!(
        "kernel-matrix: {} in kernel {kernel} ({} accel), in the host's root (read-only; writes go to a throwaway layer); leave with `exit`, or Ctrl-A X",
        req.program.display(),
        vm_spec.accel
    );
    let code =
        crate::report::repro::run_interactive(crate::report::repro::interactive(vm_spec.command()), spec.arch())?;
    let _ = std::fs::remove_dir_all(&workdir);
    Ok(code)
}

/// The console of a kernel that could not unpack its initramfs (out of memory).
fn unpacking_failed(console: &str) -> bool {
    ["Initramfs unpacking failed", "initramfs unpacking failed", "populate_rootfs", "Out of memory"]
        .iter()
        .any(|m| console.contains(m))
}

/// `--output-dir`: the kernel's stdout and stderr kept there; the run's files
/// are removed when the program ran and exited (kept for a look otherwise).
fn keep_output(opts: &ExecOptions, kernel: &str, workdir: &Path, outcome: &ExecOutcome) -> anyhow::Result<()> {
    if let Some(dir) = &opts.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for stream in ["stdout", "stderr"] {
            let dest = dir.join(format!("{kernel}.{stream}"));
            match std::fs::copy(workdir.join(stream), &dest) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::write(&dest, b"")?,
                Err(e) => return Err(e).with_context(|| format!("writing {}", dest.display())),
            }
        }
    }
    // Kept when the guest could not run the program (125: the console, the root).
    if matches!(outcome.status, ExecStatus::Exited(c) if c != NO_STATUS) {
        let _ = std::fs::remove_dir_all(workdir);
    }
    Ok(())
}

/// The host kernel needs no VM: the program runs as a child process, its output
/// through files like a guest's, bounded by the same timeout.
fn run_on_host(
    kernel: &str,
    req: &ExecRequest,
    timeout: Duration,
    workdir: &Path,
    out: &mut Stream,
    err: &mut Stream,
) -> anyhow::Result<ExecOutcome> {
    let mut c = std::process::Command::new(&req.program);
    c.args(&req.args);
    let (status, wall) =
        run_child(c, timeout, workdir, out, err).with_context(|| format!("starting {}", req.program.display()))?;
    Ok(ExecOutcome { kernel: kernel.to_string(), status, release: None, accel: "host".into(), wall, boot: None })
}

/// `runner: vng`: the program in `spec`'s kernel booted by virtme-ng
/// ([`vm::vng`]), in the host's root, its exit status vng's.
#[allow(clippy::too_many_arguments)]
fn run_vng(
    m: &Matrix,
    spec: &crate::config::KernelSpec,
    image: &crate::images::KernelImage,
    req: &ExecRequest,
    timeout: Duration,
    workdir: &Path,
    out: &mut Stream,
    err: &mut Stream,
) -> anyhow::Result<ExecOutcome> {
    let vng = vm::vng::find()?;
    let kimg = vm::vng::kernel_image(image)?;
    let accel = m.accel(spec);
    // The packed root's run script: the working directory, the variables asked
    // for (`CARGO_*`, `RUST_*`, `--env`: vng's guest has the host's root, not
    // this process's environment), then the program.
    let script = root::run_script(req);
    let c = vm::vng::command(&vng, &kimg, &script, accel, m.config.memory_mb, &req.cwd)?;
    let line = vm::shell_line(&c);
    let (status, wall) = run_child(c, timeout, workdir, out, err)?;
    if status == ExecStatus::Exited(255) {
        m.emit(Event::ExecNote {
            kernel: spec.name.clone(),
            note: format!("virtme-ng exited 255, which is also its own failure; its console: {line} --verbose"),
        });
    }
    Ok(ExecOutcome {
        kernel: spec.name.clone(),
        status,
        release: Some(image.release.clone()),
        accel: format!("vng {}/{accel}", vng.version),
        wall,
        boot: None,
    })
}

/// Runs `c` (stdin /dev/null, stdout and stderr into `workdir` and on through
/// `out` and `err` as they grow) in a process group of its own, killed whole
/// after `timeout`; its status and wall time.
fn run_child(
    mut c: std::process::Command,
    timeout: Duration,
    workdir: &Path,
    out: &mut Stream,
    err: &mut Stream,
) -> anyhow::Result<(ExecStatus, Duration)> {
    use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
    let start = Instant::now();
    c.stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(workdir.join("stdout"))?)
        .stderr(std::fs::File::create(workdir.join("stderr"))?)
        .process_group(0);
    vm::die_with_parent(&mut c);
    let mut child = c.spawn()?;
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break ExecStatus::Exited(s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)));
        }
        if start.elapsed() > timeout {
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            break ExecStatus::TimedOut(timeout);
        }
        out.copy(false);
        err.copy(false);
        std::thread::sleep(Duration::from_millis(20));
    };
    // Whatever the program left behind in its group (vng's QEMU and virtiofsd).
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    out.copy(true);
    err.copy(true);
    Ok((status, start.elapsed()))
}

/// A file a serial port (or a host child) writes to, copied on to this process's
/// stdout or stderr as it grows.
struct Stream {
    path: PathBuf,
    offset: u64,
    /// With a prefix: the bytes after the last newline, held until the line ends.
    prefix: Option<String>,
    partial: Vec<u8>,
    to_stderr: bool,
}

impl Stream {
    fn new(path: PathBuf, output: &Output) -> Self {
        let to_stderr = path.file_name().is_some_and(|n| n == "stderr");
        let prefix = match output {
            Output::Direct => None,
            Output::Prefixed(p) => Some(p.clone()),
        };
        Self { path, offset: 0, prefix, partial: Vec::new(), to_stderr }
    }

    /// Copies what is new; `last`: the stream has ended (an unfinished line is
    /// written with a newline).
    fn copy(&mut self, last: bool) {
        let mut buf = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&self.path) {
            if f.seek(std::io::SeekFrom::Start(self.offset)).is_ok() && f.read_to_end(&mut buf).is_ok() {
                self.offset += buf.len() as u64;
            }
        }
        let text = match &self.prefix {
            None => buf,
            Some(prefix) => {
                self.partial.extend_from_slice(&buf);
                prefix_lines(prefix, &mut self.partial, last)
            }
        };
        if text.is_empty() {
            return;
        }
        // One write under the lock: lines of kernels running at once do not mix.
        if self.to_stderr {
            let mut w = std::io::stderr().lock();
            let _ = w.write_all(&text).and_then(|()| w.flush());
        } else {
            let mut w = std::io::stdout().lock();
            let _ = w.write_all(&text).and_then(|()| w.flush());
        }
    }
}

/// The complete lines of `pending`, each after `prefix`, taken out of it (all of
/// it when `last`, ending the unfinished line).
fn prefix_lines(prefix: &str, pending: &mut Vec<u8>, last: bool) -> Vec<u8> {
    let end = if last { pending.len() } else { pending.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) };
    let mut out = Vec::new();
    for line in pending[..end].split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            out.push(b'\n');
        }
    }
    pending.drain(..end);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_prefixed_whole() {
        let mut pending = b"one\ntw".to_vec();
        assert_eq!(prefix_lines("[6.1] ", &mut pending, false), b"[6.1] one\n");
        assert_eq!(pending, b"tw");
        pending.extend_from_slice(b"o\nthree");
        assert_eq!(prefix_lines("[6.1] ", &mut pending, false), b"[6.1] two\n");
        assert_eq!(prefix_lines("[6.1] ", &mut pending, true), b"[6.1] three\n");
        assert!(pending.is_empty());
        assert!(prefix_lines("[6.1] ", &mut pending, true).is_empty());
    }

    #[test]
    fn statuses_say_what_happened() {
        assert_eq!(ExecStatus::Exited(137).describe(), "exit 137 (signal 9)");
        assert_eq!(ExecStatus::TimedOut(Duration::from_secs(5)).code(), 124);
        assert_eq!(ExecStatus::NoStatus("panic".into()).code(), 125);
    }
}
