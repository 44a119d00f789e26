//! `pipewatch runs` and `runs show RUN_ID`: the run history for a terminal or as JSON, read
//! from the run index caught up with the files ([`History`]), whether or not the dashboard is
//! up.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::term::{self, Paint};
use super::{CliError, parse_run_id, stdout_paint};
use crate::config::Config;
use crate::event::RunId;
use crate::exit;
use crate::index::history::{History, StderrTail};
use crate::index::{RUN_STATUSES, RunDetail, RunSummary, StageSummary};

/// Number of stderr lines `runs show` prints for a failed stage.
const STDERR_TAIL: usize = 10;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    #[command(flatten)]
    list: ListArgs,
    /// Print JSON: the objects of GET /api/runs and GET /api/runs/{run_id}.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Runs newest first (the default).
    List(ListArgs),
    /// One run: why it ended, its stages with status, attempts, durations and outcome (exit
    /// code, timeout, why skipped), and the last stderr lines of a failed stage's last attempt.
    Show {
        #[arg(value_parser = parse_run_id, value_name = "RUN_ID")]
        run_id: RunId,
        /// Print the run's whole log instead, as plain text: one line per event, `time stage
        /// stream text` (what GET /api/runs/{run_id}/log downloads).
        #[arg(long, conflicts_with = "json")]
        log: bool,
    },
}

#[derive(clap::Args, Clone, Default)]
struct ListArgs {
    /// Only runs with this status.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(RUN_STATUSES))]
    status: Option<String>,
    /// Only runs of this pipeline (also one no longer in the configuration).
    #[arg(long, value_name = "NAME")]
    pipeline: Option<String>,
    /// Only runs that ran on this host (with `[cluster]`, the host that forwarded them).
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// At most this many runs.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

/// `runs show --json`: the run's object with the end of each failed stage's stderr.
#[derive(Serialize)]
struct DetailJson<'a> {
    #[serde(flatten)]
    run: &'a RunSummary,
    stages: Vec<StageJson<'a>>,
}

#[derive(Serialize)]
struct StageJson<'a> {
    #[serde(flatten)]
    stage: &'a StageSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    stderr_tail: Option<&'a Vec<String>>,
}

pub fn command(config: &Config, args: Args) -> Result<u8, CliError> {
    let paint = stdout_paint();
    let history = History::open(config)?;
    tracing::debug!(source = ?history.source(), "run history");
    let now = Utc::now();
    match args.action {
        None | Some(Action::List(_)) => {
            let list = match args.action {
                Some(Action::List(a)) => a,
                _ => args.list,
            };
            let runs = history.list_on(
                list.limit,
                list.status.as_deref(),
                list.pipeline.as_deref(),
                list.host.as_deref(),
            )?;
            if args.json {
                super::out::stdout().json(&runs)?;
            } else {
                super::out::stdout().text(&render_list(&runs, paint, now))?;
            }
        }
        Some(Action::Show { run_id, log: true }) => {
            let mut out = super::out::stdout();
            history.write_log(&run_id, |text| out.text(text))??;
        }
        Some(Action::Show { run_id, log: false }) => {
            let detail = history.get(&run_id)?;
            let failed: Vec<&str> = detail
                .stages
                .iter()
                .filter(|s| s.status == "failure")
                .map(|s| s.name.as_str())
                .collect();
            let tails = history.stderr_tails(&run_id, &failed, STDERR_TAIL)?;
            if args.json {
                let json = DetailJson {
                    run: &detail.run,
                    stages: detail
                        .stages
                        .iter()
                        .map(|stage| StageJson {
                            stage,
                            stderr_tail: tails.get(&stage.name).map(|t| &t.lines),
                        })
                        .collect(),
                };
                super::out::stdout().json(&json)?;
            } else {
                super::out::stdout().text(&render_detail(&detail, &tails, paint, now))?;
            }
        }
    }
    Ok(exit::SUCCESS)
}

