//! Downloads that are verified before use and written atomically, over HTTP that
//! behaves like the rest of a user's tools: proxies from `http_proxy`/`https_proxy`/
//! `all_proxy`/`no_proxy` (either case), the system's CA store, and a few retries
//! with backoff when the network or the mirror fails for a moment.
use std::{
    fs,
    io::{Read, Write},
    path::Path,
    time::Duration,
};

use anyhow::Context as _;
use sha2::{Digest, Sha256};

/// Proxy settings as curl reads them from the environment: the lower-case name
/// first, then the upper-case one; `all_proxy` for a scheme without its own.
/// `no_proxy` is a comma-separated list of hosts and domains (`example.com` and
/// `.example.com` both match its subdomains too), IP addresses or ranges
/// (`10.0.0.0/8`), or `*` for everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    pub http: Option<String>,
    pub https: Option<String>,
    pub no_proxy: Option<String>,
}

impl ProxyEnv {
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// From any source of variables (a test's map, a config).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let var = |lower: &str| {
            get(lower)
                .or_else(|| get(&lower.to_ascii_uppercase()))
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let all = var("all_proxy");
        Self {
            http: var("http_proxy").or_else(|| all.clone()),
            https: var("https_proxy").or(all),
            no_proxy: var("no_proxy"),
        }
    }
}

/// When and how often a failed request is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first one included.
    pub attempts: u32,
    /// The wait before the second attempt; it doubles after each failure.
    pub first_delay: Duration,
    /// A `Retry-After` up to this long is waited for; a longer one ends the retries.
    pub max_retry_after: Duration,
}

impl Default for Retry {
    /// 4 attempts, waiting 0.5 s, 1 s and 2 s between them: a mirror that is down
    /// costs 3.5 s more than before, a blip costs nothing.
    fn default() -> Self {
        Self { attempts: 4, first_delay: Duration::from_millis(500), max_retry_after: Duration::from_secs(10) }
    }
}

/// Why a GET failed for good.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Never retried: a missing file stays missing.
    #[error("not found (HTTP 404)")]
    NotFound,
    #[error("HTTP {status}{}", attempts_note(*.attempts))]
    Status { status: u16, attempts: u32 },
    #[error("{message}{}", attempts_note(*.attempts))]
    Transport { message: String, attempts: u32 },
    /// The caller's own failure while taking the body (a full disk): not retried.
    #[error("{0}")]
    Local(String),
}

fn attempts_note(attempts: u32) -> String {
    if attempts > 1 {
        format!(" ({attempts} attempts)")
    } else {
        String::new()
    }
}

/// What the body reader of [`Http::get`] hit: the network (the attempt is retried)
/// or something local (it is not).
#[derive(Debug)]
pub enum BodyError {
    Network(std::io::Error),
    Local(String),
}

/// An HTTP client with the proxies, CA store and retry policy above.
pub struct Http {
    client: Result<reqwest::blocking::Client, String>,
    retry: Retry,
}

impl Http {
    pub fn new(proxies: &ProxyEnv, retry: Retry) -> Self {
        Self { client: client(proxies).map_err(|e| format!("{e:#}")), retry }
    }

    pub fn retry(&self) -> Retry {
        self.retry
    }

