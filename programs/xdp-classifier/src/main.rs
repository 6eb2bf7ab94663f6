//! Attaches the XDP classifier to an interface and prints each source address's
//! classification as packets arrive, the way the classic aya XDP example does.
use std::{thread, time::Duration};

use anyhow::Context as _;
use aya::programs::{xdp::XdpMode, Xdp};
use clap::Parser;
use xdp_classifier::{drain, SourceAddr, OBJECT, PROGRAM, PROGRAM_SLOW};

#[derive(Parser)]
#[command(about = "Attach the FizzBuzzFibonacci XDP classifier and print classifications")]
struct Opt {
    /// Interface to attach to.
    #[arg(short, long, default_value = "lo")]
    iface: String,
    /// Attach in SKB (generic) mode instead of driver mode.
    #[arg(long)]
    skb_mode: bool,
    /// Use the deliberately slow variant.
    #[arg(long)]
    slow: bool,
    /// Stop after this many seconds (default: run until killed).
    #[arg(long)]
    seconds: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let opt = Opt::parse();
    let mut ebpf = aya::Ebpf::load(OBJECT).context("loading the BPF object")?;
    let name = if opt.slow { PROGRAM_SLOW } else { PROGRAM };
    let prog: &mut Xdp = ebpf.program_mut(name).context("program missing")?.try_into()?;
    prog.load()?;
    let mode = if opt.skb_mode { XdpMode::Skb } else { XdpMode::Default };
    prog.attach(&opt.iface, mode).with_context(|| format!("attaching to {} (try --skb-mode)", opt.iface))?;
    eprintln!("{name} attached to {}; waiting for packets (Ctrl-C to stop)", opt.iface);
    let mut waited = 0;
    loop {
        thread::sleep(Duration::from_secs(1));
        waited += 1;
        for (addr, class) in drain(&mut ebpf)? {
            let class = SourceAddr::from_u32(class).map(|c| format!("{c:?}")).unwrap_or_else(|| format!("?{class}"));
            println!("{} {class}", std::net::Ipv4Addr::from(addr));
        }
        if opt.seconds.is_some_and(|s| waited >= s) {
            return Ok(());
        }
    }
}
