//! Kernels in OCI images (cilium/ci-kernels, little-vm-helper's kernel images):
//! the registry protocol (anonymous bearer tokens, manifests, image indices by
//! platform, blobs) is the `oci-client` crate's; this module pins an image's
//! manifest digest and layers, downloads the layers (verified by their digest),
//! and finds the kernel in them.
use std::{io::Read, path::Path, path::PathBuf};

use anyhow::{bail, Context as _};
use oci_client::{
    client::{ClientConfig, ClientProtocol},
    manifest::ImageIndexEntry,
    secrets::RegistryAuth,
    Client, Reference,
};

use km_protocol::Arch;

use crate::{
    config::ArchiveSource,
    images::{debian::ResolvedKernel, fetch, lock::LockedFile, lock::LockedKernel, Extracted},
};

/// OCI's name of an architecture.
fn oci_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "amd64",
        Arch::Arm64 => "arm64",
    }
}

/// `repository:tag` -> (repository, tag); the tag defaults to `latest`.
pub fn split_image(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    }
}

/// The registry of `base` (`https://host[:port]` or `http://...`): its host and
/// whether it speaks plain HTTP.
fn registry(base: &str) -> anyhow::Result<(String, bool)> {
    let (http, host) = if let Some(h) = base.strip_prefix("http://") {
        (true, h)
    } else if let Some(h) = base.strip_prefix("https://") {
        (false, h)
    } else {
        bail!("OCI registry {base:?}: give it as https://HOST[:PORT] (or http:// for a plain-HTTP registry)")
    };
    Ok((host.trim_end_matches('/').to_string(), http))
}

/// Where the credentials for a registry came from (for its refusals).
enum Who {
    Anonymous,
    /// `KM_OCI_USERNAME` and `KM_OCI_PASSWORD`.
    Variables,
    /// A `docker login` / `podman login` file.
    File(PathBuf),
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Who::Anonymous => f.write_str("anonymous"),
            Who::Variables => f.write_str("KM_OCI_USERNAME and KM_OCI_PASSWORD"),
            Who::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Credentials for the registry `host`, and where they came from (for errors):
/// `KM_OCI_USERNAME` + `KM_OCI_PASSWORD`; else what `docker login` stored
/// (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, credential helpers
/// included: the `docker_credential` crate reads it as docker does); else what
/// `podman login` / `skopeo login` stored (`$REGISTRY_AUTH_FILE`, else
/// `$XDG_RUNTIME_DIR/containers/auth.json`, the same format); else anonymous.
fn credentials(host: &str) -> anyhow::Result<(RegistryAuth, Who)> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    let s = crate::settings::get();
    // Empty counts as unset: a workflow passes an undefined variable as "".
    let set = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    match (set(&s.oci_username), set(&s.oci_password)) {
        (Some(u), Some(p)) => return Ok((RegistryAuth::Basic(u, p), Who::Variables)),
        (Some(_), None) => bail!("KM_OCI_USERNAME is set but KM_OCI_PASSWORD is not"),
        (None, Some(_)) => bail!("KM_OCI_PASSWORD is set but KM_OCI_USERNAME is not"),
        (None, None) => {}
    }
    // Docker keys Docker Hub by its old index address; every other registry by host[:port].
    let key = match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "https://index.docker.io/v1/",
        h => h,
    };
    let docker = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .map(|d| d.join("config.json"));
    let podman = std::env::var_os("REGISTRY_AUTH_FILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_RUNTIME_DIR").map(|d| PathBuf::from(d).join("containers/auth.json")));
    for file in [docker, podman].into_iter().flatten() {
        let Ok(f) = std::fs::File::open(&file) else { continue };
        let who = Who::File(file);
        match docker_credential::get_credential_from_reader(std::io::BufReader::new(f), key) {
            Ok(DockerCredential::UsernamePassword(u, p)) => return Ok((RegistryAuth::Basic(u, p), who)),
            Ok(DockerCredential::IdentityToken(_)) => bail!(
                "{who} holds an identity token for {host}, which kernel-matrix cannot exchange; \
                 set KM_OCI_USERNAME and KM_OCI_PASSWORD instead"
            ),
            Err(E::NoCredentialConfigured) => {}
            Err(e) => bail!("reading the credentials for {host} from {who}: {e}"),
        }
    }
    Ok((RegistryAuth::Anonymous, Who::Anonymous))
}

