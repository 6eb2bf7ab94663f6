//! Debian archive metadata: `Packages` indices, version ordering, and resolving
//! "the newest cloud kernel of series X in suite Y" to exact files.
use std::{cmp::Ordering, collections::HashMap, io::Read as _};

use anyhow::Context as _;

use km_protocol::Arch;

use crate::{config::ArchiveSource, images::lock::LockedFile};

/// One stanza of a `Packages` index.
pub type Stanza = HashMap<String, String>;

/// Downloads and parses `dists/<suite>/main/binary-<arch>/Packages.xz`.
pub fn fetch_index(mirror: &str, suite: &str, arch: Arch) -> anyhow::Result<Vec<Stanza>> {
    let url = format!("{mirror}/dists/{suite}/main/binary-{}/Packages.xz", arch.debian());
    let xz = crate::images::fetch::http()
        .bytes(&url)
        .with_context(|| format!("fetching the package index of suite {suite}: {url}"))?;
    let mut text = String::new();
    liblzma::read::XzDecoder::new(&xz[..])
        .read_to_string(&mut text)
        .with_context(|| format!("decompressing the package index of suite {suite}"))?;
    Ok(parse_index(&text))
}

pub fn parse_index(text: &str) -> Vec<Stanza> {
    text.split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .map(|stanza| {
            let mut m = HashMap::new();
            let mut last: Option<String> = None;
            for line in stanza.lines() {
                if line.starts_with(' ') || line.starts_with('\t') {
                    // Continuation lines (descriptions) are not needed.
                    continue;
                }
                if let Some((k, v)) = line.split_once(':') {
                    m.insert(k.to_string(), v.trim().to_string());
                    last = Some(k.to_string());
                }
            }
            let _ = last;
            m
        })
        .collect()
}

/// The kernel packages of one build, ready to be pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedKernel {
    /// ABI string, e.g. `6.1.0-47` or `7.2.13+deb14`.
    pub abi: String,
    pub version: String,
    pub files: Vec<LockedFile>,
}

/// Picks the newest real (non-meta, signed) image of `src.series` in the index
/// (an index of `arch`: the package names end in its Debian name).
///
/// From 7.x Debian splits the kernel into `linux-binary-*` (vmlinuz) and
/// `linux-modules-*`, with `linux-image-*` a meta-package; both shapes are handled.
pub fn resolve(index: &[Stanza], src: &ArchiveSource, arch: Arch) -> anyhow::Result<ResolvedKernel> {
    let suffix = format!("-{}-{}", src.flavour, arch.debian());
    let by_name: HashMap<&str, &Stanza> = index.iter().filter_map(|s| Some((s.get("Package")?.as_str(), s))).collect();
    let images = index.iter().filter_map(|s| {
        let abi = s.get("Package")?.strip_prefix("linux-image-")?.strip_suffix(&suffix)?;
        // Unsigned twins, meta-packages without a version in the name, and
        // versioned meta-packages (`linux-image-6.12-cloud-amd64` depends on the
        // real image) are not the kernel.
        let meta = s.get("Depends").is_some_and(|d| d.contains("linux-image-"));
        (!abi.contains("unsigned") && abi.starts_with(|c: char| c.is_ascii_digit()) && !meta).then_some((abi, s))
    });
    let (abi, image) = newest_in_series(images, src.series, || {
        format!("no linux-image-{}*{suffix} package in suite {}", src.series, src.suite)
    })?;
    let version = image["Version"].clone();
    let mut files = Vec::new();
    let binary = format!("linux-binary-{abi}{suffix}");
    if let Some(bin) = by_name.get(binary.as_str()) {
        files.push(locked(bin)?);
        let modules = format!("linux-modules-{abi}{suffix}");
        if let Some(m) = by_name.get(modules.as_str()) {
            files.push(locked(m)?);
        }
    } else {
        files.push(locked(image)?);
    }
    Ok(ResolvedKernel { abi: abi.to_string(), version, files })
}

/// The newest (by `Version`) of the `(abi, stanza)` images whose abi is of
/// `series`; else the error `missing` says, with the nearest abis there are.
pub(crate) fn newest_in_series<'a>(
    images: impl IntoIterator<Item = (&'a str, &'a Stanza)>,
    series: &str,
    missing: impl FnOnce() -> String,
) -> anyhow::Result<(&'a str, &'a Stanza)> {
    let mut best: Option<(&str, &Stanza)> = None;
    let mut have = Vec::new();
    for (abi, s) in images {
        if !abi_in_series(abi, series) {
            have.push(abi);
        } else if best.is_none_or(|(_, b)| compare_versions(&s["Version"], &b["Version"]) == Ordering::Greater) {
            best = Some((abi, s));
        }
    }
    best.with_context(|| format!("{}{}", missing(), crate::images::nearest::said(series, have)))
}

