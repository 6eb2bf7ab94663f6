//! The guest agent: runs every check in the kernel it finds itself in and writes
//! one JSON record per line to `--out` (the VM's second serial port, or a file).
use std::io::Write as _;

use kernel_matrix::{checks, protocol::Record};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Hidden modes: the checks re-execute this binary as a known busy process
    // (profiler) and as a traced one (USDT; it waits for its stdin first).
    match args.get(1).map(String::as_str) {
        Some("--busy-spin") => {
            let secs: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2.0);
            ready();
            profiler::km_busy_spin((secs * 1000.0) as u64);
            return;
        }
        Some("--usdt-loop") => {
            ready();
            usdt_tracer::wait_then_loop(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000));
            return;
        }
        _ => {}
    }
    let out = match args.iter().position(|a| a == "--out").and_then(|i| args.get(i + 1)) {
        Some(p) => p.clone(),
        None => {
            eprintln!("usage: km-agent --out <path|->");
            std::process::exit(2);
        }
    };
    let mut sink: Box<dyn std::io::Write> = if out == "-" {
        Box::new(std::io::stdout())
    } else {
        match std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&out) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("km-agent: opening {out}: {e}");
                std::process::exit(1);
            }
        }
    };
    let mut emit = |r: Record| {
        // Each record is flushed on its own line: a crash mid-run keeps what came before.
        let _ = writeln!(sink, "{}", r.to_line());
        let _ = sink.flush();
    };
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    emit(Record::Hello { kernel_release: release, uptime_secs: uptime });
    let features = kernel_matrix::features::probe_all();
    for (id, result) in &features {
        emit(Record::Feature { id: id.clone(), result: result.clone() });
    }
    // Programs users brought: /byo in a guest, `--byo DIR` on the host.
    let byo_dir = match args.iter().position(|a| a == "--byo").and_then(|i| args.get(i + 1)) {
        Some(d) => std::path::PathBuf::from(d),
        None => std::path::PathBuf::from(kernel_matrix::byo::GUEST_DIR),
    };
    let byo: Vec<kernel_matrix::byo::GuestProgram> = std::fs::read(byo_dir.join(kernel_matrix::byo::MANIFEST_JSON))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    // `--only a,b` (host) or `km.only=a,b` on the kernel command line (guest).
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| cmdline.split_whitespace().find_map(|w| w.strip_prefix("km.only=").map(str::to_string)))
        .map(|v| v.split(',').map(str::to_string).collect());
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == name));
    let byo: Vec<_> = byo.into_iter().filter(|p| wanted(&p.name)).collect();
    checks::run_all(&mut emit, &features, &byo, &byo_dir, &wanted);
    // Benchmarks only when asked: `km.bench=1` on a guest's command line, `--bench` on the host.
    let bench = match args.iter().any(|a| a == "--bench") {
        true => Some(kernel_matrix::bench::BenchConfig::HOST),
        false => kernel_matrix::bench::BenchConfig::from_cmdline(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default()),
    };
    if let Some(cfg) = bench {
        kernel_matrix::bench::run_all(&mut emit, &features, cfg);
    }
    emit(Record::Done);
}

/// Tells the parent check this process is past exec and the loader (see
/// `checks::AgentChild`, which waits for this line before it profiles or traces us).
fn ready() {
    println!("ready");
    let _ = std::io::Write::flush(&mut std::io::stdout());
}
