//! The matrix: for each kernel, get its image, boot it (or use the host), and
//! collect what its agent reported. Each kernel runs at most once per process, on
//! first demand, with at most `max_vms` VMs at a time. Verdicts are decided from
//! what this collects in `verdict`.
pub mod events;
pub mod exec;
pub use crate::shard;
pub mod suites;
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, OnceLock},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use km_protocol::{checks::CATALOGUE, switches::Switches, Arch, CheckId, Line, Probe, Record, Verdict};

use crate::{
    config::{manifest::ByoProgram, KernelSource, KernelSpec, MatrixConfig},
    images::{self, lock::Lock, mirror::Mirrors},
    vm::{
        self,
        accel::{Accel, AccelChoice},
    },
};

#[derive(Debug, Clone)]
pub struct Options {
    pub cache_dir: PathBuf,
    /// Per-run files (consoles, agent channels).
    pub run_dir: PathBuf,
    pub accel: AccelChoice,
    pub max_vms: usize,
    /// Also run the benchmarks (`bench`): `km.bench=1` on guest command lines,
    /// `--bench` for the host agent. Off for plain matrix runs (`KM_BENCH=1` turns it on).
    pub bench: bool,
    /// Run only these programs in the guests (`KM_ONLY_PROGRAMS=a,b`); the others'
    /// checks are ignored with that reason.
    pub only_programs: Option<Vec<String>>,
    /// More files for the guest root, as (path inside the guest, host file). Empty
    /// unless a caller adds some: the robustness tests put a kernel module there
    /// that makes the guest kernel WARN, BUG or oops on request (`km.splat=`).
    pub guest_files: Vec<(String, PathBuf)>,
    /// `--retries`: more attempts for a kernel whose VM ended without a verdict or
    /// whose trials failed (never for a splat).
    pub retries: u32,
}

impl Options {
    /// Whether `program` runs in the guests (`--only-programs` does not leave it out).
    pub fn selects(&self, program: &str) -> bool {
        self.only_programs.as_ref().is_none_or(|o| o.iter().any(|x| x == program))
    }

    pub fn from_env(run_dir: PathBuf) -> anyhow::Result<Self> {
        let s = crate::settings::try_get()?;
        let max_vms = match s.max_vms {
            Some(n) => n,
            None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        };
        let accel = crate::vm::accel::choose()?;
        Ok(Self {
            cache_dir: images::default_cache_dir(),
            run_dir,
            accel: if s.bench { accel.for_benchmarks() } else { accel },
            max_vms: max_vms.max(1),
            bench: s.bench,
            only_programs: s.only_programs.clone(),
            guest_files: Vec::new(),
            retries: s.retries.unwrap_or(0),
        })
    }
}

/// Everything one kernel produced.
#[derive(Debug, Clone)]
pub struct KernelRun {
    pub kernel: String,
    /// `uname -r` as the agent saw it.
    pub release: Option<String>,
    /// `None` for the host kernel (no VM).
    pub accel: Option<Accel>,
    pub boot: Option<Duration>,
    pub wall: Duration,
    /// Where the guest's time went, by its own clock.
    pub timeline: Timeline,
    /// Verdicts by check; a kernel that could not run has none.
    pub checks: BTreeMap<(String, String), CheckOutcome>,
    /// Feature probe results by feature id.
    pub features: BTreeMap<String, Probe>,
    /// Why checks without a verdict have none (boot failure, crash, timeout).
    pub failure: Option<String>,
    /// Set when the console showed an oops, BUG, WARNING, stall or lockup: then
    /// nothing this kernel reported is trusted (see `verdict`), and this says why.
    pub untrusted: Option<String>,
    pub command_line: Option<String>,
    /// The attempts before this one (`--retries`), oldest first; each has none of
    /// its own. Empty for a kernel that ran once.
    pub earlier: Vec<KernelRun>,
}

impl KernelRun {
    /// Where its numbers come from: `kvm`/`tcg` for a VM, `host` for the running
    /// kernel, `-` for a kernel that never started (download failed, not in the lock).
    pub fn accel_label(&self) -> String {
        match (self.accel, &self.release) {
            (Some(a), _) => a.to_string(),
            (None, Some(_)) => "host".into(),
            (None, None) => "-".into(),
        }
    }
}

/// The guest's own account of its time, in seconds since the kernel started
/// (`CLOCK_BOOTTIME`; under `-icount` a virtual clock). `None` where the agent
/// did not get that far (or, for `init`, on the host, which has no /init of ours).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// /init started: the kernel's own boot.
    pub init: Option<f64>,
    /// The agent started (its first record).
    pub agent: Option<f64>,
    /// The feature probes finished.
    pub probed: Option<f64>,
    /// The agent's last record.
    pub end: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct CheckOutcome {
    pub verdict: Verdict,
    pub metrics: BTreeMap<String, f64>,
    pub note: String,
    /// Guest seconds from the agent's previous record to this one: what the
    /// check cost (for the first check of a program, its load included).
    pub secs: Option<f64>,
    /// A failed load's cause, as the agent classified it.
    pub cause: Option<km_protocol::byo::LoadCause>,
}

