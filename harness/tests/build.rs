//! `build:` for real: Debian's kernel source (linux-source-6.1) built by the
//! harness with vm-images/bpf.config (kernels-build.yaml), booted beside Debian's
//! own 6.1 build: every default check and every feature probe gives the same
//! verdict on both, and a second look at the cache builds nothing.
use std::{path::PathBuf, sync::Arc, time::Instant};

use kernel_matrix::{
    config::{BuildSource, KernelSource, MatrixConfig},
    run::{Matrix, Options},
};

mod serve;
mod twins;

#[test]
fn a_kernel_built_from_debian_source_passes_what_debians_build_passes() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = MatrixConfig::load(&root.join("kernels-build.yaml")).unwrap();
    let run_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("build-runs");
    let m = Arc::new(Matrix::new(config, Options::from_env(run_dir).unwrap()).unwrap());
    let spec = m.config.kernel("6.1-built").unwrap().clone();
    let KernelSource::Build(b) = spec.source() else { panic!("6.1-built is a build: kernel") };
    let cold =
        kernel_matrix::images::build::cached(&m.opts.cache_dir, b, |p| m.config.resolve_path(p)).unwrap().is_none();
    let t = Instant::now();
    let image = m.image(&spec).unwrap().expect("an image");
    eprintln!(
        "6.1-built: {} in {:.0} s ({})",
        image.release,
        t.elapsed().as_secs_f64(),
        if cold { "cold build" } else { "cached" }
    );
    assert!(image.release.starts_with("6.1."), "{}", image.release);
    assert!(image.vmlinux_boots, "bpf.config has PVH: the vmlinux boots directly");
    let t = Instant::now();
    let again = kernel_matrix::images::build::cached(&m.opts.cache_dir, b, |p| m.config.resolve_path(p)).unwrap();
    assert!(again.is_some() && t.elapsed().as_secs() < 30, "the second look finds it in the cache");

    // The same tarball from a URL: the same build (keyed by its sha256), found in
    // the cache without a download; the download itself is verified.
    let tarball = m.config.resolve_path(b.source.as_deref().unwrap());
    let sha = kernel_matrix::images::fetch::sha256_file(&tarball).unwrap();
    let server = serve::Server::start(tarball.parent().unwrap());
    let url = format!("{}/{}", server.base, tarball.file_name().unwrap().to_string_lossy());
    let from_url = BuildSource { source: Some(url.clone().into()), sha256: Some(sha.clone()), ..b.clone() };
    let found = kernel_matrix::images::build::cached(&m.opts.cache_dir, &from_url, |p| m.config.resolve_path(p));
    assert!(found.unwrap().is_some(), "a URL source of the same tarball shares its build");
    let sources = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("build-sources");
    let _ = std::fs::remove_dir_all(&sources);
    let got = kernel_matrix::images::build::fetch_source(&sources, &url, &sha, |_| {}).unwrap();
    assert_eq!(kernel_matrix::images::fetch::sha256_file(&got).unwrap(), sha);
    let e = kernel_matrix::images::build::fetch_source(&sources, &url, &"0".repeat(64), |_| {}).unwrap_err();
    assert!(format!("{e:#}").contains("sha256"), "{e:#}");
    let _ = std::fs::remove_dir_all(&sources);
    drop(server);

    let runs = m.run_kernels(&["6.1".to_string(), "6.1-built".to_string()]);
    let (debian, built) = (&runs[0], &runs[1]);
    assert!(debian.problem().is_none(), "{:?}", debian.problem());
    assert!(built.problem().is_none(), "{:?}", built.problem());
    let differ = twins::differences(&m, debian, built);
    assert!(differ.is_empty(), "the built 6.1 differs from Debian's:\n{}", differ.join("\n"));
    let passed = twins::passed(&m, built);
    assert!(passed >= 10, "only {passed} checks passed on the built kernel");
    eprintln!(
        "6.1-built: {passed} checks pass as on Debian's 6.1; boot {:.1} s (Debian's {:.1} s)",
        built.boot.unwrap_or_default().as_secs_f64(),
        debian.boot.unwrap_or_default().as_secs_f64()
    );
}
