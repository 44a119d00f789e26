//! The `run files` checks of `pipewatch doctor`: the newest run as recent as the schedule
//! says — of the folder for a file of one pipeline, of each pipeline (its own schedule) in a
//! workspace.

use std::time::Duration;

use chrono::{DateTime, Local, Utc};

use super::Check;
use crate::config::{Config, Workspace};

/// The time between the next two occurrences of the schedule, for messages.
fn cadence(config: &Config, now: DateTime<Local>) -> Option<Duration> {
    let s = &config.pipeline.schedule;
    let a = s.next_after(&now)?;
    let b = s.next_after(&a)?;
    (b - a).to_std().ok()
}

pub(super) fn run_files(config: &Config, out: &mut Vec<Check>) {
    let name = "run files";
    let files = match crate::index::history::run_files(&config.server.events_dir) {
        Ok(f) => f,
        Err(e) => {
            out.push(Check::fail(
                name,
                e.to_string(),
                "check the folder's permissions",
            ));
            return;
        }
    };
    let newest = files
        .iter()
        .filter_map(|(f, m)| Some((m.modified().ok()?, &f.id)))
        .max();
    let Some((mtime, id)) = newest else {
        out.push(Check::warn(
            name,
            format!("no run files in {} yet", config.server.events_dir.display()),
            "run the pipeline once with `pipewatch run`; install the schedule with `pipewatch scheduler install`",
        ));
        return;
    };
    let now = Local::now();
    let last: DateTime<Local> = DateTime::<Utc>::from(mtime).with_timezone(&Local);
    let age = crate::cli::term::duration((now - last).to_std().unwrap_or_default());
    let detail = format!(
        "{} run file{}; the newest, {}, last changed {age} ago",
        files.len(),
        if files.len() == 1 { "" } else { "s" },
        id.file_name()
    );
    out.push(recency(name, config, last, now, detail));
}

/// In a workspace, each pipeline's newest run against its own schedule: a nightly pipeline is
/// not judged by a 15-minute one's runs, nor the other way round.
pub(super) fn runs_of_each(ws: &Workspace, out: &mut Vec<Check>) {
    let history = match crate::index::history::History::open(ws.shared()) {
        Ok(h) => h,
        Err(e) => {
            out.push(Check::fail(
                "run files",
                e.to_string(),
                "check the events folder's permissions",
            ));
            return;
        }
    };
    let now = Local::now();
    for config in &ws.pipelines {
        let pipeline = &config.pipeline.name;
        let name = format!("run files ({pipeline})");
        // Recorded misses are not runs: the newest run that started.
        let newest = history.list(100, None, Some(pipeline)).map(|runs| {
            runs.into_iter().find_map(|r| {
                (r.status != "missed")
                    .then(|| {
                        r.started_at
                            .as_deref()
                            .and_then(crate::event::parse_timestamp)
                    })
                    .flatten()
                    .map(|t| (r.run_id, t))
            })
        });
        match newest {
            Err(e) => out.push(Check::fail(&name, e.to_string(), "check the events folder")),
            Ok(None) => out.push(Check::warn(
                &name,
                format!("no run of {pipeline} yet"),
                format!(
                    "run it once with `pipewatch run {pipeline}`; install the schedule with \
                     `pipewatch scheduler install`"
                ),
            )),
            Ok(Some((id, started))) => {
                let last = started.with_timezone(&Local);
                let age = crate::cli::term::duration((now - last).to_std().unwrap_or_default());
                let detail = format!("the newest run, {id}, started {age} ago");
                out.push(recency(&name, config, last, now, detail));
            }
        }
    }
}

/// Whether the newest run (`last`) is as recent as `config`'s schedule says: two occurrences
/// missed in a row (beyond the grace) is stale.
fn recency(
    name: &str,
    config: &Config,
    last: DateTime<Local>,
    now: DateTime<Local>,
    detail: String,
) -> Check {
    let grace = config.scheduler.grace;
    let cutoff = now - chrono::Duration::from_std(grace).unwrap_or_default();
    // Occurrences that should have produced a newer run: two missed in a row is stale.
    let mut missed = 0;
    let mut t = last;
    while missed < 2 {
        match config.pipeline.schedule.next_after(&t) {
            Some(n) if n <= cutoff => {
                missed += 1;
                t = n;
            }
            _ => break,
        }
    }
    let every = cadence(config, now)
        .map(|d| format!("a run every {}", crate::cli::term::duration(d)))
        .unwrap_or_else(|| "no further run".to_string());
    if missed >= 2 {
        let run = match config.run_name() {
            Some(p) => format!("`pipewatch run {p}`"),
            None => "`pipewatch run`".to_string(),
        };
        Check::fail(
            name,
            format!(
                "{detail}, but the schedule {:?} expects {every} (grace {})",
                config.pipeline.schedule.expression(),
                crate::cli::term::duration(grace)
            ),
            format!(
                "scheduled runs are not happening: see the scheduler check below (`pipewatch \
                 scheduler status`), run one now with {run}, and look at the last ones with \
                 `pipewatch runs`"
            ),
        )
    } else {
        Check::pass(name, format!("{detail} ({every})"))
    }
}
