//! `kernel-matrix boot-bench`: how close a guest's boot to agent-ready comes to
//! the floor, the same kernel reaching /init with a busybox-only root, measured
//! by the same code in one run (interleaved, so a busy neighbour hits both), and,
//! with `--matrix`, the warm default matrix against that floor. Speed goals live
//! here, printed with their spread, not in timed tests.
use std::{fmt::Write as _, process::ExitCode, sync::Arc, time::Instant};

use anyhow::Context as _;
use km_protocol::stats::Summary;

use crate::{run::Matrix, vm};

#[derive(Debug, clap::Args)]
pub struct BootBenchArgs {
    /// The kernel to boot: its name in kernels.yaml, or a glob that matches one.
    #[arg(short, long, default_value = "6.1", value_name = "NAME|GLOB")]
    pub kernel: String,
    /// Boots of each root.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Also run every kernel of the matrix once (checks, no benchmarks) and
    /// compare its wall time with the floor.
    #[arg(long)]
    pub matrix: bool,
}

/// The goals of issue "lean and fast", as ratios to the floor.
const AGENT_GOAL: f64 = 1.15;
const MATRIX_GOAL: f64 = 12.0;

pub fn boot_bench(m: Arc<Matrix>, a: &BootBenchArgs) -> anyhow::Result<ExitCode> {
    let kernel = m.one_kernel(&a.kernel)?;
    let spec = m.config.kernel(&kernel).expect("one_kernel names a kernel of the config");
    let image =
        m.image(spec)?.with_context(|| format!("kernel {kernel:?} is the host kernel: it has no boot to measure"))?;
    let floor = crate::guest_root::build_floor(&m.opts.cache_dir, &m.busybox(spec)?)?;
    let full = m.initramfs(spec)?;
    let workdir = vm::workdir(&m.opts.run_dir, &format!("boot-bench-{kernel}"));
    let spec_for = |root: &std::path::Path| -> anyhow::Result<vm::VmSpec> {
        let mut s = m.vm_spec(spec, &image, &workdir)?;
        s.initramfs = root.to_path_buf();
        // The agent runs no program (`km.only=` names none): its first record
        // is what is timed, the probes after it are short.
        s.extra_cmdline = Some(format!("{} km.only=-", s.extra_cmdline.unwrap_or_default()).trim().to_string());
        Ok(s)
    };
    let (mut floor_s, mut agent_s, mut floor_guest, mut agent_guest) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..a.runs {
        for (root, host, guest) in [(&floor, &mut floor_s, &mut floor_guest), (&full, &mut agent_s, &mut agent_guest)] {
            let vm_spec = spec_for(root)?;
            let run = vm::run(&vm_spec)?;
            let boot = run.boot.with_context(|| {
                format!("run {i}: the guest never reached /init:\n{}", vm::console::tail(&run.console, 20))
            })?;
            host.push(boot.as_secs_f64());
            // The guest's clock when /init started (both roots report it).
            let channel = std::fs::read_to_string(vm_spec.channel_path()).unwrap_or_default();
            if let Some(t) = init_uptime(&channel, &run.records) {
                guest.push(t);
            }
        }
        eprintln!(
            "boot-bench: {} run {}/{}: floor {:.2} s, agent {:.2} s",
            kernel,
            i + 1,
            a.runs,
            floor_s[i],
            agent_s[i]
        );
    }
    let (f, g) = (Summary::of(&floor_s), Summary::of(&agent_s));
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len() as f64 / 1048576.0).unwrap_or(0.0);
    let mut out = String::new();
    let accel = m.opts.accel.accel;
    let _ = writeln!(out, "kernel {} ({}), QEMU/{accel}, {} interleaved boots of each root; host wall time from QEMU start to the first line on the agent channel:", kernel, image.boot_file().display(), a.runs);
    let _ = writeln!(out, "| root | size (gzip) | median s | min-max s | guest clock at /init (median s) |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    let gmed = |v: &[f64]| if v.is_empty() { "-".to_string() } else { format!("{:.2}", Summary::of(v).median) };
    let _ = writeln!(
        out,
        "| busybox only (floor) | {:.1} MiB | {:.2} | {:.2}-{:.2} | {} |",
        size(&floor),
        f.median,
        f.min,
        f.max,
        gmed(&floor_guest)
    );
    let _ = writeln!(
        out,
        "| guest root with agent | {:.1} MiB | {:.2} | {:.2}-{:.2} | {} |",
        size(&full),
        g.median,
        g.min,
        g.max,
        gmed(&agent_guest)
    );
    let ratio = g.median / f.median;
    let _ = writeln!(
        out,
        "boot to agent ready / floor: {ratio:.2}x (goal <= {AGENT_GOAL}x: {})",
        if ratio <= AGENT_GOAL { "met" } else { "NOT met" }
    );
    if a.matrix {
        let start = Instant::now();
        let runs = m.run_kernels(&m.kernel_names());
        let wall = start.elapsed().as_secs_f64();
        let _ = writeln!(out, "\nthe matrix ({} kernels, up to {} VMs at once): {wall:.1} s = {:.1}x the floor (goal <= {MATRIX_GOAL}x: {})", runs.len(), m.opts.max_vms, wall / f.median, if wall / f.median <= MATRIX_GOAL { "met" } else { "NOT met" });
        let _ = writeln!(out, "{}", crate::report::time_table(&m, &runs));
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// The guest's clock when /init started: the floor writes `init <uptime>`, the
/// agent reports it in its first record.
fn init_uptime(channel: &str, records: &[km_protocol::Line]) -> Option<f64> {
    let floor = channel.lines().find_map(|l| {
        l.trim_matches(|c: char| c.is_whitespace() || c == '\0').strip_prefix("init ")?.trim().parse().ok()
    });
    floor.or_else(|| {
        records.iter().find_map(|l| match &l.record {
            km_protocol::Record::Hello { init_uptime_secs, .. } => *init_uptime_secs,
            _ => None,
        })
    })
}
