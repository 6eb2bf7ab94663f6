//! Kernels from every package archive kind, for real, over local servers (this
//! machine reaches no archive but Debian's): Debian's pinned 6.1 build repackaged
//! the way each source ships kernels, with that source's real tools:
//! - `ubuntu:` an Ubuntu-layout archive (`linux-image-unsigned-<abi>-generic` with
//!   the vmlinuz, `linux-modules-<abi>-generic` with the config; dpkg-deb, indexed
//!   by `apt-ftparchive` into `dists/jammy-updates/main/binary-amd64/`);
//! - `ubuntu_mainline:` a mainline build directory (`v<version>/amd64/` with its
//!   `CHECKSUMS`);
//! - `rpm:` a yum repository (`rpmbuild` with a zstd payload, `createrepo_c`):
//!   RHEL's `kernel-core` layout (`lib/modules/<release>/vmlinuz`) and Amazon Linux
//!   2's `kernel` layout (`boot/vmlinuz-<release>`).
//!
//! Python's HTTP server serves them; `lock` pins each (origin, sha256, sizes), the
//! run fetches, verifies, extracts and boots them, and each gives the verdicts
//! Debian's own 6.1 gives. Bad input: a version a source lacks is refused with the
//! versions it has, an unreachable source names its setting, and a package that no
//! longer matches its pinned checksum is refused.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
};

use kernel_matrix::{
    config::{MatrixConfig, Origin},
    images::{
        self,
        lock::{Lock, LockedKernel},
        mirror::Mirrors,
    },
    run::{Matrix, Options},
};

mod serve;
mod twins;

use serve::Server;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A package `name` `version` holding `files` (path in the package, content),
/// built by dpkg-deb into `out` (reproducibly: the same inputs give the same
/// bytes, so reruns find their kernels in the cache).
fn deb(scratch: &Path, name: &str, version: &str, files: &[(&str, &[u8])], out: &Path) {
    let root = scratch.join(name);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: amd64\nMaintainer: kernel-matrix tests <nobody@invalid>\nDescription: Debian's 6.1 kernel in Ubuntu's packaging\n"
        ),
    )
    .unwrap();
    for (path, data) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }
    run(Command::new("find").arg(&root).args(["-exec", "touch", "-h", "-d", "@1700000000", "{}", "+"]));
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    run(Command::new("dpkg-deb")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&root)
        .arg(out));
}

/// One kernel build packaged as Ubuntu's archive and its mainline builds ship
/// it: `linux-image-unsigned-<name>` with `boot/vmlinuz-<name>` and
/// `linux-modules-<name>` with `boot/config-<name>`, both of `version`, as
/// `<package>_<version>_amd64.deb` in `dir`. Returns (image, modules).
fn ubuntu_debs(
    scratch: &Path,
    name: &str,
    version: &str,
    vmlinuz: &[u8],
    config: &[u8],
    dir: &Path,
) -> (PathBuf, PathBuf) {
    let (image, modules) = (format!("linux-image-unsigned-{name}"), format!("linux-modules-{name}"));
    let (image_deb, modules_deb) =
        (dir.join(format!("{image}_{version}_amd64.deb")), dir.join(format!("{modules}_{version}_amd64.deb")));
    deb(scratch, &image, version, &[(&format!("boot/vmlinuz-{name}"), vmlinuz)], &image_deb);
    deb(scratch, &modules, version, &[(&format!("boot/config-{name}"), config)], &modules_deb);
    (image_deb, modules_deb)
}

