//! Which Debian archive to fetch kernels from.
//!
//! The address is never written into this repository: it comes from a user option
//! (`mirror:` in kernels.yaml, `KM_MIRROR`) or from the machine's apt configuration.
use std::path::Path;

use anyhow::{bail, Context as _};

use km_protocol::Arch;

use crate::config::{MatrixConfig, Origin};

/// The archives kernels come from: Debian's and its security counterpart (for
/// `*-security` suites), Ubuntu's (amd64, and the ports of other architectures),
/// and Ubuntu's mainline builds. Each is needed only by kernels of its kind, so a
/// missing one is an error when such a kernel asks for it, naming the setting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mirrors {
    pub main: Option<String>,
    pub security: Option<String>,
    pub ubuntu: Option<String>,
    pub ubuntu_ports: Option<String>,
    pub mainline: Option<String>,
    /// yum/dnf repositories by [`rpm_repo_variable`] name.
    pub rpm_repos: std::collections::BTreeMap<String, String>,
    pub oci: Option<String>,
}

impl Mirrors {
    /// kernels.yaml > environment (and options) > apt configuration (Debian's only:
    /// no other archive has a default).
    pub fn discover(config: Option<&MatrixConfig>) -> anyhow::Result<Self> {
        let s = crate::settings::try_get()?;
        let apt = from_apt_config(Path::new("/etc/apt")).ok();
        // An empty address counts as unset: a workflow passes an undefined variable as "".
        let pick = |from_config: Option<&Option<String>>, env: &Option<String>| {
            from_config.and_then(|c| c.clone()).or_else(|| env.clone()).map(|u| trim(&u)).filter(|u| !u.is_empty())
        };
        let (main_apt, sec_apt) = apt.map_or((None, None), |a| (a.main, a.security));
        Ok(Self {
            main: pick(config.map(|c| &c.mirror), &s.mirror).or(main_apt),
            security: pick(config.map(|c| &c.security_mirror), &s.security_mirror).or(sec_apt),
            ubuntu: pick(config.map(|c| &c.ubuntu_mirror), &s.ubuntu_mirror),
            ubuntu_ports: pick(config.map(|c| &c.ubuntu_ports_mirror), &s.ubuntu_ports_mirror),
            mainline: pick(config.map(|c| &c.ubuntu_mainline_url), &s.ubuntu_mainline_url),
            rpm_repos: rpm_repos(config.map(|c| &c.rpm_repos), std::env::vars()),
            oci: pick(config.map(|c| &c.oci_registry), &s.oci_registry),
        })
    }

    /// Base URL of the Debian archive that carries `suite`.
    pub fn for_suite(&self, suite: &str) -> anyhow::Result<&str> {
        if suite.ends_with("-security") {
            self.security.as_deref().with_context(|| {
                format!("suite {suite} needs a security mirror (security_mirror: or KM_SECURITY_MIRROR)")
            })
        } else {
            self.main.as_deref().context(
                "no Debian mirror: set `mirror:` in kernels.yaml or KM_MIRROR (the apt configuration names none)",
            )
        }
    }

    /// Base URL of the archive that holds a kernel of `origin`, `suite` and `arch`.
    pub fn base(&self, origin: Origin, suite: &str, arch: Arch) -> anyhow::Result<&str> {
        match origin {
            Origin::Debian => self.for_suite(suite),
            Origin::Ubuntu if arch == Arch::X86_64 => self.ubuntu.as_deref().context(
                "`ubuntu:` kernels need Ubuntu's archive: set `ubuntu_mirror:` in kernels.yaml or KM_UBUNTU_MIRROR",
            ),
            Origin::Ubuntu => self.ubuntu_ports.as_deref().with_context(|| {
                format!("`ubuntu:` {arch} kernels need Ubuntu's ports archive: set `ubuntu_ports_mirror:` in kernels.yaml or KM_UBUNTU_PORTS_MIRROR")
            }),
            Origin::UbuntuMainline => self.mainline.as_deref().context(
                "`ubuntu_mainline:` kernels need the address of Ubuntu's mainline builds: set `ubuntu_mainline_url:` in kernels.yaml or KM_UBUNTU_MAINLINE_URL",
            ),
            Origin::Rpm => self.rpm_repos.get(&rpm_repo_variable(suite)).map(String::as_str).with_context(|| {
                format!(
                    "`rpm:` repository {suite:?} has no address: set `rpm_repos: {{ {suite}: URL }}` in kernels.yaml or {}",
                    rpm_repo_variable(suite)
                )
            }),
            Origin::Oci => self.oci.as_deref().context(
                "`oci:` kernels need a registry: set `oci_registry:` in kernels.yaml or KM_OCI_REGISTRY (https://HOST[:PORT])",
            ),
        }
    }
}

