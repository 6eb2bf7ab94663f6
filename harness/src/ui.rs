//! The one place the engine's events ([`crate::run::events::Event`]) become
//! terminal output: plain lines on stderr, or spinners for running VMs where
//! bars are drawn (see [`crate::progress`]).
use std::{collections::HashMap, sync::Mutex};

use crate::{
    progress::Step,
    run::events::{Event, Events},
};

/// Renders events on stderr as they come.
#[derive(Default)]
pub struct Terminal {
    /// The spinner of each kernel whose VM runs.
    booting: Mutex<HashMap<String, Step>>,
}

impl Events for Terminal {
    fn event(&self, e: Event) {
        match e {
            Event::Starting { doing, kernels, accel, reason, max_vms } => eprintln!(
                "kernel-matrix: {doing}{kernels} kernels, accelerator {accel} ({reason}), up to {max_vms} VMs at once"
            ),
            Event::Image { kernel, message } => eprintln!("kernel-matrix: {kernel}: {message}"),
            Event::Booting { kernel, accel } => {
                let step = Step::spinner(&kernel, &format!("booting under QEMU/{accel}"));
                self.booting.lock().unwrap_or_else(|p| p.into_inner()).insert(kernel, step);
            }
            Event::VmEnded { kernel, how } => {
                if let Some(step) = self.booting.lock().unwrap_or_else(|p| p.into_inner()).remove(&kernel) {
                    step.done(&format!("VM ended: {how}"));
                }
            }
            Event::Retrying { kernel, attempt, of, why } => {
                eprintln!("kernel-matrix: {kernel}: attempt {attempt} of {of} ({why})")
            }
            Event::KernelDone { kernel, wall } => {
                eprintln!("kernel-matrix: {kernel}: done in {:.1}s", wall.as_secs_f64())
            }
            Event::ExecSplat { kernel, splat, console } => eprintln!(
                "kernel-matrix exec: {kernel}: the guest kernel reported {splat} while the program ran (console: {})",
                console.display()
            ),
            Event::ExecNoStatus { kernel, how, console, tail } => eprintln!(
                "kernel-matrix exec: {kernel}: {how}\n--- console (last 40 lines, full log {}) ---\n{tail}",
                console.display()
            ),
            Event::ExecTable { rows, wall } => {
                let mut t = String::from("| kernel | release | accel | wall | result |\n|---|---|---|---|---|\n");
                for r in &rows {
                    let mark = if r.ok { "" } else { "**" };
                    t.push_str(&format!(
                        "| {} | {} | {} | {:.1}s | {mark}{}{mark} |\n",
                        r.kernel,
                        r.release,
                        r.accel,
                        r.wall.as_secs_f64(),
                        r.result.replace('|', "\\|").replace('\n', " ")
                    ));
                }
                let ok = rows.iter().filter(|r| r.ok).count();
                eprintln!("\n{t}\nkernel-matrix exec: {ok} of {} kernels exited 0 in {:.1}s", rows.len(), wall.as_secs_f64());
            }
            Event::GdbStub { kernel, address, waits, command, symbols } => {
                let state = if waits { "stopped at its first instruction until gdb continues it" } else { "running" };
                let fetch = if symbols {
                    String::new()
                } else {
                    format!(" (no debug symbols in the cache: `kernel-matrix fetch --debug-symbols -k {kernel}`)")
                };
                eprintln!("kernel-matrix: {kernel}: gdb stub at {address}, the kernel {state}:\n  {command}{fetch}");
            }
            Event::ExecNote { kernel, note } => eprintln!("kernel-matrix exec: {kernel}: {note}"),
            Event::ExecTimes { kernel, wall, boot, guest_start, accel, restored } => eprintln!(
                "kernel-matrix exec: {kernel}: wall {:.2}s, QEMU start to program start {:.2}s, guest uptime at program start {guest_start}s ({accel}, {})",
                wall.as_secs_f64(),
                boot.as_secs_f64(),
                if restored { "restored from a saved guest" } else { "booted" }
            ),
        }
    }
}
