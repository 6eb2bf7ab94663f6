//! `kernel-matrix exec -k KERNEL [--file HOST:GUEST]... -- PROGRAM [ARGS]`: one
//! program of the user's in one kernel's VM (the matrix's QEMU line), its stdout
//! and stderr streamed as it runs, its exit status returned. Works as a cargo
//! runner: `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="kernel-matrix exec -k 6.1 --"`.
use std::{
    ffi::OsString,
    io::{Read as _, Seek as _},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;

use super::events::Event;
use crate::{
    config::ConfigError,
    guest_root::exec::{self as root, ExecRequest},
    run::Matrix,
    vm,
};

/// Exit status when the guest never reported the program's (boot failure, panic,
/// timeout): like `docker run`'s 125, outside what most programs use.
pub const NO_STATUS: i32 = 125;

#[derive(clap::Args, Debug, Clone)]
pub struct ExecArgs {
    /// The kernel: its name in kernels.yaml, or a glob that matches one (`-k '6.1*'`).
    #[arg(long, short = 'k', value_name = "NAME|GLOB")]
    pub kernel: String,
    /// Copy a host file or directory into the guest: `HOST:GUEST` (a relative GUEST
    /// is relative to the working directory) or `HOST` (same path). Repeatable.
    #[arg(long = "file")]
    pub files: Vec<String>,
    /// Set an environment variable in the guest: `NAME=VALUE`, or `NAME` to pass
    /// the host's value (CARGO_* and RUST_* are passed always). Repeatable.
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// Kill the VM after this many seconds (default: the kernel's timeout in kernels.yaml).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// The program and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
}

/// Checks the program, its libraries and the files before anything boots: every
/// problem here is a [`ConfigError`] (exit 2).
pub fn prepare(a: &ExecArgs, arch: km_protocol::Arch) -> Result<ExecRequest, ConfigError> {
    let cwd = std::env::current_dir().map_err(|source| ConfigError::Io { path: ".".into(), source })?;
    let program = root::resolve_program(Path::new(&a.command[0]), arch)?;
    let files = a.files.iter().map(|f| root::parse_file_arg(f, &cwd)).collect::<Result<Vec<_>, _>>()?;
    let mut env = root::passed_env();
    for e in &a.env {
        let (k, v) = match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), std::env::var(e).unwrap_or_default()),
        };
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError::Invalid { path: format!("--env {e}"), message: "not a variable name".into() });
        }
        env.retain(|(old, _)| *old != k);
        env.push((k, v));
    }
    Ok(ExecRequest { program, args: a.command[1..].to_vec(), files, env, cwd })
}

/// Runs `req` in `kernel`'s VM; returns the program's exit status (128+N for
/// signal N), or [`NO_STATUS`] when the guest did not report one (the reason
/// and the console's tail then go to stderr).
pub fn exec(m: &Matrix, kernel: &str, req: &ExecRequest, timeout: Option<u64>) -> anyhow::Result<i32> {
    let Some(spec) = m.config.kernel(kernel) else {
        return Err(ConfigError::Invalid {
            path: m.config.path.display().to_string(),
            message: format!("no kernel {kernel:?} (kernels: {})", m.kernel_names().join(", ")),
        }
        .into());
    };
    let Some(image) = m.image(spec)? else {
        return run_on_host(req);
    };
    let workdir = m.opts.run_dir.join("exec").join(format!("{kernel}-{}", std::process::id()));
    std::fs::create_dir_all(&workdir).with_context(|| format!("creating {}", workdir.display()))?;
    let mut initramfs = workdir.join("root.cpio.gz");
    root::build(req, spec.arch(), &m.busybox(spec)?, &initramfs)?;
    if let Some(boot) = image.modules.as_ref().and_then(|m| m.boot.as_ref()) {
        initramfs = crate::guest_root::with_boot_modules(&initramfs, boot, &workdir)?;
    }
    let (out_path, err_path) = (workdir.join("stdout"), workdir.join("stderr"));
    let vm_spec = vm::VmSpec {
        arch: spec.arch(),
        kernel: image.boot_file().to_path_buf(),
        initramfs,
        accel: m.accel(spec),
        memory_mb: m.config.memory_mb,
        cpus: 1,
        extra_cmdline: spec.cmdline.clone(),
        timeout: timeout.map(Duration::from_secs).unwrap_or_else(|| m.config.timeout(spec)),
        workdir: workdir.clone(),
        icount: None,
        serials: vec![out_path.clone(), err_path.clone()],
        modules: image.modules.as_ref().map(|m| m.disk.clone()),
    };
    let mut out = Stream::new(out_path);
    let mut err = Stream::new(err_path);
    let run = vm::run_watching(&vm_spec, &mut || {
        out.copy_to(&mut std::io::stdout());
        err.copy_to(&mut std::io::stderr());
    })?;
    let channel = std::fs::read_to_string(vm_spec.channel_path()).unwrap_or_default();
    let status =
        channel.lines().find_map(|l| l.strip_prefix("km-exec status ")).and_then(|s| s.trim().parse::<i32>().ok());
    if let Some(splat) = &run.splat {
        m.emit(Event::ExecSplat {
            kernel: kernel.to_string(),
            splat: splat.to_string(),
            console: vm_spec.console_path(),
        });
    }
    let code = match status {
        Some(code) => code,
        None => {
            m.emit(Event::ExecNoStatus {
                kernel: kernel.to_string(),
                how: super::describe(&run.end).replace("the agent", "the program"),
                console: vm_spec.console_path(),
                tail: vm::console::tail(&run.console, 40),
            });
            NO_STATUS
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
        });
    }
    if code != NO_STATUS {
        let _ = std::fs::remove_dir_all(&workdir);
    }
    Ok(code)
}

/// The host kernel needs no VM: the program runs as a child process.
fn run_on_host(req: &ExecRequest) -> anyhow::Result<i32> {
    use std::os::unix::process::ExitStatusExt as _;
    let status = std::process::Command::new(&req.program)
        .args(&req.args)
        .stdin(std::process::Stdio::null())
        .status()
        .with_context(|| format!("starting {}", req.program.display()))?;
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// A file a serial port writes to, copied on as it grows.
struct Stream {
    path: PathBuf,
    offset: u64,
}

impl Stream {
    fn new(path: PathBuf) -> Self {
        Self { path, offset: 0 }
    }
    fn copy_to(&mut self, w: &mut dyn std::io::Write) {
        let Ok(mut f) = std::fs::File::open(&self.path) else { return };
        if f.seek(std::io::SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_ok() && !buf.is_empty() {
            self.offset += buf.len() as u64;
            let _ = w.write_all(&buf);
            let _ = w.flush();
        }
    }
}