/// Where a plain package of `suite`'s release is found: the suite itself, then
/// its release's main suite (`bookworm-security` -> `bookworm`; `experimental`,
/// which holds few packages, -> `sid`).
pub fn package_suites(suite: &str) -> Vec<String> {
    let base = match suite.split('-').next().unwrap_or(suite) {
        "experimental" => "sid",
        b => b,
    };
    let mut v = vec![suite.to_string()];
    if base != suite {
        v.push(base.to_string());
    }
    v
}

/// The newest build of a plain package (the static busybox of a foreign
/// architecture's guest root).
pub fn resolve_package(index: &[Stanza], name: &str, suite: &str) -> anyhow::Result<LockedFile> {
    let newest = index
        .iter()
        .filter(|s| s.get("Package").is_some_and(|p| p == name))
        .max_by(|a, b| compare_versions(&a["Version"], &b["Version"]));
    locked(newest.with_context(|| format!("no package {name} in suite {suite}"))?)
}

pub(crate) fn locked(s: &Stanza) -> anyhow::Result<LockedFile> {
    let get = |k: &str| s.get(k).with_context(|| format!("package stanza without {k}"));
    Ok(LockedFile {
        package: get("Package")?.clone(),
        version: get("Version")?.clone(),
        path: get("Filename")?.clone(),
        size: get("Size")?.parse().context("Size")?,
        sha256: get("SHA256")?.clone(),
    })
}

/// `6.1` matches `6.1.0-47` but not `6.12.117+deb12`; `7.3` matches `7.3`.
fn abi_in_series(abi: &str, series: &str) -> bool {
    match abi.strip_prefix(series) {
        Some(rest) => rest.is_empty() || rest.starts_with(['.', '-', '+', '~']) && !rest.starts_with(".0-0."),
        None => false,
    }
}