    /// POSTs `body` as JSON with a bearer `token`; returns the status and the
    /// response body. Sent once: a POST that creates something is not repeated.
    pub fn post_json(&self, url: &str, token: &str, body: &serde_json::Value) -> Result<(u16, String), HttpError> {
        let client = self.client.as_ref().map_err(|e| HttpError::Transport { message: e.clone(), attempts: 0 })?;
        let resp = client
            .post(url)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .map_err(|e| HttpError::Transport { message: describe(&e), attempts: 1 })?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().unwrap_or_default()))
    }

    /// GETs `url` and hands the body to `read`. Connection failures, timeouts,
    /// HTTP 408, 429 and 5xx, and network errors while reading the body are tried
    /// again (the whole request: `read` starts over), up to [`Retry::attempts`].
    pub fn get<T>(
        &self,
        url: &str,
        mut read: impl FnMut(&mut dyn Read) -> Result<T, BodyError>,
    ) -> Result<T, HttpError> {
        let client = self.client.as_ref().map_err(|e| HttpError::Transport { message: e.clone(), attempts: 0 })?;
        let mut delay = self.retry.first_delay;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (error, transient, retry_after) = match client.get(url).send() {
                Err(e) => {
                    // A certificate the system does not trust will not become trusted.
                    let transient = !(e.is_builder() || e.is_redirect() || e.is_decode() || is_tls(&e));
                    (HttpError::Transport { message: describe(&e), attempts: attempt }, transient, None)
                }
                Ok(resp) if resp.status() == reqwest::StatusCode::NOT_FOUND => return Err(HttpError::NotFound),
                Ok(resp) if !resp.status().is_success() => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let transient = matches!(status, 408 | 429 | 500..=599);
                    (HttpError::Status { status, attempts: attempt }, transient, retry_after)
                }
                Ok(mut resp) => match read(&mut resp) {
                    Ok(t) => return Ok(t),
                    Err(BodyError::Local(m)) => return Err(HttpError::Local(m)),
                    Err(BodyError::Network(e)) => (
                        HttpError::Transport {
                            message: format!("reading the response: {}", io_chain(&e)),
                            attempts: attempt,
                        },
                        true,
                        None,
                    ),
                },
            };
            if !transient || attempt >= self.retry.attempts {
                return Err(error);
            }
            let wait = match retry_after {
                Some(ra) if ra > self.retry.max_retry_after => {
                    return Err(HttpError::Transport {
                        message: format!("{error}; the server asks to retry after {} s", ra.as_secs()),
                        attempts: attempt,
                    })
                }
                Some(ra) => ra.max(delay),
                None => delay,
            };
            let said = error.to_string();
            eprintln!(
                "kernel-matrix: {url}: {}; trying again in {:.1} s (attempt {} of {})",
                said.strip_suffix(&attempts_note(attempt)).unwrap_or(&said),
                wait.as_secs_f64(),
                attempt + 1,
                self.retry.attempts
            );
            std::thread::sleep(wait);
            delay *= 2;
        }
    }
}

impl Http {
    /// The whole body of `url` (indices, listings, checksum files: small).
    pub fn bytes(&self, url: &str) -> Result<Vec<u8>, HttpError> {
        self.get(url, |r| {
            let mut buf = Vec::new();
            r.read_to_end(&mut buf).map_err(BodyError::Network)?;
            Ok(buf)
        })
    }

