//! `kernels.yaml`: which kernels make up the matrix and how to get each one.
//!
//! YAML is parsed with `serde_norway`, the maintained, API-compatible fork of the
//! archived `serde_yaml` (same `Error::location()`), so parse errors point at file,
//! line and column.
use std::{
    collections::HashSet,
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

pub mod expect;
pub mod manifest;
pub mod object;

use serde::Deserialize;

/// The whole `kernels.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixConfig {
    /// Debian archive to fetch from; default: the machine's apt configuration.
    #[serde(default)]
    pub mirror: Option<String>,
    /// Debian security archive (for `*-security` suites); default: apt configuration.
    #[serde(default)]
    pub security_mirror: Option<String>,
    /// Ubuntu archive for `ubuntu:` kernels of amd64 (`KM_UBUNTU_MIRROR`); no default.
    #[serde(default)]
    pub ubuntu_mirror: Option<String>,
    /// Ubuntu's archive of the other architectures (arm64), `KM_UBUNTU_PORTS_MIRROR`.
    #[serde(default)]
    pub ubuntu_ports_mirror: Option<String>,
    /// Where Ubuntu's mainline kernel builds are (`KM_UBUNTU_MAINLINE_URL`): a
    /// directory of `v<version>/` directories, each with `<arch>/CHECKSUMS`.
    #[serde(default)]
    pub ubuntu_mainline_url: Option<String>,
    /// yum/dnf repositories of `rpm:` kernels by name (`alma9: URL`, the directory
    /// holding `repodata/`); `KM_RPM_REPO_<NAME>` where the file names none.
    #[serde(default)]
    pub rpm_repos: std::collections::BTreeMap<String, String>,
    /// The OCI registry of `oci:` kernels (`https://HOST[:PORT]`, `http://` for a
    /// plain-HTTP one), `KM_OCI_REGISTRY`; no default.
    #[serde(default)]
    pub oci_registry: Option<String>,
    /// Seconds a VM may run before it is killed (per kernel override: `timeout_secs`).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Guest memory in MiB.
    #[serde(default = "default_memory")]
    pub memory_mb: u32,
    pub kernels: Vec<KernelSpec>,
    /// Manifests of programs users bring (paths relative to this file); see `byo`.
    #[serde(default)]
    pub programs: Vec<PathBuf>,
    /// Users' test binaries run inside every kernel after the checks (see `SuiteSpec`).
    #[serde(default)]
    pub suites: Vec<SuiteSpec>,
    /// Known failures, turned into ignored trials with their reason.
    #[serde(default)]
    pub expected_failures: Vec<crate::config::expect::ExpectedFailure>,
    /// Where the file was read from (for messages and relative paths).
    #[serde(skip)]
    pub path: PathBuf,
}

fn default_timeout() -> u64 {
    180
}
fn default_memory() -> u32 {
    1024
}

/// A test suite of the user's, run in every kernel's VM after the checks (same
/// boot). `format: libtest`: each test is a trial `<kernel>::<name>::<test>`
/// (listed on the host with `--list --format terse` before booting);
/// `format: exit-status`: one trial `<kernel>::<name>`, passing on exit 0.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteSpec {
    pub name: String,
    /// Program and arguments; the program's path is relative to this file and its
    /// file name may hold one `*` (the newest executable match is taken, e.g.
    /// `target/debug/deps/my_test-*` for a cargo test binary).
    pub command: Vec<String>,
    /// `HOST:GUEST` (or `HOST`) files or directories copied into the guest; HOST
    /// relative to this file, a relative GUEST relative to the suite's working
    /// directory (this file's directory, the same absolute path in the guest).
    #[serde(default)]
    pub files: Vec<String>,
    pub format: km_protocol::suites::SuiteFormat,
    /// Feature ids (features.yaml): on a kernel without one, the suite's trials
    /// are ignored with the reason, like checks.
    #[serde(default)]
    pub needs: Vec<String>,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Run in the host's own root (read-only, under a throwaway writable layer)
    /// instead of a packed one: scripts and interpreters work; no `files:`.
    #[serde(default)]
    pub host_root: bool,
}

