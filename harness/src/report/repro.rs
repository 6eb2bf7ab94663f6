//! Reproducing a failure by hand: the QEMU command line of a kernel's VM
//! (`kernel-matrix qemu-cmd`) and an interactive root shell in it
//! (`kernel-matrix shell`), with the agent at `/agent`.
use std::{os::unix::process::CommandExt as _, process::Command};

use anyhow::{bail, Context as _};

use crate::{run::Matrix, vm};

/// Appended to the kernel command line of an interactive VM (see `initramfs::INIT`).
pub const SHELL_ACTION: &str = "km.action=shell";

/// The VM of `kernel` exactly as a run boots it; with `interactive`, the console
/// is on stdio (`-serial mon:stdio`: Ctrl-A X quits, Ctrl-A C is QEMU's monitor)
/// and /init starts a root shell instead of the agent.
pub fn qemu_command(m: &Matrix, kernel: &str, interactive: bool) -> anyhow::Result<Command> {
    let Some(spec) = m.config.kernel(kernel) else {
        let names = m.kernel_names();
        let more = if names.len() > 12 { format!(", ... {} more", names.len() - 12) } else { String::new() };
        bail!(
            "no kernel {kernel:?} in {} (kernels: {}{more})",
            m.config.path.display(),
            names[..names.len().min(12)].join(", ")
        );
    };
    let Some(image) = m.image(spec)? else {
        bail!("kernel {kernel:?} is the host kernel: it runs without a VM");
    };
    let workdir = vm::workdir(&m.opts.run_dir, &spec.name);
    std::fs::create_dir_all(&workdir).with_context(|| format!("creating {}", workdir.display()))?;
    let vm_spec = m.vm_spec(spec, &image, &workdir)?;
    if interactive {
        m.announce_gdb(spec, &image, &vm_spec);
    }
    let base = vm_spec.command();
    Ok(if interactive { self::interactive(base) } else { base })
}

/// `base` (a VM's QEMU command) with its console on stdio (`-serial mon:stdio`:
/// Ctrl-A X quits, Ctrl-A C is QEMU's monitor) and [`SHELL_ACTION`] on the kernel
/// command line, so that /init starts a shell there.
pub fn interactive(base: Command) -> Command {
    let mut c = Command::new(base.get_program());
    let mut args = base.get_args().map(|a| a.to_os_string()).peekable();
    let mut first_serial = true;
    while let Some(a) = args.next() {
        let value =
            |args: &mut std::iter::Peekable<_>| -> std::ffi::OsString { Iterator::next(args).unwrap_or_default() };
        match a.to_str() {
            Some("-serial") if first_serial => {
                first_serial = false;
                let _ = value(&mut args);
                c.args(["-serial", "mon:stdio"]);
            }
            Some("-monitor") => {
                // The monitor is multiplexed on stdio instead.
                let _ = value(&mut args);
            }
            Some("-append") => {
                let v = value(&mut args);
                c.arg("-append").arg(format!("{} {SHELL_ACTION}", v.to_string_lossy()));
            }
            _ => {
                c.arg(a);
            }
        }
    }
    c
}

/// Runs an interactive VM's QEMU in the foreground, dying with the caller
/// (PR_SET_PDEATHSIG), and returns its exit code.
pub fn run_interactive(mut c: Command, arch: km_protocol::Arch) -> anyhow::Result<i32> {
    // SAFETY: the closure makes one prctl(2) call (async-signal-safe) and builds an
    // io::Error from the errno without allocating; it touches no shared state.
    unsafe {
        c.pre_exec(|| nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from));
    }
    let program = c.get_program().to_string_lossy().into_owned();
    let status =
        c.status().with_context(|| format!("starting {program} (is {} installed?)", vm::qemu_package(arch)))?;
    Ok(status.code().unwrap_or(128 + 9))
}

/// Runs the interactive VM in the foreground and returns QEMU's exit code.
/// QEMU inherits stdio and dies with the caller (PR_SET_PDEATHSIG).
pub fn shell(m: &Matrix, kernel: &str) -> anyhow::Result<i32> {
    let c = qemu_command(m, kernel, true)?;
    eprintln!(
        "kernel-matrix: root shell in kernel {kernel} ({} accel); the agent is /agent (`/agent --out -` runs every check), leave with `poweroff -f` or Ctrl-A X",
        m.opts.accel.accel
    );
    run_interactive(c, m.config.arch_of(kernel))
}

/// `kernel-matrix shell` / `kernel-matrix qemu-cmd`.
#[derive(clap::Args, Debug, Clone)]
pub struct VmArgs {
    /// The kernel: its name in kernels.yaml, or a glob that matches one (`-k '6.1*'`).
    #[arg(long, short = 'k', value_name = "NAME|GLOB")]
    pub kernel: String,
    /// qemu-cmd: print the interactive variant (console on stdio, root shell).
    #[arg(long)]
    pub shell: bool,
    /// shell: the host's own root (read-only, under a throwaway writable layer),
    /// the host's `$SHELL` in the working directory, instead of the agent's root.
    #[arg(long)]
    pub host_root: bool,
}

pub fn qemu_cmd_command(m: &Matrix, a: &VmArgs) -> anyhow::Result<std::process::ExitCode> {
    println!("{}", vm::shell_line(&qemu_command(m, &m.one_kernel(&a.kernel)?, a.shell)?));
    Ok(std::process::ExitCode::SUCCESS)
}

pub fn shell_command(m: &Matrix, a: &VmArgs) -> anyhow::Result<std::process::ExitCode> {
    let kernel = m.one_kernel(&a.kernel)?;
    let code = if a.host_root { crate::run::exec::shell_in_host_root(m, &kernel)? } else { shell(m, &kernel)? };
    Ok(std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