/// `e` explained when the registry refused who we were.
fn refused(e: oci_client::errors::OciDistributionError, host: &str, who: &Who) -> anyhow::Error {
    use oci_client::errors::OciDistributionError as E;
    let denied = match &e {
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => true,
        E::ServerError { code, .. } => *code == 401 || *code == 403,
        E::RegistryError { envelope, .. } => envelope.errors.iter().any(|x| {
            matches!(x.code, oci_client::errors::OciErrorCode::Unauthorized | oci_client::errors::OciErrorCode::Denied)
        }),
        _ => false,
    };
    let e = anyhow::Error::new(e);
    match (denied, who) {
        (false, _) => e,
        (true, Who::Anonymous) => e.context(format!(
            "{host} refused anonymous access: `docker login {host}` (or podman's), or set \
             KM_OCI_USERNAME and KM_OCI_PASSWORD"
        )),
        (true, who) => e.context(format!("{host} refused the credentials from {who}")),
    }
}

/// One async call on a runtime of its own: the rest of the harness is blocking.
fn block_on<T>(f: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(rt.block_on(f))
}

fn client(http: bool, arch: Arch) -> Client {
    fetch::use_ring_provider();
    let env = fetch::ProxyEnv::from_env();
    let want = oci_arch(arch);
    let resolver = move |entries: &[ImageIndexEntry]| {
        entries
            .iter()
            .find(|e| {
                e.platform.as_ref().is_some_and(|p| p.os.to_string() == "linux" && p.architecture.to_string() == want)
            })
            .map(|e| e.digest.clone())
    };
    Client::new(ClientConfig {
        protocol: if http { ClientProtocol::Http } else { ClientProtocol::Https },
        platform_resolver: Some(Box::new(resolver)),
        https_proxy: env.https,
        http_proxy: env.http,
        no_proxy: env.no_proxy,
        ..Default::default()
    })
}

/// Resolves `src` (`suite`: the repository, `series`: the tag) at the registry
/// `base` to its manifest for `arch`: (the kernel to pin, the manifest digest).
pub fn resolve(base: &str, src: &ArchiveSource, arch: Arch) -> anyhow::Result<(ResolvedKernel, String)> {
    let (host, http) = registry(base)?;
    let reference = Reference::with_tag(host.clone(), src.suite.to_string(), src.series.to_string());
    let c = client(http, arch);
    let (auth, who) = credentials(&host)?;
    let (manifest, digest, config) = match block_on(c.pull_manifest_and_config(&reference, &auth))? {
        Ok(m) => m,
        Err(e) => {
            let e = refused(e, &host, &who);
            // Which tags there are, for the error (when the registry lists them).
            let tags = block_on(c.list_tags(&reference, &auth, None, None))?.map(|t| t.tags).unwrap_or_default();
            let near = if tags.is_empty() {
                String::new()
            } else {
                crate::images::nearest::said(src.series, tags.iter().map(String::as_str))
            };
            return Err(e.context(format!(
                "reading the manifest of {host}/{}:{} for {}{near} (the registry is set by {})",
                src.suite,
                src.series,
                oci_arch(arch),
                crate::images::mirror::setting_of(src.origin)
            )));
        }
    };
    // A single-platform image says its architecture in its config; an index was
    // already resolved by platform.
    let config: serde_json::Value = serde_json::from_str(&config).unwrap_or_default();
    if let Some(a) = config.get("architecture").and_then(|a| a.as_str()).filter(|a| !a.is_empty()) {
        anyhow::ensure!(
            a == oci_arch(arch),
            "{host}/{}:{} is an image for {a}, but the kernel entry is {arch}",
            src.suite,
            src.series
        );
    }
    let mut files = Vec::new();
    for (i, layer) in manifest.layers.iter().enumerate() {
        let Some(hex) = layer.digest.strip_prefix("sha256:") else {
            bail!(
                "layer {} of {}:{} has digest {}; only sha256 is accepted",
                i + 1,
                src.suite,
                src.series,
                layer.digest
            )
        };
        files.push(LockedFile {
            package: format!("{}:{} layer {}", src.suite, src.series, i + 1),
            version: layer.media_type.clone(),
            path: layer.digest.clone(),
            size: u64::try_from(layer.size).unwrap_or(0),
            sha256: hex.to_string(),
        });
    }
    anyhow::ensure!(!files.is_empty(), "{}:{} has no layers", src.suite, src.series);
    Ok((ResolvedKernel { abi: src.series.to_string(), version: digest.clone(), files }, digest))
}

