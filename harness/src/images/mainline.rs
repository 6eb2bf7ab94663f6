//! Ubuntu's mainline kernel builds: a directory (an HTTP index page) of
//! `v<version>/` directories, each holding per architecture `<arch>/CHECKSUMS`
//! (older builds: one `CHECKSUMS` beside the packages) and the `.deb` packages
//! it lists: `linux-image-unsigned-<abi>-<flavour>_<version>_<arch>.deb` and
//! `linux-modules-<abi>-<flavour>_<version>_<arch>.deb`. A build is pinned by the
//! sha256 its `CHECKSUMS` publishes.
use anyhow::{bail, Context as _};

use km_protocol::Arch;

use crate::{
    config::ArchiveSource,
    images::{debian::ResolvedKernel, fetch, lock::LockedFile},
};

/// The versions an index page links to (`<a href="v6.6.60/">`), without the `v`.
pub fn parse_listing(html: &str) -> Vec<String> {
    let mut out: Vec<String> = html
        .split("href=\"")
        .skip(1)
        .filter_map(|rest| {
            let target = rest.split('"').next()?;
            let dir = target.trim_start_matches("./").strip_suffix('/')?;
            let v = dir.strip_prefix('v')?;
            v.starts_with(|c: char| c.is_ascii_digit()).then(|| v.to_string())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Orders upstream versions: `6.6.9` < `6.6.60`, `6.13-rc3` < `6.13`.
fn order(a: &str, b: &str) -> std::cmp::Ordering {
    let tilde = |v: &str| v.replace("-rc", "~rc");
    crate::images::debian::compare_versions(&tilde(a), &tilde(b))
}

/// The build `series` names among `versions`: itself when listed, else the newest
/// release of that series (`6.6` -> `6.6.60`; release candidates only where no
/// release exists).
pub fn pick(versions: &[String], series: &str) -> anyhow::Result<String> {
    if versions.iter().any(|v| v == series) {
        return Ok(series.to_string());
    }
    let in_series =
        |v: &&String| v.strip_prefix(series).is_some_and(|rest| rest.starts_with('.') || rest.starts_with("-rc"));
    let releases = versions.iter().filter(in_series).filter(|v| !v.contains("-rc"));
    let newest = releases.max_by(|a, b| order(a, b));
    let newest = newest.or_else(|| versions.iter().filter(in_series).max_by(|a, b| order(a, b)));
    match newest {
        Some(v) => Ok(v.clone()),
        None => bail!(
            "no mainline build of {series}{}",
            crate::images::nearest::said(series, versions.iter().map(String::as_str))
        ),
    }
}

/// The sha256 lines of a `CHECKSUMS` file (`<hex>  <file>`; its sha1 lines have
/// 40 digits and are skipped).
pub fn parse_checksums(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (hash, file) = l.split_once(char::is_whitespace)?;
            let file = file.trim().trim_start_matches('*');
            (hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()))
                .then(|| (hash.to_lowercase(), file.into()))
        })
        .collect()
}

/// The image and modules packages of one build, from its checksums (`dir` is the
/// path of the checksums' directory under the base URL).
pub fn pick_files(
    sums: &[(String, String)],
    dir: &str,
    flavour: &str,
    arch: Arch,
) -> anyhow::Result<(String, Vec<LockedFile>)> {
    // `<package>_<version>_<arch>.deb`
    let debs: Vec<(&str, &str, &str)> = sums
        .iter()
        .filter_map(|(sha, file)| {
            let stem = file.strip_suffix(&format!("_{}.deb", arch.debian()))?;
            let (package, version) = stem.split_once('_')?;
            Some((package, version, sha.as_str()))
        })
        .collect();
    let suffix = format!("-{flavour}");
    let abi_of = |prefix: &str| {
        debs.iter().find_map(|(p, v, s)| Some((p.strip_prefix(prefix)?.strip_suffix(&suffix)?, *p, *v, *s)))
    };
    let Some((abi, package, version, sha)) = abi_of("linux-image-unsigned-").or_else(|| abi_of("linux-image-")) else {
        bail!("{dir}/CHECKSUMS lists no linux-image-*{suffix}_*_{}.deb", arch.debian())
    };
    let file = |package: &str, version: &str, sha: &str| LockedFile {
        package: package.into(),
        version: version.into(),
        path: format!("{dir}/{package}_{version}_{}.deb", arch.debian()),
        size: 0,
        sha256: sha.into(),
    };
    let mut files = vec![file(package, version, sha)];
    let modules = format!("linux-modules-{abi}{suffix}");
    if let Some((p, v, s)) = debs.iter().find(|(p, ..)| *p == modules) {
        files.push(file(p, v, s));
    }
    Ok((abi.to_string(), files))
}

