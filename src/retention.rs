//! Retention (`[retention]` in the configuration): removing run files and their index rows
//! older than `max_age` or beyond the newest `max_runs`.
//!
//! Called by `pipewatch prune` ([`prune`], which opens the index itself) and hourly by
//! `pipewatch serve` ([`prune_index`], with the dashboard's own index).
//!
//! # Invariants
//!
//! - A running run is never removed: not while its runner holds its lock
//!   ([`liveness::liveness`] is `Alive`), nor while the index says `running` — unless its file
//!   has not changed for longer than `max_age` (a file another tool left without a final
//!   event; a pipewatch runner that died is `abandoned`, not `running`).
//! - A run's age is its start (its first event's time), or its file's mtime when the start
//!   is not known. `max_runs` counts runs newest first by that same time.
//! - In a workspace each pipeline's runs are counted and aged apart, by its own `[retention]`
//!   or the workspace's: a run every minute never pushes a nightly pipeline's history out.
//!   Runs that name no configured pipeline (a removed one, another tool's) follow the
//!   workspace's rules, each name apart. A file of one pipeline applies its rules to every run
//!   of the folder together, as it always did.
//! - The file goes first, then the index row: a file that cannot be deleted (on Windows, one
//!   another process holds open without sharing delete) keeps its row, is reported in
//!   [`Report::failed`] and is tried again next time. Nothing here panics or stops the
//!   dashboard. The tailer opens files only for a read, and forgets nothing it needs: a
//!   deleted file is simply not read again.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Retention, Workspace};
use crate::event::RunId;
use crate::index::history::{History, HistoryError, run_files};
use crate::index::{Index, IndexError, RunSummary};
use crate::journal::files::RunFile;
use crate::runner::liveness::{self, Liveness};

/// Why a run is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// Older than `max_age`.
    Age,
    /// Beyond the newest `max_runs`.
    Count,
}

/// A run removed (or that would be, on a dry run).
#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    pub run_id: RunId,
    /// Its pipeline, whose rules removed it (`None` outside a workspace, or for a run that
    /// names none).
    pub pipeline: Option<String>,
    pub started_at: Option<String>,
    pub why: Why,
    pub file: Option<PathBuf>,
}

/// A run whose file could not be deleted: tried again next time.
#[derive(Debug, Clone, Serialize)]
pub struct Failed {
    pub run_id: RunId,
    pub error: String,
}

/// What a prune did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub removed: Vec<Removed>,
    /// Runs the rules would remove but that are running.
    pub kept_running: Vec<RunId>,
    pub failed: Vec<Failed>,
}

/// A prune that could not look at the runs.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(transparent)]
    Index(#[from] IndexError),
}

impl crate::exit::Code for RetentionError {
    fn exit_code(&self) -> u8 {
        match self {
            RetentionError::History(e) => e.exit_code(),
            RetentionError::Index(_) => crate::exit::ENVIRONMENT,
        }
    }
}

/// One run as retention sees it.
#[derive(Debug, Clone)]
struct Candidate {
    run_id: RunId,
    pipeline: Option<String>,
    started_at: Option<String>,
    status: Option<String>,
    file: Option<PathBuf>,
    mtime: Option<SystemTime>,
    /// Start, else mtime.
    time: Option<DateTime<Utc>>,
}

fn candidates(
    summaries: Vec<RunSummary>,
    events_dir: &Path,
) -> Result<Vec<Candidate>, HistoryError> {
    let mut by_id: std::collections::BTreeMap<RunId, Candidate> = summaries
        .into_iter()
        .map(|r| {
            let c = Candidate {
                run_id: r.run_id.clone(),
                pipeline: r.pipeline,
                time: r
                    .started_at
                    .as_deref()
                    .and_then(crate::event::parse_timestamp),
                started_at: r.started_at,
                status: Some(r.status),
                file: None,
                mtime: None,
            };
            (r.run_id, c)
        })
        .collect();
    for (RunFile { id, path }, meta) in run_files(events_dir)? {
        let mtime = meta.modified().ok();
        let c = by_id.entry(id.clone()).or_insert_with(|| Candidate {
            run_id: id,
            pipeline: None,
            started_at: None,
            status: None,
            file: None,
            mtime: None,
            time: None,
        });
        c.file = Some(path);
        c.mtime = mtime;
        if c.time.is_none() {
            c.time = mtime.map(DateTime::<Utc>::from);
        }
    }
    Ok(by_id.into_values().collect())
}