/// One column of the matrix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSpec {
    /// Trial-name prefix: `<name>::<program>::<check>`.
    pub name: String,
    #[serde(default)]
    pub debian: Option<DebianSource>,
    /// A kernel from Ubuntu's archive (see [`UbuntuSource`]).
    #[serde(default)]
    pub ubuntu: Option<UbuntuSource>,
    /// One of Ubuntu's mainline builds (see [`MainlineSource`]).
    #[serde(default)]
    pub ubuntu_mainline: Option<MainlineSource>,
    /// A kernel package from a yum/dnf repository (see [`RpmSource`]).
    #[serde(default)]
    pub rpm: Option<RpmSource>,
    /// A kernel in an OCI image (see [`OciSource`]).
    #[serde(default)]
    pub oci: Option<OciSource>,
    #[serde(default)]
    pub local: Option<LocalSource>,
    /// A kernel built from source by the harness (see [`BuildSource`]).
    #[serde(default)]
    pub build: Option<BuildSource>,
    /// The running kernel, no VM; runs only where the user may load BPF.
    #[serde(default)]
    pub host: bool,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Extra kernel command line for this kernel's VM.
    #[serde(default)]
    pub cmdline: Option<String>,
    /// The kernel's architecture (`x86_64`/`amd64`, `arm64`/`aarch64`); default:
    /// the host's. A foreign one runs under QEMU's TCG with a guest root of its own.
    #[serde(default)]
    pub arch: Option<String>,
    /// What boots this kernel for `exec`: `qemu` (the default: the harness's own
    /// QEMU line) or `vng` (virtme-ng, [`crate::vm::vng`]). `KM_RUNNER` overrides.
    #[serde(default)]
    pub runner: Option<Runner>,
    /// Whether the kernel carries features from later mainline versions (or lacks
    /// some of its own), as vendor kernels do: RHEL 8's 4.18 has the ring buffer
    /// (5.8) and kernel BTF (5.4). Its `features::` trials then say where probe and
    /// version disagree (ignored, with the reason) instead of failing the
    /// catalogue; checks are gated by the probes either way. Default: true for
    /// `rpm:` kernels, false for the rest.
    #[serde(default)]
    pub backports: Option<bool>,
}

/// What boots a kernel for `exec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Runner {
    Qemu,
    Vng,
}

/// A kernel from the Debian archive: the newest build of `series` in `suite` is
/// pinned in `kernels.lock` by `kernel-matrix lock --update`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DebianSource {
    pub suite: String,
    pub series: String,
    #[serde(default = "default_flavour")]
    pub flavour: String,
}

fn default_flavour() -> String {
    "cloud".into()
}

/// A kernel from Ubuntu's archive (the same `Packages` format as Debian's): the
/// newest `linux-image-unsigned-<abi>-<flavour>` of `series` in `suite` (`jammy`,
/// `jammy-updates`, `noble-security`, ...; HWE kernels are simply newer series in
/// an older suite), with its `linux-modules-*` package, pinned in the lock.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UbuntuSource {
    pub suite: String,
    pub series: String,
    #[serde(default = "default_ubuntu_flavour")]
    pub flavour: String,
}

fn default_ubuntu_flavour() -> String {
    "generic".into()
}

/// One of Ubuntu's mainline builds of upstream kernels: `series: "6.6"` is the
/// newest 6.6.y point release there, `series: "6.6.60"` or `"6.13-rc3"` one build;
/// the files are verified against the build's published `CHECKSUMS`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MainlineSource {
    pub series: String,
    #[serde(default = "default_ubuntu_flavour")]
    pub flavour: String,
}