impl KernelRun {
    /// A kernel that produced nothing: `failure` says why.
    pub fn failed(kernel: &str, failure: String) -> Self {
        Self {
            kernel: kernel.into(),
            release: None,
            accel: None,
            boot: None,
            wall: Duration::ZERO,
            timeline: Timeline::default(),
            checks: BTreeMap::new(),
            features: BTreeMap::new(),
            failure: Some(failure),
            untrusted: None,
            command_line: None,
            earlier: Vec::new(),
        }
    }

    /// Why this kernel's results are missing or not trusted, if they are.
    pub fn problem(&self) -> Option<&str> {
        self.untrusted.as_deref().or(self.failure.as_deref())
    }

    pub fn where_(&self) -> String {
        match (self.accel, &self.release) {
            (Some(a), Some(r)) => format!("{r} under QEMU/{a}"),
            (Some(a), None) => format!("kernel {} under QEMU/{a}, agent never started", self.kernel),
            (None, Some(r)) => format!("{r} on the host"),
            (None, None) => format!("kernel {}, not started", self.kernel),
        }
    }
}

pub struct Matrix {
    pub config: MatrixConfig,
    pub lock: Lock,
    pub lock_path: PathBuf,
    pub opts: Options,
    mirrors: OnceLock<Result<Mirrors, String>>,
    /// Guest roots by the busybox that goes in (one per architecture, and per
    /// pinned busybox package of a foreign one).
    initramfs: Mutex<HashMap<PathBuf, Result<PathBuf, String>>>,
    agents: Mutex<HashMap<Arch, Result<PathBuf, String>>>,
    runs: HashMap<String, OnceLock<Arc<KernelRun>>>,
    slots: Semaphore,
    /// Programs from the config's manifests.
    pub byo: Vec<ByoProgram>,
    /// Our checks, then the manifests' programs' checks, then the suites' tests:
    /// the matrix's columns.
    checks: Vec<CheckId>,
    /// `suites:` of the config, resolved (tests listed) before anything boots.
    pub suites: Vec<suites::Suite>,
    /// Where progress goes (the terminal unless [`Matrix::with_events`] says otherwise).
    events: Arc<dyn events::Events>,
}

