//! Run history for the terminal (`pipewatch runs`, and the run list `prune` works from): the
//! run index read directly, whether or not the dashboard is up.
//!
//! The dashboard's index (`<state_dir>/index.db`) is opened for reading only: nothing here
//! writes to it, because its checkpoints decide what the dashboard publishes when it comes back
//! (moving them would lose those events for WebSocket clients). Instead, a [`History`] compares
//! every run file with the index's checkpoint for it; the files the index has not caught up
//! with (new runs, runs written while the dashboard was down, the line being written now) are
//! read into a small in-memory index, and answers merge the two. Without an index file at all
//! (the dashboard never ran) or with an unusable one, every file is read into memory: the
//! same as `pipewatch reindex`, minus the file.
//!
//! A `running` run whose lock file is there but held by nobody is shown `abandoned`, by the
//! dashboard's own rule (`server::ingest`): its runner died without a final event.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::event::RunId;
use crate::index::{Index, IndexError, RunDetail, RunFilter, RunSummary};
use crate::journal::files::{self, RunFile};
use crate::runner::liveness::{self, Liveness};
use crate::tail::{Batch, Replay, TailError};

/// Why the history cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Read(#[from] TailError),
    #[error(
        "cannot read the events folder {path}: {source}: check [server] events_dir in the configuration"
    )]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no run {id} in {events_dir} or the run index: `pipewatch runs` lists the runs there are"
    )]
    UnknownRun { id: RunId, events_dir: PathBuf },
    #[error("unknown status {0:?}: one of {list}", list = crate::index::RUN_STATUSES.join(", "))]
    UnknownStatus(String),
}

impl crate::exit::Code for HistoryError {
    /// Asking for something that is not there is a usage error (exit code 2); a folder or
    /// database that cannot be read is the environment's.
    fn exit_code(&self) -> u8 {
        match self {
            HistoryError::UnknownRun { .. } | HistoryError::UnknownStatus(_) => crate::exit::USAGE,
            _ => crate::exit::ENVIRONMENT,
        }
    }
}

/// Where the answers come from, for the curious (`--json` does not show it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The dashboard's index, plus `n` files it had not caught up with, read into memory.
    Index { path: PathBuf, caught_up: usize },
    /// No usable index: every run file was read into memory.
    Files { files: usize },
}

/// The run files of `events_dir` with their metadata, by run id; an absent folder has none.
pub fn run_files(events_dir: &Path) -> Result<Vec<(RunFile, std::fs::Metadata)>, HistoryError> {
    match files::list_with_metadata(events_dir) {
        Ok(list) => Ok(list),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(HistoryError::ReadDir {
            path: events_dir.to_path_buf(),
            source,
        }),
    }
}

/// Reads a run file from its start, one bounded batch at a time.
pub fn read_batches(path: &Path, id: &RunId, mut each: impl FnMut(Batch)) -> Result<(), TailError> {
    let mut replay = Replay::new(path.to_path_buf(), id.clone(), None);
    while let Some(batch) = replay.next_read()? {
        each(batch);
    }
    Ok(())
}

/// The run history: the dashboard's index and what it has not read yet.
pub struct History {
    disk: Option<Index>,
    /// The runs the disk index is behind on (or every run, without one).
    fresh: Index,
    stale: HashSet<RunId>,
    state_dir: PathBuf,
    events_dir: PathBuf,
    source: Source,
}

