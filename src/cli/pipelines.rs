//! `pipewatch pipelines`: every pipeline of the workspace with its schedule, whether its
//! schedule is on, its last run and its next, for a terminal or as JSON.
//!
//! The last run comes from the run history caught up with the files ([`History`]), the
//! schedule's state from the pipeline's scheduler backend (as `scheduler status` shows it),
//! and what is running from the runs' locks, so it answers whether or not the dashboard is up.

use serde::Serialize;

use super::term::{self, Paint};
use super::{CliError, stdout_paint};
use crate::config::{Config, Workspace};
use crate::exit;
use crate::index::RunSummary;
use crate::index::history::History;
use crate::runner::liveness;
use crate::scheduler;

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON: an array with one object per pipeline.
    #[arg(long)]
    json: bool,
}

/// One pipeline, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    schedule: String,
    overlap: crate::config::Overlap,
    backend: crate::config::Backend,
    enabled: bool,
    /// RFC 3339, while the schedule is on.
    next_run: Option<String>,
    last_run: Option<RunSummary>,
    /// Run ids of its runs going now.
    running: Vec<String>,
    /// The pipeline file.
    file: String,
}

pub fn command(ws: &Workspace, args: Args) -> Result<u8, CliError> {
    let history = History::open(ws.shared())?;
    let mut rows = Vec::with_capacity(ws.pipelines.len());
    for config in &ws.pipelines {
        rows.push(row(config, &history)?);
    }
    if args.json {
        super::out::stdout().json(&rows)?;
    } else {
        super::out::stdout().text(&render(&rows, stdout_paint()))?;
    }
    Ok(exit::SUCCESS)
}

fn row(config: &Config, history: &History) -> Result<Row, CliError> {
    let name = &config.pipeline.name;
    let status = scheduler::backend(
        config.scheduler.backend,
        config,
        scheduler::OsOptions::default(),
    )
    .status()?;
    let last_run = history.list(1, None, Some(name))?.into_iter().next();
    Ok(Row {
        name: name.clone(),
        schedule: config.pipeline.schedule.expression().to_string(),
        overlap: config.pipeline.overlap,
        backend: config.scheduler.backend,
        enabled: status.enabled,
        next_run: status.next_run,
        last_run,
        running: liveness::alive_runs_of(&config.server.state_dir, name)
            .iter()
            .map(|id| id.to_string())
            .collect(),
        file: config.file.display().to_string(),
    })
}

/// A table: name, schedule, on or off, last status and when, next run.
fn render(rows: &[Row], paint: Paint) -> String {
    let header = ["PIPELINE", "SCHEDULE", "ENABLED", "LAST RUN", "NEXT RUN"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            let last = match &r.last_run {
                None => "-".to_string(),
                Some(run) => {
                    let when = run
                        .started_at
                        .as_deref()
                        .map(term::local_datetime)
                        .unwrap_or_default();
                    let status = if r.running.is_empty() {
                        run.status.clone()
                    } else {
                        "running".to_string()
                    };
                    format!("{status} {when}").trim_end().to_string()
                }
            };
            [
                r.name.clone(),
                r.schedule.clone(),
                if r.enabled { "yes" } else { "no" }.to_string(),
                last,
                r.next_run
                    .as_deref()
                    .map(term::local_datetime)
                    .unwrap_or_else(|| "-".to_string()),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for c in &cells {
        for (w, v) in width.iter_mut().zip(c) {
            *w = (*w).max(v.chars().count());
        }
    }
    let line = |c: &[String; 5], paint_status: bool| -> String {
        let mut s = String::new();
        for (i, v) in c.iter().enumerate() {
            let shown = if paint_status && i == 3 {
                paint_last(v, paint)
            } else {
                v.clone()
            };
            if i + 1 == c.len() {
                s.push_str(&shown);
            } else {
                s.push_str(&term::pad(&shown, v, width[i] + 2));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut text = line(&header.map(str::to_string), false);
    for c in &cells {
        text.push_str(&line(c, true));
    }
    text
}

/// The last run's status word in its colour.
fn paint_last(v: &str, paint: Paint) -> String {
    let (word, rest) = v.split_once(' ').unwrap_or((v, ""));
    let word = paint.status(word);
    if rest.is_empty() {
        word
    } else {
        format!("{word} {rest}")
    }
}
