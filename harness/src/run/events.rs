//! What the engine reports while it runs, as data. `Matrix` emits these and
//! prints nothing itself; one renderer ([`crate::ui::Terminal`] by default, a
//! test's collector, a CI annotator) decides what a person sees (the split of
//! vmtest's `output.rs` and `ui.rs`).
use std::{path::PathBuf, time::Duration};

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Before anything boots: `doing` ("benchmarking " or ""), how many kernels,
    /// the accelerator and why it was chosen, how many VMs run at once.
    Starting { doing: String, kernels: usize, accel: String, reason: String, max_vms: usize },
    /// A step of getting a kernel's image (downloading, extracting).
    Image { kernel: String, message: String },
    /// A kernel's VM starts.
    Booting { kernel: String, accel: String },
    /// A kernel's VM is gone, and how it ended.
    VmEnded { kernel: String, how: String },
    /// `--retries`: a kernel runs again (attempt `attempt` of at most `of`), and why.
    Retrying { kernel: String, attempt: usize, of: usize, why: String },
    /// A kernel is done (VM or host), after `wall`.
    KernelDone { kernel: String, wall: Duration },
    /// `exec`: the guest kernel reported a splat while the program ran.
    ExecSplat { kernel: String, splat: String, console: PathBuf },
    /// `exec`: the guest ended without the program's exit status.
    ExecNoStatus { kernel: String, how: String, console: PathBuf, tail: String },
    /// `exec` across several kernels: how each ended, after `wall` in all.
    ExecTable { rows: Vec<ExecRow>, wall: Duration },
    /// `--gdb`: a VM's gdb stub listens at `address`; `command` attaches gdb
    /// (with debug `symbols`, or the bare vmlinux).
    GdbStub { kernel: String, address: String, waits: bool, command: String, symbols: bool },
    /// `exec`: how a kernel ran, said once (`--snapshot`: a saved VM made, or why
    /// this run boots cold; `runner: vng`: vng's command line when it failed).
    ExecNote { kernel: String, note: String },
    /// `exec` with `KM_EXEC_TIMES`: where its seconds went.
    ExecTimes { kernel: String, wall: Duration, boot: Duration, guest_start: String, accel: String, restored: bool },
}

/// One kernel's line of the `exec` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecRow {
    pub kernel: String,
    pub release: String,
    pub accel: String,
    pub wall: Duration,
    /// `exit 0`, `exit 3`, `timed out ...`, `not run: ...`.
    pub result: String,
    /// The program exited 0.
    pub ok: bool,
}

/// Where a `Matrix` sends its events.
pub trait Events: Send + Sync {
    fn event(&self, e: Event);
}

/// Keeps every event (for tests and tools that render at the end).
#[derive(Debug, Default)]
pub struct Collect(pub std::sync::Mutex<Vec<Event>>);

impl Events for Collect {
    fn event(&self, e: Event) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(e);
    }
}