/// The setting that changes where `origin`'s kernels come from (for errors that
/// name an unreachable archive).
pub fn setting_of(origin: Origin) -> &'static str {
    match origin {
        Origin::Debian => "`mirror:` / KM_MIRROR",
        Origin::Ubuntu => "`ubuntu_mirror:` / KM_UBUNTU_MIRROR",
        Origin::UbuntuMainline => "`ubuntu_mainline_url:` / KM_UBUNTU_MAINLINE_URL",
        Origin::Rpm => "`rpm_repos:` / KM_RPM_REPO_<NAME>",
        Origin::Oci => "`oci_registry:` / KM_OCI_REGISTRY",
    }
}

/// The variable that gives repository `name`'s address: `KM_RPM_REPO_` and the
/// name in capitals, every other character an underscore (`alma-9` -> `KM_RPM_REPO_ALMA_9`).
pub fn rpm_repo_variable(name: &str) -> String {
    let tail: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("KM_RPM_REPO_{tail}")
}

/// yum/dnf repositories by variable name: the matrix file's, then the environment's.
fn rpm_repos(
    config: Option<&std::collections::BTreeMap<String, String>>,
    env: impl Iterator<Item = (String, String)>,
) -> std::collections::BTreeMap<String, String> {
    let mut out: std::collections::BTreeMap<String, String> =
        env.filter(|(k, v)| k.starts_with("KM_RPM_REPO_") && !v.is_empty()).map(|(k, v)| (k, trim(&v))).collect();
    for (name, url) in config.into_iter().flatten() {
        out.insert(rpm_repo_variable(name), trim(url));
    }
    out
}

fn trim(s: &str) -> String {
    s.trim_end_matches('/').to_string()
}

/// Debian's archive and security archive named by an apt configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptMirrors {
    pub main: Option<String>,
    pub security: Option<String>,
}

/// Reads `sources.list` and `sources.list.d/*.{list,sources}` (one-line and deb822).
pub fn from_apt_config(apt_dir: &Path) -> anyhow::Result<AptMirrors> {
    let mut entries: Vec<(String, Vec<String>)> = Vec::new();
    let mut files = vec![apt_dir.join("sources.list")];
    if let Ok(dir) = std::fs::read_dir(apt_dir.join("sources.list.d")) {
        let mut more: Vec<_> = dir.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else { continue };
        match f.extension().and_then(|e| e.to_str()) {
            Some("sources") => entries.extend(parse_deb822(&text)),
            Some("list") => entries.extend(parse_one_line(&text)),
            _ => {}
        }
    }
    pick(&entries)
}

/// Chooses the archive whose suites are plain Debian releases, and the one that
/// carries `*-security` suites.
fn pick(entries: &[(String, Vec<String>)]) -> anyhow::Result<AptMirrors> {
    let is_debian = |suites: &[String]| {
        suites.iter().any(|s| {
            let base = s.split('-').next().unwrap_or(s);
            ["sid", "trixie", "bookworm", "bullseye", "buster", "forky", "duke", "stable", "testing", "unstable"]
                .contains(&base)
        })
    };
    let main = entries
        .iter()
        .find(|(_, s)| is_debian(s) && !s.iter().all(|x| x.ends_with("-security")))
        .map(|(u, _)| u.clone());
    let security = entries
        .iter()
        .find(|(_, s)| is_debian(s) && s.iter().any(|x| x.ends_with("-security")))
        .map(|(u, _)| u.clone());
    match main {
        Some(main) => Ok(AptMirrors { main: Some(trim(&main)), security: security.map(|s| trim(&s)) }),
        None => bail!("no Debian archive found in the apt configuration"),
    }
}

fn parse_deb822(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut uris = Vec::new();
        let mut suites = Vec::new();
        let mut enabled = true;
        let mut is_deb = false;
        for line in stanza.lines().filter(|l| !l.trim_start().starts_with('#')) {
            let Some((k, v)) = line.split_once(':') else { continue };
            let vals = v.split_whitespace().map(str::to_string);
            match k.trim() {
                "URIs" => uris.extend(vals),
                "Suites" => suites.extend(vals),
                "Types" => is_deb = v.split_whitespace().any(|t| t == "deb"),
                "Enabled" => enabled = v.trim() != "no",
                _ => {}
            }
        }
        if enabled && is_deb {
            out.extend(uris.into_iter().map(|u| (u, suites.clone())));
        }
    }
    out
}

