//! The `km.*` words on a guest's kernel command line: the host writes them
//! ([`Switches::cmdline`]), the guest's /init and agent read them
//! ([`Switches::parse`]). The host agent gets the same as flags.

/// How much work each benchmark does. Chosen so a guest under TCG (~50x slower than
/// native) spends a few seconds in total, and the host enough repeats that the
/// kernel's integer ns/run is precise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenchConfig {
    /// BPF_PROG_TEST_RUN `repeat` per sample.
    pub repeat: u32,
    /// Independent samples per benchmark.
    pub samples: usize,
    /// Packets sent through `lo` per XDP fdinfo sample.
    pub packets: usize,
    /// USDT probe hits per USDT fdinfo sample.
    pub probe_hits: u32,
    /// Seconds of profiling per profiler fdinfo sample (at [`PROFILE_HZ`]).
    pub profile_secs: f64,
}

/// Sampling frequency of the profiler benchmark, the same as its `samples` check.
pub const PROFILE_HZ: u64 = 99;

impl BenchConfig {
    pub const GUEST: Self = Self { repeat: 10_000, samples: 7, packets: 1_000, probe_hits: 1_000, profile_secs: 1.0 };
    pub const HOST: Self =
        Self { repeat: 1_000_000, samples: 7, packets: 20_000, probe_hits: 100_000, profile_secs: 1.0 };
}

/// What a kernel command line asks of the guest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Switches {
    /// `km.only=a,b`: run only these programs.
    pub only: Option<Vec<String>>,
    /// `km.bench=1` (plus optional `km.bench_repeat=`, `km.bench_samples=`,
    /// `km.bench_packets=`): also run the benchmarks.
    pub bench: Option<BenchConfig>,
}

impl Switches {
    pub fn parse(cmdline: &str) -> Self {
        let arg = |k: &str| cmdline.split_whitespace().find_map(|w| w.strip_prefix(k)?.strip_prefix('='));
        let only = arg("km.only").map(|v| v.split(',').map(str::to_string).collect());
        let bench = (arg("km.bench") == Some("1")).then(|| {
            let mut c = BenchConfig::GUEST;
            if let Some(v) = arg("km.bench_repeat").and_then(|v| v.parse().ok()) {
                c.repeat = v;
            }
            if let Some(v) = arg("km.bench_samples").and_then(|v| v.parse().ok()) {
                c.samples = v;
            }
            if let Some(v) = arg("km.bench_packets").and_then(|v| v.parse().ok()) {
                c.packets = v;
            }
            c
        });
        Self { only, bench }
    }

    /// The words for a guest's command line (empty when nothing is asked).
    pub fn cmdline(&self) -> String {
        let mut words = Vec::new();
        if let Some(only) = &self.only {
            words.push(format!("km.only={}", only.join(",")));
        }
        if self.bench.is_some() {
            words.push("km.bench=1".to_string());
        }
        words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_switches_benchmarks_on() {
        assert_eq!(Switches::parse("console=ttyS0 quiet").bench, None);
        assert_eq!(Switches::parse("km.bench=0").bench, None);
        assert_eq!(Switches::parse("quiet km.bench=1").bench, Some(BenchConfig::GUEST));
        let c = Switches::parse("km.bench=1 km.bench_repeat=50 km.bench_samples=3").bench.unwrap();
        assert_eq!((c.repeat, c.samples, c.packets), (50, 3, BenchConfig::GUEST.packets));
    }

    #[test]
    fn round_trip() {
        let s = Switches { only: Some(vec!["a".into(), "b".into()]), bench: Some(BenchConfig::GUEST) };
        assert_eq!(s.cmdline(), "km.only=a,b km.bench=1");
        assert_eq!(Switches::parse(&format!("quiet {}", s.cmdline())), s);
        assert_eq!(Switches::default().cmdline(), "");
    }
}
