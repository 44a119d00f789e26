//! `pipewatch prune`: `[retention]` applied now (the dashboard does it hourly), or with
//! `--dry-run` only said.

use super::{CliError, term};
use crate::config::Workspace;
use crate::exit;
use crate::retention::{self, Report, Why};

#[derive(clap::Args)]
pub struct Args {
    /// Only say what would be removed.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Exit code 3 when a run could not be removed (it is tried again next time).
pub fn command(ws: &Workspace, args: Args) -> Result<u8, CliError> {
    let report = retention::prune(ws, args.dry_run)?;
    if args.json {
        super::out::stdout().json(&report)?;
    } else {
        super::out::stdout().text(&render(&report, ws))?;
    }
    Ok(if report.failed.is_empty() {
        exit::SUCCESS
    } else {
        exit::ENVIRONMENT
    })
}

/// One line per run removed (or that would be), then a summary.
pub fn render(report: &Report, ws: &Workspace) -> String {
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut out = String::new();
    for r in &report.removed {
        let rules = retention::rules_for(ws, r.pipeline.as_deref());
        let why = match r.why {
            Why::Age => format!(
                "older than {}",
                rules
                    .max_age
                    .map(|d| humantime::format_duration(d).to_string())
                    .unwrap_or_default()
            ),
            Why::Count => format!("beyond the newest {} runs", rules.max_runs),
        };
        let started = r
            .started_at
            .as_deref()
            .map(|s| format!(", started {}", term::local_datetime(s)))
            .unwrap_or_default();
        out.push_str(&format!("{verb} {} ({why}{started})\n", r.run_id));
    }
    for id in &report.kept_running {
        out.push_str(&format!("kept {id}: it is running\n"));
    }
    for f in &report.failed {
        out.push_str(&format!(
            "could not remove {}: {} (tried again next time)\n",
            f.run_id, f.error
        ));
    }
    if retention::nothing_to_do(ws) {
        out.push_str(
            "retention is off ([retention] max_age = \"0\" and max_runs = 0): nothing to remove\n",
        );
    } else {
        out.push_str(&format!(
            "{verb} {} run{}\n",
            report.removed.len(),
            if report.removed.len() == 1 { "" } else { "s" }
        ));
    }
    out
}
