//! Downloads over real local sockets, no internet: a mirror (std TcpListener) that
//! can fail on cue, and a forwarding HTTP proxy that counts what passes through it.
//! Proves: downloads go through `http_proxy` and around it for `no_proxy`; a mirror
//! that fails twice is read on the third attempt; a 404 is never retried;
//! `Retry-After` is honoured; the real binary takes its proxy from the environment.
use std::{
    collections::{HashMap, VecDeque},
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::Command,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use kernel_matrix::images::fetch::{fetch_verified_with, FetchError, Http, ProxyEnv, Retry};
use sha2::{Digest, Sha256};

/// What the mirror does with one request.
#[derive(Debug, Clone)]
enum Act {
    Serve,
    /// An error status, with a `Retry-After` in seconds if given.
    Status(u16, Option<u64>),
    /// Close the connection without reading the request: the client sees a reset.
    Reset,
    /// Headers for the whole file, then half of it, then close.
    Truncate,
}

struct Mirror {
    base: String,
    /// Request lines as received, in order.
    seen: Arc<Mutex<Vec<String>>>,
}

impl Mirror {
    /// Serves `files` (path -> content); the first requests follow `script`, the
    /// rest are served normally (404 for unknown paths).
    fn start(files: HashMap<String, Vec<u8>>, script: Vec<Act>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (seen2, script) = (seen.clone(), Arc::new(Mutex::new(VecDeque::from(script))));
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let act = script.lock().unwrap().pop_front().unwrap_or(Act::Serve);
                if let Act::Reset = act {
                    // Unread data in the receive buffer makes close() send a RST.
                    let _ = stream.peek(&mut [0u8; 1]);
                    seen2.lock().unwrap().push("(reset)".into());
                    drop(stream);
                    continue;
                }
                let Some((line, _)) = read_head(&mut stream) else { continue };
                seen2.lock().unwrap().push(line.clone());
                let path = line.split(' ').nth(1).unwrap_or("/").to_string();
                let body = files.get(&path);
                let _ = match (act, body) {
                    (Act::Status(code, retry_after), _) => {
                        let ra = retry_after.map(|s| format!("Retry-After: {s}\r\n")).unwrap_or_default();
                        write!(stream, "HTTP/1.1 {code} Oops\r\n{ra}Content-Length: 4\r\nConnection: close\r\n\r\noops")
                    }
                    (_, None) => {
                        write!(stream, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    }
                    (Act::Truncate, Some(b)) => {
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            b.len()
                        );
                        stream.write_all(&b[..b.len() / 2])
                    }
                    (_, Some(b)) => {
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            b.len()
                        );
                        stream.write_all(b)
                    }
                };
            }
        });
        Self { base, seen }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// The request line and headers of one request.
fn read_head(stream: &mut TcpStream) -> Option<(String, Vec<String>)> {
    let mut r = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 || h == "\r\n" {
            break;
        }
        headers.push(h.trim_end().to_string());
    }
    Some((line.trim_end().to_string(), headers))
}