    /// The size a `HEAD` of `url` announces (`Content-Length`), where it does.
    pub fn content_length(&self, url: &str) -> Option<u64> {
        let resp = self.client.as_ref().ok()?.head(url).send().ok()?;
        resp.status().is_success().then_some(())?;
        resp.headers().get(reqwest::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
    }
}

/// Makes rustls's ring provider the process's crypto provider: reqwest (ours and
/// oci-client's) is built without a default one (aws-lc needs a long C build).
/// Already installed is fine.
pub(crate) fn use_ring_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn client(proxies: &ProxyEnv) -> anyhow::Result<reqwest::blocking::Client> {
    use_ring_provider();
    let no_proxy = || proxies.no_proxy.as_deref().and_then(reqwest::NoProxy::from_string);
    // The environment is read here, not by reqwest, so tests can hand in their own.
    let mut b = reqwest::blocking::Client::builder()
        .no_proxy()
        .user_agent(concat!("kernel-matrix/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        // Per read of the body, and for the response head: a dead connection fails
        // instead of hanging; a slow download of a large kernel does not.
        .timeout(Duration::from_secs(60));
    if let Some(p) = &proxies.http {
        b = b
            .proxy(reqwest::Proxy::http(p.as_str()).with_context(|| format!("http_proxy {p:?}"))?.no_proxy(no_proxy()));
    }
    if let Some(p) = &proxies.https {
        b = b.proxy(
            reqwest::Proxy::https(p.as_str()).with_context(|| format!("https_proxy {p:?}"))?.no_proxy(no_proxy()),
        );
    }
    b.build().context("setting up the HTTP client (TLS with the system's CA store)")
}

/// Whether a TLS error (an untrusted or invalid certificate, a failed handshake)
/// is among the causes.
fn is_tls(e: &reqwest::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(mut err) = cur {
        // io::Error hides what it wraps from source(): look inside (it nests).
        while let Some(inner) = err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            err = inner;
        }
        if err.is::<rustls::Error>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The error and its causes on one line, without reqwest's "for url (...)" (our
/// messages start with the URL already).
fn describe(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        let s = match s.split_once(" for url (") {
            Some((head, _)) => head.to_string(),
            None => s,
        };
        if !parts.iter().any(|p: &String| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

fn io_chain(e: &std::io::Error) -> String {
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(err) = cur {
        let m = err.to_string();
        if !s.contains(&m) {
            s = format!("{s}: {m}");
        }
        cur = err.source();
    }
    s
}

/// The process's client: proxies from its environment, the default retries.
pub fn http() -> &'static Http {
    static HTTP: std::sync::OnceLock<Http> = std::sync::OnceLock::new();
    HTTP.get_or_init(|| Http::new(&ProxyEnv::from_env(), Retry::default()))
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: not found on the mirror (HTTP 404); the pinned package {package} may have been removed: run `kernel-matrix lock --update`")]
    NotFound { url: String, package: String },
    #[error("{url}: sha256 mismatch: expected {expected}, got {actual} ({size} bytes); the download was discarded")]
    HashMismatch { url: String, expected: String, actual: String, size: u64 },
    #[error("{url}: {message}")]
    Other { url: String, message: String },
}

/// Downloads `url` into `dest` if it is not already there with the right hash.
/// The file only appears at `dest` after its sha256 matched.
pub fn fetch_verified(
    url: &str,
    package: &str,
    sha256: &str,
    dest: &Path,
    progress: impl FnMut(u64),
) -> Result<(), FetchError> {
    fetch_verified_with(http(), url, package, sha256, dest, progress)
}

/// [`fetch_verified`] through a given client.
pub fn fetch_verified_with(
    http: &Http,
    url: &str,
    package: &str,
    sha256: &str,
    dest: &Path,
    mut progress: impl FnMut(u64),
) -> Result<(), FetchError> {
    if dest.exists() {
        if let Ok(actual) = sha256_file(dest) {
            if actual.eq_ignore_ascii_case(sha256) {
                return Ok(());
            }
        }
        // A cached file that no longer matches (tampered, truncated): fetch again.
        let _ = fs::remove_file(dest);
    }
    let other = |message: String| FetchError::Other { url: url.to_string(), message };
    let tmp = tmp_path(dest);
    // Each attempt starts the temporary file and the hash over.
    let result = http.get(url, |reader| {
        let local = |m: String| BodyError::Local(m);
        let mut out = fs::File::create(&tmp).map_err(|e| local(format!("creating {}: {e}", tmp.display())))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(BodyError::Network)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| local(format!("writing {}: {e}", tmp.display())))?;
            total += n as u64;
            progress(total);
        }
        out.sync_all().map_err(|e| local(format!("sync: {e}")))?;
        Ok((hex::encode(hasher.finalize()), total))
    });
    match result {
        Ok((actual, _)) if actual.eq_ignore_ascii_case(sha256) => {
            fs::rename(&tmp, dest).map_err(|e| other(format!("renaming into {}: {e}", dest.display())))
        }
        Ok((actual, size)) => {
            let _ = fs::remove_file(&tmp);
            Err(FetchError::HashMismatch { url: url.into(), expected: sha256.into(), actual, size })
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(match e {
                HttpError::NotFound => FetchError::NotFound { url: url.into(), package: package.into() },
                e => other(e.to_string()),
            })
        }
    }
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// The one atomic write (temporary sibling, then rename) and its temporary paths,
/// shared with the BMF files of `km-bmf`.
pub use km_bmf::atomic::{tmp_path, write_atomic, write_atomic_mode};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tampered_cache_file_is_not_trusted() {
        let dir = std::env::temp_dir().join(format!("km-fetch-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("f");
        fs::write(&dest, b"tampered").unwrap();
        // Unreachable URL: the stale file must be removed and the fetch must fail, not succeed.
        let err = fetch_verified("http://127.0.0.1:9/x.deb", "pkg", &"0".repeat(64), &dest, |_| {}).unwrap_err();
        assert!(matches!(err, FetchError::Other { .. }), "{err}");
        assert!(!dest.exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
