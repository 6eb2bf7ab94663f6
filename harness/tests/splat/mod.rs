//! Builds `km_splat.ko` (source in vm-images/splat) for a pinned Debian kernel, so the
//! robustness tests can make a real guest kernel WARN, BUG or oops.
//!
//! Why a module: the Debian cloud kernels have no lkdtm and nothing in userspace
//! makes them oops (sysrq-c panics directly). A module must match its kernel's
//! ABI exactly (vermagic, symbol CRCs), so it is built against Debian's own
//! headers for that build: `linux-headers-<abi>-<flavour>-amd64`,
//! `linux-headers-<abi>-common` and `linux-kbuild-<series>`, of the same version
//! as the pinned image. They are resolved in the suite's `Packages` index and
//! downloaded sha256-verified into the harness cache (`debs/<sha256>.deb`, like
//! the kernels), unpacked with `dpkg-deb -x` into one scratch root (their relative
//! symlinks then resolve) and built with the compiler the headers name (gcc-12
//! for bookworm; `cargo xtask setup` installs it). No root is needed.
//!
//! The result is cached as `modules/km_splat-<key>.ko`, the key hashing the
//! kernel's pinned version and the sources in vm-images/splat: a rerun builds and
//! downloads nothing (not even the index).
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use kernel_matrix::images::{fetch, lock::LockedKernel, mirror::Mirrors};
use sha2::{Digest as _, Sha256};

const SOURCE: &str = include_str!("../../../vm-images/splat/km_splat.c");
const KBUILD: &str = include_str!("../../../vm-images/splat/Kbuild");

/// A built module and what it cost (`None`: taken from the cache).
pub struct Built {
    pub ko: PathBuf,
    /// Index lookup + download of the three header packages.
    pub fetch: Option<Duration>,
    /// `dpkg-deb -x` + `make modules`.
    pub build: Option<Duration>,
}

/// `km_splat.ko` for the kernel `locked` pins, from `cache` (built on first use;
/// one build at a time per process, concurrent processes each write atomically).
pub fn km_splat_ko(cache: &Path, locked: &LockedKernel) -> anyhow::Result<Built> {
    static ONE: Mutex<()> = Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let image = &locked.files[0];
    let key = {
        let mut h = Sha256::new();
        for part in [&image.sha256, &locked.abi, &image.version, SOURCE, KBUILD] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())[..16].to_string()
    };
    let dir = cache.join("modules");
    let ko = dir.join(format!("km_splat-{key}.ko"));
    if ko.exists() {
        return Ok(Built { ko, fetch: None, build: None });
    }
    std::fs::create_dir_all(&dir)?;
    kernel_matrix::images::cache_gc::remove_stale(&dir);

    let t = Instant::now();
    let debs = fetch_headers(cache, locked)?;
    let fetch_took = t.elapsed();

    let t = Instant::now();
    let scratch = fetch::tmp_path(&dir.join(format!("build-{key}")));
    let result = build_in(&scratch, locked, &debs, &ko);
    let _ = std::fs::remove_dir_all(&scratch);
    result?;
    Ok(Built { ko, fetch: Some(fetch_took), build: Some(t.elapsed()) })
}

/// The header packages of exactly the pinned build, verified, in `cache/debs`.
fn fetch_headers(cache: &Path, locked: &LockedKernel) -> anyhow::Result<Vec<PathBuf>> {
    let image = &locked.files[0];
    let mirrors = Mirrors::discover(None)?;
    let base = mirrors.for_suite(&locked.suite)?;
    let index = kernel_matrix::images::debian::fetch_index(base, &locked.suite, locked.arch())?;
    let flavour_pkg = format!("linux-headers-{}-{}-amd64", locked.abi, locked.flavour);
    let wanted = [
        flavour_pkg.clone(),
        format!("linux-headers-{}-common", locked.abi),
        format!("linux-kbuild-{}", locked.series),
    ];
    let mut out = Vec::new();
    for name in &wanted {
        // linux-kbuild comes from the same source package, so the same version.
        let Some(s) = index.iter().find(|s| s.get("Package") == Some(name) && s.get("Version") == Some(&image.version))
        else {
            bail!(
                "{name} {} is not in suite {}: the headers for {} are needed to build km_splat.ko",
                image.version,
                locked.suite,
                image.package
            )
        };
        let field = |k: &str| s.get(k).with_context(|| format!("{name}: no {k} in the index"));
        let url = format!("{base}/{}", field("Filename")?);
        let deb = kernel_matrix::images::fetch_deb(cache, &url, name, field("SHA256")?, |_| {})
            .with_context(|| format!("downloading {name} {}", image.version))?;
        out.push(deb);
    }
    Ok(out)
}

/// Unpacks the headers under `root`, builds the module there, copies it to `ko`.
fn build_in(root: &Path, locked: &LockedKernel, debs: &[PathBuf], ko: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(root)?;
    for deb in debs {
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root))?;
    }
    let headers = root.join(format!("usr/src/linux-headers-{}-{}-amd64", locked.abi, locked.flavour));
    // Its Makefile is one line, `include /usr/src/linux-headers-<abi>-common/Makefile`:
    // point it into the scratch root.
    let makefile = headers.join("Makefile");
    let text = std::fs::read_to_string(&makefile).with_context(|| format!("reading {}", makefile.display()))?;
    std::fs::write(&makefile, text.replace("include /usr/src/", &format!("include {}/usr/src/", root.display())))?;
    let src = root.join("km_splat");
    std::fs::create_dir_all(&src)?;
    std::fs::write(src.join("km_splat.c"), SOURCE)?;
    std::fs::write(src.join("Kbuild"), KBUILD)?;
    run(Command::new("make")
        .arg("-C")
        .arg(&headers)
        .arg(format!("M={}", src.display()))
        .arg("modules")
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL"))
    .context("building km_splat.ko (needs make and the compiler the kernel was built with, gcc-12 for bookworm: `cargo xtask setup`)")?;
    fetch::write_atomic(ko, &std::fs::read(src.join("km_splat.ko"))?)
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