/// Which candidates to remove, and which running ones the rules would have removed.
fn plan(
    rules: &Retention,
    mut runs: Vec<Candidate>,
    alive: impl Fn(&RunId) -> bool,
    now: DateTime<Utc>,
) -> (Vec<(Candidate, Why)>, Vec<RunId>) {
    runs.sort_by(|a, b| (b.time, &b.run_id).cmp(&(a.time, &a.run_id)));
    let max_age = rules
        .max_age
        .and_then(|d| chrono::Duration::from_std(d).ok());
    let older = |t: Option<DateTime<Utc>>| match (max_age, t) {
        (Some(age), Some(t)) => now - t > age,
        _ => false,
    };
    let mut remove = Vec::new();
    let mut kept = Vec::new();
    for (i, c) in runs.into_iter().enumerate() {
        let why = if older(c.time) {
            Why::Age
        } else if rules.max_runs > 0 && i as u64 >= rules.max_runs {
            Why::Count
        } else {
            continue;
        };
        let untouched = older(c.mtime.map(DateTime::<Utc>::from));
        let running = alive(&c.run_id) || (c.status.as_deref() == Some("running") && !untouched);
        if running {
            kept.push(c.run_id);
        } else {
            remove.push((c, why));
        }
    }
    (remove, kept)
}

/// The rules for the runs of `pipeline`: its own in a workspace, else the workspace's.
pub fn rules_for<'a>(ws: &'a Workspace, pipeline: Option<&str>) -> &'a Retention {
    match pipeline.and_then(|p| ws.get(p)) {
        Some(c) if ws.is_workspace => &c.retention,
        _ => &ws.retention,
    }
}

/// [`plan`] for every pipeline apart in a workspace, for the whole folder otherwise.
fn plan_all(
    ws: &Workspace,
    runs: Vec<Candidate>,
    alive: impl Fn(&RunId) -> bool,
    now: DateTime<Utc>,
) -> (Vec<(Candidate, Why)>, Vec<RunId>) {
    let mut groups: std::collections::BTreeMap<Option<String>, Vec<Candidate>> =
        std::collections::BTreeMap::new();
    for c in runs {
        let key = if ws.is_workspace {
            c.pipeline.clone()
        } else {
            None
        };
        groups.entry(key).or_default().push(c);
    }
    let (mut remove, mut kept) = (Vec::new(), Vec::new());
    for (pipeline, group) in groups {
        let rules = rules_for(ws, pipeline.as_deref());
        if disabled(rules) {
            continue;
        }
        let (r, k) = plan(rules, group, &alive, now);
        remove.extend(r);
        kept.extend(k);
    }
    (remove, kept)
}

/// Whether no rule of `ws` removes anything.
pub fn nothing_to_do(ws: &Workspace) -> bool {
    disabled(&ws.retention) && ws.pipelines.iter().all(|c| disabled(&c.retention))
}

/// Removes what `plan` chose: files first, then the rows of the runs whose file is gone.
fn execute(
    state_dir: &Path,
    chosen: Vec<(Candidate, Why)>,
    kept_running: Vec<RunId>,
    index: Option<&mut Index>,
    dry_run: bool,
) -> Result<Report, IndexError> {
    let mut report = Report {
        dry_run,
        kept_running,
        ..Report::default()
    };
    let mut gone = Vec::new();
    for (c, why) in chosen {
        if !dry_run && let Some(path) = &c.file {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    report.failed.push(Failed {
                        run_id: c.run_id,
                        error: format!("cannot delete {}: {e}", path.display()),
                    });
                    continue;
                }
            }
            liveness::remove_stale_lock(state_dir, &c.run_id);
        }
        gone.push(c.run_id.clone());
        report.removed.push(Removed {
            run_id: c.run_id,
            pipeline: c.pipeline,
            started_at: c.started_at,
            why,
            file: c.file,
        });
    }
    if !dry_run
        && !gone.is_empty()
        && let Some(idx) = index
    {
        idx.remove_runs(&gone)?;
    }
    Ok(report)
}

/// Whether `[retention]` removes nothing (`max_age = "0"` and `max_runs = 0`).
pub fn disabled(rules: &Retention) -> bool {
    rules.max_age.is_none() && rules.max_runs == 0
}

fn alive(state_dir: &Path) -> impl Fn(&RunId) -> bool + '_ {
    move |id| liveness::liveness(state_dir, id) == Liveness::Alive
}

/// `pipewatch prune`: applies `[retention]` now, to the run files and to the index at
/// `<state_dir>/index.db` if there is one (the dashboard may be running: SQLite serializes the
/// writes). On a dry run nothing is removed and the report says what would be.
pub fn prune(ws: &Workspace, dry_run: bool) -> Result<Report, RetentionError> {
    prune_at(ws, dry_run, Utc::now())
}

