//! Kernel versions as a type, so gates compare numbers rather than strings.
use std::{fmt, str::FromStr};

/// `major.minor.patch` of a Linux kernel. Release candidates and distribution
/// suffixes (`7.3.0-rc7`, `6.12.117+deb12-cloud-amd64`) parse to their numeric part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct KernelVersion {
    pub major: u16,
    pub minor: u16,
    pub patch: u16,
}

impl KernelVersion {
    pub const fn new(major: u16, minor: u16, patch: u16) -> Self {
        Self { major, minor, patch }
    }

    /// The running kernel, from `uname -r`.
    pub fn current() -> Result<Self, ParseKernelVersionError> {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        release.trim().parse()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("not a kernel version: {0:?}")]
pub struct ParseKernelVersionError(String);

/// Sorts kernel names as versions where they are ones (`5.10` before `6.1`, which
/// plain string order gets wrong), the others (`host`, `my-build`) after, by name.
pub fn sort_kernel_names(names: &mut [String]) {
    names.sort_by_key(|k| {
        let v: Option<KernelVersion> = k.parse().ok();
        (v.is_none(), v, k.clone())
    });
}

impl FromStr for KernelVersion {
    type Err = ParseKernelVersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseKernelVersionError(s.to_string());
        let numeric_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let mut parts = s[..numeric_end].split('.').filter(|p| !p.is_empty());
        let major = parts.next().ok_or_else(err)?.parse().map_err(|_| err())?;
        let minor = parts.next().ok_or_else(err)?.parse().map_err(|_| err())?;
        // Kernels past 255 patch releases (5.10.262) are why this is not a u8.
        let patch = parts.next().map(|p| p.parse().map_err(|_| err())).transpose()?.unwrap_or(0);
        Ok(Self { major, minor, patch })
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_distribution_releases() {
        assert_eq!("5.10.0-46-cloud-amd64".parse::<KernelVersion>().unwrap(), KernelVersion::new(5, 10, 0));
        assert_eq!("6.12.117+deb12-cloud-amd64".parse::<KernelVersion>().unwrap(), KernelVersion::new(6, 12, 117));
        assert_eq!("7.3.0-rc7-cloud-amd64".parse::<KernelVersion>().unwrap(), KernelVersion::new(7, 3, 0));
        assert_eq!("5.10.262".parse::<KernelVersion>().unwrap(), KernelVersion::new(5, 10, 262));
        assert_eq!("7.3".parse::<KernelVersion>().unwrap(), KernelVersion::new(7, 3, 0));
        assert!("cloud".parse::<KernelVersion>().is_err());
        assert!("7".parse::<KernelVersion>().is_err());
    }

    #[test]
    fn orders_numerically() {
        assert!(KernelVersion::new(5, 10, 0) < KernelVersion::new(5, 17, 0));
        assert!(KernelVersion::new(6, 1, 0) > KernelVersion::new(5, 17, 0));
        assert!(KernelVersion::new(6, 12, 0) > KernelVersion::new(6, 2, 0));
    }
}