/// An RPM package `name`-`version`-`release`.x86_64 holding `files`, built by
/// rpmbuild (zstd payload, as Fedora and RHEL 9 ship) into `out_dir`.
fn rpm_package(scratch: &Path, name: &str, version: &str, release: &str, files: &[(&str, &[u8])], out_dir: &Path) {
    let top = scratch.join(format!("rpmbuild-{name}"));
    let staging = top.join("staging");
    let _ = std::fs::remove_dir_all(&top);
    for (path, data) in files {
        let p = staging.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }
    let listed: String = files.iter().map(|(p, _)| format!("/{p}\n")).collect();
    let spec = top.join(format!("{name}.spec"));
    std::fs::write(
        &spec,
        format!(
            "Name: {name}\nVersion: {version}\nRelease: {release}\nSummary: Debian's 6.1 kernel in RPM packaging\nLicense: GPL-2.0-only\n\n\
%description\nDebian's 6.1 kernel in RPM packaging, for kernel-matrix's tests.\n\n\
%install\nmkdir -p %{{buildroot}}\ncp -a {}/. %{{buildroot}}/\n\n%files\n{listed}",
            staging.display()
        ),
    )
    .unwrap();
    run(Command::new("rpmbuild")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .args(["--define", "_binary_payload w19.zstdio", "--define", "debug_package %{nil}"])
        .args(["--define", "__os_install_post %{nil}", "--define", "_build_id_links none"])
        .args(["--define", "use_source_date_epoch_as_buildtime 1", "--define", "_buildhost km"])
        .args(["--target", "x86_64", "--nodeps", "-bb"])
        .arg(&spec));
    let built = top.join(format!("RPMS/x86_64/{name}-{version}-{release}.x86_64.rpm"));
    std::fs::create_dir_all(out_dir).unwrap();
    std::fs::rename(&built, out_dir.join(built.file_name().unwrap())).unwrap();
}

/// The distribution registry (Debian's `docker-registry`) on a free loopback
/// port, storing into `dir`, killed when dropped.
struct Registry {
    child: Child,
    base: String,
}

impl Registry {
    /// `htpasswd`: a `user:bcrypt-hash` line the registry then demands (HTTP Basic).
    fn start(dir: &Path, htpasswd: Option<&str>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.join("registry.yml");
        std::fs::create_dir_all(dir).unwrap();
        let auth = htpasswd.map_or(String::new(), |line| {
            let file = dir.join("htpasswd");
            std::fs::write(&file, format!("{line}\n")).unwrap();
            format!("auth: {{ htpasswd: {{ realm: km, path: {} }} }}\n", file.display())
        });
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{ level: error }}\nstorage: {{ filesystem: {{ rootdirectory: {} }} }}\nhttp: {{ addr: 127.0.0.1:{port} }}\n{auth}",
                dir.join("store").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (installed by cargo xtask setup)");
        let r = Self { child, base: format!("127.0.0.1:{port}") };
        // Ready when it accepts connections; it does within a second here.
        let t = std::time::Instant::now();
        while std::net::TcpStream::connect(&r.base).is_err() {
            assert!(t.elapsed().as_secs() < 30, "docker-registry did not listen on {}", r.base);
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        r
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OCI image `repository:tag` for `arch` holding `files` as one layer (umoci,
/// as a ci-kernels image holds its kernel), pushed to `registry` with skopeo.
fn oci_image(scratch: &Path, arch: &str, files: &[(&str, &[u8])], registry: &str, image: &str) {
    oci_image_as(scratch, arch, files, registry, image, None)
}

/// [`oci_image`], pushed with `creds` (`user:password`) where the registry demands them.
fn oci_image_as(scratch: &Path, arch: &str, files: &[(&str, &[u8])], registry: &str, image: &str, creds: Option<&str>) {
    let (layout, bundle) = (scratch.join("oci-layout"), scratch.join("oci-bundle"));
    let _ = std::fs::remove_dir_all(&layout);
    let _ = std::fs::remove_dir_all(&bundle);
    let tagged = format!("{}:km", layout.display());
    run(Command::new("umoci").args(["init", "--layout"]).arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &tagged]));
    run(Command::new("umoci").args(["config", "--image", &tagged, "--architecture", arch]));
    run(Command::new("umoci").args(["unpack", "--rootless", "--image", &tagged]).arg(&bundle));
    for (path, data) in files {
        let p = bundle.join("rootfs").join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }
    run(Command::new("umoci").args(["repack", "--image", &tagged]).arg(&bundle));
    let mut skopeo = Command::new("skopeo");
    skopeo.args(["copy", "--quiet", "--insecure-policy", "--dest-tls-verify=false"]);
    if let Some(c) = creds {
        skopeo.arg(format!("--dest-creds={c}"));
    }
    run(skopeo.arg(format!("oci:{tagged}")).arg(format!("docker://{registry}/{image}")));
}

fn sha256(path: &Path) -> String {
    images::fetch::sha256_file(path).unwrap()
}

/// What the matrix file of this test points at and asks for.
struct Sources<'a> {
    ubuntu: &'a str,
    ubuntu_series: &'a str,
    mainline: &'a str,
    rpm: &'a str,
    rpm_version: &'a str,
    oci: &'a str,
    oci_tag: &'a str,
}

