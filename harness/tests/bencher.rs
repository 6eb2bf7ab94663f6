//! `kernel-matrix bencher` (and `bench --bencher`, which calls the same upload)
//! against a local stand-in for Bencher's API on a real socket: the request must
//! be the one `bencher run --adapter json` sends (POST to the project's reports,
//! the token as a bearer, the BMF text under `results`, the branch, testbed,
//! commit and times), and a refusal (HTTP 401) must fail the command with
//! Bencher's words.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    path::PathBuf,
    process::Command,
    sync::mpsc,
    thread,
};

/// One request as the stand-in saw it: request line, headers, body.
type Seen = (String, Vec<String>, String);

/// Serves one request with `status` and `reply`, and hands back what it got.
fn stand_in(status: &'static str, reply: &'static str) -> (String, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut r = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                break;
            }
            headers.push(h.trim_end().to_string());
        }
        let len: usize = headers
            .iter()
            .find_map(|h| h.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0);
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        let mut w = stream;
        let _ = write!(
            w,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
            reply.len()
        );
        tx.send((line.trim_end().to_string(), headers, String::from_utf8(body).unwrap())).unwrap();
    });
    (url, rx)
}

fn km(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kernel-matrix"));
    c.current_dir(dir).env("no_proxy", "127.0.0.1").env("NO_PROXY", "127.0.0.1");
    for v in ["BENCHER_PROJECT", "BENCHER_API_TOKEN", "BENCHER_HOST", "BENCHER_BRANCH", "BENCHER_TESTBED"] {
        c.env_remove(v);
    }
    c
}

#[test]
fn uploads_what_bencher_run_sends() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bencher");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bmf = r#"{"6.1::xdp_classifier::test_run":{"latency":{"value":90.0,"lower_value":88.0,"upper_value":92.0}},"6.12::xdp_classifier::test_run":{"latency":{"value":97.0}}}"#;
    std::fs::write(dir.join("bench.json"), bmf).unwrap();

    let (url, seen) = stand_in("201 Created", r#"{"uuid":"3f1c","alerts":[{"uuid":"a1"}]}"#);
    let out = km(&dir)
        .args(["bencher", "bench.json", "--bencher-project", "km-test", "--bencher-host", &url])
        .args(["--bencher-branch", "main", "--bencher-testbed", "ci-tcg-icount"])
        .env("BENCHER_API_TOKEN", "secret-token")
        .env("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("bencher: report 3f1c for km-test (branch main, testbed ci-tcg-icount): 1 alert(s)"),
        "{stdout}"
    );
    let (line, headers, body) = seen.recv().unwrap();
    assert_eq!(line, "POST /v0/projects/km-test/reports HTTP/1.1");
    assert!(headers.iter().any(|h| h.eq_ignore_ascii_case("authorization: Bearer secret-token")), "{headers:?}");
    assert!(headers.iter().any(|h| h.eq_ignore_ascii_case("content-type: application/json")), "{headers:?}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["results"][0], bmf, "the BMF goes as the file's text");
    assert_eq!(v["settings"]["adapter"], "json");
    assert_eq!((v["branch"].as_str(), v["testbed"].as_str()), (Some("main"), Some("ci-tcg-icount")));
    assert_eq!(v["hash"], "0123456789abcdef0123456789abcdef01234567");
    assert!(v["start_time"].as_str().unwrap().ends_with('Z') && v["end_time"].is_string(), "{v}");
    assert!(!stdout.contains("secret-token") && !stderr.contains("secret-token"));

    // A refusal fails the command with what Bencher said.
    let (url, _seen) = stand_in("401 Unauthorized", r#"{"message":"invalid token"}"#);
    let out = km(&dir)
        .args(["bencher", "bench.json", "--bencher-project", "km-test", "--bencher-host", &url])
        .env("BENCHER_API_TOKEN", "wrong")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("HTTP 401") && stderr.contains("invalid token"), "{stderr}");

    // No token: said before anything is sent.
    let out = km(&dir).args(["bencher", "bench.json", "--bencher-project", "km-test"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("BENCHER_API_TOKEN"));
}
