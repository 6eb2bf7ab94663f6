//! Bencher upload: a BMF file as one Bencher report, the request `bencher run
//! --adapter json --file bench.json` sends (POST `/v0/projects/<project>/reports`
//! with the branch, the commit, the testbed, the run's start and end, and the BMF
//! text under `results` with `settings.adapter = "json"`). The series come out
//! per kernel, since every benchmark name starts with its kernel
//! (`6.1::xdp_classifier::test_run`). Written with the harness's HTTP client
//! rather than by running Bencher's CLI, so `bench --bencher` needs nothing more
//! installed.
use std::{path::Path, time::SystemTime};

use anyhow::{bail, Context as _};

use crate::images::fetch::{Http, ProxyEnv, Retry};

/// Where and as what a BMF file is uploaded; the variables are Bencher CLI's own.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Bencher upload")]
pub struct BencherArgs {
    /// Upload the BMF to Bencher after the run (the project, the token and the
    /// testbed below; as `bencher run --adapter json --file FILE` would).
    #[arg(long)]
    pub bencher: bool,
    /// The Bencher project (slug or UUID).
    #[arg(long, env = "BENCHER_PROJECT", value_name = "SLUG")]
    pub bencher_project: Option<String>,
    /// A Bencher API token.
    #[arg(long, env = "BENCHER_API_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub bencher_token: Option<String>,
    /// The Bencher API server.
    #[arg(long, env = "BENCHER_HOST", default_value = "https://api.bencher.dev", value_name = "URL")]
    pub bencher_host: String,
    /// The branch [default: GITHUB_HEAD_REF or GITHUB_REF_NAME in Actions, else git's, else main].
    #[arg(long, env = "BENCHER_BRANCH", value_name = "NAME")]
    pub bencher_branch: Option<String>,
    /// The testbed: where the numbers were measured [default: this machine's host name].
    #[arg(long, env = "BENCHER_TESTBED", value_name = "NAME")]
    pub bencher_testbed: Option<String>,
}

/// The report Bencher creates from `bmf` (the file's text), measured between
/// `start` and `end`.
pub fn report(a: &BencherArgs, bmf: &str, start: SystemTime, end: SystemTime) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(bmf).context("the BMF is not JSON")?;
    let time =
        |t: SystemTime| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut r = serde_json::json!({
        "branch": branch(a),
        "testbed": testbed(a),
        "start_time": time(start),
        "end_time": time(end),
        "results": [bmf],
        "settings": { "adapter": "json" },
    });
    if let Some(hash) = commit() {
        r["hash"] = hash.into();
    }
    Ok(r)
}

/// Uploads `file` (a BMF written by `bench`) as one report; returns what Bencher
/// said, for the log.
pub fn upload(a: &BencherArgs, file: &Path, start: SystemTime, end: SystemTime) -> anyhow::Result<String> {
    let (Some(project), Some(token)) = (a.bencher_project.as_deref(), a.bencher_token.as_deref()) else {
        bail!("--bencher needs a project and a token: --bencher-project/BENCHER_PROJECT and --bencher-token/BENCHER_API_TOKEN");
    };
    let bmf = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let body = report(a, &bmf, start, end).with_context(|| file.display().to_string())?;
    let url = format!("{}/v0/projects/{project}/reports", a.bencher_host.trim_end_matches('/'));
    let http = Http::new(&ProxyEnv::from_env(), Retry::default());
    let (status, text) = http
        .post_json(&url, token, &body)
        .map_err(|e| anyhow::anyhow!("{url}: {e} (--bencher-host/BENCHER_HOST sets the server)"))?;
    if !(200..300).contains(&status) {
        bail!("{url}: HTTP {status}: {}", text.chars().take(500).collect::<String>());
    }
    let reply: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let alerts = reply["alerts"].as_array().map_or(0, Vec::len);
    Ok(format!(
        "bencher: report {} for {project} (branch {}, testbed {}): {alerts} alert(s)",
        reply["uuid"].as_str().unwrap_or("?"),
        body["branch"].as_str().unwrap_or("?"),
        body["testbed"].as_str().unwrap_or("?")
    ))
}

fn branch(a: &BencherArgs) -> String {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    a.bencher_branch
        .clone()
        .or_else(|| env("GITHUB_HEAD_REF"))
        .or_else(|| env("GITHUB_REF_NAME"))
        .or_else(|| git(&["rev-parse", "--abbrev-ref", "HEAD"]).filter(|b| b != "HEAD"))
        .unwrap_or_else(|| "main".into())
}

fn testbed(a: &BencherArgs) -> String {
    a.bencher_testbed.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into())
    })
}

fn commit() -> Option<String> {
    std::env::var("GITHUB_SHA").ok().filter(|s| !s.is_empty()).or_else(|| git(&["rev-parse", "HEAD"]))
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).stderr(std::process::Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `kernel-matrix bencher FILE`: uploads a BMF file written earlier (by `bench`,
/// or merged from shards).
#[derive(clap::Args, Debug)]
pub struct UploadArgs {
    /// The BMF file.
    pub file: std::path::PathBuf,
    #[command(flatten)]
    pub bencher: BencherArgs,
}

pub fn command(a: &UploadArgs) -> anyhow::Result<std::process::ExitCode> {
    // A file uploaded later was measured before it was written: its time is both.
    let when = std::fs::metadata(&a.file)
        .and_then(|m| m.modified())
        .with_context(|| format!("reading {}", a.file.display()))?;
    println!("{}", upload(&a.bencher, &a.file, when, when)?);
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_what_bencher_run_sends() {
        let a = BencherArgs {
            bencher_branch: Some("main".into()),
            bencher_testbed: Some("ci-tcg".into()),
            ..Default::default()
        };
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_764_900_000);
        let bmf = r#"{"6.1::xdp_classifier::test_run":{"latency":{"value":90.0}}}"#;
        let r = report(&a, bmf, t, t + std::time::Duration::from_secs(60)).unwrap();
        assert_eq!(r["branch"], "main");
        assert_eq!(r["testbed"], "ci-tcg");
        assert_eq!(r["start_time"], "2025-12-05T02:00:00Z");
        assert_eq!(r["end_time"], "2025-12-05T02:01:00Z");
        assert_eq!(r["results"][0], bmf);
        assert_eq!(r["settings"]["adapter"], "json");
        assert!(report(&a, "not json", t, t).is_err());
    }
}