/// The matrix file of this test: Debian's 6.1 and its repackaged twins.
fn write_config(dir: &Path, s: &Sources) -> MatrixConfig {
    let programs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/byo/programs.yaml");
    let yaml = format!(
        "timeout_secs: 300\nmemory_mb: 1024\nubuntu_mirror: {}\nubuntu_mainline_url: {}\nrpm_repos: {{ el9: {} }}\noci_registry: {}\nkernels:\n  \
- name: \"6.1\"\n    debian: {{ suite: bookworm, series: \"6.1\" }}\n  \
- name: \"6.1-ubuntu\"\n    ubuntu: {{ suite: jammy-updates, series: \"{}\" }}\n  \
- name: \"6.1-mainline\"\n    ubuntu_mainline: {{ series: \"6.1\" }}\n  \
- name: \"6.1-el9\"\n    rpm: {{ repo: el9, version: \"{}\" }}\n  \
- name: \"6.1-amzn2\"\n    rpm: {{ repo: el9, package: kernel, version: \"6.1\" }}\n  \
- name: \"6.1-oci\"\n    oci: {{ image: \"cilium/ci-kernels:{}\" }}\n  \
- name: \"6.1-arm64\"\n    arch: arm64\n    debian: {{ suite: bookworm, series: \"6.1\" }}\n  \
- name: \"6.1-arm64-oci\"\n    arch: arm64\n    oci: {{ image: \"cilium/ci-kernels:6.1-arm64\" }}\n\
programs:\n  - {}\n",
        s.ubuntu,
        s.mainline,
        s.rpm,
        s.oci,
        s.ubuntu_series,
        s.rpm_version,
        s.oci_tag,
        programs.display()
    );
    let path = dir.join("kernels.yaml");
    std::fs::write(&path, yaml).unwrap();
    MatrixConfig::load(&path).unwrap()
}

/// Debian's pinned 6.1 (kernels.lock), from the cache (or its mirror), verified.
struct Debian61 {
    locked: LockedKernel,
    /// The Debian mirror it came from.
    base: String,
    release: String,
    vmlinuz: Vec<u8>,
    config: Vec<u8>,
}

impl Debian61 {
    fn get(cache: &Path) -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let locked: LockedKernel = Lock::load(&root.join("kernels.lock")).unwrap().kernels["6.1"].clone();
        let file = &locked.files[0];
        let base = Mirrors::discover(None).unwrap().for_suite(&locked.suite).unwrap().to_string();
        let deb =
            images::fetch_deb(cache, &format!("{base}/{}", file.path), &file.package, &file.sha256, |_| {}).unwrap();
        let (release, vmlinuz) = images::vmlinuz_from_deb(&deb).unwrap();
        let (_, config) = images::file_from_deb(&deb, |p| p.starts_with("boot/config-").then_some(()))
            .unwrap()
            .expect("Debian's 6.1 image package carries its config");
        Self { locked, base, release, vmlinuz, config }
    }
}