/// A kernel package from a yum/dnf repository: the newest `package` whose
/// version-release matches `version` (`5.14` -> the newest 5.14.x build;
/// `4.18.0-553` one build series; `6.1.*.amzn2023` a glob).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RpmSource {
    /// The repository's name in `rpm_repos:` (or `KM_RPM_REPO_<NAME>`).
    pub repo: String,
    pub version: String,
    /// `kernel-core` (RHEL 8+, its rebuilds, Fedora) or `kernel` (Amazon Linux 2, CentOS 7).
    #[serde(default = "default_rpm_package")]
    pub package: String,
}

/// A kernel in an OCI image (`cilium/ci-kernels:6.1`) of the registry
/// `oci_registry:` names: the image's manifest for the kernel's architecture, pinned
/// by digest with its layers.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OciSource {
    /// `repository:tag` (`latest` when there is no tag).
    pub image: String,
}

fn default_rpm_package() -> String {
    "kernel-core".into()
}

/// Which package archive a pinned kernel comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    #[default]
    Debian,
    Ubuntu,
    UbuntuMainline,
    Rpm,
    Oci,
}

impl Origin {
    /// The config key that names this origin.
    pub fn key(self) -> &'static str {
        match self {
            Origin::Debian => "debian",
            Origin::Ubuntu => "ubuntu",
            Origin::UbuntuMainline => "ubuntu_mainline",
            Origin::Rpm => "rpm",
            Origin::Oci => "oci",
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A kernel resolved from a package archive and pinned in the lock: Debian's,
/// Ubuntu's, Ubuntu's mainline builds (whose `suite` is `mainline`), or a yum/dnf
/// repository's (`suite`: the repository's name, `series`: the version asked
/// for, `flavour`: the package name), or an OCI registry's (`suite`: the
/// repository, `series`: the tag, `flavour` empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveSource<'a> {
    pub origin: Origin,
    pub suite: &'a str,
    pub series: &'a str,
    pub flavour: &'a str,
}

impl ArchiveSource<'_> {
    /// The kernel version the series names (`6.1`, `6.13-rc3` -> 6.13), if any.
    pub fn version(&self) -> Option<km_protocol::KernelVersion> {
        self.series.parse().ok()
    }
}

/// The `suite` of every mainline kernel in the lock.
pub const MAINLINE_SUITE: &str = "mainline";

/// A kernel the user built: a `bzImage` or an uncompressed `vmlinux`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSource {
    pub kernel: PathBuf,
    #[serde(default)]
    pub modules: Option<PathBuf>,
}

/// A kernel built from source: a tarball (`.tar.xz`, `.tar.gz`, `.tar.bz2`,
/// `.tar.zst`, like Debian's `/usr/src/linux-source-6.1.tar.xz`) or a kernel tree
/// (a developer's checkout, built out of tree), configured as `tinyconfig` plus
/// the repository's BPF-ready fragment (`vm-images/bpf.config`) plus the user's
/// `config:` fragments, and cached by (source digest, configuration, compiler), so
/// a second run builds nothing.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BuildSource {
    /// The tarball or directory (relative to kernels.yaml), or a tarball's
    /// `http(s)://` URL (with `sha256:`). Or `git:` instead.
    #[serde(default)]
    pub source: Option<PathBuf>,
    /// A git repository's URL (or path) to build `ref:` of.
    #[serde(default)]
    pub git: Option<String>,
    /// The branch, tag or commit of `git:` (default `HEAD`); a branch or tag is
    /// resolved to its commit on every run, and the build is keyed by the commit.
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
    /// The tarball's sha256: needed for a URL (downloaded once, verified, cached),
    /// checked for a local tarball when given.
    #[serde(default)]
    pub sha256: Option<String>,
    /// More config fragments (`CONFIG_X=y` lines, e.g. a debug kernel with KASAN),
    /// merged after the BPF-ready one (relative to kernels.yaml).
    #[serde(default)]
    pub config: Vec<PathBuf>,
}

impl BuildSource {
    /// The tarball's URL, when `source` is one.
    pub fn url(&self) -> Option<&str> {
        let s = self.source.as_ref()?.to_str()?;
        (s.starts_with("http://") || s.starts_with("https://")).then_some(s)
    }
}

