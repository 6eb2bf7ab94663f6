//! The guest agent: runs every check in the kernel it finds itself in and writes
//! one JSON record per line to `--out` (the VM's second serial port, or a file).
use std::io::Write as _;

use km_agent::{checks, uptime};
mod suites;

use km_protocol::{
    byo,
    switches::{BenchConfig, Switches},
    Line, Record,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
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
    let Some(out) = flag("--out") else {
        eprintln!("usage: km-agent --out <path|-> [--init-uptime SECS] [--only a,b] [--byo DIR] [--bench]");
        std::process::exit(2);
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
    let mut emit = |record: Record| {
        // Each record is flushed on its own line, stamped with the kernel's clock:
        // a crash mid-run keeps what came before, and the gaps say where time went.
        let _ = writeln!(sink, "{}", Line { at: Some(uptime()), record }.to_json());
        let _ = sink.flush();
    };
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    emit(Record::Hello {
        protocol: km_protocol::record::PROTOCOL_VERSION,
        kernel_release: release,
        uptime_secs: uptime(),
        init_uptime_secs: flag("--init-uptime").and_then(|s| s.parse().ok()),
    });
    let features = km_agent::probes::probe_all();
    for (id, result) in &features {
        emit(Record::Feature { id: id.clone(), result: result.clone() });
    }
    // Programs users brought: /byo in a guest, `--byo DIR` on the host.
    let byo_dir = std::path::PathBuf::from(flag("--byo").unwrap_or_else(|| byo::GUEST_DIR.into()));
    let byo: Vec<byo::GuestProgram> = std::fs::read(byo_dir.join(byo::MANIFEST_JSON))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    // `--only a,b` and `--bench` (host), or the same as `km.*` switches on the
    // kernel command line (guest).
    let switches = Switches::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    let only: Option<Vec<String>> =
        flag("--only").map(|v| v.split(',').map(str::to_string).collect()).or(switches.only);
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == name));
    let byo: Vec<_> = byo.into_iter().filter(|p| wanted(&p.name)).collect();
    let bench = if args.iter().any(|a| a == "--bench") { Some(BenchConfig::HOST) } else { switches.bench };
    checks::run_all(&mut emit, &features, &byo, &byo_dir, &wanted, bench);
    if let Some(cfg) = bench {
        km_agent::bench::run_all(&mut emit, &features, cfg, &wanted);
    }
    // Users' test suites, after the checks, in the same boot.
    let guest_suites: Vec<km_protocol::suites::GuestSuite> =
        std::fs::read(byo_dir.join(km_protocol::suites::SUITES_JSON))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
    let guest_suites: Vec<_> = guest_suites.into_iter().filter(|s| wanted(&s.name)).collect();
    suites::run_all(&mut emit, &features, &guest_suites);
    emit(Record::Done);
}

/// Tells the parent check this process is past exec and the loader (see
/// `checks::AgentChild`, which waits for this line before it profiles or traces us).
fn ready() {
    println!("ready");
    let _ = std::io::Write::flush(&mut std::io::stdout());
}
