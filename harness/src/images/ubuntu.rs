//! Ubuntu's archive: the same `Packages` indices as Debian's (fetched and parsed by
//! [`crate::images::debian`]), with Ubuntu's kernel package names: the image is
//! `linux-image-unsigned-<abi>-<flavour>` (amd64; where only the plain
//! `linux-image-<abi>-<flavour>` exists, as on arm64, that one), with
//! `linux-modules-<abi>-<flavour>` beside it (modules and `/boot/config-*`).
use std::collections::HashMap;

use crate::{
    config::ArchiveSource,
    images::debian::{locked, newest_in_series, ResolvedKernel, Stanza},
};

/// The newest build of `src.series` in `index` (an index of one architecture:
/// Ubuntu's package names carry no architecture).
pub fn resolve(index: &[Stanza], src: &ArchiveSource) -> anyhow::Result<ResolvedKernel> {
    let suffix = format!("-{}", src.flavour);
    let by_name: HashMap<&str, &Stanza> = index.iter().filter_map(|s| Some((s.get("Package")?.as_str(), s))).collect();
    let images = index.iter().filter_map(|s| {
        let name = s.get("Package")?;
        let abi = name
            .strip_prefix("linux-image-unsigned-")
            .or_else(|| name.strip_prefix("linux-image-"))?
            .strip_suffix(&suffix)?;
        // Meta-packages (`linux-image-generic-hwe-22.04`) have no version in the name.
        abi.starts_with(|c: char| c.is_ascii_digit()).then_some((abi, s))
    });
    let (abi, newest) = newest_in_series(images, src.series, || {
        format!("no linux-image-unsigned-{}*{suffix} package in Ubuntu's suite {}", src.series, src.suite)
    })?;
    // The unsigned image where there is one (the signed one is the same kernel
    // with a signature for Secure Boot, which a VM does not need).
    let image = by_name.get(format!("linux-image-unsigned-{abi}{suffix}").as_str()).copied().unwrap_or(newest);
    let mut files = vec![locked(image)?];
    if let Some(m) = by_name.get(format!("linux-modules-{abi}{suffix}").as_str()) {
        files.push(locked(m)?);
    }
    Ok(ResolvedKernel { abi: abi.to_string(), version: image["Version"].clone(), files })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::Origin, images::debian::parse_index};

    const INDEX: &str = "Package: linux-image-generic-hwe-22.04\nVersion: 6.8.0.50.52~22.04.1\nFilename: pool/meta.deb\nSize: 1\nSHA256: aa\n\n\
Package: linux-image-5.15.0-91-generic\nVersion: 5.15.0-91.101\nFilename: pool/signed.deb\nSize: 10\nSHA256: b0\n\n\
Package: linux-image-unsigned-5.15.0-91-generic\nVersion: 5.15.0-91.101\nFilename: pool/unsigned.deb\nSize: 10\nSHA256: b1\n\n\
Package: linux-modules-5.15.0-91-generic\nVersion: 5.15.0-91.101\nFilename: pool/modules.deb\nSize: 20\nSHA256: b2\n\n\
Package: linux-image-unsigned-5.15.0-89-generic\nVersion: 5.15.0-89.99\nFilename: pool/old.deb\nSize: 10\nSHA256: b3\n\n\
Package: linux-image-unsigned-5.15.0-91-lowlatency\nVersion: 5.15.0-91.101\nFilename: pool/ll.deb\nSize: 10\nSHA256: b4\n\n\
Package: linux-image-unsigned-6.8.0-50-generic\nVersion: 6.8.0-50.51~22.04.1\nFilename: pool/hwe.deb\nSize: 10\nSHA256: c1\n\n\
Package: linux-image-6.5.0-1-generic\nVersion: 6.5.0-1.1\nFilename: pool/only-signed.deb\nSize: 10\nSHA256: c2\n";

    fn src(series: &'static str) -> ArchiveSource<'static> {
        ArchiveSource { origin: Origin::Ubuntu, suite: "jammy-updates", series, flavour: "generic" }
    }

    #[test]
    fn newest_unsigned_image_with_its_modules() {
        let idx = parse_index(INDEX);
        let r = resolve(&idx, &src("5.15")).unwrap();
        assert_eq!(r.abi, "5.15.0-91");
        assert_eq!(r.version, "5.15.0-91.101");
        let paths: Vec<_> = r.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["pool/unsigned.deb", "pool/modules.deb"]);
        // HWE: a newer series in the same suite.
        assert_eq!(resolve(&idx, &src("6.8")).unwrap().files[0].path, "pool/hwe.deb");
        // Only a plain image: that one.
        assert_eq!(resolve(&idx, &src("6.5")).unwrap().files[0].path, "pool/only-signed.deb");
        let e = resolve(&idx, &src("5.4")).unwrap_err().to_string();
        assert!(e.contains("no linux-image-unsigned-5.4*-generic package in Ubuntu's suite jammy-updates"), "{e}");
        assert!(e.contains("nearest there: 5.15.0-89, 5.15.0-91, 6.5.0-1, 6.8.0-50"), "{e}");
    }
}
