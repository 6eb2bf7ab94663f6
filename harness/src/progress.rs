//! Progress of long steps (downloads, VM boots).
//!
//! On a terminal: indicatif bars and spinners on stderr. Otherwise (a pipe, a log
//! file, `CI=true`, `KM_PROGRESS=plain`): plain lines, one when a step starts and
//! one when it ends, so CI logs stay readable and greppable. `KM_PROGRESS=bars`
//! forces bars.
use std::{
    io::IsTerminal as _,
    sync::OnceLock,
    time::{Duration, Instant},
};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether bars are drawn (computed once).
pub fn fancy() -> bool {
    static FANCY: OnceLock<bool> = OnceLock::new();
    *FANCY.get_or_init(|| match crate::settings::get().progress.as_deref() {
        Some("bars") => true,
        Some("plain") => false,
        _ => {
            let ci = std::env::var("CI").map(|v| !v.is_empty() && v != "0" && v != "false").unwrap_or(false);
            !ci && std::io::stderr().is_terminal()
        }
    })
}

fn multi() -> &'static MultiProgress {
    static M: OnceLock<MultiProgress> = OnceLock::new();
    M.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)))
}

/// One step in progress; finish it with [`Step::done`] (dropping it clears the bar).
pub struct Step {
    bar: Option<ProgressBar>,
    label: String,
    start: Instant,
}

impl Step {
    /// A download of `total` bytes (0 if unknown).
    pub fn download(label: &str, total: u64) -> Self {
        if !fancy() {
            // The caller has already said what it downloads; the end gets a line.
            return Self { bar: None, label: label.into(), start: Instant::now() };
        }
        let bar = multi().add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        Self { bar: Some(bar), label: label.into(), start: Instant::now() }
    }

    /// Something without a measurable size (a VM boot): a spinner with a message.
    pub fn spinner(label: &str, message: &str) -> Self {
        if !fancy() {
            eprintln!("kernel-matrix: {label}: {message}");
            return Self { bar: None, label: label.into(), start: Instant::now() };
        }
        let bar = multi().add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{prefix:>12} {spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(label.to_string());
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Self { bar: Some(bar), label: label.into(), start: Instant::now() }
    }

    pub fn set_position(&self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.set_position(bytes);
        }
    }

    pub fn set_message(&self, message: &str) {
        match &self.bar {
            Some(b) => b.set_message(message.to_string()),
            None => eprintln!("kernel-matrix: {}: {message}", self.label),
        }
    }

    /// Ends the step with a one-line outcome (printed in both modes).
    pub fn done(self, outcome: &str) {
        let line = format!("kernel-matrix: {}: {outcome} ({:.1}s)", self.label, self.start.elapsed().as_secs_f64());
        match &self.bar {
            Some(b) => {
                b.finish_and_clear();
                let _ = multi().println(line);
            }
            None => eprintln!("{line}"),
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
            multi().remove(b);
        }
    }
}
