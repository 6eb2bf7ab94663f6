//! One QEMU run: boot a kernel with the guest root, collect the agent's records
//! from the second serial port, keep the console, and never outlive the harness.
use std::{
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

pub mod accel;
pub mod console;
pub mod debug;
pub mod host_root;
pub mod qmp;
pub mod snapshot;
pub mod vng;

use km_protocol::{record::parse_lines, Arch, Line, Record};

use accel::Accel;

#[derive(Debug, Clone)]
pub struct VmSpec {
    /// The guest's architecture: `qemu-system-<arch>` and its machine.
    pub arch: Arch,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub accel: Accel,
    pub memory_mb: u32,
    pub cpus: u32,
    pub extra_cmdline: Option<String>,
    pub timeout: Duration,
    /// Where the console and the agent's channel are written.
    pub workdir: PathBuf,
    /// TCG only: `-icount shift=N`, a virtual clock that advances 2^N ns per guest
    /// instruction. Benchmarks use it: the guest's own timings then count the
    /// instructions it executed and no longer depend on how busy the host is
    /// (measured: wall-clock TCG timings moved ±30% between runs on a shared 2-core host).
    pub icount: Option<u8>,
    /// More serial ports after the console and the agent's channel (ttyS2, ttyS3,
    /// ...), each written to its file: `kernel-matrix exec` streams the program's
    /// stdout and stderr over them. Empty for matrix runs (`8250.nr_uarts=2`).
    pub serials: Vec<PathBuf>,
    /// The kernel's modules disk ([`crate::images::modules`]): a read-only NVMe
    /// drive (serial `km-modules`) that the guest mounts on its first `modprobe`.
    pub modules: Option<crate::images::modules::ModulesDisk>,
    /// The socket of a virtiofsd serving the host's root ([`host_root`]): the
    /// guest mounts it (tag [`host_root::TAG`], kernel command line `km.hostroot`).
    pub host_root: Option<PathBuf>,
    /// gdb stub, memory dump on panic ([`debug`]).
    pub debug: debug::DebugOptions,
    /// Booting to a saved "ready" state, or restoring one ([`snapshot`]): the
    /// disks are then virtio-blk (NVMe does not migrate).
    pub snapshot: Option<snapshot::Role>,
}

/// How a VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEnd {
    /// The agent said `done` and the guest powered off.
    Finished,
    /// The guest stopped without the agent finishing (crash, early poweroff).
    Exited(Option<i32>),
    /// The console showed a kernel panic.
    Panicked,
    /// Killed after the timeout.
    TimedOut(Duration),
    /// The kernel stalled or locked up (RCU stall, soft/hard lockup): killed soon
    /// after the console said so.
    Stuck(console::Splat),
}

#[derive(Debug, Clone)]
pub struct VmRun {
    pub end: VmEnd,
    pub records: Vec<Line>,
    pub console: String,
    /// Host wall time from QEMU start to the agent's first record.
    pub boot: Option<Duration>,
    pub wall: Duration,
    pub command_line: String,
    /// What QEMU itself printed on stderr (its errors: a kernel it cannot load, an
    /// option it refuses), shown whenever QEMU fails.
    pub qemu_stderr: String,
    /// `--crash-dump` after a panic: the memory dump's path, or why there is none.
    pub vmcore: Option<Result<PathBuf, String>>,
    /// The first oops/BUG/WARNING/stall/lockup/panic the console showed, if any:
    /// a kernel that printed one fails all its trials even if the agent finished.
    pub splat: Option<console::Splat>,
}

impl VmSpec {
    pub fn console_path(&self) -> PathBuf {
        self.workdir.join("console.log")
    }
    pub fn channel_path(&self) -> PathBuf {
        self.workdir.join("agent.jsonl")
    }
    /// QEMU's own stderr, written to a file as it comes (a pipe nobody reads while
    /// QEMU runs would stall a chatty QEMU once full).
    pub fn qemu_stderr_path(&self) -> PathBuf {
        self.workdir.join("qemu-stderr.log")
    }

