//! yum/dnf repositories (RHEL and its rebuilds, CentOS Stream, Fedora, Amazon
//! Linux): `repodata/repomd.xml` names the primary metadata and its sha256; the
//! primary metadata lists every package with its name, architecture,
//! epoch:version-release, sha256, size and location. A kernel is the newest
//! package of the asked name and architecture whose version-release matches the
//! asked version, pinned by the sha256 the metadata gives; its payload (cpio,
//! compressed with gzip, xz or zstd) is read by the `rpm` crate.
use std::{cmp::Ordering, io::Read as _, path::Path};

use anyhow::{bail, Context as _};
use quick_xml::{events::Event, Reader};

use km_protocol::Arch;

use crate::{
    config::ArchiveSource,
    images::{debian::ResolvedKernel, fetch, lock::LockedFile, Extracted},
};

/// RPM's name of an architecture.
pub fn arch_name(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "x86_64",
        Arch::Arm64 => "aarch64",
    }
}

/// One package of the primary metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Package {
    pub name: String,
    pub arch: String,
    pub epoch: String,
    pub ver: String,
    pub rel: String,
    /// (type, hex digest)
    pub checksum: (String, String),
    pub size: u64,
    pub href: String,
}

impl Package {
    /// `ver-rel` (`5.14.0-503.14.1.el9_5`).
    pub fn ver_rel(&self) -> String {
        format!("{}-{}", self.ver, self.rel)
    }

    /// `epoch:ver-rel` as RPM compares it (epoch 0 left out).
    fn evr(&self) -> String {
        match self.epoch.as_str() {
            "" | "0" => self.ver_rel(),
            e => format!("{e}:{}", self.ver_rel()),
        }
    }
}

/// The attribute `name` of an element.
fn attr(e: &quick_xml::events::BytesStart, name: &[u8]) -> anyhow::Result<Option<String>> {
    for a in e.attributes() {
        let a = a?;
        if a.key.local_name().as_ref() == name {
            return Ok(Some(a.normalized_value(quick_xml::XmlVersion::Implicit1_0)?.into_owned()));
        }
    }
    Ok(None)
}

/// The primary metadata's location (relative to the repository) and sha256,
/// from `repomd.xml`.
pub fn primary_location(repomd: &str) -> anyhow::Result<(String, Option<String>)> {
    let mut r = Reader::from_str(repomd);
    let (mut in_primary, mut in_checksum, mut sha_type) = (false, false, None::<String>);
    let (mut href, mut sha) = (None, None);
    loop {
        match r.read_event()? {
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == b"data" => {
                in_primary = attr(&e, b"type")?.as_deref() == Some("primary");
            }
            Event::Start(e) | Event::Empty(e) if in_primary && e.local_name().as_ref() == b"location" => {
                href = attr(&e, b"href")?;
            }
            Event::Start(e) if in_primary && e.local_name().as_ref() == b"checksum" => {
                in_checksum = true;
                sha_type = attr(&e, b"type")?;
            }
            Event::Text(t) if in_checksum && sha_type.as_deref() == Some("sha256") => {
                sha = Some(t.decode()?.trim().to_lowercase());
            }
            Event::End(e) if e.local_name().as_ref() == b"checksum" => in_checksum = false,
            Event::End(e) if e.local_name().as_ref() == b"data" => in_primary = false,
            Event::Eof => break,
            _ => {}
        }
    }
    Ok((href.context("repomd.xml names no primary metadata (<data type=\"primary\">)")?, sha))
}

