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
}

/// `KM_ACCEL=kvm|tcg` overrides; otherwise probe.
pub fn choose() -> anyhow::Result<AccelChoice> {
    if let Some(v) = &crate::settings::try_get()?.accel {
        return Ok(AccelChoice { accel: v.parse()?, reason: "KM_ACCEL".into() });
    }
    Ok(detect(Path::new("/sys/module"), Path::new("/dev/kvm")))
}

pub fn detect(sys_module: &Path, dev_kvm: &Path) -> AccelChoice {
    let vendor = ["kvm_intel", "kvm_amd"].into_iter().find(|m| sys_module.join(m).exists());
    let tcg = |reason: String| AccelChoice { accel: Accel::Tcg, reason };
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
        Ok(_) => AccelChoice { accel: Accel::Kvm, reason: format!("{vendor} loaded") },
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
}