/// Where a kernel comes from, once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSource<'a> {
    /// A package archive's kernel (Debian, Ubuntu, Ubuntu mainline, RPM, OCI): resolved by `lock --update`.
    Archive(ArchiveSource<'a>),
    Local(&'a LocalSource),
    Build(&'a BuildSource),
    Host,
}

impl PartialEq for LocalSource {
    fn eq(&self, other: &Self) -> bool {
        self.kernel == other.kernel && self.modules == other.modules
    }
}
impl Eq for LocalSource {}

impl KernelSpec {
    /// Whether version gates may disagree with this kernel ([`KernelSpec::backports`]).
    pub fn has_backports(&self) -> bool {
        self.backports.unwrap_or(self.rpm.is_some())
    }

    /// The archive this kernel is pinned from, if it is one.
    pub fn archive(&self) -> Option<ArchiveSource<'_>> {
        match self.source() {
            KernelSource::Archive(a) => Some(a),
            _ => None,
        }
    }

    /// The architecture (validated when the config was loaded).
    pub fn arch(&self) -> km_protocol::Arch {
        self.arch.as_deref().map_or(km_protocol::Arch::host(), |a| {
            km_protocol::Arch::parse(a).expect("validated by MatrixConfig::validate")
        })
    }

    pub fn source(&self) -> KernelSource<'_> {
        let archive =
            |origin, suite, series, flavour| KernelSource::Archive(ArchiveSource { origin, suite, series, flavour });
        if let Some(d) = &self.debian {
            return archive(Origin::Debian, &d.suite, &d.series, &d.flavour);
        }
        if let Some(u) = &self.ubuntu {
            return archive(Origin::Ubuntu, &u.suite, &u.series, &u.flavour);
        }
        if let Some(m) = &self.ubuntu_mainline {
            return archive(Origin::UbuntuMainline, MAINLINE_SUITE, &m.series, &m.flavour);
        }
        if let Some(r) = &self.rpm {
            return archive(Origin::Rpm, &r.repo, &r.version, &r.package);
        }
        if let Some(o) = &self.oci {
            let (repository, tag) = crate::images::oci::split_image(&o.image);
            return archive(Origin::Oci, repository, tag, "");
        }
        match (&self.local, &self.build, self.host) {
            (Some(l), None, false) => KernelSource::Local(l),
            (None, Some(b), false) => KernelSource::Build(b),
            (None, None, true) => KernelSource::Host,
            _ => unreachable!("validated by MatrixConfig::validate"),
        }
    }
}

/// A config that could not be used; `Display` is the one line a user needs.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}:{line}:{column}: {}", crate::escape::terminal(.message))]
    Syntax { path: String, line: usize, column: usize, message: String },
    #[error("{path}: {}", crate::escape::terminal(.message))]
    Invalid { path: String, message: String },
}

/// The largest config or manifest read: a matrix of thousands of kernels is a
/// fraction of this; a bigger file is a mistake (a log or an image named by
/// accident) and is refused before it is parsed.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// Reads a config or manifest, refusing files over [`MAX_FILE_BYTES`].
pub fn read_limited(path: &Path) -> Result<String, ConfigError> {
    let shown = || path.display().to_string();
    let len = std::fs::metadata(path).map_err(|source| ConfigError::Io { path: shown(), source })?.len();
    if len > MAX_FILE_BYTES {
        return Err(ConfigError::Invalid {
            path: shown(),
            message: format!(
                "the file is {:.1} MiB; kernel-matrix reads YAML files of at most {} MiB",
                len as f64 / 1048576.0,
                MAX_FILE_BYTES >> 20
            ),
        });
    }
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: shown(), source })
}

/// The deepest nesting of YAML collections read. Our files need four levels;
/// the parser's time grows steeply with depth (100,000 nested `[` took 170 s
/// before its own limit answered), so deeper input is refused before parsing.
pub const MAX_DEPTH: usize = 64;

