//! Fast repeats (`exec --snapshot`): a kernel booted once to "ready" and saved
//! (QEMU migration to a file), then restored for each program instead of booted.
//!
//! The ready guest (vm-images/snap-wait) has mounted its pseudo file systems and
//! the modules disk, says `km-snap ready` on its channel, and polls a second
//! disk, the job disk, with direct reads. The harness saves it there. For each
//! program, a copy of the VM is restored from the file with a new job disk: a
//! header (`KMJOB <length> <unix seconds>`, [`JOB_HEADER`] bytes) and the program's
//! files as a plain cpio (no busybox or /init: the ready guest has those). The guest sets its clock from the header,
//! unpacks the archive and runs it as a booted exec guest would (vm-images/exec-run).
//!
//! Why disks on virtio-blk: QEMU 7.2 refuses to migrate NVMe (`non-migratable
//! device`), and vhost-user-fs (`--host-root`) likewise, so those run cold.
//! Why a job disk of fixed size: the guest read the disk's capacity when it
//! booted, before the save; every job disk has [`JOB_DISK_BYTES`] (sparse).
use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context as _};

use super::{qmp::Qmp, VmSpec};

/// The job disk's serial, by which the guest finds it (`/sys/block/vd*/serial`).
pub const JOB_SERIAL: &str = "km-job";
/// Every job disk's size (sparse): the largest guest root a restored VM takes.
pub const JOB_DISK_BYTES: u64 = 512 << 20;
/// The header's block before the archive: the guest reads the disk in blocks of
/// this size (direct reads of 512 bytes took 0.5 s for a 2 MB job under TCG).
pub const JOB_HEADER: usize = 64 << 10;

/// What a VM does with the ready state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Boot to ready (job disk empty); the harness saves it ([`save`]).
    Save { job_disk: PathBuf },
    /// Restore the saved `state`, then run the job on `job_disk`.
    Restore { state: PathBuf, job_disk: PathBuf },
}

impl Role {
    /// QEMU's arguments for the role (the modules disk moves to virtio-blk in
    /// [`VmSpec::command`]).
    pub fn qemu_args(&self, workdir: &Path) -> Vec<String> {
        let disk = match self {
            Role::Save { job_disk } | Role::Restore { job_disk, .. } => job_disk,
        };
        let mut a = vec![
            "-drive".to_string(),
            format!("file={},if=none,id={JOB_SERIAL},format=raw,readonly=on", super::option_value(disk)),
            "-device".to_string(),
            format!("virtio-blk-pci,drive={JOB_SERIAL},serial={JOB_SERIAL}"),
        ];
        match self {
            Role::Save { .. } => {
                a.extend(["-qmp".to_string(), format!("unix:{},server=on,wait=off", qmp_socket(workdir).display())])
            }
            Role::Restore { state, .. } => a.extend([
                "-incoming".to_string(),
                format!("exec:cat {}", crate::escape::shell_word(&state.to_string_lossy())),
            ]),
        }
        a
    }
}

fn qmp_socket(workdir: &Path) -> PathBuf {
    workdir.join("snapshot-qmp.sock")
}

/// How a save went.
#[derive(Debug, Clone, Copy)]
pub struct Saved {
    /// QEMU start to `km-snap ready`.
    pub ready: Duration,
    /// The migration to the file.
    pub save: Duration,
    pub bytes: u64,
}

