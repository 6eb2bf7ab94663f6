//! The kernel feature catalogue (`features.yaml`) as data: compiled into both
//! sides, so the host lists trials and judges probes against the same table the
//! guest probes from.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Arch, KernelVersion};

/// One row of `features.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    pub id: String,
    pub title: String,
    pub since: String,
    /// Architectures that got the feature in another version than `since` (BPF
    /// trampolines: x86_64 5.5, arm64 6.0): `since_arch: { arm64: "6.0" }`.
    #[serde(default)]
    pub since_arch: BTreeMap<Arch, String>,
    /// The name of the agent's probe for it (checked by the agent's tests).
    pub probe: String,
    /// What in a program's instructions or object needs this feature: helper
    /// ids, kfunc names, map type names, program type names (libbpf's names,
    /// lower case: `ringbuf`, `syscall`). `kernel-matrix explain` and a failed
    /// load's message name the feature (and `since`) for these.
    #[serde(default)]
    pub helpers: Vec<u32>,
    #[serde(default)]
    pub kfuncs: Vec<String>,
    #[serde(default)]
    pub map_types: Vec<String>,
    #[serde(default)]
    pub prog_types: Vec<String>,
}

impl Feature {
    /// The first version with the feature on `arch`.
    pub fn since_on(&self, arch: Arch) -> &str {
        self.since_arch.get(&arch).unwrap_or(&self.since)
    }
    pub fn min_version_on(&self, arch: Arch) -> KernelVersion {
        self.since_on(arch).parse().expect("validated in catalogue()")
    }
    /// How a check skipped for lack of this feature says why, on the architecture
    /// this program runs on (the guest agent's is the guest's).
    pub fn need_reason(&self) -> String {
        self.need_reason_on(Arch::host())
    }
    pub fn need_reason_on(&self, arch: Arch) -> String {
        match self.since_arch.get(&arch) {
            Some(v) => format!("needs {}, {v} on {arch}", self.title),
            None => format!("needs {}, {}", self.title, self.since),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeatureFile {
    features: Vec<Feature>,
}

/// The catalogue, compiled in so host and guest agree on it.
pub fn catalogue() -> &'static [Feature] {
    static CAT: std::sync::OnceLock<Vec<Feature>> = std::sync::OnceLock::new();
    CAT.get_or_init(|| {
        let text = include_str!("../../features.yaml");
        let f: FeatureFile = serde_norway::from_str(text).unwrap_or_else(|e| panic!("features.yaml: {e}"));
        for feat in &f.features {
            for v in std::iter::once(&feat.since).chain(feat.since_arch.values()) {
                v.parse::<KernelVersion>().unwrap_or_else(|e| panic!("features.yaml: {}: {e}", feat.id));
            }
        }
        f.features
    })
}

pub fn by_id(id: &str) -> Option<&'static Feature> {
    catalogue().iter().find(|f| f.id == id)
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "probe", content = "detail", rename_all = "snake_case")]
pub enum Probe {
    Present(String),
    Absent(String),
    /// The kernel may have it, but this machine cannot show it (no hardware PMU...).
    Unavailable(String),
    /// The probe itself failed for a reason that says nothing about the feature
    /// (EPERM, EACCES, ENOMEM, EFAULT, ...): "could not probe: <errno>", never
    /// "absent". Only EINVAL, E2BIG, EOPNOTSUPP and ENOTSUPP-class answers mean a
    /// kernel lacks a feature (cilium/ebpf's `features/` reads errnos the same way).
    Unprobed(String),
}

impl Probe {
    /// How the feature table shows it.
    pub fn word(&self) -> &'static str {
        match self {
            Probe::Present(_) => "yes",
            Probe::Absent(_) => "no",
            Probe::Unavailable(_) => "n/a",
            Probe::Unprobed(_) => "could not probe",
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn catalogue_parses_with_unique_ids() {
        let c = super::catalogue();
        assert!(c.len() >= 10);
        let mut ids: Vec<_> = c.iter().map(|f| &f.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), c.len(), "duplicate feature ids");
    }
}