/// Where `text` first nests deeper than [`MAX_DEPTH`] (1-based line and column):
/// flow collections (`[`, `{`) outside quotes and comments, and block nesting
/// by indentation (two spaces or more a level).
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut flow = 0usize;
    for (i, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if flow == 0 && indent / 2 > MAX_DEPTH {
            return Some((i + 1, indent + 1));
        }
        let mut quote: Option<char> = None;
        for (col, c) in line.char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '#') if col == 0 || line[..col].ends_with(' ') => break,
                (None, '[' | '{') => {
                    flow += 1;
                    if flow > MAX_DEPTH {
                        return Some((i + 1, col + 1));
                    }
                }
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
        }
    }
    None
}

/// Deserializes one of our YAML files; errors point at file, line and column.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    if let Some((line, column)) = too_deep(text) {
        let message = format!(
            "nested more than {MAX_DEPTH} levels deep here; kernel-matrix reads YAML nested at most {MAX_DEPTH} levels"
        );
        return Err(ConfigError::Syntax { path: path.display().to_string(), line, column, message });
    }
    serde_norway::from_str(text).map_err(|e| {
        let shown = path.display().to_string();
        // serde_norway repeats the location in its message; keep only the reason.
        let message = e.to_string();
        let message = message.split(" at line ").next().unwrap_or(&message).to_string();
        // Some errors carry no location (found by config_fuzz): a second YAML
        // document is pointed at by its `---`; the rest say so plainly.
        let location = e
            .location()
            .map(|l| (l.line(), l.column()))
            .or_else(|| message.contains("more than one document").then(|| second_document(text)).flatten());
        match location {
            Some((line, column)) => ConfigError::Syntax { path: shown, line, column, message },
            None => ConfigError::Invalid { path: shown, message: format!("{message} (no position reported)") },
        }
    })
}