    /// The QEMU binary for the guest's architecture.
    pub fn qemu_binary(&self) -> &'static str {
        match self.arch {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Arm64 => "qemu-system-aarch64",
        }
    }

    /// The guest sees the same ports on both architectures: the console first,
    /// then the agent's channel at ttyS1 and [`VmSpec::serials`] at ttyS2, ttyS3.
    /// - x86_64: `-machine pc` with its ISA 16550 UARTs, ttyS0 the console.
    /// - arm64: `-machine virt` has one PL011 UART (ttyAMA0, the console); the other
    ///   ports are QEMU's PCI 16550 (`pci-serial`), which Debian's arm64 kernels
    ///   drive built in (8250_PCI), numbered ttyS0.. in device order. ttyS0 is a
    ///   placeholder (`null`) so the agent's channel is ttyS1 as on x86 and
    ///   vm-images/ need no per-architecture paths. At most 4 (CONFIG_SERIAL_8250_NR_UARTS).
    pub fn command(&self) -> Command {
        let mut c = Command::new(self.qemu_binary());
        let cpu = match (self.accel, self.arch) {
            (Accel::Kvm, _) => "host",
            (Accel::Tcg, Arch::X86_64) => "max",
            // QEMU's own pointer-authentication algorithm instead of the
            // architected QARMA, which is slow to emulate.
            (Accel::Tcg, Arch::Arm64) => "max,pauth-impdef=on",
        };
        let machine = match self.arch {
            Arch::X86_64 => "pc",
            Arch::Arm64 => "virt",
        };
        // `cryptomgr.notests`: the crypto self-tests were the slowest initcall
        // (crypto_algapi_init, 0.86 s of 3.1 s on 6.1 under TCG, `initcall_debug`)
        // and are not what the matrix tests.
        let mut append = match self.arch {
            Arch::X86_64 => format!(
                "console=ttyS0 panic=-1 oops=panic quiet loglevel=5 8250.nr_uarts={} cryptomgr.notests",
                2 + self.serials.len()
            ),
            Arch::Arm64 => "console=ttyAMA0 panic=-1 oops=panic quiet loglevel=5 cryptomgr.notests".to_string(),
        };
        if let Some(m) = &self.modules {
            // vm-images/guest-mounts and vm-images/modprobe: the modules disk is there,
            // and which modules the kernel asks for at boot it need not wait for.
            append.push_str(" km.modules");
            if !m.lacks_at_boot.is_empty() {
                append.push_str(&format!(" km.nomod={}", m.lacks_at_boot.join(",")));
            }
        }
        if self.host_root.is_some() {
            // vm-images/host-root: mount the host's root and run the program there.
            append.push_str(" km.hostroot");
        }
        if let Some(extra) = &self.extra_cmdline {
            append.push(' ');
            append.push_str(extra);
        }
        for w in self.debug.cmdline() {
            append.push(' ');
            append.push_str(w);
        }
        c.args(self.debug.qemu_args(&self.workdir));
        c.args(["-machine", machine, "-accel", &self.accel.to_string(), "-cpu", cpu]);
        if let (Accel::Tcg, Some(shift)) = (self.accel, self.icount) {
            c.args(["-icount", &format!("shift={shift}")]);
        }
        c.args(["-m", &format!("{}M", self.memory_mb), "-smp", &self.cpus.to_string()])
            .args(["-display", "none", "-monitor", "none", "-no-reboot", "-nodefaults", "-no-user-config"])
            .arg("-serial")
            .arg(format!("file:{}", self.console_path().display()));
        let ports = std::iter::once(self.channel_path()).chain(self.serials.iter().cloned());
        match self.arch {
            Arch::X86_64 => {
                c.args(ports.flat_map(|p| ["-serial".to_string(), format!("file:{}", p.display())]));
            }
            Arch::Arm64 => {
                c.args(["-chardev", "null,id=km0", "-device", "pci-serial,chardev=km0"]);
                for (i, p) in ports.enumerate() {
                    let path = option_value(&p);
                    c.args(["-chardev", &format!("file,id=km{},path={path}", i + 1)])
                        .args(["-device", &format!("pci-serial,chardev=km{}", i + 1)]);
                }
            }
        }
        if let Some(m) = &self.modules {
            let path = option_value(&m.disk);
            let id = crate::images::modules::SERIAL;
            c.args(["-drive", &format!("file={path},if=none,id={id},format=raw,readonly=on")]);
            if self.snapshot.is_some() {
                c.args(["-device", &format!("virtio-blk-pci,drive={id},serial={id}")]);
            } else {
                // One I/O queue: the guest has one vCPU (fewer queues to set up at boot).
                c.args(["-device", &format!("nvme,drive={id},serial={id},max_ioqpairs=1")]);
            }
        }
        if let Some(role) = &self.snapshot {
            c.args(role.qemu_args(&self.workdir));
        }
        if let Some(socket) = &self.host_root {
            // vhost-user needs the guest's RAM shareable with virtiofsd: memfd-backed.
            c.args(["-object", &format!("memory-backend-memfd,id=km-mem,size={}M,share=on", self.memory_mb)])
                .args(["-machine", "memory-backend=km-mem"])
                .args(["-chardev", &format!("socket,id=km-root,path={}", option_value(socket))])
                .args([
                    "-device",
                    &format!("vhost-user-fs-pci,queue-size=1024,chardev=km-root,tag={}", host_root::TAG),
                ]);
        }
        c.arg("-kernel").arg(&self.kernel).arg("-initrd").arg(&self.initramfs).args(["-append", &append]);
        c
    }
}

