//! Choosing QEMU's accelerator.
//!
//! `/dev/kvm` existing is not enough: on nested PVM hosts (`kvm_pvm`) stock kernels
//! do not boot (`-cpu host` aborts on MSR 0x10a). KVM is used only where the
//! vendor module (`kvm_intel`/`kvm_amd`) is loaded and /dev/kvm opens read-write.
use std::{fmt, path::Path, str::FromStr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

impl FromStr for Accel {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            _ => anyhow::bail!("accelerator must be kvm or tcg, not {s:?}"),
        }
    }
}

/// The accelerator and why it was chosen (shown in every report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
    /// The user named it (`--accel`, `KM_ACCEL`), rather than the probe finding it.
    pub explicit: bool,
}

impl AccelChoice {
    /// The accelerator for benchmark VMs. Regression gates need numbers that repeat:
    /// under TCG with `-icount` a guest "ns" is one guest instruction and the
    /// arm64 PMU counts exactly, while KVM's guest timings are wall clock, as noisy
    /// as the machine. So `bench` measures under TCG even where KVM works, unless
    /// the user asks for KVM by name: its wall-clock numbers are then a series of
    /// their own (labelled `kvm` in the BMF), which `compare` never judges
    /// against `tcg-icount` ones.
    pub fn for_benchmarks(self) -> Self {
        match self {
            AccelChoice { accel: Accel::Kvm, explicit: false, reason } => AccelChoice {
                accel: Accel::Tcg,
                reason: format!("benchmarks count deterministically under TCG -icount although {reason}; `--accel kvm` measures KVM's wall clock as a series of its own"),
                explicit: false,
            },
            other => other,
        }
    }
}

/// `KM_ACCEL=kvm|tcg` overrides; otherwise probe.
pub fn choose() -> anyhow::Result<AccelChoice> {
    if let Some(v) = &crate::settings::try_get()?.accel {
        return Ok(AccelChoice { accel: v.parse()?, reason: "KM_ACCEL".into(), explicit: true });
    }
    Ok(detect(Path::new("/sys/module"), Path::new("/dev/kvm")))
}

pub fn detect(sys_module: &Path, dev_kvm: &Path) -> AccelChoice {
    let vendor = ["kvm_intel", "kvm_amd"].into_iter().find(|m| sys_module.join(m).exists());
    let tcg = |reason: String| AccelChoice { accel: Accel::Tcg, reason, explicit: false };
    if !dev_kvm.exists() {
        return tcg("no /dev/kvm".into());
    }
    let Some(vendor) = vendor else {
        let other = ["kvm_pvm"].into_iter().find(|m| sys_module.join(m).exists());
        return tcg(match other {
            Some(m) => format!("/dev/kvm is {m}, which cannot boot stock kernels"),
            None => "/dev/kvm without kvm_intel or kvm_amd".into(),
        });
    };
    match std::fs::OpenOptions::new().read(true).write(true).open(dev_kvm) {
        Ok(_) => AccelChoice { accel: Accel::Kvm, reason: format!("{vendor} loaded"), explicit: false },
        Err(e) => tcg(format!("/dev/kvm not usable: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvm_means_tcg_and_vendor_module_means_kvm() {
        let root = std::env::temp_dir().join(format!("km-accel-{}", std::process::id()));
        let m = root.join("module");
        std::fs::create_dir_all(m.join("kvm_pvm")).unwrap();
        let dev = root.join("kvm");
        std::fs::write(&dev, b"").unwrap();
        let c = detect(&m, &dev);
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("kvm_pvm"), "{}", c.reason);
        std::fs::create_dir_all(m.join("kvm_intel")).unwrap();
        assert_eq!(detect(&m, &dev).accel, Accel::Kvm);
        assert_eq!(detect(&m, &root.join("nope")).accel, Accel::Tcg);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn benchmarks_count_under_tcg_unless_kvm_is_asked_for() {
        let probed = AccelChoice { accel: Accel::Kvm, reason: "kvm_intel loaded".into(), explicit: false };
        let b = probed.for_benchmarks();
        assert_eq!(b.accel, Accel::Tcg);
        assert!(b.reason.contains("kvm_intel loaded") && b.reason.contains("--accel kvm"), "{}", b.reason);
        let asked = AccelChoice { accel: Accel::Kvm, reason: "KM_ACCEL".into(), explicit: true };
        assert_eq!(asked.clone().for_benchmarks(), asked);
        let tcg = AccelChoice { accel: Accel::Tcg, reason: "no /dev/kvm".into(), explicit: false };
        assert_eq!(tcg.clone().for_benchmarks(), tcg);
    }
}
