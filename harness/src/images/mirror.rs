//! Which Debian archive to fetch kernels from.
//!
//! The address is never written into this repository: it comes from a user option
//! (`mirror:` in kernels.yaml, `KM_MIRROR`) or from the machine's apt configuration.
use std::path::Path;

use anyhow::{bail, Context as _};

/// The Debian archive and its security counterpart (for `*-security` suites).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrors {
    pub main: String,
    pub security: Option<String>,
}

impl Mirrors {
    /// Option > environment > apt configuration.
    pub fn discover(main: Option<&str>, security: Option<&str>) -> anyhow::Result<Self> {
        let settings = crate::settings::try_get()?;
        let env_main = settings.mirror.clone();
        let env_sec = settings.security_mirror.clone();
        let apt = from_apt_config(Path::new("/etc/apt")).ok();
        let main = main.map(str::to_string).or(env_main).or_else(|| apt.as_ref().map(|a| a.main.clone())).context(
            "no Debian mirror: set `mirror:` in kernels.yaml or KM_MIRROR (the apt configuration names none)",
        )?;
        let security = security.map(str::to_string).or(env_sec).or_else(|| apt.and_then(|a| a.security));
        Ok(Self { main: trim(&main), security: security.map(|s| trim(&s)) })
    }

    /// Base URL of the archive that carries `suite`.
    pub fn for_suite(&self, suite: &str) -> anyhow::Result<&str> {
        if suite.ends_with("-security") {
            self.security.as_deref().with_context(|| {
                format!("suite {suite} needs a security mirror (security_mirror: or KM_SECURITY_MIRROR)")
            })
        } else {
            Ok(&self.main)
        }
    }
}

fn trim(s: &str) -> String {
    s.trim_end_matches('/').to_string()
}

/// Reads `sources.list` and `sources.list.d/*.{list,sources}` (one-line and deb822).
pub fn from_apt_config(apt_dir: &Path) -> anyhow::Result<Mirrors> {
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
fn pick(entries: &[(String, Vec<String>)]) -> anyhow::Result<Mirrors> {
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
        Some(main) => Ok(Mirrors { main: trim(&main), security: security.map(|s| trim(&s)) }),
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
        assert_eq!(m.main, "http://example.org/debian");
        assert_eq!(m.security.as_deref(), Some("http://example.org/debian-security"));
        let l = parse_one_line(
            "# x\ndeb [arch=amd64 signed-by=/k.gpg] http://example.org/d/ bookworm main\ndeb-src http://x y z\n",
        );
        assert_eq!(l, vec![("http://example.org/d/".to_string(), vec!["bookworm".to_string()])]);
        assert_eq!(pick(&l).unwrap().main, "http://example.org/d");
    }

    #[test]
    fn third_party_repositories_are_not_debian() {
        let l = parse_one_line("deb https://vendor.example/apt cloud-sdk-bookworm main\n");
        assert!(pick(&l).is_err());
    }

    #[test]
    fn security_suites_use_the_security_archive() {
        let m = Mirrors { main: "a".into(), security: Some("b".into()) };
        assert_eq!(m.for_suite("bullseye-security").unwrap(), "b");
        assert_eq!(m.for_suite("sid").unwrap(), "a");
    }
}
