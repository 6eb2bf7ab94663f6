//! The host's `/`, read-only, as a guest's file system (`exec --host-root`):
//! QEMU's virtiofsd serves it over vhost-user, the guest mounts it (virtiofs)
//! under a throwaway writable layer (vm-images/host-root) and runs the program
//! there, so any program, script or interpreter of the host runs as it would on
//! the host, in the guest's kernel.
//!
//! Why virtiofs and not 9p: Debian's cloud kernels have no 9p at all, and every
//! kernel here has virtiofs (as a module on the modules disk). Why read-only on
//! the host's side: QEMU 7.2's virtiofsd has no read-only option, and a guest
//! root can remount anything; so virtiofsd runs in a mount namespace of its own
//! where what it serves is a read-only bind of the host's file systems. The
//! guest never writes the host's files. Without root, the namespace is a user
//! namespace (`unshare --map-root-user`): the host's permissions still apply.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::config::ConfigError;

/// The virtiofs tag the guest mounts (vm-images/host-root).
pub const TAG: &str = "km-host-root";

/// Where QEMU's C virtiofsd (Debian 12: package qemu-system-common) and the Rust
/// one (later Debian, package virtiofsd) are installed.
const VIRTIOFSD: &[&str] = &["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"];

/// File systems that are no part of the host's files: the guest mounts its own.
const PSEUDO: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "hugetlbfs",
    "autofs",
    "binfmt_misc",
    "efivarfs",
    "nsfs",
    "rpc_pipefs",
];

/// A running virtiofsd serving the host's root; stopped when dropped.
pub struct HostRootShare {
    child: Child,
    pub socket: PathBuf,
}

impl Drop for HostRootShare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The virtiofsd to use: `KM_VIRTIOFSD`, or where Debian installs one.
pub fn virtiofsd() -> Result<PathBuf, ConfigError> {
    if let Some(p) = std::env::var_os("KM_VIRTIOFSD") {
        return Ok(PathBuf::from(p));
    }
    VIRTIOFSD.iter().map(PathBuf::from).find(|p| p.is_file()).ok_or_else(|| ConfigError::Invalid {
        path: "--host-root".into(),
        message: format!(
            "needs virtiofsd (looked at {}): install Debian's qemu-system-common (QEMU's) or virtiofsd, or name one with KM_VIRTIOFSD",
            VIRTIOFSD.join(", ")
        ),
    })
}

/// The host's mount points whose files a program may read, parents first: every
/// mount but the pseudo file systems and what lives under /proc, /sys, /dev and
/// /run (the guest has its own), from `/proc/self/mountinfo`'s text.
fn host_mounts(mountinfo: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let (Some(point), Some(fstype)) = (left.split(' ').nth(4), right.split(' ').next()) else { continue };
        let point = unescape(point);
        let under = |d: &str| point == d || point.starts_with(&format!("{d}/"));
        if point == "/" || PSEUDO.contains(&fstype) || ["/proc", "/sys", "/dev", "/run"].iter().any(|d| under(d)) {
            continue;
        }
        if !out.contains(&point) {
            out.push(point);
        }
    }
    out
}

/// mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The shell script that builds the read-only view in virtiofsd's mount
/// namespace and then becomes virtiofsd: `$1` the view's directory, `$2` the
/// socket, `$3` virtiofsd, then the mount points to add. A mount that cannot be
/// bound is left out (the guest sees the directory under it), never served writable.
/// `cache=always`: the guest keeps what it looked up for the VM's life (a file
/// the host changes meanwhile may look stale in it); with `cache=auto` each
/// lookup went back to virtiofsd, and `exec --host-root -- /bin/true` on 6.12
/// spent 1.3 s instead of 0.4 s after the guest's first line (TCG).
const START: &str = r#"set -e
view=$1 sock=$2 daemon=$3; shift 3
mount --bind / "$view"
mount -o remount,bind,ro "$view"
for m in "$@"; do
  if [ -d "$view$m" ] && mount --bind "$m" "$view$m" 2>/dev/null; then
    mount -o remount,bind,ro "$view$m" || umount "$view$m"
  fi
done
exec "$daemon" --socket-path="$sock" -o source="$view" -o cache=always -o sandbox=namespace
"#;

impl HostRootShare {
    /// Starts virtiofsd for one VM, its socket and files in `workdir`; returns
    /// when the socket is there.
    pub fn start(workdir: &Path) -> anyhow::Result<Self> {
        let daemon = virtiofsd()?;
        std::fs::create_dir_all(workdir)?;
        let view = workdir.join("host-root");
        std::fs::create_dir_all(&view)?;
        let socket = workdir.join("virtiofsd.sock");
        let _ = std::fs::remove_file(&socket);
        let log = workdir.join("virtiofsd.log");
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
        let mut cmd = Command::new("unshare");
        if !nix::unistd::Uid::effective().is_root() {
            cmd.arg("--map-root-user");
        }
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", START, "km-host-root"])
            .arg(&view)
            .arg(&socket)
            .arg(&daemon)
            .args(host_mounts(&mountinfo))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        super::die_with_parent(&mut cmd);
        let child = cmd.spawn().context("starting unshare (util-linux) for virtiofsd")?;
        let mut share = Self { child, socket };
        // virtiofsd makes its socket within milliseconds; this bounds a daemon
        // that neither does so nor exits.
        let start = Instant::now();
        while !share.socket.exists() {
            if let Some(status) = share.child.try_wait()? {
                let why = std::fs::read_to_string(&log).unwrap_or_default();
                anyhow::bail!(
                    "virtiofsd for --host-root exited ({status}) before it served the host's root:\n{}",
                    why.trim()
                );
            }
            if start.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("virtiofsd made no socket in 30 s (log: {})", log.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(share)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_files_mounts_only() {
        let info = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:5 / /proc rw - proc proc rw
24 22 0:6 / /sys rw - sysfs sysfs rw
25 24 0:7 / /sys/fs/bpf rw - bpf bpf rw
26 22 0:8 / /run rw - tmpfs tmpfs rw
27 26 0:9 / /run/user/1000 rw - tmpfs tmpfs rw
28 22 8:2 / /home rw - ext4 /dev/sda2 rw
29 22 0:10 / /tmp rw - tmpfs tmpfs rw
30 28 8:3 / /home/a\\040b rw - xfs /dev/sda3 rw
31 22 0:11 / /dev rw - devtmpfs udev rw
32 22 0:12 / /mnt/cg rw - cgroup2 cgroup2 rw
";
        assert_eq!(host_mounts(info), ["/home", "/tmp", "/home/a b"]);
    }
}