impl MatrixConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_limited(path)?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: MatrixConfig = parse_yaml(text, path)?;
        cfg.path = path.to_path_buf();
        cfg.validate(text)?;
        Ok(cfg)
    }

    /// Linear in the number of kernels: a 20,000-entry file once took minutes
    /// because every kernel's position was searched for up front; now it is
    /// searched for only when that kernel is wrong.
    fn validate(&self, text: &str) -> Result<(), ConfigError> {
        let mut seen = HashSet::new();
        for k in &self.kernels {
            // The n-th kernel of this name is the one at fault (a duplicate is the second).
            let nth = if seen.contains(&k.name) { 1 } else { 0 };
            let invalid = |message: String| ConfigError::Invalid {
                path: format!("{}{}", self.path.display(), locate(text, &k.name, nth)),
                message,
            };
            if k.name.is_empty() || !k.name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                return Err(invalid(format!(
                    "kernel name {:?} must be non-empty and use only letters, digits, '.', '_' and '-'",
                    k.name
                )));
            }
            if !seen.insert(&k.name) {
                let first =
                    locate(text, &k.name, 0).0.map(|(line, _)| format!(" (first at line {line})")).unwrap_or_default();
                return Err(invalid(format!("kernel {:?} is listed twice{first}", k.name)));
            }
            let sources = k.debian.is_some() as u8
                + k.ubuntu.is_some() as u8
                + k.ubuntu_mainline.is_some() as u8
                + k.rpm.is_some() as u8
                + k.oci.is_some() as u8
                + k.local.is_some() as u8
                + k.build.is_some() as u8
                + k.host as u8;
            if sources != 1 {
                return Err(invalid(format!(
                    "kernel {:?} needs exactly one of `debian:`, `ubuntu:`, `ubuntu_mainline:`, `rpm:`, `oci:`, `local:`, `build:` or `host: true`",
                    k.name
                )));
            }
            if let Some(b) = &k.build {
                if b.source.is_some() == b.git.is_some() {
                    return Err(invalid(format!(
                        "kernel {:?}: `build:` needs exactly one of `source:` (a tarball or tree) and `git:`",
                        k.name
                    )));
                }
                if b.git_ref.is_some() && b.git.is_none() || b.sha256.is_some() && b.git.is_some() {
                    return Err(invalid(format!(
                        "kernel {:?}: `ref:` goes with `git:`, `sha256:` with a tarball `source:`",
                        k.name
                    )));
                }
                if b.url().is_some() && b.sha256.is_none() {
                    return Err(invalid(format!(
                        "kernel {:?}: a `build:` source URL needs its `sha256:` (the tarball is verified before it is unpacked)",
                        k.name
                    )));
                }
                if b.sha256.as_ref().is_some_and(|h| h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit())) {
                    return Err(invalid(format!("kernel {:?}: `sha256:` is not 64 hex digits", k.name)));
                }
            }
            if let Some(d) = k.archive() {
                // An OCI tag is any name (`bpf-next`); every other source names a version.
                if d.origin != Origin::Oci && d.version().is_none() {
                    return Err(invalid(format!(
                        "kernel {:?}: series {:?} is not a version like 6.1",
                        k.name, d.series
                    )));
                }
            }
            if let Some(a) = &k.arch {
                let Some(arch) = km_protocol::Arch::parse(a) else {
                    return Err(invalid(format!(
                        "kernel {:?}: arch {a:?} is not supported (supported: {})",
                        k.name,
                        km_protocol::Arch::ALL.map(|a| a.name()).join(", ")
                    )));
                };
                if k.host && arch != km_protocol::Arch::host() {
                    return Err(invalid(format!(
                        "kernel {:?}: the host kernel is {}, not {arch}",
                        k.name,
                        km_protocol::Arch::host()
                    )));
                }
            }
            if k.timeout_secs == Some(0) {
                return Err(invalid(format!("kernel {:?}: timeout_secs must be positive", k.name)));
            }
        }
        let mut suite_names = HashSet::new();
        for s in &self.suites {
            let invalid = |message: String| ConfigError::Invalid {
                path: format!("{}{}", self.path.display(), locate(text, &s.name, 0)),
                message,
            };
            if s.name.is_empty() || !s.name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                return Err(invalid(format!(
                    "suite name {:?} must be non-empty and use only letters, digits, '.', '_' and '-'",
                    s.name
                )));
            }
            if !suite_names.insert(&s.name) || s.name == "features" {
                return Err(invalid(format!("suite name {:?} is taken", s.name)));
            }
            if s.command.is_empty() {
                return Err(invalid(format!("suite {:?}: `command` needs a program", s.name)));
            }
            if let Some(n) = s.needs.iter().find(|n| km_protocol::features::by_id(n).is_none()) {
                return Err(invalid(format!("suite {:?}: needs unknown feature {n:?} (see features.yaml)", s.name)));
            }
        }
        if self.timeout_secs == 0 {
            return Err(ConfigError::Invalid {
                path: self.path.display().to_string(),
                message: "timeout_secs must be positive".into(),
            });
        }
        Ok(())
    }

    pub fn timeout(&self, k: &KernelSpec) -> Duration {
        Duration::from_secs(k.timeout_secs.unwrap_or(self.timeout_secs))
    }

    pub fn kernel(&self, name: &str) -> Option<&KernelSpec> {
        self.kernels.iter().find(|k| k.name == name)
    }

    /// The architecture of kernel `name` (the host's for a name not in the file).
    pub fn arch_of(&self, name: &str) -> km_protocol::Arch {
        self.kernel(name).map_or(km_protocol::Arch::host(), KernelSpec::arch)
    }

    /// Resolves a path from the config relative to the file's directory.
    pub fn resolve_path(&self, p: &Path) -> PathBuf {
        match self.path.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }
}

/// Where the second YAML document starts: the first `---` after some content,
/// or the second `---` (1-based line and column).
fn second_document(text: &str) -> Option<(usize, usize)> {
    let mut seen_content = false;
    let mut markers = 0;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_end();
        if t == "---" || t.starts_with("--- ") {
            markers += 1;
            if seen_content || markers == 2 {
                return Some((i + 1, 1));
            }
        } else if !t.trim().is_empty() && !t.trim_start().starts_with('#') {
            seen_content = true;
        }
    }
    None
}

