//! `profiler`: sample kernel + user stacks on every CPU and print them, readable
//! or folded (`comm;frame;frame count`) for a flame graph.
use std::time::Duration;

use clap::Parser;
use profiler::{km_busy_spin, profile, ProfileOptions};

#[derive(Parser)]
#[command(about = "Sampling profiler (BPF perf_event program, blazesym symbolization)")]
struct Args {
    /// Samples per second on each CPU.
    #[arg(short = 'f', long, default_value_t = 99)]
    freq: u64,
    /// Only sample this process.
    #[arg(short = 'p', long)]
    pid: Option<u32>,
    /// Use the software cpu-clock event even if a hardware PMU exists.
    #[arg(long)]
    sw_event: bool,
    /// How long to sample, in seconds.
    #[arg(short = 'd', long, default_value_t = 5.0)]
    duration: f64,
    /// Print folded stacks (for flamegraph.pl / inferno-flamegraph) instead of readable ones.
    #[arg(long)]
    folded: bool,
    /// Do not profile: just run km_busy_spin for this many seconds (a known busy process).
    #[arg(long, value_name = "SECONDS")]
    busy_spin: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(secs) = args.busy_spin {
        km_busy_spin((secs * 1000.0) as u64);
        return Ok(());
    }
    let opts = ProfileOptions {
        freq: args.freq,
        pid: args.pid,
        sw_event: args.sw_event,
        duration: Duration::from_secs_f64(args.duration),
        symbolize: true,
        cpus: None,
    };
    let p = profile(&opts)?;
    if args.folded {
        print!("{}", p.folded_text());
    } else {
        print!("{}", p.stacks_text());
    }
    eprintln!(
        "{} samples ({} seen by BPF, {} dropped) in {:.2} s, {} at {} Hz on {} CPUs",
        p.samples.len(),
        p.seen,
        p.dropped,
        p.duration.as_secs_f64(),
        p.event,
        p.freq,
        p.cpus
    );
    Ok(())
}
