//! `kernel-matrix history`: what changed in the latest recorded run.
use std::{path::PathBuf, process::ExitCode};

use super::{diff, History};

#[derive(clap::Args, Debug, Clone)]
pub struct HistoryArgs {
    /// The results history (`run --history FILE` / KM_HISTORY records into it).
    #[arg(long, env = "KM_HISTORY", value_name = "FILE")]
    pub history: PathBuf,
    /// Compare against this run (its id) or the last run before this date
    /// (`2026-12-01`, `2026-12-01 06:00`, UTC) instead of the previous run.
    #[arg(long, value_name = "RUN|DATE")]
    pub since: Option<String>,
    /// The run to report on (default: the latest).
    #[arg(long, value_name = "RUN")]
    pub run: Option<i64>,
    /// How many runs, ending with the reported one, are searched for flaky cells
    /// and shown as trends.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub window: usize,
    /// A latency change (percent) that counts, beyond both runs' spreads.
    #[arg(long, default_value_t = km_bmf::compare::DEFAULT_THRESHOLD_PCT, value_name = "PCT")]
    pub threshold: f64,
    /// Markdown (for `$GITHUB_STEP_SUMMARY`) instead of text.
    #[arg(long, conflicts_with = "json")]
    pub markdown: bool,
    /// JSON: `newly_failing`, `newly_passing`, `flaky`, `verifier`, `bench`, `left_out`.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when a cell newly fails (flaky cells do not count).
    #[arg(long)]
    pub check: bool,
    /// The pull-request gate: exit 1 when a program the verifier accepted is now
    /// rejected, processed instructions or peak states grew by more than
    /// --threshold percent, or a benchmark is slower as `compare` judges it.
    #[arg(long)]
    pub gate: bool,
}

pub fn command(a: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let h = History::open_read(&a.history)?;
    let ids = h.run_ids()?;
    let latest = match a.run {
        Some(id) if ids.contains(&id) => id,
        Some(id) => anyhow::bail!("{}: no run {id} (runs {})", a.history.display(), span(&ids)),
        None => *ids.last().ok_or_else(|| super::HistoryError::Missing(a.history.clone()))?,
    };
    let before: Vec<i64> = ids.iter().copied().filter(|i| *i < latest).collect();
    let base = match a.since.as_deref() {
        Some(s) => match s.parse::<i64>() {
            Ok(id) if ids.contains(&id) && id < latest => Some(id),
            Ok(id) => anyhow::bail!("{}: --since {id}: no earlier run {id} (runs {})", a.history.display(), span(&ids)),
            Err(_) => {
                let id = h.last_before(s)?;
                if id.is_none() {
                    anyhow::bail!("{}: no run before {s}", a.history.display());
                }
                id
            }
        },
        None => before.last().copied(),
    };
    let Some(base) = base else {
        let note = format!("{}: only run {latest} is recorded; nothing to compare it with yet", a.history.display());
        if a.json {
            // The same keys as a comparison, empty, so scripts need no special case.
            let mut v = serde_json::json!({"baseline": null, "latest": h.run(latest)?.run, "note": note});
            for k in ["changed", "newly_failing", "newly_passing", "flaky", "verifier", "loads", "bench", "left_out"] {
                v[k] = serde_json::json!([]);
            }
            if a.gate {
                v["gate"] = serde_json::json!([]);
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            println!("{note}");
        }
        return Ok(ExitCode::SUCCESS);
    };
    let from = ids.iter().position(|i| *i == latest).expect("listed") + 1;
    let window: Vec<_> =
        ids[from.saturating_sub(a.window.max(2))..from].iter().map(|id| h.run(*id)).collect::<Result<_, _>>()?;
    let changes = diff::changes(&h.run(base)?, window.last().expect("latest"), &window, a.threshold);
    let gate = if a.gate { changes.gate(a.threshold) } else { Vec::new() };
    if a.json {
        let mut v = serde_json::to_value(&changes)?;
        if a.gate {
            v["gate"] = serde_json::json!(gate);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if a.gate {
            print!("{}", render_gate(&gate, a.threshold, a.markdown));
        }
        print!("{}", changes.render(a.markdown));
    }
    let failed = (a.check && !changes.newly_failing.is_empty()) || !gate.is_empty();
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The gate's verdict, first on the page.
fn render_gate(problems: &[String], threshold: f64, md: bool) -> String {
    let mut s = String::new();
    let title = if problems.is_empty() {
        format!("gate passed: no rejection, no verifier growth above {threshold} %, no slower benchmark")
    } else {
        format!("gate FAILED: {} problem(s)", problems.len())
    };
    s.push_str(&if md {
        format!("## {} {title}\n\n", if problems.is_empty() { "✅" } else { "❌" })
    } else {
        format!("{title}\n")
    });
    for p in problems {
        s.push_str(&format!("- {p}\n"));
    }
    s.push('\n');
    s
}

fn span(ids: &[i64]) -> String {
    match (ids.first(), ids.last()) {
        (Some(a), Some(b)) => format!("{a}-{b}"),
        _ => "none".into(),
    }
}
