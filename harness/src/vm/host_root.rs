//! The host's `/`, read-only, as a guest's file system (`exec --host-root`):
//! QEMU's virtiofsd serves it over vhost-user, the guest mounts it (virtiofs)
//! under a throwaway writable layer (vm-images/host-root) and runs the program
//! there, so any program, script or interpreter of the host runs as it would on
//! the host, in the guest's kernel.
//!
//! Why virtiofs and not 9p: Debian's cloud kernels have no 9p at all, and every
//! kernel here has virtiofs (a module on the modules disk, built in from 6.12). Why read-only on
//! the host's side: QEMU 7.2's virtiofsd has no read-only option, and a guest
//! root can remount anything; so virtiofsd runs in a mount namespace of its own
//! where what it serves is a read-only bind of the host's file systems. The
//! guest never writes the host's files. Without root, the namespace is a user
//! namespace (`unshare --map-root-user`): the host's permissions still apply,
//! and the daemon must be the Rust virtiofsd (QEMU 7.2's cannot run there).
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

/// The shell script that builds the read-only view in a mount namespace of
/// virtiofsd's own and then runs the rest of its arguments (virtiofsd): `$1` the
/// view's directory. The view is a recursive bind of `/` (a plain bind of `/` is
/// refused in a user namespace, whose mounts below it are locked together), and
/// every mount in it is made read-only, or nothing is served (`set -e`).
/// /proc/self/mountinfo escapes space, tab, newline and backslash in octal.
const START: &str = r#"set -e
view=$1; shift
mount --rbind / "$view"
V=$(printf '%s' "$view" | sed 's/\\/\\134/g; s/ /\\040/g; s/\t/\\011/g') \
  awk '$5 == ENVIRON["V"] || index($5, ENVIRON["V"] "/") == 1 { print $5 }' /proc/self/mountinfo |
  sed 's/\\040/ /g; s/\\011/\t/g; s/\\012/\n/g; s/\\134/\\/g' |
  while IFS= read -r m; do mount -o remount,bind,ro "$m"; done
exec "$@"
"#;

/// The command that runs `then` with the read-only view of the host's `/` at
/// `view`: in new mount (and, without root, user) namespaces.
fn read_only_view(view: &Path, then: &[&std::ffi::OsStr]) -> Command {
    let mut cmd = Command::new("unshare");
    if !nix::unistd::Uid::effective().is_root() {
        cmd.arg("--map-root-user");
    }
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", START, "km-host-root"]).arg(view).args(then);
    cmd
}

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
        // `cache=always`: the guest keeps what it looked up for the VM's life (a
        // file the host changes meanwhile may look stale in it); with `cache=auto`
        // each lookup went back to virtiofsd, and `exec --host-root -- /bin/true`
        // on 6.12 spent 1.3 s instead of 0.4 s after the guest's first line (TCG).
        let source = format!("source={}", view.display());
        let socket_arg = format!("--socket-path={}", socket.display());
        let mut cmd = read_only_view(
            &view,
            &[
                daemon.as_os_str(),
                socket_arg.as_ref(),
                "-o".as_ref(),
                source.as_ref(),
                "-o".as_ref(),
                "cache=always".as_ref(),
                "-o".as_ref(),
                "sandbox=namespace".as_ref(),
            ],
        );
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(&log)?);
        super::die_with_parent(&mut cmd);
        let child = cmd.spawn().context("starting unshare (util-linux) for virtiofsd")?;
        let mut share = Self { child, socket };
        // virtiofsd makes its socket within milliseconds; this bounds a daemon
        // that neither does so nor exits.
        let start = Instant::now();
        while !share.socket.exists() {
            if let Some(status) = share.child.try_wait()? {
                let why = std::fs::read_to_string(&log).unwrap_or_default();
                // Measured here: QEMU 7.2's C virtiofsd calls setgroups(), which a
                // user namespace denies; the Rust virtiofsd 1.14 runs there.
                let hint = if !nix::unistd::Uid::effective().is_root() && why.contains("setgroups") {
                    format!(
                        "\n{} cannot run without root (it needs setgroups); run as root, or install the Rust virtiofsd (Debian 13's package virtiofsd, or `cargo install virtiofsd`) and name it with KM_VIRTIOFSD",
                        daemon.display()
                    )
                } else {
                    String::new()
                };
                anyhow::bail!(
                    "virtiofsd for --host-root exited ({status}) before it served the host's root:\n{}{hint}",
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

    /// The view is read-only all the way down (here: /tmp, a mount of its own on
    /// most machines, and a directory whose name has a space), and readable.
    #[test]
    fn the_view_is_read_only_everywhere() {
        let dir = std::env::temp_dir().join(format!("km view {}", std::process::id()));
        let view = dir.join("host root");
        std::fs::create_dir_all(&view).unwrap();
        let probe = r#"v=$1; cat "$v/etc/hostname" >/dev/null && for d in "$v/tmp" "$v/dev/shm" "$v$2"; do if touch "$d/km-probe" 2>/dev/null; then echo "wrote $d"; exit 1; fi; done; echo read-only"#;
        let out = read_only_view(
            &view,
            &["sh".as_ref(), "-c".as_ref(), probe.as_ref(), "sh".as_ref(), view.as_os_str(), dir.as_os_str()],
        )
        .output()
        .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && said.trim() == "read-only", "{said}{}", String::from_utf8_lossy(&out.stderr));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