impl Matrix {
    pub fn new(config: MatrixConfig, opts: Options) -> anyhow::Result<Self> {
        let lock_path = Lock::path_for(&config.path);
        let lock = Lock::load(&lock_path)?;
        let runs = config.kernels.iter().map(|k| (k.name.clone(), OnceLock::new())).collect();
        let slots = Semaphore::new(opts.max_vms);
        let mut byo = Vec::new();
        for manifest in &config.programs {
            byo.extend(crate::config::manifest::load(&config.resolve_path(manifest))?);
        }
        let suites = config.suites.iter().map(|s| suites::resolve(&config, s)).collect::<Result<Vec<_>, _>>()?;
        let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
        let suite_checks = suites.iter().flat_map(|s| {
            let program = leak(&s.guest.name);
            let needs: &'static [&'static str] =
                Box::leak(s.guest.needs.iter().map(|n| leak(n)).collect::<Vec<_>>().into_boxed_slice());
            let tests: Vec<&'static str> = match s.guest.format {
                km_protocol::suites::SuiteFormat::Libtest => s.guest.tests.iter().map(|t| leak(t)).collect(),
                km_protocol::suites::SuiteFormat::ExitStatus => vec![""],
            };
            tests.into_iter().map(move |check| CheckId { program, check, needs })
        });
        let checks = CATALOGUE
            .iter()
            .copied()
            .chain(byo.iter().flat_map(|p| km_protocol::checks::byo_checks(&p.guest)))
            .chain(suite_checks)
            .collect();
        Ok(Self {
            config,
            lock,
            lock_path,
            opts,
            mirrors: OnceLock::new(),
            events: Arc::new(crate::ui::Terminal::default()),
            initramfs: Mutex::new(HashMap::new()),
            agents: Mutex::new(HashMap::new()),
            runs,
            slots,
            byo,
            checks,
            suites,
        })
    }

    /// Every check of the matrix, in trial order.
    pub fn checks(&self) -> &[CheckId] {
        &self.checks
    }

    /// The manifest programs as the agent reads them: a directory with
    /// `manifest.json` and the objects (written once per run).
    fn byo_files(&self) -> anyhow::Result<Vec<(String, PathBuf)>> {
        let dir = self.opts.run_dir.join("byo");
        std::fs::create_dir_all(&dir)?;
        let guest: Vec<_> = self.byo.iter().map(|p| p.guest.clone()).collect();
        let manifest = dir.join(crate::config::manifest::MANIFEST_JSON);
        crate::images::fetch::write_atomic(&manifest, serde_json::to_string(&guest)?.as_bytes())?;
        let mut files = vec![(format!("byo/{}", crate::config::manifest::MANIFEST_JSON), manifest)];
        if !self.suites.is_empty() {
            let list = dir.join(km_protocol::suites::SUITES_JSON);
            let guest: Vec<_> = self.suites.iter().map(|s| s.guest.clone()).collect();
            crate::images::fetch::write_atomic(&list, serde_json::to_string(&guest)?.as_bytes())?;
            files.push((format!("byo/{}", km_protocol::suites::SUITES_JSON), list));
            for s in &self.suites {
                for f in &s.files {
                    if !files.iter().any(|(g, _)| *g == f.0) {
                        files.push(f.clone());
                    }
                }
            }
        }
        // One copy per file: an object's programs share it.
        let wanted = self
            .byo
            .iter()
            .map(|p| (p.guest.object_file.clone(), p.object_path.clone()))
            .chain(self.byo.iter().filter_map(|p| p.btf.clone()));
        for (name, src) in wanted {
            if files.iter().any(|(g, _)| *g == format!("byo/{name}")) {
                continue;
            }
            let dest = dir.join(&name);
            std::fs::copy(&src, &dest).with_context(|| format!("copying {}", src.display()))?;
            files.push((format!("byo/{name}"), dest));
        }
        Ok(files)
    }

    pub fn kernel_names(&self) -> Vec<String> {
        self.config.kernels.iter().map(|k| k.name.clone()).collect()
    }

    /// The kernels `patterns` select (names or globs, see [`crate::glob`]), in
    /// kernels.yaml order; none means all. A pattern matching no kernel is an error
    /// listing them.
    /// A pattern that matches nothing is bad input (exit 2), with the kernels listed.
    pub fn select_kernels(&self, patterns: &[String]) -> anyhow::Result<Vec<String>> {
        select_kernels(&self.kernel_names(), patterns).map_err(|e| self.bad_kernel_pattern(e.to_string()))
    }

    fn bad_kernel_pattern(&self, message: String) -> anyhow::Error {
        crate::config::ConfigError::Invalid { path: self.config.path.display().to_string(), message }.into()
    }

    /// The one kernel a name or glob of a single-VM command (`shell`, `exec`,
    /// `qemu-cmd`, `boot-bench`) names: a glob must match exactly one.
    pub fn one_kernel(&self, pattern: &str) -> anyhow::Result<String> {
        let names = self.select_kernels(&[pattern.to_string()])?;
        match names.as_slice() {
            [one] => Ok(one.clone()),
            many => Err(self.bad_kernel_pattern(format!(
                "{pattern:?} matches {} kernels ({}); this command boots one: name it, or narrow the glob",
                many.len(),
                many.join(", ")
            ))),
        }
    }

    /// One of the VM slots (`--max-vms`), held until dropped: what a command that
    /// boots VMs of its own (`exec` across kernels) waits for.
    pub(crate) fn vm_slot(&self) -> impl Drop + '_ {
        self.slots.acquire()
    }

    /// Sends this matrix's events to `events` instead of the terminal.
    pub fn with_events(mut self, events: Arc<dyn events::Events>) -> Self {
        self.events = events;
        self
    }

    pub(crate) fn emit(&self, e: events::Event) {
        self.events.event(e);
    }

    /// What `run` and `bench` say before booting: how many kernels, the
    /// accelerator and why it was chosen, how many VMs at once (`doing`: what is
    /// done to them, e.g. "benchmarking ", or nothing).
    pub fn announce(&self, doing: &str, names: &[String]) {
        self.emit(events::Event::Starting {
            doing: doing.into(),
            kernels: names.len(),
            accel: self.opts.accel.accel.to_string(),
            reason: self.opts.accel.reason.to_string(),
            max_vms: self.opts.max_vms,
        });
    }

    /// Runs these kernels at once (each on a thread of its own, bounded by the VM
    /// slots) and returns their runs in the order given, noting each on stderr.
    pub fn run_kernels(self: &Arc<Self>, names: &[String]) -> Vec<Arc<KernelRun>> {
        let handles: Vec<_> = names
            .iter()
            .map(|n| {
                let (m, n) = (self.clone(), n.clone());
                std::thread::spawn(move || {
                    let r = m.run_kernel(&n);
                    m.emit(events::Event::KernelDone { kernel: n, wall: r.wall });
                    r
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("kernel thread")).collect()
    }

    /// Runs `name` (once; later callers get the same result), again up to
    /// `--retries` times while [`Matrix::retry_reason`] finds a reason; the
    /// earlier attempts are kept in [`KernelRun::earlier`].
    pub fn run_kernel(&self, name: &str) -> Arc<KernelRun> {
        let cell = self.runs.get(name).expect("kernel from the config");
        cell.get_or_init(|| {
            let spec = self.config.kernel(name).expect("kernel from the config");
            let mut run = self.attempt(spec, 1);
            let mut earlier = Vec::new();
            while earlier.len() < self.opts.retries as usize {
                let Some(why) = self.retry_reason(&run) else { break };
                let attempt = earlier.len() + 2;
                self.emit(events::Event::Retrying {
                    kernel: name.into(),
                    attempt,
                    of: self.opts.retries as usize + 1,
                    why,
                });
                earlier.push(std::mem::replace(&mut run, self.attempt(spec, attempt)));
            }
            // The kernel's wall time is all its attempts'.
            run.wall += earlier.iter().map(|e| e.wall).sum::<Duration>();
            run.earlier = earlier;
            Arc::new(run)
        })
        .clone()
    }

    fn attempt(&self, spec: &KernelSpec, n: usize) -> KernelRun {
        let start = Instant::now();
        let mut run = match self.execute(spec, n) {
            Ok(run) => run,
            Err(e) => KernelRun::failed(&spec.name, format!("kernel {} could not be run: {e:#}", spec.name)),
        };
        run.wall = start.elapsed();
        run
    }

    /// Why `run` is worth another attempt, if it is: its VM ended without a
    /// verdict (timeout without a splat, QEMU exited, the agent never started) or
    /// a trial failed. Never when the console showed a splat (a kernel bug must
    /// not be retried away), nor for a kernel that never started (no image, not
    /// in the lock: another attempt would fail the same way).
    pub fn retry_reason(&self, run: &KernelRun) -> Option<String> {
        if run.untrusted.is_some() || (run.accel.is_none() && run.release.is_none()) {
            return None;
        }
        if let Some(f) = &run.failure {
            return Some(format!("the VM ended without a verdict: {}", f.lines().next().unwrap_or("")));
        }
        let failed: Vec<String> = crate::report::cells(self, run)
            .into_iter()
            .filter(|(_, v)| matches!(v, Verdict::Fail(_)))
            .map(|(t, _)| t)
            .collect();
        match failed.as_slice() {
            [] => None,
            [one] => Some(format!("{one} failed")),
            [first, rest @ ..] => Some(format!("{first} and {} more trials failed", rest.len())),
        }
    }

    fn execute(&self, spec: &KernelSpec, attempt: usize) -> anyhow::Result<KernelRun> {
        // A retry's files go beside the first attempt's, which its messages name.
        let dir = if attempt == 1 { spec.name.clone() } else { format!("{}.attempt{attempt}", spec.name) };
        let workdir = vm::workdir(&self.opts.run_dir, &dir);
        std::fs::create_dir_all(&workdir)?;
        match self.image(spec)? {
            None => self.run_host(spec, &workdir),
            Some(image) => self.run_vm(spec, &image, &workdir, attempt),
        }
    }

    /// The bootable image of a kernel (fetched, verified and extracted into the
    /// cache on first use); `None` for the host kernel, which needs no VM.
    pub fn image(&self, spec: &KernelSpec) -> anyhow::Result<Option<images::KernelImage>> {
        Ok(match spec.source() {
            KernelSource::Host => None,
            KernelSource::Archive(src) => {
                let locked = self.lock.get(&spec.name, &src, spec.arch(), &self.lock_path)?;
                let mirrors = self.mirrors()?;
                let progress =
                    |msg: &str| self.emit(events::Event::Image { kernel: spec.name.clone(), message: msg.to_string() });
                let mut image = images::ensure_archive(&self.opts.cache_dir, &mirrors, locked, progress)?;
                images::ensure_archive_modules(&self.opts.cache_dir, &mirrors, locked, &mut image, progress)?;
                Some(image)
            }
            KernelSource::Local(local) => {
                Some(images::ensure_local(&self.opts.cache_dir, local, |p| self.config.resolve_path(p))?)
            }
            KernelSource::Build(b) => {
                anyhow::ensure!(
                    spec.arch() == Arch::host() && Arch::host() == Arch::X86_64,
                    "kernel {:?}: `build:` builds x86_64 kernels on an x86_64 host (no cross builds yet)",
                    spec.name
                );
                Some(images::build::ensure_built(
                    &self.opts.cache_dir,
                    b,
                    |p| self.config.resolve_path(p),
                    |msg| self.emit(events::Event::Image { kernel: spec.name.clone(), message: msg.to_string() }),
                )?)
            }
        })
    }

    /// The kernel's vmlinux with debug symbols, for gdb and crash: Debian's
    /// `-dbg` package's (fetched when `fetch` is set, else only if already in the
    /// cache), a `build:` kernel's own, the host's from /usr/lib/debug; `None`
    /// where there is none (yet).
    pub fn debug_symbols(&self, spec: &KernelSpec, fetch: bool) -> anyhow::Result<Option<PathBuf>> {
        Ok(match spec.source() {
            KernelSource::Host => {
                let release = nix::sys::utsname::uname()?.release().to_string_lossy().into_owned();
                Some(PathBuf::from(format!("/usr/lib/debug/boot/vmlinux-{release}"))).filter(|p| p.exists())
            }
            KernelSource::Archive(src) => {
                let locked = self.lock.get(&spec.name, &src, spec.arch(), &self.lock_path)?;
                let entry = images::entry_dir(&self.opts.cache_dir, locked);
                let cached = entry.join(images::debug_symbols::FILE);
                if cached.exists() || !fetch {
                    Some(cached).filter(|p| p.exists())
                } else {
                    let image = self.image(spec)?.context("an archive kernel has an image")?;
                    let progress = |msg: &str| {
                        self.emit(events::Event::Image { kernel: spec.name.clone(), message: msg.to_string() })
                    };
                    Some(images::debug_symbols::ensure(&entry, &self.mirrors()?, locked, &image.release, progress)?)
                }
            }
            KernelSource::Build(_) => self.image(spec)?.and_then(|i| i.vmlinux),
            KernelSource::Local(_) => None,
        })
    }

    /// `--gdb`: says where the VM's gdb stub listens and the gdb command line.
    pub fn announce_gdb(&self, spec: &KernelSpec, image: &images::KernelImage, vm_spec: &vm::VmSpec) {
        let Some(stub) = vm_spec.debug.gdb else { return };
        let symbols = self.debug_symbols(spec, false).ok().flatten();
        self.emit(events::Event::GdbStub {
            kernel: spec.name.clone(),
            address: format!("127.0.0.1:{}", stub.port),
            waits: stub.wait,
            command: vm::debug::gdb_line(stub, symbols.as_deref().unwrap_or(image.boot_file())),
            symbols: symbols.is_some(),
        });
    }

    /// `--crash-dump`: where a panicked guest's memory dump is and how to read it.
    pub fn vmcore_note(&self, spec: &KernelSpec, run: &vm::VmRun) -> String {
        match &run.vmcore {
            None => String::new(),
            Some(Err(why)) => format!("\nno memory dump: {why}"),
            Some(Ok(path)) => {
                let core = crate::escape::shell_word(&path.to_string_lossy());
                match self.debug_symbols(spec, false).ok().flatten() {
                    Some(sym) => format!(
                        "\nmemory dump: {} (read it: crash {} {core})",
                        path.display(),
                        crate::escape::shell_word(&sym.to_string_lossy())
                    ),
                    None => format!(
                        "\nmemory dump: {} (symbols to read it with: kernel-matrix fetch --debug-symbols -k {})",
                        path.display(),
                        crate::escape::shell_word(&spec.name)
                    ),
                }
            }
        }
    }

    fn mirrors(&self) -> anyhow::Result<Mirrors> {
        self.mirrors
            .get_or_init(|| Mirrors::discover(Some(&self.config)).map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(anyhow::Error::msg)
    }

    /// The guest agent for `arch` as a file (written into the cache once per agent build).
    pub fn agent(&self, arch: Arch) -> anyhow::Result<PathBuf> {
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        agents
            .entry(arch)
            .or_insert_with(|| crate::guest_root::agent::path(&self.derived_dir(), arch).map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(anyhow::Error::msg)
    }

    /// The static busybox of `spec`'s guest root: the host's for its own
    /// architecture, else the one pinned with the kernel in the lock.
    pub fn busybox(&self, spec: &KernelSpec) -> anyhow::Result<PathBuf> {
        let arch = spec.arch();
        if arch == Arch::host() {
            return crate::guest_root::find_busybox();
        }
        match spec.source() {
            KernelSource::Archive(src) => {
                let locked = self.lock.get(&spec.name, &src, arch, &self.lock_path)?;
                images::ensure_busybox(&self.opts.cache_dir, &self.mirrors()?, locked)
            }
            _ => anyhow::bail!(
                "kernel {:?}: a {arch} kernel of your own needs a {arch} busybox, which only `debian:` and `ubuntu:` kernels bring (from their suite)",
                spec.name
            ),
        }
    }

    /// Where what the harness makes itself (the agent file, guest roots) is kept:
    /// the cache, or, when the cache is read-only to this user (a shared cache, an
    /// unprivileged run), this run's directory.
    /// What boots `kernel` for `exec`: `KM_RUNNER`, else its `runner:`, else QEMU.
    pub fn runner(&self, kernel: &str) -> crate::config::Runner {
        crate::settings::get()
            .runner
            .or_else(|| self.config.kernel(kernel).and_then(|k| k.runner))
            .unwrap_or(crate::config::Runner::Qemu)
    }

    pub(crate) fn derived_dir(&self) -> PathBuf {
        let probe = self.opts.cache_dir.join("guest-roots");
        match std::fs::create_dir_all(&probe).and_then(|()| std::fs::metadata(&probe)) {
            Ok(m) if !m.permissions().readonly() && writable(&probe) => self.opts.cache_dir.clone(),
            _ => self.opts.run_dir.join("cache"),
        }
    }

    /// The guest root of `spec`'s VM (its architecture's agent and busybox), from
    /// the cache when its inputs are unchanged.
    pub fn initramfs(&self, spec: &KernelSpec) -> anyhow::Result<PathBuf> {
        let build = || -> anyhow::Result<PathBuf> {
            let busybox = self.busybox(spec)?;
            let mut roots = self.initramfs.lock().unwrap_or_else(|e| e.into_inner());
            let root = roots.entry(busybox.clone()).or_insert_with(|| {
                let root = || -> anyhow::Result<PathBuf> {
                    let files = [self.byo_files()?, self.opts.guest_files.clone()].concat();
                    let agent = self.agent(spec.arch())?;
                    crate::guest_root::build_cached(&self.derived_dir(), spec.arch(), &agent, &busybox, &files)
                };
                root().map_err(|e| format!("{e:#}"))
            });
            root.clone().map_err(anyhow::Error::msg)
        };
        build().map_err(|e| anyhow::anyhow!("building the guest root: {e:#}"))
    }

    /// The accelerator of `spec`'s VM: a foreign architecture is always emulated.
    pub fn accel(&self, spec: &KernelSpec) -> vm::accel::Accel {
        if spec.arch() == Arch::host() {
            self.opts.accel.accel
        } else {
            vm::accel::Accel::Tcg
        }
    }

    /// `-icount shift=0` for benchmark VMs under TCG (1 virtual ns per guest
    /// instruction): deterministic guest timings, see [`vm::VmSpec::icount`].
    /// `KM_BENCH_ICOUNT=off` measures emulated wall-clock time instead.
    pub fn icount(&self) -> Option<u8> {
        (self.opts.bench && crate::settings::get().bench_icount.as_deref() != Some("off")).then_some(0)
    }

    pub fn vm_spec(
        &self,
        spec: &KernelSpec,
        image: &images::KernelImage,
        workdir: &Path,
    ) -> anyhow::Result<vm::VmSpec> {
        let root = self.initramfs(spec)?;
        let initramfs = match image.modules.as_ref().and_then(|m| m.boot.as_ref()) {
            Some(boot) => crate::guest_root::with_boot_modules(&root, boot, &self.derived_dir())?,
            None => root,
        };
        Ok(vm::VmSpec {
            arch: spec.arch(),
            kernel: image.boot_file().to_path_buf(),
            initramfs,
            accel: self.accel(spec),
            memory_mb: self.config.memory_mb,
            cpus: 1,
            icount: self.icount(),
            extra_cmdline: {
                let switches = Switches {
                    only: self.opts.only_programs.clone(),
                    bench: self.opts.bench.then_some(km_protocol::switches::BenchConfig::GUEST),
                };
                let words =
                    format!("{} {}", spec.cmdline.as_deref().unwrap_or(""), switches.cmdline()).trim().to_string();
                (!words.is_empty()).then_some(words)
            },
            timeout: self.config.timeout(spec),
            workdir: workdir.to_path_buf(),
            serials: Vec::new(),
            modules: image.modules.clone(),
            host_root: None,
            debug: vm::debug::DebugOptions::from_settings()?,
            snapshot: None,
        })
    }

    fn run_vm(
        &self,
        spec: &KernelSpec,
        image: &images::KernelImage,
        workdir: &Path,
        attempt: usize,
    ) -> anyhow::Result<KernelRun> {
        let mut vm_spec = self.vm_spec(spec, image, workdir)?;
        // A retry says which attempt it is, for programs in the guest (/proc/cmdline).
        if attempt > 1 {
            let words = format!("{} km.attempt={attempt}", vm_spec.extra_cmdline.as_deref().unwrap_or(""));
            vm_spec.extra_cmdline = Some(words.trim().to_string());
        }
        let _slot = self.slots.acquire();
        self.announce_gdb(spec, image, &vm_spec);
        // `host_root` suites: the host's root shared for this VM's life.
        let wants_root = spec.arch() == km_protocol::Arch::host() && self.suites.iter().any(|s| s.guest.host_root);
        let share = wants_root.then(|| vm::host_root::HostRootShare::start(workdir)).transpose()?;
        vm_spec.host_root = share.as_ref().map(|s| s.socket.clone());
        self.emit(events::Event::Booting { kernel: spec.name.clone(), accel: vm_spec.accel.to_string() });
        let run = vm::run(&vm_spec);
        let how = run.as_ref().map(|r| describe(&r.end)).unwrap_or_else(|e| format!("QEMU did not start: {e:#}"));
        self.emit(events::Event::VmEnded { kernel: spec.name.clone(), how });
        let run = run?;
        // QEMU's own words lead when it failed (a kernel it cannot load says so
        // only on its stderr, with an empty console).
        let qemu_said = match (&run.end, run.qemu_stderr.trim()) {
            (vm::VmEnd::Exited(code), said) if *code != Some(0) && !said.is_empty() => {
                format!("; QEMU said: {}", crate::vm::console::tail(said, 5))
            }
            _ => String::new(),
        };
        let failure = match &run.end {
            vm::VmEnd::Finished => None,
            end => Some(format!(
                "{}: {}{qemu_said}{}\n--- console (last 40 lines, full log {}) ---\n{}",
                spec.name,
                describe(end),
                self.vmcore_note(spec, &run),
                vm_spec.console_path().display(),
                crate::vm::console::tail(&run.console, 40)
            )),
        };
        let mut kr = collect(&spec.name, &run.records, failure);
        kr.untrusted = run.splat.as_ref().map(|splat| {
            crate::vm::console::untrusted_message(
                &spec.name,
                kr.failure.as_deref(),
                splat,
                &run.console,
                &vm_spec.console_path(),
            )
        });
        kr.accel = Some(vm_spec.accel);
        kr.boot = run.boot;
        kr.command_line = Some(run.command_line);
        Ok(kr)
    }

    /// The running kernel: the agent as a child process (so a crash in it cannot
    /// take the harness down), bounded by the same timeout as a VM.
    fn run_host(&self, spec: &KernelSpec, workdir: &Path) -> anyhow::Result<KernelRun> {
        if !nix::unistd::geteuid().is_root() {
            let reason =
                "host: loading BPF needs root (CAP_BPF/CAP_SYS_ADMIN); run as root or drop `host` from kernels.yaml";
            let checks = self
                .checks
                .iter()
                .map(|id| {
                    let o = CheckOutcome {
                        verdict: Verdict::Ignored(reason.into()),
                        metrics: BTreeMap::new(),
                        note: String::new(),
                        secs: None,
                        cause: None,
                    };
                    ((id.program.to_string(), id.check.to_string()), o)
                })
                .collect();
            let features = km_protocol::features::catalogue()
                .iter()
                .map(|f| (f.id.clone(), Probe::Unavailable(reason.into())))
                .collect();
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|r| r.trim().to_string());
            return Ok(KernelRun {
                release,
                checks,
                features,
                failure: None,
                ..KernelRun::failed(&spec.name, String::new())
            });
        }
        // Host benchmarks measure native time, which a QEMU spinning on the other
        // core disturbs (identical host runs differed by 10-40% next to TCG guests;
        // guest numbers under -icount do not care). So a benchmarking host run waits
        // until no VM runs and keeps every slot while it measures.
        let _alone = self.opts.bench.then(|| self.slots.acquire_all());
        let out = workdir.join("agent.jsonl");
        let _ = std::fs::remove_file(&out);
        self.byo_files()?;
        let agent = self.agent(Arch::host())?;
        let mut cmd = std::process::Command::new(&agent);
        // Like QEMU: the host agent never outlives a killed harness.
        vm::die_with_parent(&mut cmd);
        let mut child = cmd
            .args(self.opts.only_programs.iter().flat_map(|o| ["--only".to_string(), o.join(",")]))
            .arg("--byo")
            .arg(self.opts.run_dir.join("byo"))
            .args(self.opts.bench.then_some("--bench"))
            .arg("--out")
            .arg(&out)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", agent.display()))?;
        let start = Instant::now();
        let timeout = self.config.timeout(spec);
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break Some(s);
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let records = km_protocol::record::parse_lines(&std::fs::read_to_string(&out).unwrap_or_default());
        let failure = match status {
            Some(s) if s.success() && records.last().map(|l| &l.record) == Some(&Record::Done) => None,
            Some(s) => Some(format!("host agent exited with {s} before finishing")),
            None => Some(format!("host agent killed after {timeout:?}")),
        };
        Ok(collect(&spec.name, &records, failure))
    }
}

fn describe(end: &vm::VmEnd) -> String {
    match end {
        vm::VmEnd::Finished => "finished".into(),
        vm::VmEnd::Exited(code) => format!("the guest stopped before the agent finished (qemu exit {code:?})"),
        vm::VmEnd::Panicked => "the guest kernel panicked; VM killed".into(),
        vm::VmEnd::TimedOut(t) => format!("the guest did not finish within {}s; VM killed", t.as_secs()),
        vm::VmEnd::Stuck(s) => format!("the guest kernel is stuck: {s}; VM killed"),
    }
}

fn collect(kernel: &str, lines: &[Line], failure: Option<String>) -> KernelRun {
    let mut run = KernelRun { failure, ..KernelRun::failed(kernel, String::new()) };
    // (After a protocol mismatch nothing else is read: the records cannot be trusted.)
    let t = &mut run.timeline;
    let mut previous: Option<f64> = None;
    for Line { at, record } in lines {
        // What a record cost is the guest time since the one before it.
        let secs = at.zip(previous).map(|(a, p)| (a - p).max(0.0));
        previous = at.or(previous);
        match record {
            Record::Hello { protocol, .. } if *protocol != km_protocol::record::PROTOCOL_VERSION => {
                run.failure = Some(format!(
                    "the agent speaks protocol {protocol}, this kernel-matrix {}: --agent/KM_AGENT names an agent from another build (build both from one checkout, or drop --agent to use the embedded one)",
                    km_protocol::record::PROTOCOL_VERSION
                ));
                run.release = None;
                break;
            }
            Record::Hello { kernel_release, uptime_secs, init_uptime_secs, .. } => {
                run.release = Some(kernel_release.clone());
                t.init = *init_uptime_secs;
                t.agent = Some(*uptime_secs);
            }
            Record::Check { program, check, verdict, metrics, note, cause } => {
                let o = CheckOutcome {
                    verdict: verdict.clone(),
                    metrics: metrics.clone(),
                    note: note.clone(),
                    secs,
                    cause: *cause,
                };
                run.checks.insert((program.clone(), check.clone()), o);
            }
            Record::Feature { id, result } => {
                run.features.insert(id.clone(), result.clone());
                t.probed = *at;
            }
            Record::Done => {}
        }
        t.end = at.or(t.end);
    }
    run
}

/// Whether this user may create files in `dir` (permission bits alone do not
/// say: the owner and groups matter), tried for real.
fn writable(dir: &Path) -> bool {
    let p = dir.join(format!(".km-write-test-{}", std::process::id()));
    let ok = std::fs::write(&p, b"").is_ok();
    let _ = std::fs::remove_file(&p);
    ok
}

/// A counting semaphore (std has none); bounds concurrent VMs.
struct Semaphore {
    free: Mutex<usize>,
    total: usize,
    cv: Condvar,
}

/// Holds `.1` slots until dropped.
struct Permit<'a>(&'a Semaphore, usize);

impl Semaphore {
    fn new(n: usize) -> Self {
        Self { free: Mutex::new(n), total: n, cv: Condvar::new() }
    }
    fn acquire(&self) -> Permit<'_> {
        self.acquire_n(1)
    }
    /// Every slot: nothing else runs while it is held.
    fn acquire_all(&self) -> Permit<'_> {
        self.acquire_n(self.total)
    }
    fn acquire_n(&self, n: usize) -> Permit<'_> {
        let mut free = self.free.lock().unwrap();
        while *free < n {
            free = self.cv.wait(free).unwrap();
        }
        *free -= n;
        Permit(self, n)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap() += self.1;
        self.0.cv.notify_all();
    }
}

