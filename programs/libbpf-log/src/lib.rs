//! libbpf prints through one process-wide callback; this crate owns it, so the
//! loaders of every program (profiler, USDT tracer, the harness's own checks)
//! can capture what libbpf said about a load, verifier log included, and show it
//! in their errors.
use std::sync::Mutex;

use libbpf_rs::PrintLevel;

static LOG: Mutex<String> = Mutex::new(String::new());
/// Captures are serialized: there is only one callback to install.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn collect(_level: PrintLevel, msg: String) {
    LOG.lock().unwrap_or_else(|e| e.into_inner()).push_str(&msg);
}

/// Runs `f` with libbpf's messages at info level and above captured instead of
/// printed (the verifier log is a warning), and returns them with `f`'s result.
pub fn capture<T>(f: impl FnOnce() -> T) -> (T, String) {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    LOG.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let prev = libbpf_rs::set_print(Some((PrintLevel::Info, collect)));
    let out = f();
    libbpf_rs::set_print(prev);
    let log = std::mem::take(&mut *LOG.lock().unwrap_or_else(|e| e.into_inner()));
    (out, log)
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }

    #[test]
    fn captures_a_failed_open() {
        let (r, log) = capture(|| libbpf_rs::ObjectBuilder::default().open_memory(b"not an ELF"));
        assert!(r.is_err());
        assert!(log.contains("libbpf"), "{log}");
    }
}