/// `:line:column` of the `nth` (from 0) `name: <value>` line for a kernel, for
/// semantic errors.
fn locate(text: &str, value: &str, nth: usize) -> Location {
    let found = text.lines().enumerate().filter_map(|(i, line)| {
        let pos = line.find("name:")?;
        let v = line[pos + 5..].trim().trim_matches(|c| c == '"' || c == '\'');
        (v == value).then_some((i + 1, pos + 1))
    });
    Location(found.clone().nth(nth).or_else(|| found.last()))
}

struct Location(Option<(usize, usize)>);
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((l, c)) => write!(f, ":{l}:{c}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<MatrixConfig, ConfigError> {
        MatrixConfig::parse(s, Path::new("kernels.yaml"))
    }

    #[test]
    fn parser_messages_escape_control_characters() {
        for text in ["{\"\\0\"", "kernels:\n  - name: \"a\\0\\e\"\n"] {
            let e = parse(text).unwrap_err().to_string();
            assert!(!e.contains(['\0', '\x1b']), "{e:?}");
        }
    }

    #[test]
    fn parses_every_source() {
        let c = parse(
            "kernels:\n  - name: '6.1'\n    debian: { suite: bookworm, series: '6.1' }\n  - name: host\n    host: true\n  - name: mine\n    local: { kernel: /boot/vmlinuz }\n  - name: built\n    build: { source: linux.tar.xz, config: [debug.config] }\n",
        )
        .unwrap();
        assert_eq!(c.kernels.len(), 4);
        assert!(matches!(c.kernels[3].source(), KernelSource::Build(b) if b.config.len() == 1));
        assert!(matches!(c.kernels[0].source(), KernelSource::Archive(d) if d.flavour == "cloud"));
        assert_eq!(c.kernels[1].source(), KernelSource::Host);
        assert!(matches!(c.kernels[2].source(), KernelSource::Local(_)));
    }

    #[test]
    fn unknown_key_points_at_line_and_column() {
        let e = parse("kernels:\n  - name: x\n    hots: true\n").unwrap_err().to_string();
        assert!(e.starts_with("kernels.yaml:3:5: "), "{e}");
        assert!(e.contains("unknown field `hots`"), "{e}");
    }

    #[test]
    fn second_document_points_at_its_marker() {
        let e = parse("kernels: []\n---\nkernels: []\n").unwrap_err().to_string();
        assert!(e.starts_with("kernels.yaml:2:1: ") && e.contains("more than one document"), "{e}");
    }

    #[test]
    fn wrong_type_points_at_line() {
        let e = parse("timeout_secs: soon\nkernels: []\n").unwrap_err().to_string();
        assert!(e.starts_with("kernels.yaml:1:"), "{e}");
    }

    #[test]
    fn duplicate_kernels_are_rejected_with_location() {
        let e = parse("kernels:\n  - name: host\n    host: true\n  - name: host\n    host: true\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "kernels.yaml:4:5: kernel \"host\" is listed twice (first at line 2)");
    }

    #[test]
    fn impossible_series_and_missing_source_are_rejected() {
        let e = parse("kernels:\n  - name: a\n    debian: { suite: sid, series: latest }\n").unwrap_err().to_string();
        assert!(e.contains("not a version"), "{e}");
        let e = parse("kernels:\n  - name: a\n").unwrap_err().to_string();
        assert!(e.contains("exactly one of"), "{e}");
        // An OCI tag is a name, not a version; a source URL needs its checksum.
        let c = parse("kernels:\n  - name: a\n    oci: { image: 'cilium/ci-kernels:bpf-next' }\n").unwrap();
        assert!(
            matches!(c.kernels[0].source(), KernelSource::Archive(a) if a.suite == "cilium/ci-kernels" && a.series == "bpf-next")
        );
        let e = parse("kernels:\n  - name: a\n    build: { source: 'https://x.example/linux.tar.xz' }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs its `sha256:`"), "{e}");
        let e = parse("kernels:\n  - name: a\n    build: { source: l.tar.xz, sha256: abc }\n").unwrap_err().to_string();
        assert!(e.contains("not 64 hex digits"), "{e}");
        let c = parse("kernels:\n  - name: a\n    build: { git: 'https://git.example/bpf-next.git', ref: master }\n")
            .unwrap();
        assert!(matches!(c.kernels[0].source(), KernelSource::Build(b) if b.git_ref.as_deref() == Some("master")));
        let e = parse("kernels:\n  - name: a\n    build: { source: l.tar.xz, git: 'g' }\n").unwrap_err().to_string();
        assert!(e.contains("exactly one of `source:`"), "{e}");
        let e = parse("kernels:\n  - name: a\n    build: { source: l.tar.xz, ref: v6.6 }\n").unwrap_err().to_string();
        assert!(e.contains("`ref:` goes with `git:`"), "{e}");
        let c = parse("kernels:\n  - name: a\n    rpm: { repo: alma9, version: '5.14' }\n").unwrap();
        assert!(matches!(c.kernels[0].source(), KernelSource::Archive(a) if a.flavour == "kernel-core"));
    }

    #[test]
    fn architectures_parse_and_unsupported_ones_point_at_their_kernel() {
        let c = parse("kernels:\n  - name: a\n    arch: aarch64\n    debian: { suite: sid, series: '6.1' }\n  - name: b\n    debian: { suite: sid, series: '6.1' }\n").unwrap();
        assert_eq!(c.kernels[0].arch(), km_protocol::Arch::Arm64);
        assert_eq!(c.kernels[1].arch(), km_protocol::Arch::host());
        let e = parse("kernels:\n  - name: a\n    debian: { suite: sid, series: '6.1' }\n  - name: s\n    arch: s390x\n    debian: { suite: sid, series: '6.1' }\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "kernels.yaml:4:5: kernel \"s\": arch \"s390x\" is not supported (supported: x86_64, arm64)");
        let e = parse("kernels:\n  - name: h\n    host: true\n    arch: arm64\n").unwrap_err().to_string();
        assert!(e.contains("the host kernel is x86_64, not arm64"), "{e}");
    }

    #[test]
    fn oversized_file_is_refused_before_parsing() {
        let dir = std::env::temp_dir().join(format!("km-config-big-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("kernels.yaml");
        std::fs::write(&p, "#".repeat(MAX_FILE_BYTES as usize + 1)).unwrap();
        let e = MatrixConfig::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("kernels.yaml: the file is 4.0 MiB; kernel-matrix reads YAML files of at most 4 MiB"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn deep_nesting_is_an_error_with_a_location() {
        let deep = format!("kernels: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let e = parse(&deep).unwrap_err().to_string();
        assert_eq!(e, "kernels.yaml:1:74: nested more than 64 levels deep here; kernel-matrix reads YAML nested at most 64 levels");
        let indented: String = (0..200).map(|i| format!("{}k{i}:\n", " ".repeat(2 * i))).collect();
        let e = parse(&indented).unwrap_err().to_string();
        assert!(e.starts_with("kernels.yaml:66:131: nested more than 64 levels"), "{e}");
        // Brackets in strings and comments are not nesting.
        assert!(too_deep(&format!("a: \"{}\" # {}\n", "[".repeat(100), "{".repeat(100))).is_none());
    }

    #[test]
    fn many_kernels_validate_and_a_late_duplicate_points_at_itself() {
        let mut text = String::from("kernels:\n");
        for i in 0..20_000 {
            text.push_str(&format!("  - name: \"k{i}\"\n    debian: {{ suite: bookworm, series: \"6.1\" }}\n"));
        }
        assert_eq!(parse(&text).unwrap().kernels.len(), 20_000);
        text.push_str("  - name: \"k19999\"\n    host: true\n");
        let e = parse(&text).unwrap_err().to_string();
        assert_eq!(e, "kernels.yaml:40002:5: kernel \"k19999\" is listed twice (first at line 40000)");
    }
}