/// The pinned layer `file` of `locked` in the cache as `layers/<sha256>`,
/// downloaded from the registry only when it is not there yet, verified by its digest.
pub fn fetch_layer(cache: &Path, base: &str, locked: &LockedKernel, file: &LockedFile) -> anyhow::Result<PathBuf> {
    use sha2::Digest as _;
    let dir = cache.join("layers");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::images::cache_gc::remove_stale(&dir);
    let dest = dir.join(&file.sha256);
    if dest.exists() && fetch::sha256_file(&dest).is_ok_and(|h| h == file.sha256) {
        return Ok(dest);
    }
    let (host, http) = registry(base)?;
    let digest = locked.digest.as_deref().context("an OCI kernel without a manifest digest in the lock")?;
    let reference = Reference::with_digest(host.clone(), locked.suite.clone(), digest.to_string());
    let c = client(http, locked.arch());
    let (auth, who) = credentials(&host)?;
    let mut data = Vec::new();
    block_on(async {
        // The blob pull gets its token from the auth stored for the registry.
        c.store_auth_if_needed(reference.resolve_registry(), &auth).await;
        c.pull_blob(&reference, file.path.as_str(), &mut data).await
    })?
    .map_err(|e| refused(e, &host, &who))
    .with_context(|| format!("downloading {} ({}) from {host}", file.package, file.path))?;
    let got = hex::encode(sha2::Sha256::digest(&data));
    anyhow::ensure!(got == file.sha256, "{}: sha256 {got}, but the lock pins {}", file.package, file.sha256);
    fetch::write_atomic(&dest, &data)?;
    Ok(dest)
}

/// The kernel in a layer (a tar, plain or compressed with gzip or zstd): a file
/// named `vmlinuz`, `vmlinuz-<release>` or `bzImage` anywhere (ci-kernels keep
/// `/boot/vmlinuz`), with a `config` or `config-<release>` beside it if there is
/// one. The release comes from the file name (`vmlinuz-<release>`,
/// `lib/modules/<release>/vmlinuz`), else a bzImage's header, else the `Linux
/// version` banner of an uncompressed image (ci-kernels' arm64 `Image`).
pub fn kernel_from_layer(layer: &Path) -> anyhow::Result<Option<Extracted>> {
    let data = std::fs::read(layer).with_context(|| format!("reading {}", layer.display()))?;
    let reader: Box<dyn Read> = if data.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(&data[..]))
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::new(&data[..])?)
    } else {
        Box::new(&data[..])
    };
    let (mut image, mut configs) = (None::<(String, Vec<u8>)>, Vec::<(String, Vec<u8>)>::new());
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().with_context(|| format!("{}: not a tar layer", layer.display()))? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.to_string_lossy().trim_start_matches("./").trim_start_matches('/').to_string();
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
        let is_image = name == "vmlinuz" || name == "bzImage" || name.starts_with("vmlinuz-");
        let is_config = name == "config" || name.starts_with("config-");
        if (is_image && image.is_none()) || is_config {
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf)?;
            if is_image {
                image = Some((path.clone(), buf));
            } else {
                configs.push((format!("{dir}/{name}"), buf));
            }
        }
    }
    let Some((path, data)) = image else { return Ok(None) };
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
    let release = name
        .strip_prefix("vmlinuz-")
        .map(str::to_string)
        .or_else(|| dir.strip_prefix("lib/modules/").filter(|r| !r.contains('/')).map(str::to_string))
        .or_else(|| crate::images::bzimage::release(&data))
        .or_else(|| crate::images::bzimage::release_in_banner(&data))
        .unwrap_or_else(|| "unknown".into());
    let config = configs
        .into_iter()
        .find(|(p, _)| {
            let (cdir, cname) = p.rsplit_once('/').unwrap_or(("", p));
            cdir == dir && (cname == "config" || cname == format!("config-{release}"))
        })
        .map(|(_, c)| c);
    Ok(Some(Extracted { release, vmlinuz: data, config }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_and_registries() {
        assert_eq!(split_image("cilium/ci-kernels:6.1"), ("cilium/ci-kernels", "6.1"));
        assert_eq!(split_image("cilium/ci-kernels"), ("cilium/ci-kernels", "latest"));
        assert_eq!(registry("http://127.0.0.1:5000/").unwrap(), ("127.0.0.1:5000".into(), true));
        assert_eq!(registry("https://registry.example").unwrap(), ("registry.example".into(), false));
        assert!(registry("registry.example").unwrap_err().to_string().contains("https://HOST"));
    }

    #[test]
    fn the_kernel_in_a_layer() {
        let dir = std::env::temp_dir().join(format!("km-oci-layer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let layer = dir.join("layer.tar.gz");
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        for (path, data) in [
            ("etc/hostname", &b"x"[..]),
            ("boot/config", b"CONFIG_BPF=y\n"),
            ("boot/vmlinuz", b"not a bzImage"),
            ("lib/modules/6.1.0/kernel/a.ko", b"ko"),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, path, data).unwrap();
        }
        std::fs::write(&layer, tar.into_inner().unwrap().finish().unwrap()).unwrap();
        let k = kernel_from_layer(&layer).unwrap().unwrap();
        assert_eq!((k.release.as_str(), &k.vmlinuz[..]), ("unknown", &b"not a bzImage"[..]));
        assert_eq!(k.config.as_deref(), Some(&b"CONFIG_BPF=y\n"[..]));
        std::fs::write(&layer, b"").unwrap();
        assert!(kernel_from_layer(&layer).unwrap().is_none(), "an empty tar holds no kernel");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