/// A path as a value inside a QEMU option list (`file=...,id=...`), where a comma
/// is escaped by doubling it.
fn option_value(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// The Debian package with the QEMU of `arch`.
pub fn qemu_package(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "qemu-system-x86",
        Arch::Arm64 => "qemu-system-arm",
    }
}

/// Renders a command so a person can paste it into a shell (with the variables
/// it sets in front).
pub fn shell_line(c: &Command) -> String {
    let vars = c.get_envs().filter_map(|(k, v)| {
        Some(format!("{}={}", k.to_string_lossy(), crate::escape::shell_word(&v?.to_string_lossy())))
    });
    let words =
        std::iter::once(c.get_program()).chain(c.get_args()).map(|a| crate::escape::shell_word(&a.to_string_lossy()));
    vars.chain(words).collect::<Vec<_>>().join(" ")
}

/// The least patience with a guest that reported a stall or lockup: it is
/// stopped once its agent has written nothing for this long, or for as long as the
/// guest took to get to the report, whichever is longer (see [`stuck_patience`]).
const STUCK_GRACE: Duration = Duration::from_secs(10);

/// How long a guest that reported a stall or lockup `elapsed` after QEMU started
/// may go without agent output before it is stopped. Derived from this run: a
/// guest that needed 30 s to get there (a slow or busy host) gets 30 s more, so a
/// machine twice as slow is given twice the time; never less than [`STUCK_GRACE`].
pub fn stuck_patience(elapsed: Duration) -> Duration {
    elapsed.max(STUCK_GRACE)
}

/// Console lines that mean the guest kernel is dead.
const PANIC_MARKERS: &[&str] = &["Kernel panic - not syncing", "---[ end Kernel panic"];

pub fn run(spec: &VmSpec) -> anyhow::Result<VmRun> {
    run_watching(spec, &mut || {})
}