/// Boots `spec` (a [`Role::Save`] VM) to ready and saves it to `state` (written
/// under a temporary name, renamed when complete). QEMU is gone when this returns.
pub fn save(spec: &VmSpec, state: &Path) -> anyhow::Result<Saved> {
    for p in [spec.console_path(), spec.channel_path(), qmp_socket(&spec.workdir)] {
        let _ = std::fs::remove_file(p);
    }
    let mut cmd = spec.command();
    let stderr = std::fs::File::create(spec.qemu_stderr_path())?;
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
    super::die_with_parent(&mut cmd);
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {}", spec.qemu_binary()))?;
    let tmp = crate::images::fetch::tmp_path(state);
    let saved = (|| -> anyhow::Result<Saved> {
        loop {
            let channel = std::fs::read_to_string(spec.channel_path()).unwrap_or_default();
            if channel.contains("km-snap ready") {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!("QEMU ended ({status}) before the guest was ready");
            }
            if start.elapsed() > spec.timeout {
                bail!("the guest was not ready after {} s", spec.timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let ready = start.elapsed();
        let mut qmp = Qmp::connect(&qmp_socket(&spec.workdir), spec.timeout)?;
        let uri = format!("exec:cat > {}", crate::escape::shell_word(&tmp.to_string_lossy()));
        qmp.execute("migrate", serde_json::json!({ "uri": uri }))?;
        loop {
            let info = qmp.execute("query-migrate", serde_json::Value::Null)?;
            match info.get("status").and_then(|s| s.as_str()) {
                Some("completed") => break,
                Some("failed") | Some("cancelled") => bail!("QEMU's migration to {}: {info}", tmp.display()),
                _ => {}
            }
            if start.elapsed() > spec.timeout {
                bail!("saving the ready guest took over {} s", spec.timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = qmp.execute("quit", serde_json::Value::Null);
        let save = start.elapsed() - ready;
        child.wait()?;
        let bytes = std::fs::metadata(&tmp)?.len();
        std::fs::rename(&tmp, state).with_context(|| format!("writing {}", state.display()))?;
        Ok(Saved { ready, save, bytes })
    })();
    let _ = child.kill();
    let _ = child.wait();
    if saved.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    saved.with_context(|| {
        let console = std::fs::read_to_string(spec.console_path()).unwrap_or_default();
        let stderr = std::fs::read_to_string(spec.qemu_stderr_path()).unwrap_or_default();
        format!(
            "saving a ready guest of {}:\n{}{}",
            spec.kernel.display(),
            super::console::tail(&console, 15),
            if stderr.trim().is_empty() { String::new() } else { format!("\nQEMU said: {}", stderr.trim()) }
        )
    })
}

/// Writes the job disk `dest`: the header for `archive` (a cpio of the
/// program's files) with the time `now`, the archive, and zeros up to [`JOB_DISK_BYTES`]
/// (sparse). `None` when the archive does not fit.
pub fn write_job(archive: &Path, dest: &Path, now: SystemTime) -> anyhow::Result<Option<()>> {
    use std::io::Write as _;
    let len = std::fs::metadata(archive).with_context(|| format!("reading {}", archive.display()))?.len();
    if len + JOB_HEADER as u64 > JOB_DISK_BYTES {
        return Ok(None);
    }
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
    let mut header = format!("KMJOB {len} {secs}\n").into_bytes();
    header.resize(JOB_HEADER, 0);
    let mut f = std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    f.write_all(&header)?;
    std::io::copy(&mut std::fs::File::open(archive)?, &mut f)?;
    f.set_len(JOB_DISK_BYTES)?;
    Ok(Some(()))
}

/// An empty job disk (the ready guest finds no header on it).
pub fn empty_job(dest: &Path) -> anyhow::Result<()> {
    let f = std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    f.set_len(JOB_DISK_BYTES)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_disk_is_its_header_then_the_archive_at_a_fixed_size() {
        let dir = std::env::temp_dir().join(format!("km-job-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let archive = dir.join("root.cpio.gz");
        std::fs::write(&archive, b"ARCHIVE").unwrap();
        let disk = dir.join("job.img");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        write_job(&archive, &disk, now).unwrap().unwrap();
        let head = |p: &Path| {
            use std::io::Read as _;
            let mut b = vec![0u8; JOB_HEADER + 16];
            std::fs::File::open(p).unwrap().read_exact(&mut b).unwrap();
            b
        };
        assert_eq!(std::fs::metadata(&disk).unwrap().len(), JOB_DISK_BYTES);
        let data = head(&disk);
        assert!(data.starts_with(b"KMJOB 7 1800000000\n\0"));
        assert_eq!(&data[JOB_HEADER..JOB_HEADER + 7], b"ARCHIVE");
        empty_job(&disk).unwrap();
        assert!(head(&disk).iter().all(|b| *b == 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