/// Every package of the primary metadata (`primary.xml`, decompressed).
pub fn parse_primary(xml: &str) -> anyhow::Result<Vec<Package>> {
    let mut r = Reader::from_str(xml);
    let mut out = Vec::new();
    let mut cur: Option<Package> = None;
    // The element whose text is being read (name, arch, checksum).
    let mut text_of: Option<Vec<u8>> = None;
    loop {
        match r.read_event()? {
            Event::Start(e) if e.local_name().as_ref() == b"package" => cur = Some(Package::default()),
            Event::End(e) if e.local_name().as_ref() == b"package" => out.extend(cur.take()),
            Event::Start(e) | Event::Empty(e) if cur.is_some() => {
                let p = cur.as_mut().expect("checked");
                match e.local_name().as_ref() {
                    n @ (b"name" | b"arch") => text_of = Some(n.to_vec()),
                    b"checksum" => {
                        p.checksum.0 = attr(&e, b"type")?.unwrap_or_default();
                        text_of = Some(b"checksum".to_vec());
                    }
                    b"version" => {
                        p.epoch = attr(&e, b"epoch")?.unwrap_or_default();
                        p.ver = attr(&e, b"ver")?.unwrap_or_default();
                        p.rel = attr(&e, b"rel")?.unwrap_or_default();
                    }
                    b"size" => p.size = attr(&e, b"package")?.and_then(|s| s.parse().ok()).unwrap_or(0),
                    b"location" => p.href = attr(&e, b"href")?.unwrap_or_default(),
                    _ => {}
                }
            }
            Event::Text(t) => {
                if let (Some(p), Some(field)) = (cur.as_mut(), text_of.as_deref()) {
                    let s = t.decode()?.trim().to_string();
                    match field {
                        b"name" => p.name = s,
                        b"arch" => p.arch = s,
                        _ => p.checksum.1 = s.to_lowercase(),
                    }
                }
            }
            Event::End(_) => text_of = None,
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

/// Whether `ver-rel` is the version `pattern` asks for: a glob (`4.18.0-553.*`)
/// when it has a `*` or `?`, else that version or a longer one of it (`5.14`
/// matches `5.14.0-503.el9`, `4.18.0-553` matches `4.18.0-553.5.1.el8_10`).
pub fn version_matches(pattern: &str, ver_rel: &str) -> bool {
    if pattern.contains(['*', '?']) {
        return crate::glob::matches(pattern, ver_rel);
    }
    ver_rel == pattern
        || ver_rel.strip_prefix(pattern).is_some_and(|rest| rest.starts_with('.') || rest.starts_with('-'))
}

/// The newest package `src.flavour` (the package name) for `arch` whose version
/// matches `src.series`.
pub fn pick<'a>(packages: &'a [Package], src: &ArchiveSource, arch: Arch) -> anyhow::Result<&'a Package> {
    let named: Vec<&Package> = packages.iter().filter(|p| p.name == src.flavour && p.arch == arch_name(arch)).collect();
    let best = named
        .iter()
        .filter(|p| version_matches(src.series, &p.ver_rel()))
        .max_by(|a, b| rpm_version::rpm_evr_compare(&a.evr(), &b.evr()).then(Ordering::Equal));
    match best {
        Some(p) => Ok(p),
        None if named.is_empty() => {
            bail!("repository {} has no package {} for {}", src.suite, src.flavour, arch_name(arch))
        }
        None => {
            let have: Vec<String> = named.iter().map(|p| p.ver_rel()).collect();
            bail!(
                "repository {} has no {} {}{}",
                src.suite,
                src.flavour,
                src.series,
                crate::images::nearest::said(src.series, have.iter().map(String::as_str))
            )
        }
    }
}

/// Decompresses metadata by its file name's extension.
fn decompress(href: &str, data: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    if href.ends_with(".gz") {
        flate2::read::GzDecoder::new(&data[..]).read_to_end(&mut out)?;
    } else if href.ends_with(".xz") {
        liblzma::read::XzDecoder::new(&data[..]).read_to_end(&mut out)?;
    } else if href.ends_with(".zst") {
        zstd::stream::read::Decoder::new(&data[..])?.read_to_end(&mut out)?;
    } else if href.ends_with(".xml") {
        out = data;
    } else {
        bail!("{href}: metadata compressed in a way this harness does not read (gz, xz, zst)")
    }
    Ok(out)
}

/// Resolves `src` against the repository at `base`.
pub fn resolve(base: &str, src: &ArchiveSource, arch: Arch) -> anyhow::Result<ResolvedKernel> {
    use sha2::Digest as _;
    let http = fetch::http();
    let setting = || format!("(repository {} is set by {})", src.suite, crate::images::mirror::setting_of(src.origin));
    let repomd_url = format!("{base}/repodata/repomd.xml");
    let repomd = http.bytes(&repomd_url).with_context(|| format!("reading {repomd_url} {}", setting()))?;
    let (href, sha) = primary_location(&String::from_utf8_lossy(&repomd)).with_context(|| repomd_url.clone())?;
    let url = format!("{base}/{href}");
    let data = http.bytes(&url).with_context(|| format!("reading {url}"))?;
    if let Some(want) = sha {
        let got = hex::encode(sha2::Sha256::digest(&data));
        anyhow::ensure!(got == want, "{url}: sha256 {got}, but repomd.xml says {want}");
    }
    let xml = decompress(&href, data)?;
    let packages = parse_primary(&String::from_utf8_lossy(&xml)).with_context(|| url.clone())?;
    let p = pick(&packages, src, arch)?;
    anyhow::ensure!(
        p.checksum.0 == "sha256" && p.checksum.1.len() == 64,
        "{} {}: the repository gives a {} checksum; only sha256 is accepted",
        p.name,
        p.ver_rel(),
        p.checksum.0
    );
    let file = LockedFile {
        package: p.name.clone(),
        version: p.evr(),
        path: p.href.clone(),
        size: p.size,
        sha256: p.checksum.1.clone(),
    };
    Ok(ResolvedKernel { abi: format!("{}.{}", p.ver_rel(), p.arch), version: p.evr(), files: vec![file] })
}

/// The kernel of an RPM package: (release, vmlinuz, config). RHEL 8+ and Fedora
/// keep them as `lib/modules/<release>/{vmlinuz,config}`; older layouts (Amazon
/// Linux 2, CentOS 7) as `boot/vmlinuz-<release>` and `boot/config-<release>`.
pub fn kernel_from_rpm(path: &Path) -> anyhow::Result<Extracted> {
    let pkg = rpm::Package::open(path).with_context(|| format!("reading {}", path.display()))?;
    let (mut image, mut config) = (None, None);
    for f in pkg.files().with_context(|| format!("{}: payload", path.display()))? {
        let f = f.with_context(|| format!("{}: payload", path.display()))?;
        let p = f.metadata.path();
        let p = p.to_string_lossy();
        let p = p.trim_start_matches("./").trim_start_matches('/');
        let Some(content) = f.content() else { continue };
        let release = |prefix: &str, file: &str| {
            p.strip_prefix(prefix).and_then(|r| r.strip_suffix(file)).filter(|r| !r.contains('/')).map(str::to_string)
        };
        if let Some(r) = release("lib/modules/", "/vmlinuz").or_else(|| release("boot/vmlinuz-", "")) {
            image = Some((r, content.to_vec()));
        } else if release("lib/modules/", "/config").or_else(|| release("boot/config-", "")).is_some() {
            config = Some(content.to_vec());
        }
    }
    let (release, vmlinuz) = image.with_context(|| {
        format!("{}: no kernel image (lib/modules/*/vmlinuz or boot/vmlinuz-*) inside", path.display())
    })?;
    Ok(Extracted { release, vmlinuz, config })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Origin;

    const REPOMD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>1</revision>
  <data type="filelists"><checksum type="sha256">aaaa</checksum><location href="repodata/f-filelists.xml.gz"/></data>
  <data type="primary">
    <checksum type="sha256">ABCD</checksum>
    <open-checksum type="sha256">ffff</open-checksum>
    <location href="repodata/p-primary.xml.zst"/>
  </data>
</repomd>"#;

    fn pkg(name: &str, arch: &str, epoch: &str, ver: &str, rel: &str) -> String {
        format!(
            r#"<package type="rpm"><name>{name}</name><arch>{arch}</arch><version epoch="{epoch}" ver="{ver}" rel="{rel}"/>
<checksum type="sha256" pkgid="YES">{}</checksum><summary>k</summary><size package="42" installed="1" archive="1"/>
<location href="Packages/{name}-{ver}-{rel}.{arch}.rpm"/><format><rpm:license>GPLv2</rpm:license></format></package>"#,
            "0".repeat(63) + &ver.len().to_string()
        )
    }

    fn primary() -> String {
        format!(
            r#"<?xml version="1.0"?><metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="5">{}{}{}{}{}</metadata>"#,
            pkg("kernel-core", "x86_64", "0", "5.14.0", "427.13.1.el9_4"),
            pkg("kernel-core", "x86_64", "0", "5.14.0", "503.14.1.el9_5"),
            pkg("kernel-core", "x86_64", "0", "5.14.0", "70.13.1.el9_0"),
            pkg("kernel-core", "aarch64", "0", "5.14.0", "611.el9"),
            pkg("kernel", "x86_64", "0", "5.14.0", "611.el9"),
        )
    }

    fn src(series: &'static str) -> ArchiveSource<'static> {
        ArchiveSource { origin: Origin::Rpm, suite: "alma9", series, flavour: "kernel-core" }
    }

    #[test]
    fn repomd_names_the_primary() {
        assert_eq!(
            primary_location(REPOMD).unwrap(),
            ("repodata/p-primary.xml.zst".to_string(), Some("abcd".to_string()))
        );
        assert!(primary_location("<repomd/>").is_err());
    }

    #[test]
    fn newest_matching_build_by_rpm_order() {
        let all = parse_primary(&primary()).unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(all[0].size, 42);
        assert_eq!(all[0].href, "Packages/kernel-core-5.14.0-427.13.1.el9_4.x86_64.rpm");
        // 503 > 427 > 70 as RPM orders them (not as strings).
        assert_eq!(pick(&all, &src("5.14"), Arch::X86_64).unwrap().rel, "503.14.1.el9_5");
        assert_eq!(pick(&all, &src("5.14.0-427"), Arch::X86_64).unwrap().rel, "427.13.1.el9_4");
        assert_eq!(pick(&all, &src("5.14.0-*.el9_0"), Arch::X86_64).unwrap().rel, "70.13.1.el9_0");
        assert_eq!(pick(&all, &src("5.14"), Arch::Arm64).unwrap().rel, "611.el9");
        let e = pick(&all, &src("5.15"), Arch::X86_64).unwrap_err().to_string();
        assert!(e.contains("no kernel-core 5.15") && e.contains("nearest there: 5.14.0-"), "{e}");
        let e = pick(&all, &ArchiveSource { flavour: "kernel-rt", ..src("5.14") }, Arch::X86_64).unwrap_err();
        assert!(e.to_string().contains("no package kernel-rt for x86_64"), "{e}");
    }

    #[test]
    fn version_patterns() {
        assert!(version_matches("5.14", "5.14.0-503.el9"));
        assert!(!version_matches("5.1", "5.14.0-503.el9"));
        assert!(version_matches("4.18.0-553", "4.18.0-553.5.1.el8_10"));
        assert!(!version_matches("4.18.0-55", "4.18.0-553.5.1.el8_10"));
        assert!(version_matches("6.1.*.amzn2023", "6.1.115-126.197.amzn2023"));
    }
}