fn parse_one_line(text: &str) -> Vec<(String, Vec<String>)> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace().filter(|w| !w.starts_with('['));
            if words.next()? != "deb" {
                return None;
            }
            // Skip a bracketed options block that spans words, e.g. `[arch=amd64 signed-by=x]`.
            let rest: Vec<&str> = l.split_whitespace().skip(1).collect();
            let mut i = 0;
            if rest.first().is_some_and(|w| w.starts_with('[')) {
                while i < rest.len() && !rest[i].ends_with(']') {
                    i += 1;
                }
                i += 1;
            }
            let uri = rest.get(i)?.to_string();
            let suite = rest.get(i + 1)?.to_string();
            Some((uri, vec![suite]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_deb822_and_one_line_sources() {
        let d = parse_deb822(
            "Types: deb\nURIs: http://example.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://example.org/debian-security\nSuites: bookworm-security\n",
        );
        let m = pick(&d).unwrap();
        assert_eq!(m.main.as_deref(), Some("http://example.org/debian"));
        assert_eq!(m.security.as_deref(), Some("http://example.org/debian-security"));
        let l = parse_one_line(
            "# x\ndeb [arch=amd64 signed-by=/k.gpg] http://example.org/d/ bookworm main\ndeb-src http://x y z\n",
        );
        assert_eq!(l, vec![("http://example.org/d/".to_string(), vec!["bookworm".to_string()])]);
        assert_eq!(pick(&l).unwrap().main.as_deref(), Some("http://example.org/d"));
    }

    #[test]
    fn third_party_repositories_are_not_debian() {
        let l = parse_one_line("deb https://vendor.example/apt cloud-sdk-bookworm main\n");
        assert!(pick(&l).is_err());
    }

    #[test]
    fn security_suites_use_the_security_archive() {
        let m = Mirrors { main: Some("a".into()), security: Some("b".into()), ..Default::default() };
        assert_eq!(m.for_suite("bullseye-security").unwrap(), "b");
        assert_eq!(m.for_suite("sid").unwrap(), "a");
        assert_eq!(m.base(Origin::Debian, "sid", Arch::Arm64).unwrap(), "a");
        let e = m.base(Origin::Ubuntu, "jammy", Arch::X86_64).unwrap_err().to_string();
        assert!(e.contains("ubuntu_mirror:") && e.contains("KM_UBUNTU_MIRROR"), "{e}");
        let e = m.base(Origin::Ubuntu, "jammy", Arch::Arm64).unwrap_err().to_string();
        assert!(e.contains("KM_UBUNTU_PORTS_MIRROR"), "{e}");
        let m = Mirrors { ubuntu: Some("u".into()), mainline: Some("m".into()), ..Default::default() };
        assert_eq!(m.base(Origin::Ubuntu, "jammy-updates", Arch::X86_64).unwrap(), "u");
        assert_eq!(m.base(Origin::UbuntuMainline, "mainline", Arch::X86_64).unwrap(), "m");
        assert!(m.for_suite("sid").unwrap_err().to_string().contains("KM_MIRROR"));
    }

    #[test]
    fn rpm_repositories_from_the_file_then_the_environment() {
        let file = [("alma-9".to_string(), "http://f/9/".to_string())].into();
        let env = [
            ("KM_RPM_REPO_ALMA_9", "http://e/9"),
            ("KM_RPM_REPO_AL2", "http://e/al2"),
            ("KM_RPM_REPO_ROCKY8", ""), // a workflow's undefined variable: unset
            ("HOME", "/root"),
        ];
        let repos = rpm_repos(Some(&file), env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let m = Mirrors { rpm_repos: repos, ..Default::default() };
        assert_eq!(m.base(Origin::Rpm, "alma-9", Arch::X86_64).unwrap(), "http://f/9");
        assert_eq!(m.base(Origin::Rpm, "al2", Arch::X86_64).unwrap(), "http://e/al2");
        let e = m.base(Origin::Rpm, "rocky8", Arch::X86_64).unwrap_err().to_string();
        assert!(e.contains("rpm_repos: { rocky8: URL }") && e.contains("KM_RPM_REPO_ROCKY8"), "{e}");
    }
}