/// The names `patterns` select (see [`Matrix::select_kernels`]).
pub fn select_kernels(names: &[String], patterns: &[String]) -> anyhow::Result<Vec<String>> {
    if patterns.is_empty() {
        return Ok(names.to_vec());
    }
    for p in patterns {
        anyhow::ensure!(
            names.iter().any(|n| crate::glob::matches(p, n)),
            "no kernel matches {p:?} (kernels: {})",
            names.join(", ")
        );
    }
    Ok(names.iter().filter(|n| patterns.iter().any(|p| crate::glob::matches(p, n))).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_of_another_protocol_is_a_clear_failure() {
        let hello = |protocol| Line {
            at: Some(1.0),
            record: Record::Hello { protocol, kernel_release: "6.1".into(), uptime_secs: 1.0, init_uptime_secs: None },
        };
        let check = Line {
            at: Some(2.0),
            record: km_protocol::record::check("p", "load", Verdict::Pass, Default::default(), String::new()),
        };
        let run = collect("6.1", &[hello(0), check.clone(), Line { at: None, record: Record::Done }], None);
        assert!(run.problem().unwrap().contains("the agent speaks protocol 0"), "{:?}", run.problem());
        assert!(run.checks.is_empty(), "nothing after a mismatched hello is read");
        let run = collect("6.1", &[hello(km_protocol::record::PROTOCOL_VERSION), check], None);
        assert!(run.problem().is_none() && run.checks.len() == 1);
    }

    #[test]
    fn acquire_all_waits_for_every_slot() {
        let s = Arc::new(Semaphore::new(2));
        let one = s.acquire();
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = s.clone();
        let t = std::thread::spawn(move || {
            let _all = s2.acquire_all();
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "acquire_all got in while a slot was taken");
        drop(one);
        rx.recv_timeout(Duration::from_secs(5)).expect("acquire_all after the slot came back");
        t.join().unwrap();
        assert_eq!(*s.free.lock().unwrap(), 2);
    }

    #[test]
    fn globs_select_kernels_in_config_order() {
        let names: Vec<String> = ["5.10", "6.1", "6.12", "host"].map(String::from).into();
        let sel = |ps: &[&str]| select_kernels(&names, &ps.iter().map(|p| p.to_string()).collect::<Vec<_>>());
        assert_eq!(sel(&[]).unwrap(), names);
        assert_eq!(sel(&["6.*"]).unwrap(), ["6.1", "6.12"]);
        assert_eq!(sel(&["6.1"]).unwrap(), ["6.1"], "a plain name is exact");
        assert_eq!(sel(&["host", "5.*"]).unwrap(), ["5.10", "host"], "config order, several -k");
        assert_eq!(sel(&["6.1?"]).unwrap(), ["6.12"]);
        assert_eq!(sel(&["*"]).unwrap(), names);
        let err = sel(&["6.1", "7.*"]).unwrap_err().to_string();
        assert!(err.contains("\"7.*\"") && err.contains("5.10, 6.1, 6.12, host"), "{err}");
    }
}