impl History {
    /// Opens the history of `config`'s pipeline. See the module doc.
    pub fn open(config: &Config) -> Result<History, HistoryError> {
        let events_dir = config.server.events_dir.clone();
        let db = crate::index::path(&config.server.state_dir);
        let files = run_files(&events_dir)?;
        let disk = if db.is_file() {
            match Index::open(&db) {
                Ok(idx) => Some(idx),
                Err(e) => {
                    tracing::warn!("{e}; reading the run files instead");
                    None
                }
            }
        } else {
            None
        };
        let read_up_to: HashMap<RunId, u64> = match &disk {
            Some(idx) => idx
                .checkpoints()?
                .into_iter()
                .map(|c| (c.run_id, c.offset))
                .collect(),
            None => HashMap::new(),
        };
        let mut fresh = Index::open_in_memory()?;
        let mut stale = HashSet::new();
        for (RunFile { id, path }, meta) in &files {
            if read_up_to.get(id).is_some_and(|&o| o >= meta.len()) {
                continue;
            }
            let mut failed = None;
            let read = read_batches(path, id, |batch| {
                if failed.is_none()
                    && let Err(e) = fresh.apply(&batch)
                {
                    failed = Some(e);
                }
            });
            match read {
                Ok(()) => {}
                // Deleted meanwhile: the index (if it has it) answers.
                Err(TailError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            if let Some(e) = failed {
                return Err(e.into());
            }
            stale.insert(id.clone());
        }
        let source = match &disk {
            Some(_) => Source::Index {
                path: db,
                caught_up: stale.len(),
            },
            None => Source::Files { files: files.len() },
        };
        Ok(History {
            disk,
            fresh,
            stale,
            state_dir: config.server.state_dir.clone(),
            events_dir,
            source,
        })
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Runs newest first, at most `limit`, only those with `status` and of `pipeline` if
    /// given.
    pub fn list(
        &self,
        limit: usize,
        status: Option<&str>,
        pipeline: Option<&str>,
    ) -> Result<Vec<RunSummary>, HistoryError> {
        self.list_on(limit, status, pipeline, None)
    }

    /// [`History::list`], and only the runs that ran on `host` if given.
    pub fn list_on(
        &self,
        limit: usize,
        status: Option<&str>,
        pipeline: Option<&str>,
        host: Option<&str>,
    ) -> Result<Vec<RunSummary>, HistoryError> {
        if let Some(s) = status
            && !crate::index::RUN_STATUSES.contains(&s)
        {
            return Err(HistoryError::UnknownStatus(s.to_string()));
        }
        // `running` and `abandoned` can change here (a dead runner), so both are asked for.
        let asked: Vec<Option<&str>> = match status {
            Some("running" | "abandoned") => vec![Some("running"), Some("abandoned")],
            other => vec![other],
        };
        let want = limit.saturating_add(self.stale.len());
        let mut runs = Vec::new();
        for s in &asked {
            let filter = RunFilter {
                status: s.map(str::to_string),
                pipeline: pipeline.map(str::to_string),
                host: host.map(str::to_string),
            };
            if let Some(disk) = &self.disk {
                runs.extend(
                    disk.list_runs(want, None, &filter)?
                        .into_iter()
                        .filter(|r| !self.stale.contains(&r.run_id)),
                );
            }
            runs.extend(self.fresh.list_runs(usize::MAX, None, &filter)?);
        }
        for r in &mut runs {
            self.adjust(r);
        }
        runs.retain(|r| status.is_none_or(|s| r.status == s));
        runs.sort_by_key(|r| std::cmp::Reverse(order_key(r)));
        runs.dedup_by(|a, b| a.run_id == b.run_id);
        runs.truncate(limit);
        Ok(runs)
    }

    /// One run with its stages.
    pub fn get(&self, id: &RunId) -> Result<RunDetail, HistoryError> {
        let found = if self.stale.contains(id) {
            self.fresh.get_run(id)?
        } else {
            match &self.disk {
                Some(disk) => disk.get_run(id)?,
                None => None,
            }
        };
        let mut detail = found.ok_or_else(|| HistoryError::UnknownRun {
            id: id.clone(),
            events_dir: self.events_dir.clone(),
        })?;
        self.adjust(&mut detail.run);
        if detail.run.status == "abandoned" {
            for s in &mut detail.stages {
                if s.status == "running" {
                    s.status = "abandoned".to_string();
                }
            }
        }
        Ok(detail)
    }

    /// The run's plain-text log ([`crate::event::Event::write_log_line`]), a bounded batch of
    /// its file at a time: `each` gets each batch's text, and its first error ends the read.
    pub fn write_log<E>(
        &self,
        id: &RunId,
        mut each: impl FnMut(&str) -> Result<(), E>,
    ) -> Result<Result<(), E>, HistoryError> {
        let mut replay = Replay::new(files::path(&self.events_dir, id), id.clone(), None);
        let mut text = String::new();
        loop {
            let batch = match replay.next_batch() {
                Ok(Some(b)) => b,
                Ok(None) => return Ok(Ok(())),
                Err(TailError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    return Err(HistoryError::UnknownRun {
                        id: id.clone(),
                        events_dir: self.events_dir.clone(),
                    });
                }
                Err(e) => return Err(e.into()),
            };
            text.clear();
            for p in &batch {
                p.event.write_log_line(&mut text);
            }
            if let Err(e) = each(&text) {
                return Ok(Err(e));
            }
        }
    }

    /// The last `n` stderr lines of the last attempt of each of `stages` in the run's file
    /// (none when the file is gone): see [`stderr_tails`].
    pub fn stderr_tails(
        &self,
        id: &RunId,
        stages: &[&str],
        n: usize,
    ) -> Result<HashMap<String, StderrTail>, HistoryError> {
        stderr_tails(&self.events_dir, id, stages, n)
    }

    /// A `running` run whose runner died is `abandoned`, as the dashboard would say.
    fn adjust(&self, run: &mut RunSummary) {
        if run.status == "running"
            && liveness::has_lock_file(&self.state_dir, &run.run_id)
            && liveness::liveness(&self.state_dir, &run.run_id) == Liveness::Gone
        {
            run.status = "abandoned".to_string();
        }
    }
}

/// The last `n` stderr lines of the last attempt of each of `stages` in the run's file
/// of `events_dir` (none when the file is gone): a stage's `start` begins a new attempt's
/// output. Used by `pipewatch runs` and by the alerts' `stderr_tail`.
pub fn stderr_tails(
    events_dir: &Path,
    id: &RunId,
    stages: &[&str],
    n: usize,
) -> Result<HashMap<String, StderrTail>, HistoryError> {
    // Per stage: starts seen, the current attempt, its last lines.
    let mut tails: HashMap<String, (u32, u32, VecDeque<String>)> = stages
        .iter()
        .map(|s| (s.to_string(), (0, 1, VecDeque::new())))
        .collect();
    let path = files::path(events_dir, id);
    let read = read_batches(&path, id, |batch| {
        for p in &batch.events {
            let e = &p.event;
            let Some((starts, attempt, lines)) = tails.get_mut(&e.stage) else {
                continue;
            };
            if e.event == crate::event::kind::START {
                *starts += 1;
                *attempt = e
                    .data_i64("attempt")
                    .and_then(|a| u32::try_from(a).ok())
                    .unwrap_or(*starts);
                lines.clear();
            } else if e.event == crate::event::kind::LOG && e.data_str("stream") == Some("stderr") {
                lines.push_back(e.msg.clone());
                if lines.len() > n {
                    lines.pop_front();
                }
            }
        }
    });
    match read {
        Ok(()) => {}
        Err(TailError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    Ok(tails
        .into_iter()
        .map(|(k, (_, attempt, lines))| {
            let lines = lines.into_iter().collect();
            (k, StderrTail { attempt, lines })
        })
        .collect())
}

/// The end of a stage's stderr, from its last attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StderrTail {
    /// The attempt the lines are from (from 1).
    pub attempt: u32,
    pub lines: Vec<String>,
}

/// Newest first by start, then run id (the index's order).
fn order_key(r: &RunSummary) -> (Option<DateTime<Utc>>, RunId) {
    (
        r.started_at
            .as_deref()
            .and_then(crate::event::parse_timestamp),
        r.run_id.clone(),
    )
}
