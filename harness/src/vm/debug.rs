//! Debugging a guest kernel: QEMU's gdb stub (`--gdb`, `--gdb-wait`) and a memory
//! dump of a guest whose kernel panicked (`--crash-dump`), taken through QMP
//! before the VM is stopped and kept beside its console log as `vmcore` (an ELF
//! core that crash and drgn open with the kernel's debug vmlinux).
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;

/// What a VM offers a debugger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DebugOptions {
    /// QEMU's gdb stub on this TCP port of 127.0.0.1.
    pub gdb: Option<GdbStub>,
    /// On a panic, dump the guest's memory to `vmcore` in the VM's directory.
    pub crash_dump: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GdbStub {
    pub port: u16,
    /// The CPU stays stopped at its first instruction until gdb continues it.
    pub wait: bool,
}

impl DebugOptions {
    /// From the settings (`--gdb`, `--gdb-wait`, `--crash-dump`): the gdb port is
    /// one the system has free now.
    pub fn from_settings() -> anyhow::Result<Self> {
        let s = crate::settings::get();
        let gdb = if s.gdb || s.gdb_wait { Some(GdbStub { port: free_port()?, wait: s.gdb_wait }) } else { None };
        Ok(DebugOptions { gdb, crash_dump: s.crash_dump })
    }

    pub fn any(&self) -> bool {
        self.gdb.is_some() || self.crash_dump
    }

    /// The QEMU arguments.
    pub fn qemu_args(&self, workdir: &Path) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(g) = self.gdb {
            a.extend(["-gdb".to_string(), format!("tcp:127.0.0.1:{}", g.port)]);
            if g.wait {
                a.push("-S".into());
            }
        }
        if self.crash_dump {
            a.extend(["-qmp".to_string(), format!("unix:{},server=on,wait=off", qmp_socket(workdir).display())]);
            // The guest's VMCOREINFO (which kernel, where) goes into the dump.
            a.extend(["-device".to_string(), "vmcoreinfo".to_string()]);
        }
        a
    }

    /// Kernel command line words: symbols at their link addresses (`nokaslr`), so
    /// that gdb and crash need no relocation; with a dump, a panicking kernel
    /// stays (`panic=0`) for the dump instead of rebooting, and /init loads
    /// qemu_fw_cfg (`km.crashdump`, vm-images/guest-mounts) for the vmcoreinfo device.
    pub fn cmdline(&self) -> Vec<&'static str> {
        let mut w = Vec::new();
        if self.any() {
            w.push("nokaslr");
        }
        if self.crash_dump {
            w.extend(["panic=0", "km.crashdump"]);
        }
        w
    }
}

/// A TCP port of 127.0.0.1 that nothing listens on now.
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port for the gdb stub")?;
    Ok(l.local_addr()?.port())
}

pub fn qmp_socket(workdir: &Path) -> PathBuf {
    workdir.join("qmp.sock")
}

/// Where a panicked guest's memory dump goes.
pub fn vmcore_path(workdir: &Path) -> PathBuf {
    workdir.join("vmcore")
}

/// The gdb command line that attaches to `g` with `symbols`.
pub fn gdb_line(g: GdbStub, symbols: &Path) -> String {
    format!("gdb -ex 'target remote 127.0.0.1:{}' {}", g.port, crate::escape::shell_word(&symbols.to_string_lossy()))
}

/// Dumps the stopped guest's memory to `dest` (QMP `dump-guest-memory`, ELF,
/// synchronous).
pub fn dump_memory(workdir: &Path, dest: &Path, timeout: Duration) -> anyhow::Result<()> {
    let mut qmp = super::qmp::Qmp::connect(&qmp_socket(workdir), timeout)?;
    qmp.execute("stop", serde_json::Value::Null)?;
    qmp.execute(
        "dump-guest-memory",
        serde_json::json!({"paging": false, "protocol": format!("file:{}", dest.display()), "format": "elf"}),
    )?;
    Ok(())
}
