//! `usdt-tracer`: the classic
//! `bpftrace -e 'usdt:./target:test_grp:test_idx { printf("%d\n", arg0); }'`,
//! with libbpf-rs: prints arg0 of every hit as it arrives, then the hit count and the sum.
use std::{
    io::Write as _,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Trace USDT test_grp:test_idx in BINARY and print arg0 of each hit")]
struct Args {
    /// The binary carrying the probe (usdt-target, km-agent, anything linking usdt-tracer).
    binary: PathBuf,
    /// Only hits in this process.
    #[arg(short = 'p', long)]
    pid: Option<i32>,
    /// With no COMMAND: trace for this many seconds.
    #[arg(short = 'd', long, default_value_t = 5.0)]
    duration: f64,
    /// Run this command (after attaching) and trace until it exits.
    #[arg(last = true)]
    command: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let report = usdt_tracer::trace_with(
        &args.binary,
        args.pid,
        |v| {
            let _ = writeln!(out, "{v}");
        },
        |poll| {
            let tick = Duration::from_millis(50);
            if let Some((prog, rest)) = args.command.split_first() {
                let mut child = Command::new(prog).args(rest).spawn().with_context(|| format!("running {prog}"))?;
                let status = loop {
                    poll(tick)?;
                    if let Some(s) = child.try_wait()? {
                        break s;
                    }
                };
                if !status.success() {
                    eprintln!("usdt-tracer: {prog} exited with {status}");
                }
            } else {
                eprintln!(
                    "Attached to {}:{} in {}; tracing for {} s",
                    usdt_tracer::PROVIDER,
                    usdt_tracer::PROBE,
                    args.binary.display(),
                    args.duration
                );
                let end = Instant::now() + Duration::from_secs_f64(args.duration);
                while Instant::now() < end {
                    poll(tick.min(end.saturating_duration_since(Instant::now())))?;
                }
            }
            Ok(())
        },
    )?;
    eprintln!(
        "{} hits, sum of arg0 {}, {} values dropped, {} arg read errors",
        report.hits, report.sum, report.dropped, report.arg_errors
    );
    Ok(())
}