/// A forwarding proxy for absolute-URI GETs (`GET http://host:port/path HTTP/1.1`),
/// as squid does for plain-HTTP targets. Counts the requests it forwarded.
struct Proxy {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut client) = stream else { continue };
                let Some((line, _)) = read_head(&mut client) else { continue };
                seen2.lock().unwrap().push(line.clone());
                let mut words = line.split(' ');
                let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                let Some(rest) = target.strip_prefix("http://").filter(|_| method == "GET") else {
                    let _ = write!(
                        client,
                        "HTTP/1.1 405 Only absolute-URI GETs\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    continue;
                };
                let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                let Ok(mut upstream) = TcpStream::connect(authority) else {
                    let _ =
                        write!(client, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                };
                let _ = write!(
                    upstream,
                    "GET {path} HTTP/1.1\r\nHost: {authority}\r\nVia: 1.1 test-proxy\r\nConnection: close\r\n\r\n"
                );
                let _ = std::io::copy(&mut upstream, &mut client);
            }
        });
        Self { url, seen }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn scratch(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("http-{tag}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn payload() -> Vec<u8> {
    (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

fn mirror_with_file(script: Vec<Act>) -> (Mirror, Vec<u8>) {
    let data = payload();
    (Mirror::start(HashMap::from([("/pool/k.deb".to_string(), data.clone())]), script), data)
}

fn direct() -> Http {
    Http::new(&ProxyEnv::default(), Retry::default())
}

#[test]
fn download_goes_through_the_proxy() {
    let (mirror, data) = mirror_with_file(vec![]);
    let proxy = Proxy::start();
    let http = Http::new(&ProxyEnv { http: Some(proxy.url.clone()), ..Default::default() }, Retry::default());
    let dest = scratch("proxy").join("k.deb");
    let url = format!("{}/pool/k.deb", mirror.base);
    fetch_verified_with(&http, &url, "k", &sha256(&data), &dest, |_| {}).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert_eq!(proxy.requests(), [format!("GET {url} HTTP/1.1")], "the proxy got the absolute URI");
    assert_eq!(mirror.requests(), ["GET /pool/k.deb HTTP/1.1"], "and forwarded it");
}

#[test]
fn no_proxy_bypasses_the_proxy() {
    let (mirror, data) = mirror_with_file(vec![]);
    let proxy = Proxy::start();
    // As a shell would set them: upper-case proxy, lower-case no_proxy with spaces.
    let vars = HashMap::from([("HTTP_PROXY", proxy.url.clone()), ("no_proxy", "example.com, 127.0.0.1".to_string())]);
    let env = ProxyEnv::from_lookup(|k| vars.get(k).cloned());
    assert_eq!(env.http.as_deref(), Some(proxy.url.as_str()));
    let dest = scratch("no-proxy").join("k.deb");
    let url = format!("{}/pool/k.deb", mirror.base);
    fetch_verified_with(&Http::new(&env, Retry::default()), &url, "k", &sha256(&data), &dest, |_| {}).unwrap();
    assert!(proxy.requests().is_empty(), "no_proxy names 127.0.0.1: {:?}", proxy.requests());
    assert_eq!(mirror.requests().len(), 1);
    // The same variables without no_proxy do go through it.
    let env = ProxyEnv::from_lookup(|k| (k == "HTTP_PROXY").then(|| proxy.url.clone()));
    std::fs::remove_file(&dest).unwrap();
    fetch_verified_with(&Http::new(&env, Retry::default()), &url, "k", &sha256(&data), &dest, |_| {}).unwrap();
    assert_eq!(proxy.requests().len(), 1);
}

#[test]
fn proxy_variables_follow_curl() {
    let env = |pairs: &[(&str, &str)]| {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ProxyEnv::from_lookup(|k| m.get(k).cloned())
    };
    let e = env(&[("http_proxy", "http://lower:1"), ("HTTP_PROXY", "http://upper:1"), ("HTTPS_PROXY", "http://s:2")]);
    assert_eq!((e.http.as_deref(), e.https.as_deref()), (Some("http://lower:1"), Some("http://s:2")));
    let e = env(&[("ALL_PROXY", "http://all:3"), ("https_proxy", "http://s:2"), ("NO_PROXY", " ")]);
    assert_eq!((e.http.as_deref(), e.https.as_deref(), e.no_proxy), (Some("http://all:3"), Some("http://s:2"), None));
    assert_eq!(env(&[]), ProxyEnv::default());
}

#[test]
fn flaky_mirror_succeeds_on_the_third_attempt() {
    let (mirror, data) = mirror_with_file(vec![Act::Status(503, None), Act::Reset]);
    let dest = scratch("flaky").join("k.deb");
    let start = Instant::now();
    fetch_verified_with(&direct(), &format!("{}/pool/k.deb", mirror.base), "k", &sha256(&data), &dest, |_| {}).unwrap();
    let took = start.elapsed();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert_eq!(mirror.requests(), ["GET /pool/k.deb HTTP/1.1", "(reset)", "GET /pool/k.deb HTTP/1.1"]);
    // Backoff 0.5 s then 1 s.
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(5), "{took:?}");
    eprintln!("503, reset, served: {took:?}");
}

#[test]
fn a_body_cut_short_is_fetched_again() {
    let (mirror, data) = mirror_with_file(vec![Act::Truncate]);
    let dest = scratch("truncated").join("k.deb");
    let mut high = 0;
    fetch_verified_with(&direct(), &format!("{}/pool/k.deb", mirror.base), "k", &sha256(&data), &dest, |n| {
        high = high.max(n)
    })
    .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert_eq!(mirror.requests().len(), 2);
    assert_eq!(high, data.len() as u64);
    let left: Vec<_> = std::fs::read_dir(dest.parent().unwrap()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, [std::ffi::OsString::from("k.deb")], "no temporary file left");
}

#[test]
fn not_found_is_not_retried() {
    let (mirror, _) = mirror_with_file(vec![]);
    let dest = scratch("404").join("gone.deb");
    let start = Instant::now();
    let err = fetch_verified_with(
        &direct(),
        &format!("{}/pool/gone.deb", mirror.base),
        "linux-image-gone",
        &"0".repeat(64),
        &dest,
        |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, FetchError::NotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("not found on the mirror") && err.to_string().contains("linux-image-gone"),
        "{err}"
    );
    assert_eq!(mirror.requests().len(), 1);
    assert!(start.elapsed() < Duration::from_millis(400), "{:?}", start.elapsed());
    assert!(!dest.exists());
}

#[test]
fn gives_up_after_the_last_attempt_and_honours_retry_after() {
    let (mirror, data) = mirror_with_file(vec![Act::Status(503, None); 10]);
    let fast = Retry { attempts: 3, first_delay: Duration::from_millis(50), ..Retry::default() };
    let http = Http::new(&ProxyEnv::default(), fast);
    let dest = scratch("give-up").join("k.deb");
    let url = format!("{}/pool/k.deb", mirror.base);
    let err = fetch_verified_with(&http, &url, "k", &sha256(&data), &dest, |_| {}).unwrap_err();
    assert!(err.to_string().ends_with("HTTP 503 (3 attempts)"), "{err}");
    assert_eq!(mirror.requests().len(), 3);

    // 429 with a short Retry-After: waited for (longer than the 50 ms backoff).
    let (mirror, data) = mirror_with_file(vec![Act::Status(429, Some(1))]);
    let start = Instant::now();
    fetch_verified_with(&http, &format!("{}/pool/k.deb", mirror.base), "k", &sha256(&data), &dest, |_| {}).unwrap();
    assert!(start.elapsed() >= Duration::from_secs(1), "{:?}", start.elapsed());
    assert_eq!(mirror.requests().len(), 2);

    // A long Retry-After is not slept through: the error says what the server asked.
    let (mirror, data) = mirror_with_file(vec![Act::Status(503, Some(3600))]);
    let start = Instant::now();
    let err = fetch_verified_with(
        &http,
        &format!("{}/pool/k.deb", mirror.base),
        "k",
        &sha256(&data),
        &scratch("ra").join("k"),
        |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("retry after 3600 s"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(1));
}

/// The real binary, proxy from its environment: `lock --update` reads Packages.xz
/// and `fetch` the pinned .deb (data.tar.xz) from the local mirror, both through
/// the proxy; with `NO_PROXY` set the proxy sees nothing.
#[test]
fn the_binary_uses_the_proxy_from_its_environment() {
    let dir = scratch("binary");
    let (deb, packages_xz) = fake_archive();
    let files = HashMap::from([
        ("/dists/sid/main/binary-amd64/Packages.xz".to_string(), packages_xz),
        ("/pool/main/l/linux-image-9.9.0-1-cloud-amd64_9.9.0-1_amd64.deb".to_string(), deb),
    ]);
    let mirror = Mirror::start(files, vec![Act::Status(502, None)]);
    let proxy = Proxy::start();
    std::fs::write(dir.join("kernels.yaml"), "kernels:\n  - name: '9.9'\n    debian: { suite: sid, series: '9.9' }\n")
        .unwrap();
    let km = |args: &[&str], cache: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kernel-matrix"));
        c.arg("--config").arg(dir.join("kernels.yaml")).args(args);
        for v in ["http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"] {
            c.env_remove(v);
        }
        c.env("HTTP_PROXY", &proxy.url)
            .env("KM_MIRROR", &mirror.base)
            .env("KM_CACHE_DIR", dir.join(cache))
            .env("KM_RUN_DIR", dir.join("runs"))
            .env("KM_PROGRESS", "plain");
        c
    };
    let out = km(&["lock", "--update"], "cache").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("9.9: 9.9.0-1 (9.9.0-1)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = km(&["fetch"], "cache").output().unwrap();
    let (stdout, err) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && format!("{stdout}{err}").contains("(9.9.0-1-cloud-amd64)"), "{stdout}\n{err}");
    let through: Vec<_> = proxy.requests();
    // The index's first request got a 502 and was retried, through the proxy too.
    assert_eq!(through.len(), 3, "{through:?}");
    assert!(through.iter().all(|l| l.starts_with(&format!("GET {}/", mirror.base))), "{through:?}");
    assert_eq!(mirror.requests().len(), 3);

    let out = km(&["fetch"], "cache2").env("NO_PROXY", "127.0.0.1").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(proxy.requests().len(), 3, "NO_PROXY: not through the proxy");
    assert_eq!(mirror.requests().len(), 4);
}

/// A one-kernel Debian archive: a .deb (ar: debian-binary, control, data.tar.xz with
/// boot/vmlinuz-9.9.0-1-cloud-amd64) and its Packages.xz.
fn fake_archive() -> (Vec<u8>, Vec<u8>) {
    let xz = |data: &[u8]| {
        let mut out = Vec::new();
        liblzma::read::XzEncoder::new(data, 6).read_to_end(&mut out).unwrap();
        out
    };
    let mut tar = tar::Builder::new(Vec::new());
    let kernel = b"not really a kernel, but a file where the kernel goes".to_vec();
    let mut h = tar::Header::new_gnu();
    h.set_size(kernel.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "./boot/vmlinuz-9.9.0-1-cloud-amd64", &kernel[..]).unwrap();
    let data_tar_xz = xz(&tar.into_inner().unwrap());
    let mut ar = ar::Builder::new(Vec::new());
    for (name, body) in
        [("debian-binary", b"2.0\n".to_vec()), ("control.tar.xz", xz(b"")), ("data.tar.xz", data_tar_xz)]
    {
        ar.append(&ar::Header::new(name.as_bytes().to_vec(), body.len() as u64), &body[..]).unwrap();
    }
    let deb = ar.into_inner().unwrap();
    let index = format!(
        "Package: linux-image-9.9.0-1-cloud-amd64\nVersion: 9.9.0-1\nFilename: pool/main/l/linux-image-9.9.0-1-cloud-amd64_9.9.0-1_amd64.deb\nSize: {}\nSHA256: {}\n\n",
        deb.len(),
        sha256(&deb)
    );
    (deb, xz(index.as_bytes()))
}

/// HTTPS against the system's CA store (through the real binary, whose client reads
/// it at start): a server whose CA is not trusted fails at once (a certificate
/// error is not retried); the same server is trusted once its CA is in the store
/// (`SSL_CERT_FILE`, the standard override of /etc/ssl/certs). Needs the `openssl`
/// command for the certificates and the server.
#[test]
fn https_trusts_the_system_store_only() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIPPED https_trusts_the_system_store_only: no openssl command");
        return;
    }
    let dir = scratch("tls");
    let ssl = |args: &str| {
        let out = Command::new("openssl").args(args.split(' ')).current_dir(&dir).output().unwrap();
        assert!(out.status.success(), "openssl {args}: {}", String::from_utf8_lossy(&out.stderr));
    };
    ssl("req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=km-test-CA -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign");
    ssl("req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=localhost");
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    ssl("x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile ext");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-cert", "srv.pem", "-key", "srv.key", "-accept", &port.to_string()])
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() && start.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(dir.join("kernels.yaml"), "kernels:\n  - name: '9.9'\n    debian: { suite: sid, series: '9.9' }\n")
        .unwrap();
    let km = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kernel-matrix"));
        c.arg("--config").arg(dir.join("kernels.yaml")).args(["lock", "--update"]);
        for v in [
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
        ] {
            c.env_remove(v);
        }
        c.env("KM_MIRROR", format!("https://localhost:{port}")).env("KM_CACHE_DIR", dir.join("cache"));
        c
    };
    let start = Instant::now();
    let out = km().output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("UnknownIssuer") && !err.contains("trying again"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    // Trusted: the handshake works and the request is answered (s_server's status
    // page is no Packages.xz, so the index itself is refused).
    let out = km().env("SSL_CERT_FILE", dir.join("ca.pem")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let _ = server.kill();
    let _ = server.wait();
    assert!(err.contains("decompressing the package index") && !err.contains("certificate"), "{err}");
}