/// Debian version ordering (epoch, upstream, revision; `~` sorts before everything).
///
/// Written here rather than pulled in: it is one well-specified function (deb-version(7))
/// and the crates that offer it bring a whole packaging toolkit with them.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) => (e.parse().unwrap_or(0), r),
            None => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((u, r)) => (epoch, u, r),
            None => (epoch, rest, ""),
        }
    }
    fn order(c: Option<u8>) -> i32 {
        match c {
            None => 0,
            Some(b'~') => -1,
            Some(c) if c.is_ascii_alphabetic() => c as i32,
            Some(c) => c as i32 + 256,
        }
    }
    fn part(mut a: &[u8], mut b: &[u8]) -> Ordering {
        while !a.is_empty() || !b.is_empty() {
            // Non-digit prefix, compared with the modified ASCII order.
            loop {
                let ca = a.first().copied().filter(|c| !c.is_ascii_digit());
                let cb = b.first().copied().filter(|c| !c.is_ascii_digit());
                if ca.is_none() && cb.is_none() {
                    break;
                }
                match order(ca).cmp(&order(cb)) {
                    Ordering::Equal => {
                        a = &a[1..];
                        b = &b[1..];
                    }
                    o => return o,
                }
            }
            let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
            let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
            let na: u128 = std::str::from_utf8(&a[..da]).unwrap().parse().unwrap_or(0);
            let nb: u128 = std::str::from_utf8(&b[..db]).unwrap().parse().unwrap_or(0);
            match na.cmp(&nb) {
                Ordering::Equal => {
                    a = &a[da..];
                    b = &b[db..];
                }
                o => return o,
            }
        }
        Ordering::Equal
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb).then_with(|| part(ua.as_bytes(), ub.as_bytes())).then_with(|| part(ra.as_bytes(), rb.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_version_order() {
        assert_eq!(compare_versions("6.1.170-1", "6.1.99-1"), Ordering::Greater);
        assert_eq!(compare_versions("7.3~rc7-1~exp1", "7.3-1"), Ordering::Less);
        assert_eq!(compare_versions("1:1.0", "2.0"), Ordering::Greater);
        assert_eq!(compare_versions("5.10.262-1", "5.10.262-1"), Ordering::Equal);
        assert_eq!(compare_versions("6.12.90-1~deb12u1", "6.12.90-1"), Ordering::Less);
        assert_eq!(compare_versions("1.0a", "1.0"), Ordering::Greater);
    }

    #[test]
    fn series_matching() {
        assert!(abi_in_series("6.1.0-47", "6.1"));
        assert!(!abi_in_series("6.12.117+deb12", "6.1"));
        assert!(abi_in_series("6.12.117+deb12", "6.12"));
        assert!(abi_in_series("7.3", "7.3"));
        assert!(!abi_in_series("6.1.0-0.deb11.52", "6.1"), "bullseye backports are not 6.1 proper");
    }

    const INDEX: &str = "Package: linux-image-6.12-cloud-amd64\nVersion: 6.12.117-1~deb12u1\nDepends: linux-image-6.12.117+deb12-cloud-amd64\nFilename: pool/meta.deb\nSize: 1\nSHA256: aa\n\n\
Package: linux-image-6.12.117+deb12-cloud-amd64\nVersion: 6.12.117-1~deb12u1\nFilename: pool/a.deb\nSize: 10\nSHA256: bb\n\n\
Package: linux-image-6.12.115+deb12-cloud-amd64\nVersion: 6.12.115-1~deb12u1\nFilename: pool/old.deb\nSize: 10\nSHA256: cc\n\n\
Package: linux-image-6.12.117+deb12-cloud-amd64-unsigned\nVersion: 6.12.117-1~deb12u1\nFilename: pool/u.deb\nSize: 10\nSHA256: dd\n\n\
Package: linux-image-7.3-cloud-amd64\nVersion: 7.3~rc7-1~exp1\nDepends: linux-base-7.3-cloud-amd64, linux-binary-7.3-cloud-amd64 (= 7.3~rc7-1~exp1)\nFilename: pool/i.deb\nSize: 2\nSHA256: ee\n\n\
Package: linux-binary-7.3-cloud-amd64\nVersion: 7.3~rc7-1~exp1\nFilename: pool/b.deb\nSize: 3\nSHA256: ff\n\n\
Package: linux-modules-7.3-cloud-amd64\nVersion: 7.3~rc7-1~exp1\nFilename: pool/m.deb\nSize: 4\nSHA256: 11\n";

    #[test]
    fn resolves_newest_real_image_and_split_packages() {
        let idx = parse_index(INDEX);
        let src = |series: &'static str| ArchiveSource {
            origin: crate::config::Origin::Debian,
            suite: "x",
            series,
            flavour: "cloud",
        };
        let r = resolve(&idx, &src("6.12"), Arch::X86_64).unwrap();
        assert_eq!(r.abi, "6.12.117+deb12");
        assert_eq!(r.files.len(), 1);
        assert_eq!(r.files[0].path, "pool/a.deb");
        let r = resolve(&idx, &src("7.3"), Arch::X86_64).unwrap();
        let names: Vec<_> = r.files.iter().map(|f| f.package.as_str()).collect();
        assert_eq!(names, ["linux-binary-7.3-cloud-amd64", "linux-modules-7.3-cloud-amd64"]);
        let e = resolve(&idx, &src("5.10"), Arch::X86_64).unwrap_err().to_string();
        assert!(
            e.contains("no linux-image-5.10") && e.contains("nearest there: 6.12.115+deb12, 6.12.117+deb12, 7.3"),
            "{e}"
        );
        // The arm64 packages of an arm64 index; an amd64 index has none.
        let arm = parse_index(&INDEX.replace("amd64", "arm64"));
        let r = resolve(&arm, &src("6.12"), Arch::Arm64).unwrap();
        assert_eq!(r.files[0].package, "linux-image-6.12.117+deb12-cloud-arm64");
        let e = resolve(&idx, &src("6.12"), Arch::Arm64).unwrap_err().to_string();
        assert!(e.contains("no linux-image-6.12*-cloud-arm64 package in suite x"), "{e}");
        let bb = "Package: busybox-static\nVersion: 1:1.35.0-4\nFilename: pool/b1.deb\nSize: 5\nSHA256: 01\n\n\
Package: busybox-static\nVersion: 1:1.35.0-4+deb12u1\nFilename: pool/b2.deb\nSize: 5\nSHA256: 02\n";
        assert_eq!(resolve_package(&parse_index(bb), "busybox-static", "x").unwrap().path, "pool/b2.deb");
        assert!(resolve_package(&idx, "busybox-static", "x").is_err());
        assert_eq!(package_suites("bookworm-security"), ["bookworm-security", "bookworm"]);
        assert_eq!(package_suites("experimental"), ["experimental", "sid"]);
        assert_eq!(package_suites("sid"), ["sid"]);
    }
}