/// How a stage ended, in words: its exit code, a timeout, the signal, why it was skipped or
/// cancelled. `None` while it runs (or when its events say nothing more).
fn stage_outcome(s: &StageSummary) -> Option<String> {
    let reason = s.reason.as_deref();
    Some(match (s.status.as_str(), reason) {
        (_, Some("timeout")) => "timed out".to_string(),
        (_, Some("signal")) => match s.signal {
            Some(n) => format!("killed by signal {n}"),
            None => "killed by a signal".to_string(),
        },
        (_, Some("spawn")) => "could not start".to_string(),
        ("skipped", Some("needs_failed")) => match &s.needs {
            Some(n) => format!("{n} did not succeed"),
            None => "a needed stage did not succeed".to_string(),
        },
        ("skipped", Some("run_stopped")) => "the run stopped first".to_string(),
        ("skipped", Some("reused")) => "reused from an earlier run".to_string(),
        ("skipped", Some("not_selected")) => "not selected".to_string(),
        ("cancelled", Some(r)) => cancelled_by(r),
        ("running", _) => return None,
        _ => match s.exit_code {
            Some(c) => format!("exit code {c}"),
            None => return reason.map(str::to_string),
        },
    })
}

/// A cancel's reason code in words.
fn cancelled_by(reason: &str) -> String {
    match reason {
        "user" => "cancelled by a user".to_string(),
        "interrupted" => "interrupted".to_string(),
        "replaced" => "replaced by a newer run".to_string(),
        r => format!("cancelled ({r})"),
    }
}

/// Why a run ended as it did, in words (empty for a success or a run still going): the
/// failed stages with how each failed, a timeout, who cancelled it.
fn run_why(d: &RunDetail) -> String {
    let r = &d.run;
    let failed = |names: &[String]| -> String {
        names
            .iter()
            .map(|n| {
                match d
                    .stages
                    .iter()
                    .find(|s| &s.name == n)
                    .and_then(stage_outcome)
                {
                    Some(o) => format!("{n} ({o})"),
                    None => n.clone(),
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let failed_stages = if r.failed_stages.is_empty() {
        d.stages
            .iter()
            .filter(|s| s.status == "failure")
            .map(|s| s.name.clone())
            .collect()
    } else {
        r.failed_stages.clone()
    };
    match (r.status.as_str(), r.reason.as_deref()) {
        ("failure", Some("timeout")) => "the run timed out".to_string(),
        ("failure", _) if !failed_stages.is_empty() => {
            let s = if failed_stages.len() == 1 { "" } else { "s" };
            format!("stage{s} failed: {}", failed(&failed_stages))
        }
        ("cancelled", Some(why)) => cancelled_by(why),
        ("skipped", Some("engine_unreachable")) => {
            "the cluster engine could not be reached to claim its occurrence".to_string()
        }
        ("success" | "running", _) => String::new(),
        (_, Some(why)) => why.to_string(),
        _ => String::new(),
    }
}

/// The duration shown for a run or stage: its own, or for one still going the time so far.
fn shown_duration(
    duration_ms: Option<u64>,
    started_at: Option<&str>,
    status: &str,
    now: DateTime<Utc>,
) -> String {
    match duration_ms {
        Some(ms) => term::duration(std::time::Duration::from_millis(ms)),
        None if status == "running" => started_at
            .and_then(crate::event::parse_timestamp)
            .and_then(|t| (now - t).to_std().ok())
            .map(|d| format!("{}…", term::duration(d)))
            .unwrap_or_else(|| "-".to_string()),
        None => "-".to_string(),
    }
}

/// The `runs` table: run id, status (coloured), source, start (local time), duration; and
/// the host each ran on when the runs listed come from more than one (a single machine's
/// table stays as it was).
pub fn render_list(runs: &[RunSummary], paint: Paint, now: DateTime<Utc>) -> String {
    use term::pad;
    if runs.is_empty() {
        return "no runs yet: `pipewatch run` runs the pipeline once\n".to_string();
    }
    let hosts: std::collections::HashSet<Option<&str>> =
        runs.iter().map(|r| r.host.as_deref()).collect();
    let with_host = hosts.len() > 1;
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            // Why it did not succeed: the stages that failed, else the reason's code.
            let why = match (&r.reason, r.failed_stages.is_empty()) {
                (_, false) => Some(format!("failed: {}", r.failed_stages.join(", "))),
                (Some(w), true) => Some(w.clone()),
                (None, true) => None,
            };
            let source = match (&r.source, why) {
                (Some(s), Some(why)) if r.status != "success" => format!("{s} ({why})"),
                (Some(s), _) => s.clone(),
                (None, _) => "-".to_string(),
            };
            let mut row = vec![r.run_id.to_string(), r.status.clone()];
            if with_host {
                row.push(r.host.clone().unwrap_or_else(|| "-".to_string()));
            }
            row.extend([
                source,
                r.started_at
                    .as_deref()
                    .map(term::local_datetime)
                    .unwrap_or_else(|| "-".to_string()),
                shown_duration(r.duration_ms, r.started_at.as_deref(), &r.status, now),
            ]);
            row
        })
        .collect();
    let mut head = vec!["RUN", "STATUS"];
    if with_host {
        head.push("HOST");
    }
    head.extend(["TRIGGER", "STARTED", "DURATION"]);
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, shown: Vec<String>| {
        let mut l = String::new();
        for (i, (cell, vis)) in shown.iter().zip(&cells).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(&pad(cell, vis, width[i]));
                l.push_str("  ");
            }
        }
        l.push('\n');
        l
    };
    let head_cells: Vec<String> = head.iter().map(|h| h.to_string()).collect();
    let bold = head_cells.iter().map(|h| paint.bold(h)).collect();
    out.push_str(&line(head_cells, bold));
    for row in rows {
        let mut shown = row.clone();
        shown[1] = paint.status(&row[1]);
        out.push_str(&line(row, shown));
    }
    out
}

