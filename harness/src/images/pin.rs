//! `lock --update`: every archive kernel of a matrix resolved to one exact build
//! (Debian's and Ubuntu's package indices, Ubuntu's mainline builds, yum/dnf
//! repositories, OCI registries) and pinned by sha256 (an OCI image also by its
//! manifest digest) in the lock beside the matrix file.
use anyhow::Context as _;

use crate::{
    config::{MatrixConfig, Origin},
    images::{
        debian,
        lock::{Lock, LockedKernel},
        mainline,
        mirror::{self, Mirrors},
        oci, rpm, ubuntu,
    },
};

/// The package index of `suite` for `arch` in `origin`'s archive, downloaded once
/// per lock run.
fn index<'a>(
    indices: &'a mut std::collections::HashMap<(Origin, String, km_protocol::Arch), Vec<debian::Stanza>>,
    mirrors: &Mirrors,
    origin: Origin,
    suite: &str,
    arch: km_protocol::Arch,
) -> anyhow::Result<&'a [debian::Stanza]> {
    let key = (origin, suite.to_string(), arch);
    if !indices.contains_key(&key) {
        eprintln!("reading the {} package index of {origin} {suite}", arch.debian());
        let base = mirrors.base(origin, suite, arch)?;
        let idx = debian::fetch_index(base, suite, arch)
            .with_context(|| format!("(the {origin} archive is set by {})", mirror::setting_of(origin)))?;
        indices.insert(key.clone(), idx);
    }
    Ok(&indices[&key])
}

/// Pins every archive kernel of `config` that the lock lacks (all of them with
/// `update`), drops entries of kernels no longer in the matrix, and saves the lock.
pub fn pin(config: &MatrixConfig, update: bool) -> anyhow::Result<()> {
    let path = Lock::path_for(&config.path);
    let mut lock = Lock::load(&path)?;
    let mirrors = Mirrors::discover(Some(config))?;
    let mut indices = std::collections::HashMap::new();
    for k in &config.kernels {
        let Some(src) = k.archive() else { continue };
        let arch = k.arch();
        if !update && lock.get(&k.name, &src, arch, &path).is_ok() {
            continue;
        }
        let mut digest = None;
        let mut resolve = || match src.origin {
            Origin::Debian => debian::resolve(index(&mut indices, &mirrors, src.origin, src.suite, arch)?, &src, arch),
            Origin::Ubuntu => ubuntu::resolve(index(&mut indices, &mirrors, src.origin, src.suite, arch)?, &src),
            Origin::UbuntuMainline => mainline::resolve(mirrors.base(src.origin, src.suite, arch)?, &src, arch),
            Origin::Rpm => rpm::resolve(mirrors.base(src.origin, src.suite, arch)?, &src, arch),
            Origin::Oci => {
                let (r, d) = oci::resolve(mirrors.base(src.origin, src.suite, arch)?, &src, arch)?;
                digest = Some(d);
                Ok(r)
            }
        };
        let r = resolve().with_context(|| format!("kernel {}", k.name))?;
        // A foreign architecture's guest root needs that architecture's static busybox.
        let mut busybox = None;
        let mut busybox_origin = None;
        if arch != km_protocol::Arch::host() {
            // Debian and Ubuntu carry busybox-static in the kernel's suite; for the
            // other sources it comes from Debian's archive, the host's release.
            let (origin, suites) = match src.origin {
                Origin::Debian | Origin::Ubuntu => (src.origin, debian::package_suites(src.suite)),
                _ => {
                    busybox_origin = Some(Origin::Debian);
                    (Origin::Debian, vec![debian_release()])
                }
            };
            let mut tried = Vec::new();
            for suite in suites {
                let idx = index(&mut indices, &mirrors, origin, &suite, arch)?;
                if let Ok(f) = debian::resolve_package(idx, "busybox-static", &suite) {
                    busybox = Some((f, suite));
                    break;
                }
                tried.push(suite);
            }
            anyhow::ensure!(
                busybox.is_some(),
                "kernel {}: no busybox-static for {arch} in {origin} {}",
                k.name,
                tried.join(" or ")
            );
        }
        let foreign = if arch == km_protocol::Arch::host() { String::new() } else { format!(", {arch}") };
        let origin = if src.origin == Origin::Debian { String::new() } else { format!(", {}", src.origin) };
        println!("{}: {} ({}{foreign}{origin})", k.name, r.abi, r.version);
        lock.kernels.insert(
            k.name.clone(),
            LockedKernel {
                origin: src.origin,
                suite: src.suite.to_string(),
                series: src.series.to_string(),
                flavour: src.flavour.to_string(),
                abi: r.abi,
                files: r.files,
                arch: (arch != km_protocol::Arch::X86_64).then_some(arch),
                busybox_suite: busybox.as_ref().map(|(_, s)| s.clone()).filter(|s| s != src.suite),
                busybox_origin,
                busybox: busybox.map(|(f, _)| f),
                digest,
            },
        );
    }
    lock.kernels.retain(|name, _| config.kernel(name).is_some_and(|k| k.archive().is_some()));
    lock.save(&path)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// The Debian release of this machine (`VERSION_CODENAME` in /etc/os-release),
/// else `stable`: where a foreign architecture's busybox comes from for kernels
/// whose source has none.
fn debian_release() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix("VERSION_CODENAME=").map(|v| v.trim_matches('"').to_string()))
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "stable".into())
}
