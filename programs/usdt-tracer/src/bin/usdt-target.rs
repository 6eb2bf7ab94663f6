//! `usdt-target -n N`: fires the USDT probe test_grp:test_idx with arg0 = 0..N.
use clap::Parser;

#[derive(Parser)]
#[command(about = "Run the traced loop: DTRACE_PROBE1(test_grp, test_idx, idx) for idx in 0..N")]
struct Args {
    /// How many times the probe fires.
    #[arg(short = 'n', default_value_t = 10)]
    n: u32,
    /// Wait for a line (or end of file) on standard input first, so a tracer can attach.
    #[arg(long)]
    wait: bool,
    /// Repeat the loop this many times, one second apart (0 = forever).
    #[arg(long, default_value_t = 1)]
    repeat: u32,
}

fn main() {
    let args = Args::parse();
    if args.wait {
        usdt_tracer::wait_then_loop(0);
    }
    let mut round = 0;
    loop {
        usdt_tracer::traced_loop(args.n);
        round += 1;
        if args.repeat != 0 && round >= args.repeat {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