#[test]
fn kernels_from_every_archive_kind_are_pinned_fetched_and_pass_what_debians_build_passes() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("archives");
    let _ = std::fs::remove_dir_all(&tmp);
    let (archive, scratch) = (tmp.join("archive"), tmp.join("scratch"));
    let opts = Options::from_env(tmp.join("runs")).unwrap();

    let Debian61 { locked: debian, base, release, vmlinuz, config } = Debian61::get(&opts.cache_dir);
    let debian_config = config.clone();
    assert!(release.starts_with("6.1.0-"), "{release}");
    let upstream = debian.files[0].version.split('-').next().unwrap().to_string(); // 6.1.176

    // Ubuntu's archive: the image without a config, the config in the modules package.
    let abi = format!("{}-generic", debian.abi); // 6.1.0-50-generic
    let version = format!("{}.{}~22.04.1", debian.abi, 100);
    let pool = archive.join("ubuntu/pool/main/l/linux");
    let (ubuntu_image, _) = ubuntu_debs(&scratch, &abi, &version, &vmlinuz, &config, &pool);
    let packages = archive.join("ubuntu/dists/jammy-updates/main/binary-amd64/Packages");
    std::fs::create_dir_all(packages.parent().unwrap()).unwrap();
    let index = Command::new("apt-ftparchive")
        .args(["packages", "pool"])
        .current_dir(archive.join("ubuntu"))
        .output()
        .expect("apt-ftparchive (apt-utils, installed by cargo xtask setup)");
    assert!(index.status.success(), "{}", String::from_utf8_lossy(&index.stderr));
    std::fs::write(&packages, &index.stdout).unwrap();
    run(Command::new("xz").arg("-kf").arg(&packages));

    // A mainline build: `v<version>/amd64/` with the packages and their CHECKSUMS.
    let mabi = format!("{upstream}-060100");
    let mversion = format!("{mabi}.202411220740");
    let mdir = archive.join(format!("mainline/v{upstream}/amd64"));
    let (mimage, mmodules) = ubuntu_debs(&scratch, &format!("{mabi}-generic"), &mversion, &vmlinuz, &config, &mdir);
    std::fs::create_dir_all(archive.join("mainline/v6.0.19")).unwrap(); // another build in the listing
    let sums: String = [&mimage, &mmodules]
        .iter()
        .map(|p| format!("{}  {}\n", sha256(p), p.file_name().unwrap().to_string_lossy()))
        .collect();
    std::fs::write(mdir.join("CHECKSUMS"), format!("# Checksums-Sha256:\n{sums}")).unwrap();

    // A yum repository: RHEL's kernel-core layout and Amazon Linux 2's kernel layout.
    let (el_release, amzn_release) = (format!("{upstream}-50.el9.x86_64"), format!("{upstream}-50.amzn2.x86_64"));
    let packages = archive.join("el9/Packages");
    let (el_vmlinuz, el_config) =
        (format!("lib/modules/{el_release}/vmlinuz"), format!("lib/modules/{el_release}/config"));
    rpm_package(
        &scratch,
        "kernel-core",
        &upstream,
        "50.el9",
        &[(&el_vmlinuz, &vmlinuz), (&el_config, &config)],
        &packages,
    );
    rpm_package(&scratch, "kernel-core", &upstream, "9.el9", &[(&el_vmlinuz, b"an older build")], &packages);
    let (amzn_vmlinuz, amzn_config) = (format!("boot/vmlinuz-{amzn_release}"), format!("boot/config-{amzn_release}"));
    rpm_package(
        &scratch,
        "kernel",
        &upstream,
        "50.amzn2",
        &[(&amzn_vmlinuz, &vmlinuz), (&amzn_config, &config)],
        &packages,
    );
    run(Command::new("createrepo_c").arg("--quiet").arg(archive.join("el9")));
    let el_rpm = packages.join(format!("kernel-core-{upstream}-50.el9.x86_64.rpm"));

    // An OCI image as cilium/ci-kernels ships kernels: /boot/vmlinuz (the release
    // comes from the image's header), in a distribution registry.
    let registry = Registry::start(&tmp.join("registry"), None);
    oci_image(
        &scratch,
        "amd64",
        &[("boot/vmlinuz", &vmlinuz), ("boot/config", &config)],
        &registry.base,
        "cilium/ci-kernels:6.1",
    );
    // And one for arm64 from Debian's arm64 6.1: its guest root's busybox then
    // comes from Debian's archive (an OCI image carries none).
    let arm_lock = Lock::load(&root.join("kernels-arm64.lock")).unwrap();
    let debian_arm: LockedKernel = arm_lock.kernels["6.1-arm64"].clone();
    let arm_file = &debian_arm.files[0];
    let arm_url = format!("{base}/{}", arm_file.path);
    let arm_deb = images::fetch_deb(&opts.cache_dir, &arm_url, &arm_file.package, &arm_file.sha256, |_| {}).unwrap();
    let (arm_release, arm_vmlinuz) = images::vmlinuz_from_deb(&arm_deb).unwrap();
    let arm_path = format!("boot/vmlinuz-{arm_release}");
    oci_image(&scratch, "arm64", &[(&arm_path, &arm_vmlinuz)], &registry.base, "cilium/ci-kernels:6.1-arm64");
    let oci_url = format!("http://{}", registry.base);

    let server = Server::start(&archive);
    let (ubuntu_url, mainline_url, rpm_url) =
        (format!("{}/ubuntu", server.base), format!("{}/mainline", server.base), format!("{}/el9", server.base));
    let good = Sources {
        ubuntu: &ubuntu_url,
        ubuntu_series: "6.1",
        mainline: &mainline_url,
        rpm: &rpm_url,
        rpm_version: "6.1",
        oci: &oci_url,
        oci_tag: "6.1",
    };
    let config = write_config(&tmp, &good);
    // The lock starts with Debian's pin; `lock` adds the others from the servers.
    let lock_path = Lock::path_for(&config.path);
    Lock { kernels: [("6.1".to_string(), debian.clone()), ("6.1-arm64".to_string(), debian_arm.clone())].into() }
        .save(&lock_path)
        .unwrap();
    images::pin::pin(&config, false).unwrap();
    let lock = Lock::load(&lock_path).unwrap();
    assert_eq!(lock.kernels["6.1"], debian, "a pinned Debian kernel is left as it was");
    let u = &lock.kernels["6.1-ubuntu"];
    assert_eq!((u.origin, u.suite.as_str(), u.abi.as_str()), (Origin::Ubuntu, "jammy-updates", debian.abi.as_str()));
    let names: Vec<_> = u.files.iter().map(|f| f.package.clone()).collect();
    assert_eq!(names, [format!("linux-image-unsigned-{abi}"), format!("linux-modules-{abi}")]);
    assert_eq!(u.files[0].sha256, sha256(&ubuntu_image));
    let m = &lock.kernels["6.1-mainline"];
    assert_eq!((m.origin, m.abi.as_str()), (Origin::UbuntuMainline, mabi.as_str()));
    assert_eq!(m.files[0].sha256, sha256(&mimage));
    assert_eq!(m.files[0].size, std::fs::metadata(&mimage).unwrap().len(), "size from the server");
    assert_eq!(m.files.len(), 2, "the modules package is pinned beside the image");
    let r = &lock.kernels["6.1-el9"];
    assert_eq!((r.origin, r.suite.as_str(), r.abi.as_str()), (Origin::Rpm, "el9", el_release.as_str()));
    assert_eq!(r.files[0].sha256, sha256(&el_rpm), "the newest build (50 > 9), its sha256 from the metadata");
    assert_eq!(r.files[0].size, std::fs::metadata(&el_rpm).unwrap().len());
    assert_eq!(lock.kernels["6.1-amzn2"].abi, amzn_release);
    let o = &lock.kernels["6.1-oci"];
    assert_eq!((o.origin, o.suite.as_str(), o.series.as_str()), (Origin::Oci, "cilium/ci-kernels", "6.1"));
    assert!(o.digest.as_ref().is_some_and(|d| d.starts_with("sha256:") && d.len() == 71), "{:?}", o.digest);
    assert_eq!(o.files.len(), 1, "one layer");
    let a = &lock.kernels["6.1-arm64-oci"];
    assert_eq!(a.arch(), km_protocol::Arch::Arm64);
    assert_ne!(a.digest, o.digest, "the arm64 image is another manifest");
    assert_eq!(a.busybox_origin, Some(Origin::Debian), "busybox from Debian's archive");
    assert!(a.busybox.as_ref().is_some_and(|b| b.package == "busybox-static"));
    let text = std::fs::read_to_string(&lock_path).unwrap();
    assert!(
        text.contains("origin: ubuntu-mainline")
            && text.contains("origin: rpm")
            && !text.contains("\n    origin: debian"),
        "{text}"
    );

    // Fetched, verified, extracted and booted: the same verdicts as Debian's 6.1.
    let matrix = Arc::new(Matrix::new(config.clone(), Options::from_env(tmp.join("runs")).unwrap()).unwrap());
    let releases = [
        ("6.1-ubuntu", abi.clone()),
        ("6.1-mainline", format!("{mabi}-generic")),
        ("6.1-el9", el_release.clone()),
        ("6.1-amzn2", amzn_release.clone()),
        ("6.1-oci", release.clone()),
        ("6.1-arm64-oci", arm_release.clone()),
    ];
    for (name, release) in releases {
        let image = matrix.image(matrix.config.kernel(name).unwrap()).unwrap().expect("an image");
        assert_eq!(image.release, release, "{name}");
        // Every source's config reaches the cache (Ubuntu's from its modules
        // package); the arm64 image is built without one.
        let with_config = name != "6.1-arm64-oci";
        assert_eq!(image.config.is_some(), with_config, "{name}");
        if let Some(c) = &image.config {
            assert!(std::fs::read(c).unwrap() == debian_config, "{name}: the config is Debian's 6.1 one");
        }
    }
    // Amazon Linux 2's layout is only extracted: its kernel is the same as el9's.
    let names =
        ["6.1", "6.1-ubuntu", "6.1-mainline", "6.1-el9", "6.1-oci", "6.1-arm64", "6.1-arm64-oci"].map(String::from);
    let runs = matrix.run_kernels(&names);
    for r in &runs {
        assert!(r.problem().is_none(), "{:?}", r.problem());
    }
    let mut differ = Vec::new();
    let pairs = runs[1..5].iter().map(|t| (&runs[0], t)).chain([(&runs[5], &runs[6])]);
    for (reference, twin) in pairs {
        differ.extend(twins::differences(&matrix, reference, twin));
        let passed = twins::passed(&matrix, twin);
        assert!(passed >= 10, "only {passed} checks passed on {}", twin.kernel);
    }
    assert!(differ.is_empty(), "differs from Debian's 6.1:\n{}", differ.join("\n"));

    // A package that no longer matches its pinned checksum is refused (fresh cache).
    let fresh = tmp.join("fresh-cache");
    let mirrors = Mirrors::discover(Some(&config)).unwrap();
    std::fs::write(&mimage, b"not the pinned package").unwrap();
    let e = images::ensure_archive(&fresh, &mirrors, m, |_| {}).unwrap_err();
    assert!(format!("{e:#}").contains("sha256"), "{e:#}");

    // A version a source lacks: refused with what it has (Debian's 6.1 stays
    // pinned, so only the others are resolved).
    let bad = tmp.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let debian_only = || Lock { kernels: [("6.1".to_string(), debian.clone())].into() };
    for (sources, want) in [
        (Sources { ubuntu_series: "5.15", ..good }, format!("nearest there: {}", debian.abi)),
        (
            Sources { rpm_version: "5.14", ..good },
            format!("no kernel-core 5.14; nearest there: {upstream}-9.el9, {upstream}-50.el9"),
        ),
    ] {
        debian_only().save(&bad.join("kernels.lock")).unwrap();
        let e = format!("{:#}", images::pin::pin(&write_config(&bad, &sources), false).unwrap_err());
        assert!(e.contains(&want), "{e}");
    }

    // A source that does not answer: the error names the setting that moves it.
    drop(server);
    drop(registry);
    let gone = "http://127.0.0.1:9";
    for (sources, unpinned, setting) in [
        (Sources { ubuntu: gone, ..good }, "6.1-ubuntu", "KM_UBUNTU_MIRROR"),
        (Sources { mainline: gone, ..good }, "6.1-mainline", "KM_UBUNTU_MAINLINE_URL"),
        (Sources { rpm: gone, ..good }, "6.1-el9", "KM_RPM_REPO_<NAME>"),
        (Sources { oci: gone, ..good }, "6.1-oci", "KM_OCI_REGISTRY"),
    ] {
        // Only the kernel whose source is gone is unpinned.
        let mut lock = Lock::load(&lock_path).unwrap();
        lock.kernels.remove(unpinned);
        lock.save(&bad.join("kernels.lock")).unwrap();
        let e = format!("{:#}", images::pin::pin(&write_config(&bad, &sources), false).unwrap_err());
        assert!(e.contains(unpinned) && e.contains(setting), "{e}");
    }
}