/// [`run`], calling `poll` about every 20 ms while the guest runs and once after
/// QEMU is gone (`kernel-matrix exec` copies the guest's output ports to its own
/// stdout and stderr there).
pub fn run_watching(spec: &VmSpec, poll: &mut dyn FnMut()) -> anyhow::Result<VmRun> {
    fs::create_dir_all(&spec.workdir).with_context(|| format!("creating {}", spec.workdir.display()))?;
    for p in [spec.console_path(), spec.channel_path()].iter().chain(&spec.serials) {
        let _ = fs::remove_file(p);
    }
    let mut cmd = spec.command();
    let command_line = shell_line(&cmd);
    let stderr_file = fs::File::create(spec.qemu_stderr_path())
        .with_context(|| format!("creating {}", spec.qemu_stderr_path().display()))?;
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr_file);
    die_with_parent(&mut cmd);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {} (is {} installed?)", spec.qemu_binary(), qemu_package(spec.arch)))?;
    let mut boot = None;
    let mut end = None;
    let mut panic_seen: Option<Instant> = None;
    let mut vmcore = None;
    let mut watcher = console::Watcher::default();
    // Read as it grows: each poll reads only what was appended.
    let mut console_file: Option<fs::File> = None;
    let mut stuck_seen: Option<(Instant, Duration)> = None;
    let (mut channel_len, mut last_progress) = (0u64, Instant::now());
    loop {
        // The channel before the exit status: a guest that writes its first line
        // and powers off within one poll still has its boot time.
        if boot.is_none() && fs::metadata(spec.channel_path()).map(|m| m.len() > 0).unwrap_or(false) {
            boot = Some(start.elapsed());
        }
        if let Some(status) = child.try_wait()? {
            end.get_or_insert(VmEnd::Exited(status.code()));
            break;
        }
        if panic_seen.is_none() {
            if console_file.is_none() {
                console_file = fs::File::open(spec.console_path()).ok();
            }
            if let Some(f) = &mut console_file {
                use std::io::Read as _;
                let mut new = Vec::new();
                let _ = f.read_to_end(&mut new);
                watcher.feed(&new);
            }
            if watcher.fatal.as_ref().is_some_and(|s| s.kind == console::SplatKind::Panic) {
                panic_seen = Some(Instant::now());
            } else if watcher.fatal.is_some() && stuck_seen.is_none() {
                stuck_seen = Some((Instant::now(), stuck_patience(start.elapsed())));
            }
        }
        let len = fs::metadata(spec.channel_path()).map(|m| m.len()).unwrap_or(0);
        if len != channel_len {
            channel_len = len;
            last_progress = Instant::now();
        }
        // After a stall or lockup report, a guest whose agent makes no progress
        // for its patience is stopped (a starved guest that recovers runs on, and
        // its trials fail anyway because of the report).
        if panic_seen.is_none()
            && stuck_seen.is_some_and(|(t, patience)| t.elapsed() > patience && last_progress.elapsed() > patience)
        {
            end = Some(VmEnd::Stuck(watcher.fatal.clone().expect("stall seen")));
            break;
        }
        // Give a panicking kernel a moment to print its trace, then stop it
        // (dumping its memory first when asked: it waits, `panic=0`).
        if panic_seen.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
            if spec.debug.crash_dump {
                let dest = debug::vmcore_path(&spec.workdir);
                vmcore = Some(debug::dump_memory(&spec.workdir, &dest, spec.timeout).map(|()| dest));
            }
            end = Some(VmEnd::Panicked);
            break;
        }
        if start.elapsed() > spec.timeout {
            end = Some(VmEnd::TimedOut(spec.timeout));
            break;
        }
        poll();
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let status = child.wait()?;
    poll();
    let wall = start.elapsed();
    let stderr = String::from_utf8_lossy(&fs::read(spec.qemu_stderr_path()).unwrap_or_default()).into_owned();
    let mut console = String::from_utf8_lossy(&fs::read(spec.console_path()).unwrap_or_default()).into_owned();
    if !stderr.trim().is_empty() {
        console.push_str("\n--- qemu stderr ---\n");
        console.push_str(&stderr);
    }
    let records = parse_lines(&String::from_utf8_lossy(&fs::read(spec.channel_path()).unwrap_or_default()));
    let mut end = end.unwrap_or(VmEnd::Exited(status.code()));
    let splat = console::first_splat(&console);
    // A panicking kernel with panic=-1 reboots at once, so QEMU may exit before the
    // console was polled: judge by the console as well.
    if panic_seen.is_some() || PANIC_MARKERS.iter().any(|m| console.contains(m)) {
        end = VmEnd::Panicked;
    } else if end == VmEnd::Exited(Some(0)) && records.last().map(|l| &l.record) == Some(&Record::Done) {
        end = VmEnd::Finished;
    }
    let vmcore = vmcore.map(|r| r.map_err(|e| format!("{e:#}")));
    Ok(VmRun { end, records, console, boot, wall, command_line, qemu_stderr: stderr, splat, vmcore })
}

/// Has the kernel kill `cmd`'s process when the harness dies (even by SIGKILL):
/// no QEMU or host agent outlives the run. std has no safe way to run code
/// between fork and exec.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure makes one prctl(2) call (async-signal-safe) and builds an
    // io::Error from the errno without allocating; it touches no shared state.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

/// Where a kernel's VM files go for this run.
pub fn workdir(base: &Path, kernel: &str) -> PathBuf {
    base.join(kernel)
}