/// Resolves `src` against the mainline builds at `base`: the build, its
/// checksums, the packages with their sizes (from the server, for the progress
/// display).
pub fn resolve(base: &str, src: &ArchiveSource, arch: Arch) -> anyhow::Result<ResolvedKernel> {
    let http = fetch::http();
    let index = format!("{base}/");
    let html = http.bytes(&index).with_context(|| {
        format!(
            "reading the list of mainline builds {index} (set by {})",
            crate::images::mirror::setting_of(src.origin)
        )
    })?;
    let version = pick(&parse_listing(&String::from_utf8_lossy(&html)), src.series)?;
    let mut tried = Vec::new();
    for dir in [format!("v{version}/{}", arch.debian()), format!("v{version}")] {
        let url = format!("{base}/{dir}/CHECKSUMS");
        match http.bytes(&url) {
            Ok(text) => {
                let (abi, mut files) =
                    pick_files(&parse_checksums(&String::from_utf8_lossy(&text)), &dir, src.flavour, arch)?;
                for f in &mut files {
                    f.size = http.content_length(&format!("{base}/{}", f.path)).unwrap_or(0);
                }
                return Ok(ResolvedKernel { abi, version, files });
            }
            Err(fetch::HttpError::NotFound) => tried.push(url),
            Err(e) => return Err(e).with_context(|| format!("reading {url}")),
        }
    }
    bail!("mainline build {version} has no CHECKSUMS for {arch} (tried {})", tried.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_and_pick() {
        let html = r#"<a href="../">..</a><a href="v6.6.9/">v6.6.9/</a> <a href="v6.6.60/">v6.6.60/</a>
<a href="v6.13-rc3/">x</a><a href="v6.12/">x</a><a href="daily/">daily</a><a href="v6.6.60/">again</a>"#;
        let v = parse_listing(html);
        assert_eq!(v, ["6.12", "6.13-rc3", "6.6.60", "6.6.9"]);
        assert_eq!(pick(&v, "6.6").unwrap(), "6.6.60");
        assert_eq!(pick(&v, "6.6.9").unwrap(), "6.6.9");
        assert_eq!(pick(&v, "6.13").unwrap(), "6.13-rc3", "an rc where no release exists");
        assert_eq!(
            pick(&v, "6.1").unwrap_err().to_string(),
            "no mainline build of 6.1; nearest there: 6.6.9, 6.6.60, 6.12, 6.13-rc3"
        );
        assert!(order("6.13-rc3", "6.13").is_lt());
    }

    #[test]
    fn checksums_pick_the_image_and_modules() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let text = format!(
            "# Checksums, check with the command below:\n#     shasum -c CHECKSUMS\n#\n# Checksums-Sha1:\n{}  linux-image-unsigned-6.6.60-060660-generic_6.6.60-060660.202411081836_amd64.deb\n#\n# Checksums-Sha256:\n{a}  linux-image-unsigned-6.6.60-060660-generic_6.6.60-060660.202411081836_amd64.deb\n{b}  linux-modules-6.6.60-060660-generic_6.6.60-060660.202411081836_amd64.deb\n{b}  linux-headers-6.6.60-060660_6.6.60-060660.202411081836_all.deb\n",
            "c".repeat(40)
        );
        let sums = parse_checksums(&text);
        assert_eq!(sums.len(), 3);
        let (abi, files) = pick_files(&sums, "v6.6.60/amd64", "generic", Arch::X86_64).unwrap();
        assert_eq!(abi, "6.6.60-060660");
        assert_eq!(files[0].package, "linux-image-unsigned-6.6.60-060660-generic");
        assert_eq!(files[0].sha256, a);
        assert_eq!(
            files[0].path,
            "v6.6.60/amd64/linux-image-unsigned-6.6.60-060660-generic_6.6.60-060660.202411081836_amd64.deb"
        );
        assert_eq!(files[1].package, "linux-modules-6.6.60-060660-generic");
        let e = pick_files(&sums, "v6.6.60/arm64", "generic", Arch::Arm64).unwrap_err().to_string();
        assert!(e.contains("lists no linux-image-*-generic_*_arm64.deb"), "{e}");
    }
}