/// A registry that demands credentials (the distribution registry with htpasswd
/// auth; a private mirror of ci-kernels, say): anonymous access and wrong
/// credentials are refused with what to do, and the credentials that `docker
/// login`, `podman login` and `KM_OCI_USERNAME`/`KM_OCI_PASSWORD` give all pin,
/// fetch and boot its kernel, through the command line as a user runs it.
#[test]
fn a_kernel_from_a_registry_that_demands_credentials() {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("archives-private");
    let _ = std::fs::remove_dir_all(&tmp);
    let d = Debian61::get(&Options::from_env(tmp.join("runs")).unwrap().cache_dir);
    // "km" with the bcrypt of "s3cret" (as `htpasswd -nbB km s3cret` writes it).
    let registry =
        Registry::start(&tmp.join("registry"), Some("km:$2b$04$Vm2Mln7WXu3TwHSLj.LSbOI4yl8osDSN2LJ416SJmhY46G4uWi5p6"));
    let files: [(&str, &[u8]); 2] = [("boot/vmlinuz", &d.vmlinuz), ("boot/config", &d.config)];
    oci_image_as(&tmp.join("scratch"), "amd64", &files, &registry.base, "km/kernels:6.1", Some("km:s3cret"));
    let config = tmp.join("kernels.yaml");
    std::fs::write(
        &config,
        format!(
            "oci_registry: http://{}\nkernels:\n  - name: \"6.1-private\"\n    oci: {{ image: \"km/kernels:6.1\" }}\n",
            registry.base
        ),
    )
    .unwrap();
    let lock_path = Lock::path_for(&config);
    let home = tmp.join("home");
    std::fs::create_dir_all(&home).unwrap();
    // `kernel-matrix ARGS` as a user with no credentials anywhere but `env`,
    // with the cache `cache`: (succeeded, stdout and stderr).
    let km = |args: &[&str], env: &[(&str, &str)], cache: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kernel-matrix"));
        for v in ["KM_OCI_USERNAME", "KM_OCI_PASSWORD", "DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR"] {
            c.env_remove(v);
        }
        c.env("HOME", &home).env("KM_CACHE_DIR", tmp.join(cache)).env("KM_RUN_DIR", tmp.join("runs"));
        c.env("KM_PROGRESS", "plain").envs(env.iter().copied()).arg("-c").arg(&config).args(args);
        let out = c.output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    // A `docker login` / `podman login` file at `path` holding `creds` for the registry.
    let auth_file = |path: &Path, creds: &str| {
        let out = Command::new("base64").arg("-w0").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        std::io::Write::write_all(&mut out.stdin.as_ref().unwrap(), creds.as_bytes()).unwrap();
        let b64 = String::from_utf8(out.wait_with_output().unwrap().stdout).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("{{\"auths\":{{\"{}\":{{\"auth\":\"{b64}\"}}}}}}", registry.base)).unwrap();
        path.parent().unwrap().display().to_string()
    };

    // Anonymous: refused, saying how to log in.
    let (ok, out) = km(&["lock"], &[], "cache-a");
    assert!(!ok, "{out}");
    let how = format!("{0} refused anonymous access: `docker login {0}`", registry.base);
    assert!(out.contains(&how) && out.contains("KM_OCI_USERNAME"), "{out}");
    // The wrong password in `docker login`'s file: refused, naming the file.
    let wrong = auth_file(&tmp.join("wrong/config.json"), "km:guess");
    let (ok, out) = km(&["lock"], &[("DOCKER_CONFIG", &wrong)], "cache-a");
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("refused the credentials from {wrong}/config.json")), "{out}");
    assert!(!lock_path.exists(), "nothing was pinned");

    // `docker login`'s credentials: pinned by digest, and the layer fetched into an empty cache.
    let docker = auth_file(&tmp.join("docker/config.json"), "km:s3cret");
    let (ok, out) = km(&["lock"], &[("DOCKER_CONFIG", &docker)], "cache-a");
    assert!(ok, "{out}");
    let locked = Lock::load(&lock_path).unwrap().kernels["6.1-private"].clone();
    assert!(locked.digest.as_ref().is_some_and(|d| d.starts_with("sha256:")), "{locked:?}");
    let layer = |cache: &str| tmp.join(cache).join("layers").join(&locked.files[0].sha256);
    let (ok, out) = km(&["fetch"], &[("DOCKER_CONFIG", &docker)], "cache-a");
    assert!(ok && layer("cache-a").exists(), "{out}");
    // podman's and skopeo's file: the same image again.
    let podman = tmp.join("podman/auth.json");
    auth_file(&podman, "km:s3cret");
    let (ok, out) = km(&["lock", "--update"], &[("REGISTRY_AUTH_FILE", &podman.display().to_string())], "cache-a");
    assert!(ok, "{out}");
    assert_eq!(Lock::load(&lock_path).unwrap().kernels["6.1-private"], locked);

    // KM_OCI_USERNAME and KM_OCI_PASSWORD: fetched into another empty cache, and booted.
    let user = [("KM_OCI_USERNAME", "km"), ("KM_OCI_PASSWORD", "s3cret")];
    let (ok, out) = km(&["exec", "-k", "6.1-private", "--", "uname", "-r"], &user, "cache-b");
    assert!(ok && out.contains(&d.release), "{out}");
    assert!(layer("cache-b").exists());
    let (ok, out) = km(&["lock", "--update"], &user[..1], "cache-b");
    assert!(!ok && out.contains("KM_OCI_USERNAME is set but KM_OCI_PASSWORD is not"), "{out}");
}