/// [`prune`] as if it were `now`.
pub fn prune_at(
    ws: &Workspace,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<Report, RetentionError> {
    if nothing_to_do(ws) {
        return Ok(Report {
            dry_run,
            ..Report::default()
        });
    }
    let config = ws.shared();
    let state_dir = &config.server.state_dir;
    let history = History::open(config)?;
    let runs = candidates(
        history.list(usize::MAX, None, None)?,
        &config.server.events_dir,
    )?;
    drop(history);
    let (chosen, kept) = plan_all(ws, runs, alive(state_dir), now);
    let db = crate::index::path(state_dir);
    let mut index = if !dry_run && !chosen.is_empty() && db.is_file() {
        Some(Index::open(&db)?)
    } else {
        None
    };
    Ok(execute(state_dir, chosen, kept, index.as_mut(), dry_run)?)
}

/// The dashboard's hourly prune, with its own index (which is up to date with the files).
pub fn prune_index(
    ws: &Workspace,
    index: &mut Index,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<Report, IndexError> {
    if nothing_to_do(ws) {
        return Ok(Report {
            dry_run,
            ..Report::default()
        });
    }
    let config = ws.shared();
    let state_dir = &config.server.state_dir;
    let runs = match candidates(
        index.list_runs(usize::MAX, None, &crate::index::RunFilter::default())?,
        &config.server.events_dir,
    ) {
        Ok(r) => r,
        Err(HistoryError::Index(e)) => return Err(e),
        Err(e) => {
            tracing::warn!("retention: {e}; trying again next time");
            return Ok(Report::default());
        }
    };
    let (chosen, kept) = plan_all(ws, runs, alive(state_dir), now);
    execute(state_dir, chosen, kept, Some(index), dry_run)
}

impl Report {
    /// Logs what a prune inside the dashboard did.
    pub fn log(&self) {
        for r in &self.removed {
            tracing::info!(run_id = %r.run_id, why = ?r.why, "retention: removed run");
        }
        for f in &self.failed {
            tracing::warn!(run_id = %f.run_id, "retention: {}; trying again next time", f.error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cand(id: &str, t: &str, status: &str) -> Candidate {
        Candidate {
            run_id: RunId::parse(id).unwrap(),
            pipeline: None,
            started_at: Some(t.to_string()),
            status: Some(status.to_string()),
            file: None,
            mtime: Some(SystemTime::now()),
            time: crate::event::parse_timestamp(t),
        }
    }

    #[test]
    fn age_and_count_never_a_running_run() {
        let now = crate::event::parse_timestamp("2026-11-29T12:00:00Z").unwrap();
        let rules = Retention {
            max_age: Some(Duration::from_secs(86_400)),
            max_runs: 2,
        };
        let runs = vec![
            cand("a", "2026-11-27T00:00:00Z", "success"),
            cand("b", "2026-11-27T01:00:00Z", "running"),
            cand("c", "2026-11-29T09:00:00Z", "failure"),
            cand("d", "2026-11-29T10:00:00Z", "success"),
            cand("e", "2026-11-29T11:00:00Z", "success"),
        ];
        let (remove, kept) = plan(&rules, runs, |id| id.as_str() == "zzz", now);
        let ids: Vec<(&str, Why)> = remove
            .iter()
            .map(|(c, w)| (c.run_id.as_str(), *w))
            .collect();
        assert_eq!(ids, vec![("c", Why::Count), ("a", Why::Age)]);
        assert_eq!(kept, vec![RunId::parse("b").unwrap()]);
    }

    #[test]
    fn the_dashboard_prune_removes_files_and_rows_and_a_dry_run_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[pipeline]\nname = \"p\"\n[[stages]]\nname = \"a\"\nrun = \"x\"\n\
                    [retention]\nmax_age = \"0\"\nmax_runs = 1\n";
        let config =
            crate::config::Config::parse(text, &dir.path().join("pipewatch.toml")).unwrap();
        let events = &config.server.events_dir;
        let ws: Workspace = config.clone().into();
        std::fs::create_dir_all(events).unwrap();
        for (id, t) in [
            ("r1", "2026-11-28T08:00:00Z"),
            ("r2", "2026-11-29T08:00:00Z"),
        ] {
            let line = format!(
                "{{\"run_id\":\"{id}\",\"stage\":\"pipeline\",\"event\":\"start\",\"timestamp\":\"{t}\",\"msg\":\"go\"}}\n\
                 {{\"run_id\":\"{id}\",\"stage\":\"pipeline\",\"event\":\"success\",\"timestamp\":\"{t}\",\"msg\":\"ok\"}}\n"
            );
            std::fs::write(events.join(format!("pipeline_{id}.jsonl")), line).unwrap();
        }
        let mut idx = Index::open_in_memory().unwrap();
        crate::index::rebuild(&mut idx, events).unwrap();
        let now = Utc::now();

        let dry = prune_index(&ws, &mut idx, true, now).unwrap();
        assert_eq!(dry.removed.len(), 1);
        assert_eq!(dry.removed[0].run_id.as_str(), "r1");
        assert_eq!(dry.removed[0].why, Why::Count);
        assert_eq!(idx.count_runs().unwrap(), 2);
        assert!(events.join("pipeline_r1.jsonl").exists());

        let done = prune_index(&ws, &mut idx, false, now).unwrap();
        assert_eq!(done.removed.len(), 1);
        assert!(done.failed.is_empty());
        assert!(!events.join("pipeline_r1.jsonl").exists());
        assert!(events.join("pipeline_r2.jsonl").exists());
        assert_eq!(idx.count_runs().unwrap(), 1);
        // Nothing left to do: a second prune removes nothing.
        assert!(
            prune_index(&ws, &mut idx, false, now)
                .unwrap()
                .removed
                .is_empty()
        );
    }
}