/// `runs show`: the run, then each stage; a failed stage with the end of its stderr.
pub fn render_detail(
    d: &RunDetail,
    tails: &HashMap<String, StderrTail>,
    paint: Paint,
    now: DateTime<Utc>,
) -> String {
    use term::pad;
    let r = &d.run;
    let mut out = String::new();
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    out.push_str(&format!("run       {}\n", paint.bold(r.run_id.as_str())));
    out.push_str(&format!("pipeline  {}\n", or_dash(r.pipeline.clone())));
    let why = run_why(d);
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(": {why}")
    };
    out.push_str(&format!("status    {}{why}\n", paint.status(&r.status)));
    out.push_str(&format!("trigger   {}\n", or_dash(r.source.clone())));
    out.push_str(&format!("host      {}\n", or_dash(r.host.clone())));
    out.push_str(&format!(
        "started   {}\n",
        or_dash(r.started_at.as_deref().map(term::local_datetime))
    ));
    out.push_str(&format!(
        "finished  {}\n",
        or_dash(r.finished_at.as_deref().map(term::local_datetime))
    ));
    out.push_str(&format!(
        "duration  {}\n",
        shown_duration(r.duration_ms, r.started_at.as_deref(), &r.status, now)
    ));
    if let Some(when) = &r.scheduled_for {
        out.push_str(&format!("due at    {}\n", term::local_datetime(when)));
    }
    if d.stages.is_empty() {
        return out;
    }
    out.push('\n');
    let name_w = d
        .stages
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    let status_w = d
        .stages
        .iter()
        .map(|s| s.status.len())
        .max()
        .unwrap_or(6)
        .max(6);
    out.push_str(&paint.bold(&format!(
        "{:name_w$}  {:status_w$}  {:>8}  {:>10}  {}",
        "STAGE", "STATUS", "ATTEMPTS", "DURATION", "OUTCOME"
    )));
    out.push('\n');
    for s in &d.stages {
        let exit = stage_outcome(s).unwrap_or_else(|| "-".to_string());
        out.push_str(&format!(
            "{:name_w$}  {}  {:>8}  {:>10}  {}\n",
            s.name,
            pad(&paint.status(&s.status), &s.status, status_w),
            s.attempts,
            shown_duration(s.duration_ms, s.started_at.as_deref(), &s.status, now),
            exit
        ));
        if let Some(tail) = tails.get(&s.name).filter(|t| !t.lines.is_empty()) {
            let of_attempt = if s.attempts > 1 {
                format!(" (attempt {} of {})", tail.attempt, s.attempts)
            } else {
                String::new()
            };
            out.push_str(&paint.dim(&format!(
                "  last {} stderr lines of {}{of_attempt}:\n",
                tail.lines.len(),
                s.name
            )));
            for l in &tail.lines {
                out.push_str(&format!("  {} {}\n", paint.dim("|"), paint.red(l)));
            }
        }
    }
    out
}
