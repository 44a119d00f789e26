//! The run index: a SQLite summary of every run file, and the tailer's checkpoints.
//!
//! The JSONL files in `events_dir` are the source of truth. The index holds what is needed to
//! answer `/api/runs` and `/api/runs/{run_id}` quickly (contract §4) — one row per run, one
//! per stage — and where the tailer got to in each file.
//!
//! # Invariants
//!
//! - A [`Batch`]'s summaries and its [`Checkpoint`] are committed in one transaction
//!   ([`Index::apply`]), so after a crash the index never holds events past its checkpoint, nor
//!   a checkpoint past the events it summarizes: the tailer resumes exactly where the summaries
//!   end, and each event is counted once.
//! - Applying is idempotent per run: events at or below the run's last applied `seq` are
//!   ignored, and a batch that starts again at `seq` 0 (a file read again from its start)
//!   rebuilds that run's summary from scratch.
//! - Anything the index holds can be thrown away and rebuilt from the files ([`rebuild`]),
//!   read as the tailer reads them (same reader, same line cap):
//!   an index from another schema version, or one that is not a database, is moved aside by
//!   [`Index::open_or_reset`] and the caller rebuilds.
//! - Log lines only bump counters: per batch, the work is O(events) in Rust plus one row
//!   write per run and per stage that changed.
//!
//! # Who calls it
//!
//! `pipewatch serve` owns one [`Index`] on a dedicated ingest thread (a `Connection` is not
//! `Sync`; SQLite work stays off the async workers), which applies the tailer's batches and
//! answers the API's queries. `pipewatch reindex`, and `serve` when the index is missing, stale
//! or from another version, call [`rebuild`].
//!
//! # Ordering
//!
//! Runs are listed newest first by start time, ties broken by run id. Start times come from
//! files written by different tools (RFC 3339 with any offset, or naive), so each run stores a
//! `sort_key`: its start time normalized to UTC with milliseconds (`2026-11-29T08:15:00.123Z`),
//! which sorts as text. The index on `(sort_key, run_id)` makes a page a range scan. A run's
//! start is its first event's timestamp (a pipewatch run's first event is its run-level
//! `start`); a run whose only run-level event is `missed` starts at its `scheduled_for`, so
//! history shows each occurrence where it was due.

pub mod history;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, params};
use serde::Serialize;

use crate::event::{
    Event, PIPELINE_STAGE, Published, RunId, format_timestamp, kind, parse_timestamp,
};
use std::sync::Arc;

use crate::journal::files;
use crate::tail::{Batch, Checkpoint, Replay, TailError};

/// Bumped whenever the schema changes; an index with another version is rebuilt.
/// The index's file name inside `[server] state_dir`.
pub const FILE_NAME: &str = "index.db";

/// Where the index of a state folder lives.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

const SCHEMA_VERSION: i32 = 1;

const SCHEMA: &str = "
CREATE TABLE runs (
    run_id        TEXT PRIMARY KEY NOT NULL,
    pipeline      TEXT,
    -- NULL until the run's file has had an event: such a run is not listed.
    status        TEXT,
    source        TEXT,
    started_at    TEXT,
    finished_at   TEXT,
    duration_ms   INTEGER,
    scheduled_for TEXT,
    reason        TEXT,
    events        INTEGER NOT NULL DEFAULT 0,
    last_seq      INTEGER,
    -- started_at normalized to UTC with milliseconds: sorts as text.
    sort_key      TEXT NOT NULL DEFAULT '',
    -- The tailer's checkpoint for the run's file.
    dev           INTEGER NOT NULL DEFAULT 0,
    ino           INTEGER NOT NULL DEFAULT 0,
    offset        INTEGER NOT NULL DEFAULT 0,
    lines         INTEGER NOT NULL DEFAULT 0,
    finished      INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX runs_by_start ON runs (sort_key, run_id);
CREATE INDEX runs_by_status ON runs (status, sort_key, run_id);
CREATE TABLE stages (
    run_id      TEXT NOT NULL,
    name        TEXT NOT NULL,
    -- Order in which the stage was first seen in the run's file.
    position    INTEGER NOT NULL,
    status      TEXT NOT NULL,
    started_at  TEXT,
    finished_at TEXT,
    duration_ms INTEGER,
    attempts    INTEGER NOT NULL DEFAULT 0,
    exit_code   INTEGER,
    PRIMARY KEY (run_id, name)
) WITHOUT ROWID;
";

/// Every status a run can have (contract §4).
pub const RUN_STATUSES: [&str; 7] = [
    "running",
    "success",
    "failure",
    "cancelled",
    "skipped",
    "missed",
    "abandoned",
];

/// Run and stage statuses the index writes besides the event names themselves.
const RUNNING: &str = "running";
const ABANDONED: &str = "abandoned";

/// Events kept in memory at once while rebuilding from one file.
const REBUILD_CHUNK: usize = 4096;

/// A failure of the run index, naming the database and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot create the folder of the run index {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("run index {path}: {what}: {source}")]
    Sqlite {
        path: PathBuf,
        what: &'static str,
        source: rusqlite::Error,
    },
    #[error("run index {path} has schema version {found}, this pipewatch uses {expected}")]
    Version {
        path: PathBuf,
        found: i32,
        expected: i32,
    },
    #[error("run index {path}: {what}")]
    Schema { path: PathBuf, what: String },
    #[error("run index {path}: a stored row is invalid: {what}")]
    BadRow { path: PathBuf, what: String },
    #[error("cannot move the unusable run index {path} aside: {source}")]
    MoveAside { path: PathBuf, source: io::Error },
    #[error("cannot read the events folder {path}: {source}")]
    ReadDir { path: PathBuf, source: io::Error },
    /// A run file could not be read again into the index ([`Index::resync_run`]).
    #[error(transparent)]
    ReadRun(TailError),
}

impl IndexError {
    /// Whether the database itself is unusable (another version, not a database, corrupt,
    /// unreadable), so that starting afresh and rebuilding from the files is the remedy.
    pub fn needs_rebuild(&self) -> bool {
        match self {
            IndexError::Version { .. } | IndexError::Schema { .. } | IndexError::BadRow { .. } => {
                true
            }
            IndexError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(
                    ErrorCode::NotADatabase
                        | ErrorCode::DatabaseCorrupt
                        | ErrorCode::CannotOpen
                        | ErrorCode::PermissionDenied
                        | ErrorCode::ReadOnly
                )
            ),
            _ => false,
        }
    }
}

fn db<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(rusqlite::Error) -> IndexError + 'a {
    move |source| IndexError::Sqlite {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// How [`Index::open_or_reset`] found the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// An index of this version: resume from its checkpoints.
    Existing,
    /// There was none: rebuild from the files.
    Created,
    /// The old file was unusable and has been moved aside: rebuild from the files.
    Reset { why: String },
}

/// One run as `/api/runs` lists it (contract §4).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub run_id: RunId,
    pub pipeline: Option<String>,
    /// `running`, `success`, `failure`, `cancelled`, `skipped`, `missed` or `abandoned`.
    pub status: String,
    pub source: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    /// `data.reason` of the run's final event (`overlap`, `timeout`, `stage_failed`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a `missed` run: the occurrence that produced no run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<String>,
}

/// One stage of a run (contract §4).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageSummary {
    pub name: String,
    /// `running`, `success`, `failure`, `skipped`, `cancelled` or `abandoned`.
    pub status: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub attempts: u32,
    pub exit_code: Option<i32>,
}

/// One run with its stages, in the order they were first seen: `/api/runs/{run_id}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunSummary,
    pub stages: Vec<StageSummary>,
}

/// What [`rebuild`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildStats {
    /// Run files ingested.
    pub files: u64,
    /// Events ingested.
    pub events: u64,
    /// Complete lines skipped as not events.
    pub malformed: u64,
    /// Run files that could not be read (logged and skipped).
    pub unreadable: u64,
}

/// The run index. Owned by one thread; see the module docs.
pub struct Index {
    conn: Connection,
    /// For error messages; `:memory:` for an in-memory index.
    path: PathBuf,
}

impl Index {
    /// Opens (creating it and its folder if needed) the index at `path`. An index from another
    /// schema version is an [`IndexError::Version`]; see [`Index::open_or_reset`].
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        Index::open_inner(path).map(|(index, _)| index)
    }

    /// Opens the index at `path`, starting afresh if the file is unusable: another schema
    /// version, not a database, corrupt or unreadable. The old file is renamed to
    /// `<name>.broken` (replacing an older one) so it can still be looked at. On
    /// [`Opened::Created`] and [`Opened::Reset`] the caller rebuilds from the files.
    pub fn open_or_reset(path: &Path) -> Result<(Index, Opened), IndexError> {
        match Index::open_inner(path) {
            Ok((index, true)) => Ok((index, Opened::Created)),
            Ok((index, false)) => Ok((index, Opened::Existing)),
            // Only a file is moved aside: whatever else sits at `path` is left alone.
            Err(e) if e.needs_rebuild() && path.is_file() => {
                let why = e.to_string();
                tracing::warn!("{why}; starting a new run index");
                move_aside(path)?;
                let (index, _) = Index::open_inner(path)?;
                Ok((index, Opened::Reset { why }))
            }
            Err(e) => Err(e),
        }
    }

    /// An empty index in memory, for tests.
    pub fn open_in_memory() -> Result<Index, IndexError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(db(&path, "open"))?;
        Index::init(conn, path).map(|(index, _)| index)
    }

    fn open_inner(path: &Path) -> Result<(Index, bool), IndexError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| IndexError::CreateDir {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(db(path, "open"))?;
        Index::init(conn, path.to_path_buf())
    }

    /// Sets the connection up and makes sure the schema is ours; `true` if it was created.
    fn init(conn: Connection, path: PathBuf) -> Result<(Index, bool), IndexError> {
        let p = path.as_path();
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(db(p, "set the busy timeout"))?;
        // Reading the journal mode back is the first access to the file: a file that is not
        // a database fails here.
        let _mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(db(p, "switch to WAL mode"))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db(p, "set synchronous = NORMAL"))?;
        let version: i32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db(p, "read the schema version"))?;
        let created = if version == 0 {
            let objects: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
                .map_err(db(p, "read the schema"))?;
            if objects != 0 {
                return Err(IndexError::Version {
                    path,
                    found: 0,
                    expected: SCHEMA_VERSION,
                });
            }
            let batch = format!("BEGIN; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;");
            conn.execute_batch(&batch)
                .map_err(db(p, "create the schema"))?;
            true
        } else if version != SCHEMA_VERSION {
            return Err(IndexError::Version {
                path,
                found: version,
                expected: SCHEMA_VERSION,
            });
        } else {
            // Same version: the tables must be there with their columns.
            conn.prepare(
                "SELECT run_id, pipeline, status, source, started_at, finished_at, duration_ms,
                        scheduled_for, reason, events, last_seq, sort_key,
                        dev, ino, offset, lines, finished FROM runs LIMIT 0",
            )
            .and_then(|_| {
                conn.prepare(
                    "SELECT run_id, name, position, status, started_at, finished_at,
                            duration_ms, attempts, exit_code FROM stages LIMIT 0",
                )
            })
            .map_err(|source| IndexError::Schema {
                path: path.clone(),
                what: format!("the tables are not the expected ones: {source}"),
            })?;
            false
        };
        Ok((Index { conn, path }, created))
    }

    /// The database file (`:memory:` for an in-memory index).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies one batch of the tailer (its events in `seq` order, as read from one file): the
    /// run's summary and stages, then its checkpoint, in one transaction.
    pub fn apply(&mut self, batch: &Batch) -> Result<(), IndexError> {
        let path = &self.path;
        let tx = self
            .conn
            .transaction()
            .map_err(db(path, "begin a transaction"))?;
        ingest(
            &tx,
            path,
            batch.events.iter().map(|p| &**p),
            Some(&batch.checkpoint),
        )?;
        tx.commit().map_err(db(path, "commit a batch"))
    }

    /// Applies several batches (in order) in one transaction: under a high write rate the
    /// commit, not the batch, is what costs.
    pub fn apply_all(&mut self, batches: &[Arc<Batch>]) -> Result<(), IndexError> {
        let path = &self.path;
        let tx = self
            .conn
            .transaction()
            .map_err(db(path, "begin a transaction"))?;
        for batch in batches {
            ingest(
                &tx,
                path,
                batch.events.iter().map(|p| &**p),
                Some(&batch.checkpoint),
            )?;
        }
        tx.commit().map_err(db(path, "commit batches"))
    }

    /// Re-reads one run from its file into the index, up to `until` (the point the tailer has
    /// handed on), and stores `until` as its checkpoint. For a run whose batches could not be
    /// committed: its summary catches up without anything being published again.
    pub fn resync_run(&mut self, file: &Path, until: &Checkpoint) -> Result<(), IndexError> {
        let path = &self.path;
        let what = "resync a run";
        let id = until.run_id.as_str();
        let tx = self.conn.transaction().map_err(db(path, what))?;
        tx.execute("DELETE FROM stages WHERE run_id = ?1", [id])
            .map_err(db(path, what))?;
        tx.execute("DELETE FROM runs WHERE run_id = ?1", [id])
            .map_err(db(path, what))?;
        let mut stats = RebuildStats::default();
        match ingest_file(&tx, path, &until.run_id, file, Some(until), &mut stats) {
            Ok(()) => {}
            Err(FileError::Index(e)) => return Err(e),
            Err(FileError::Read(e)) => return Err(IndexError::ReadRun(e)),
        }
        tx.commit().map_err(db(path, what))
    }

    /// Every file's checkpoint, for the tailer's start.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, IndexError> {
        let p = self.path.as_path();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT run_id, dev, ino, offset, lines, finished FROM runs")
            .map_err(db(p, "read checkpoints"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, bool>(5)?,
                ))
            })
            .map_err(db(p, "read checkpoints"))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, dev, ino, offset, lines, finished) = row.map_err(db(p, "read checkpoints"))?;
            out.push(Checkpoint {
                run_id: parse_id(p, &id)?,
                // Stored as the same 64 bits: identities may use the top bit.
                dev: dev as u64,
                ino: ino as u64,
                offset: to_u64(offset),
                lines: to_u64(lines),
                finished,
            });
        }
        Ok(out)
    }

    /// The number of listed runs per status, for metrics.
    pub fn status_counts(&self) -> Result<Vec<(String, u64)>, IndexError> {
        let p = self.path.as_path();
        self.conn
            .prepare_cached(
                "SELECT status, COUNT(*) FROM runs WHERE status IS NOT NULL GROUP BY status",
            )
            .and_then(|mut s| {
                s.query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, to_u64(r.get::<_, i64>(1)?)))
                })?
                .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db(p, "count runs by status"))
    }

    /// Runs started by a scheduler (`source` `scheduler` or `catchup`) whose start lies in
    /// `[from, to]` (RFC 3339); with `include_missed`, recorded `missed` ones count too (the
    /// occurrence auditor), without, only runs that really started (the cadence).
    pub fn scheduled_runs_between(
        &self,
        from: &str,
        to: &str,
        include_missed: bool,
    ) -> Result<u64, IndexError> {
        let p = self.path.as_path();
        self.conn
            .prepare_cached(
                "SELECT COUNT(*) FROM runs WHERE sort_key >= ?1 AND sort_key <= ?2
                 AND source IN ('scheduler', 'catchup') AND (?3 OR status IS NOT 'missed')",
            )
            .and_then(|mut s| {
                s.query_row(params![sort_key(from), sort_key(to), include_missed], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .map(to_u64)
            .map_err(db(p, "count scheduled runs"))
    }

    /// How far into a run's file the index has read (the checkpoint's byte offset).
    pub fn offset_of(&self, id: &RunId) -> Result<Option<u64>, IndexError> {
        let p = self.path.as_path();
        self.conn
            .prepare_cached("SELECT offset FROM runs WHERE run_id = ?")
            .and_then(|mut s| {
                s.query_row([id.as_str()], |r| r.get::<_, i64>(0))
                    .optional()
            })
            .map(|o| o.map(to_u64))
            .map_err(db(p, "read a run's offset"))
    }

    /// Runs newest first: by start time, then run id, both descending. `before` pages back:
    /// only runs strictly older than that run (none if it is not in the index); `status`
    /// keeps only runs with that status.
    pub fn list_runs(
        &self,
        limit: usize,
        before: Option<&RunId>,
        status: Option<&str>,
    ) -> Result<Vec<RunSummary>, IndexError> {
        const COLS: &str = "SELECT run_id, pipeline, status, source, started_at, finished_at,
            duration_ms, reason, scheduled_for FROM runs";
        const ORDER: &str = "ORDER BY sort_key DESC, run_id DESC LIMIT ?";
        let p = self.path.as_path();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let cursor = match before {
            None => None,
            Some(id) => {
                let key: Option<String> = self
                    .conn
                    .prepare_cached("SELECT sort_key FROM runs WHERE run_id = ?")
                    .and_then(|mut s| s.query_row([id.as_str()], |r| r.get(0)).optional())
                    .map_err(db(p, "look up the page cursor"))?;
                match key {
                    Some(key) => Some((key, id.as_str())),
                    None => return Ok(Vec::new()),
                }
            }
        };
        let what = "list runs";
        let rows = match (status, &cursor) {
            (None, None) => {
                let sql = format!("{COLS} WHERE status IS NOT NULL {ORDER}");
                let mut stmt = self.conn.prepare_cached(&sql).map_err(db(p, what))?;
                stmt.query_map(params![limit], summary_row)
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            }
            (Some(s), None) => {
                let sql = format!("{COLS} WHERE status = ? {ORDER}");
                let mut stmt = self.conn.prepare_cached(&sql).map_err(db(p, what))?;
                stmt.query_map(params![s, limit], summary_row)
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            }
            (None, Some((key, id))) => {
                let sql = format!(
                    "{COLS} WHERE status IS NOT NULL AND (sort_key, run_id) < (?, ?) {ORDER}"
                );
                let mut stmt = self.conn.prepare_cached(&sql).map_err(db(p, what))?;
                stmt.query_map(params![key, id, limit], summary_row)
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            }
            (Some(s), Some((key, id))) => {
                let sql =
                    format!("{COLS} WHERE status = ? AND (sort_key, run_id) < (?, ?) {ORDER}");
                let mut stmt = self.conn.prepare_cached(&sql).map_err(db(p, what))?;
                stmt.query_map(params![s, key, id, limit], summary_row)
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            }
        }
        .map_err(db(p, what))?;
        rows.into_iter().map(|r| r.into_summary(p)).collect()
    }

    /// One run with its stages; `None` if the index has no event of it.
    pub fn get_run(&self, id: &RunId) -> Result<Option<RunDetail>, IndexError> {
        let p = self.path.as_path();
        let row = self
            .conn
            .prepare_cached(
                "SELECT run_id, pipeline, status, source, started_at, finished_at, duration_ms,
                        reason, scheduled_for
                 FROM runs WHERE run_id = ? AND status IS NOT NULL",
            )
            .and_then(|mut s| s.query_row([id.as_str()], summary_row).optional())
            .map_err(db(p, "read a run"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let run = row.into_summary(p)?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT name, status, started_at, finished_at, duration_ms, attempts, exit_code
                 FROM stages WHERE run_id = ? ORDER BY position",
            )
            .map_err(db(p, "read a run's stages"))?;
        let stages = stmt
            .query_map([id.as_str()], |r| {
                Ok(StageSummary {
                    name: r.get(0)?,
                    status: r.get(1)?,
                    started_at: r.get(2)?,
                    finished_at: r.get(3)?,
                    duration_ms: r
                        .get::<_, Option<i64>>(4)?
                        .and_then(|d| u64::try_from(d).ok()),
                    attempts: u32::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
                    exit_code: r
                        .get::<_, Option<i64>>(6)?
                        .and_then(|c| i32::try_from(c).ok()),
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(db(p, "read a run's stages"))?;
        Ok(Some(RunDetail { run, stages }))
    }

    /// Records a run announced by its runner before its file has been read, so that it shows
    /// as `running` at once. Does nothing if the run is already known; the run's first event
    /// later sets its real start time.
    pub fn note_announced(
        &mut self,
        id: &RunId,
        source: &str,
        at: &str,
    ) -> Result<bool, IndexError> {
        let p = self.path.as_path();
        let n = self
            .conn
            .prepare_cached(
                "INSERT INTO runs (run_id, status, source, started_at, sort_key)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (run_id) DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![id.as_str(), RUNNING, source, at, sort_key(at)]))
            .map_err(db(p, "record an announced run"))?;
        Ok(n > 0)
    }

    /// The runs whose status is `running`, for the liveness check.
    pub fn running_runs(&self) -> Result<Vec<RunId>, IndexError> {
        let p = self.path.as_path();
        let ids = self
            .conn
            .prepare_cached("SELECT run_id FROM runs WHERE status = ?")
            .and_then(|mut s| {
                s.query_map([RUNNING], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db(p, "list running runs"))?;
        ids.iter().map(|id| parse_id(p, id)).collect()
    }

    /// Marks a run whose runner died without a final event as `abandoned` at `at`, with its
    /// running stages. Only a run still `running` is changed; returns whether it was. A final
    /// event read later (the runner was alive after all) replaces `abandoned`.
    pub fn mark_abandoned(&mut self, id: &RunId, at: &str) -> Result<bool, IndexError> {
        let p = self.path.as_path();
        let what = "mark a run abandoned";
        let tx = self.conn.transaction().map_err(db(p, what))?;
        let started: Option<Option<String>> = tx
            .prepare_cached("SELECT started_at FROM runs WHERE run_id = ? AND status = ?")
            .and_then(|mut s| s.query_row([id.as_str(), RUNNING], |r| r.get(0)).optional())
            .map_err(db(p, what))?;
        let Some(started) = started else {
            return Ok(false);
        };
        let duration = started.as_deref().and_then(|s| elapsed_ms(s, at));
        tx.prepare_cached(
            "UPDATE runs SET status = ?4, finished_at = ?2, duration_ms = ?3 WHERE run_id = ?1",
        )
        .and_then(|mut s| s.execute(params![id.as_str(), at, duration, ABANDONED]))
        .map_err(db(p, what))?;
        tx.prepare_cached(
            "UPDATE stages SET status = ?3, finished_at = ?2 WHERE run_id = ?1 AND status = ?4",
        )
        .and_then(|mut s| s.execute(params![id.as_str(), at, ABANDONED, RUNNING]))
        .map_err(db(p, what))?;
        tx.commit().map_err(db(p, what))?;
        Ok(true)
    }

    /// Forgets runs (their summaries, stages and checkpoints), for retention.
    pub fn remove_runs(&mut self, ids: &[RunId]) -> Result<(), IndexError> {
        let p = self.path.as_path();
        let what = "remove runs";
        let tx = self.conn.transaction().map_err(db(p, what))?;
        {
            let mut runs = tx
                .prepare_cached("DELETE FROM runs WHERE run_id = ?")
                .map_err(db(p, what))?;
            let mut stages = tx
                .prepare_cached("DELETE FROM stages WHERE run_id = ?")
                .map_err(db(p, what))?;
            for id in ids {
                runs.execute([id.as_str()]).map_err(db(p, what))?;
                stages.execute([id.as_str()]).map_err(db(p, what))?;
            }
        }
        tx.commit().map_err(db(p, what))
    }

    /// How many runs [`Index::list_runs`] can show (runs with at least one event).
    pub fn count_runs(&self) -> Result<u64, IndexError> {
        self.conn
            .prepare_cached("SELECT count(*) FROM runs WHERE status IS NOT NULL")
            .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
            .map(to_u64)
            .map_err(db(&self.path, "count runs"))
    }
}

/// Renames an unusable database to `<name>.broken` and removes its WAL and shared-memory files.
fn move_aside(path: &Path) -> Result<(), IndexError> {
    let with_suffix = |suffix: &str| {
        let mut s = path.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    let err = |source| IndexError::MoveAside {
        path: path.to_path_buf(),
        source,
    };
    std::fs::rename(path, with_suffix(".broken")).map_err(err)?;
    for suffix in ["-wal", "-shm"] {
        match std::fs::remove_file(with_suffix(suffix)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(err(e)),
            _ => {}
        }
    }
    Ok(())
}

/// Clears the index and ingests every run file of `events_dir` (listed by
/// [`crate::journal::files::list`]) through the tailer's reader, as the tailer would from
/// scratch: complete lines only, `seq` = line index, malformed and over-long lines skipped and
/// counted, a checkpoint at the end of the last complete line. One transaction: until it
/// commits, the index answers from its old content.
pub fn rebuild(index: &mut Index, events_dir: &Path) -> Result<RebuildStats, IndexError> {
    let run_files = files::list(events_dir).map_err(|source| IndexError::ReadDir {
        path: events_dir.to_path_buf(),
        source,
    })?;

    let path = &index.path;
    let what = "rebuild";
    let tx = index.conn.transaction().map_err(db(path, what))?;
    tx.execute_batch("DELETE FROM stages; DELETE FROM runs;")
        .map_err(db(path, what))?;
    let mut stats = RebuildStats::default();
    for file in run_files {
        match ingest_file(&tx, path, &file.id, &file.path, None, &mut stats) {
            Ok(()) => stats.files += 1,
            Err(FileError::Read(e)) => {
                tracing::warn!("reindex: {e}; skipped");
                stats.unreadable += 1;
            }
            Err(FileError::Index(e)) => return Err(e),
        }
    }
    tx.commit().map_err(db(path, what))?;
    Ok(stats)
}

enum FileError {
    Read(TailError),
    Index(IndexError),
}

impl From<IndexError> for FileError {
    fn from(e: IndexError) -> Self {
        FileError::Index(e)
    }
}

/// Reads one run file to its last complete line through the tailer's reader and ingests it,
/// [`REBUILD_CHUNK`] events at a time. With `until`, only that checkpoint's lines are ingested
/// and that checkpoint is stored.
fn ingest_file(
    tx: &Transaction,
    path: &Path,
    run_id: &RunId,
    file: &Path,
    until: Option<&Checkpoint>,
    stats: &mut RebuildStats,
) -> Result<(), FileError> {
    let below = |seq: u64| until.is_none_or(|u| seq < u.lines);
    let mut replay = Replay::new(file.to_path_buf(), run_id.clone(), None);
    let mut chunk: Vec<Arc<Published>> = Vec::new();
    let mut reached = None;
    while let Some(batch) = replay.next_read().map_err(FileError::Read)? {
        stats.malformed += batch.malformed;
        for event in batch.events.into_iter().filter(|e| below(e.seq)) {
            stats.events += 1;
            chunk.push(event);
        }
        if chunk.len() >= REBUILD_CHUNK {
            ingest(tx, path, chunk.iter().map(|p| &**p), None)?;
            chunk.clear();
        }
        let done = !below(batch.checkpoint.lines);
        reached = Some(batch.checkpoint);
        if done {
            break;
        }
    }
    let checkpoint = until.or(reached.as_ref());
    ingest(tx, path, chunk.iter().map(|p| &**p), checkpoint)?;
    Ok(())
}

/// Applies events (in `seq` order per run) and a checkpoint inside an open transaction.
fn ingest<'a>(
    tx: &Transaction,
    path: &Path,
    events: impl Iterator<Item = &'a Published>,
    checkpoint: Option<&Checkpoint>,
) -> Result<(), IndexError> {
    // A batch is one file, so this holds one run; more are handled all the same.
    let mut runs: Vec<RunAgg> = Vec::with_capacity(1);
    let mut current = 0;
    for p in events {
        if runs.get(current).is_none_or(|r| r.row.run_id != p.run_id) {
            current = agg_index(tx, path, &mut runs, &p.run_id)?;
        }
        runs[current].apply(tx, path, p)?;
    }
    if let Some(cp) = checkpoint {
        let i = agg_index(tx, path, &mut runs, &cp.run_id)?;
        let row = &mut runs[i].row;
        row.dev = cp.dev as i64;
        row.ino = cp.ino as i64;
        row.offset = to_i64(cp.offset);
        row.lines = to_i64(cp.lines);
        row.finished = cp.finished;
    }
    for run in &runs {
        run.write(tx, path)?;
    }
    Ok(())
}

fn agg_index(
    tx: &Transaction,
    path: &Path,
    runs: &mut Vec<RunAgg>,
    id: &RunId,
) -> Result<usize, IndexError> {
    if let Some(i) = runs.iter().position(|r| &r.row.run_id == id) {
        return Ok(i);
    }
    runs.push(RunAgg {
        row: RunRow::load(tx, path, id)?,
        stages: None,
    });
    Ok(runs.len() - 1)
}

/// A run's row, as loaded, changed in memory by a batch, then written back once.
#[derive(Debug)]
struct RunRow {
    run_id: RunId,
    pipeline: Option<String>,
    status: Option<String>,
    source: Option<String>,
    started_at: Option<String>,
    finished_at: Option<String>,
    duration_ms: Option<i64>,
    scheduled_for: Option<String>,
    reason: Option<String>,
    events: i64,
    last_seq: Option<i64>,
    sort_key: String,
    dev: i64,
    ino: i64,
    offset: i64,
    lines: i64,
    finished: bool,
}

impl RunRow {
    fn new(run_id: RunId) -> RunRow {
        RunRow {
            run_id,
            pipeline: None,
            status: None,
            source: None,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            scheduled_for: None,
            reason: None,
            events: 0,
            last_seq: None,
            sort_key: String::new(),
            dev: 0,
            ino: 0,
            offset: 0,
            lines: 0,
            finished: false,
        }
    }

    fn load(tx: &Transaction, path: &Path, id: &RunId) -> Result<RunRow, IndexError> {
        let row = tx
            .prepare_cached(
                "SELECT pipeline, status, source, started_at, finished_at, duration_ms,
                        scheduled_for, reason, events, last_seq, sort_key,
                        dev, ino, offset, lines, finished
                 FROM runs WHERE run_id = ?",
            )
            .and_then(|mut s| {
                s.query_row([id.as_str()], |r| {
                    Ok(RunRow {
                        run_id: id.clone(),
                        pipeline: r.get(0)?,
                        status: r.get(1)?,
                        source: r.get(2)?,
                        started_at: r.get(3)?,
                        finished_at: r.get(4)?,
                        duration_ms: r.get(5)?,
                        scheduled_for: r.get(6)?,
                        reason: r.get(7)?,
                        events: r.get(8)?,
                        last_seq: r.get(9)?,
                        sort_key: r.get(10)?,
                        dev: r.get(11)?,
                        ino: r.get(12)?,
                        offset: r.get(13)?,
                        lines: r.get(14)?,
                        finished: r.get(15)?,
                    })
                })
                .optional()
            })
            .map_err(db(path, "read a run's summary"))?;
        Ok(row.unwrap_or_else(|| RunRow::new(id.clone())))
    }
}

/// A stage's row, with whether this batch changed it.
#[derive(Debug)]
struct StageRow {
    name: String,
    position: i64,
    status: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    duration_ms: Option<i64>,
    attempts: i64,
    exit_code: Option<i64>,
    dirty: bool,
}

#[derive(Debug, Default)]
struct Stages {
    rows: Vec<StageRow>,
    by_name: HashMap<String, usize>,
}

/// One run's state while a batch is applied. Stages are loaded on the first stage event.
struct RunAgg {
    row: RunRow,
    stages: Option<Stages>,
}

impl RunAgg {
    fn apply(&mut self, tx: &Transaction, path: &Path, p: &Published) -> Result<(), IndexError> {
        let seq = to_i64(p.seq);
        if seq == 0 && self.row.events > 0 {
            // The file is being read again from its start: summarize it afresh.
            tx.prepare_cached("DELETE FROM stages WHERE run_id = ?")
                .and_then(|mut s| s.execute([self.row.run_id.as_str()]))
                .map_err(db(path, "reset a run's stages"))?;
            let id = self.row.run_id.clone();
            let row = std::mem::replace(&mut self.row, RunRow::new(id));
            // The checkpoint belongs to the file, not to the summary.
            (self.row.dev, self.row.ino, self.row.offset, self.row.lines) =
                (row.dev, row.ino, row.offset, row.lines);
            self.stages = Some(Stages::default());
        } else if self.row.last_seq.is_some_and(|last| seq <= last) {
            // Already applied.
            return Ok(());
        }
        let e = &p.event;
        let row = &mut self.row;
        row.events += 1;
        row.last_seq = Some(seq);
        if row.started_at.is_none() {
            row.sort_key = sort_key(&e.timestamp);
            row.started_at = Some(e.timestamp.clone());
        }
        if row.status.is_none() {
            row.status = Some(RUNNING.to_string());
        }
        if row.pipeline.is_none() {
            row.pipeline.clone_from(&e.pipeline);
        }
        if row.source.is_none() {
            row.source.clone_from(&e.source);
        }
        if e.stage == PIPELINE_STAGE {
            row.apply_run_event(e);
            return Ok(());
        }
        if self.stages.is_none() {
            self.stages = Some(load_stages(tx, path, &self.row.run_id)?);
        }
        if let Some(stages) = self.stages.as_mut() {
            stages.apply(e);
        }
        Ok(())
    }

    fn write(&self, tx: &Transaction, path: &Path) -> Result<(), IndexError> {
        let r = &self.row;
        tx.prepare_cached(
            "INSERT INTO runs (run_id, pipeline, status, source, started_at, finished_at,
                 duration_ms, scheduled_for, reason, events, last_seq, sort_key,
                 dev, ino, offset, lines, finished)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
             ON CONFLICT (run_id) DO UPDATE SET
                 pipeline = excluded.pipeline, status = excluded.status,
                 source = excluded.source, started_at = excluded.started_at,
                 finished_at = excluded.finished_at, duration_ms = excluded.duration_ms,
                 scheduled_for = excluded.scheduled_for, reason = excluded.reason,
                 events = excluded.events, last_seq = excluded.last_seq,
                 sort_key = excluded.sort_key, dev = excluded.dev, ino = excluded.ino,
                 offset = excluded.offset, lines = excluded.lines, finished = excluded.finished",
        )
        .and_then(|mut s| {
            s.execute(params![
                r.run_id.as_str(),
                r.pipeline,
                r.status,
                r.source,
                r.started_at,
                r.finished_at,
                r.duration_ms,
                r.scheduled_for,
                r.reason,
                r.events,
                r.last_seq,
                r.sort_key,
                r.dev,
                r.ino,
                r.offset,
                r.lines,
                r.finished,
            ])
        })
        .map_err(db(path, "write a run's summary"))?;
        let Some(stages) = &self.stages else {
            return Ok(());
        };
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO stages (run_id, name, position, status, started_at, finished_at,
                     duration_ms, attempts, exit_code)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (run_id, name) DO UPDATE SET
                     position = excluded.position, status = excluded.status,
                     started_at = excluded.started_at, finished_at = excluded.finished_at,
                     duration_ms = excluded.duration_ms, attempts = excluded.attempts,
                     exit_code = excluded.exit_code",
            )
            .map_err(db(path, "write a stage"))?;
        for s in stages.rows.iter().filter(|s| s.dirty) {
            stmt.execute(params![
                r.run_id.as_str(),
                s.name,
                s.position,
                s.status,
                s.started_at,
                s.finished_at,
                s.duration_ms,
                s.attempts,
                s.exit_code,
            ])
            .map_err(db(path, "write a stage"))?;
        }
        Ok(())
    }
}

impl RunRow {
    /// A run-level (`stage: "pipeline"`) event.
    fn apply_run_event(&mut self, e: &Event) {
        match e.event.as_str() {
            // A start never undoes a final status (nor `abandoned`, which only a final event
            // replaces). As the file's first line it is the run's real start time, replacing
            // the time a notification announced the run.
            kind::START if e.seq == Some(0) => {
                self.sort_key = sort_key(&e.timestamp);
                self.started_at = Some(e.timestamp.clone());
            }
            kind::SUCCESS | kind::FAILURE | kind::CANCELLED | kind::SKIPPED => {
                self.status = Some(e.event.clone());
                self.finished_at = Some(e.timestamp.clone());
                self.reason = e.data_str("reason").map(str::to_string);
                self.duration_ms = e.data_i64("duration_ms").or_else(|| {
                    self.started_at
                        .as_deref()
                        .and_then(|s| elapsed_ms(s, &e.timestamp))
                });
            }
            kind::MISSED => {
                self.status = Some(kind::MISSED.to_string());
                self.finished_at = Some(e.timestamp.clone());
                self.reason = e.data_str("reason").map(str::to_string);
                self.duration_ms = e.data_i64("duration_ms");
                self.scheduled_for = e.data_str("scheduled_for").map(str::to_string);
                if self.events == 1
                    && let Some(due) = &self.scheduled_for
                {
                    // Nothing else happened in this run: it belongs where it was due.
                    self.sort_key = sort_key(due);
                    self.started_at = Some(due.clone());
                }
            }
            _ => {}
        }
    }
}

impl Stages {
    fn apply(&mut self, e: &Event) {
        let i = match self.by_name.get(e.stage.as_str()) {
            Some(&i) => i,
            None => {
                let i = self.rows.len();
                self.rows.push(StageRow {
                    name: e.stage.clone(),
                    position: to_i64(i as u64),
                    status: RUNNING.to_string(),
                    started_at: None,
                    finished_at: None,
                    duration_ms: None,
                    attempts: 0,
                    exit_code: None,
                    dirty: true,
                });
                self.by_name.insert(e.stage.clone(), i);
                i
            }
        };
        let s = &mut self.rows[i];
        match e.event.as_str() {
            kind::START => {
                s.status = RUNNING.to_string();
                s.attempts = s
                    .attempts
                    .max(e.data_i64("attempt").unwrap_or(s.attempts + 1));
                if s.started_at.is_none() {
                    s.started_at = Some(e.timestamp.clone());
                }
                s.finished_at = None;
                s.duration_ms = None;
                s.exit_code = None;
                s.dirty = true;
            }
            kind::SUCCESS | kind::FAILURE | kind::SKIPPED | kind::CANCELLED => {
                s.status = e.event.clone();
                s.finished_at = Some(e.timestamp.clone());
                s.duration_ms = e.data_i64("duration_ms").or_else(|| {
                    s.started_at
                        .as_deref()
                        .and_then(|st| elapsed_ms(st, &e.timestamp))
                });
                s.exit_code = e.data_i64("exit_code");
                if let Some(a) = e.data_i64("attempt") {
                    s.attempts = s.attempts.max(a);
                }
                s.dirty = true;
            }
            // `log`, `retry` and names other tools use: the stage goes on as it was.
            _ => {}
        }
    }
}

fn load_stages(tx: &Transaction, path: &Path, id: &RunId) -> Result<Stages, IndexError> {
    let rows = tx
        .prepare_cached(
            "SELECT name, position, status, started_at, finished_at, duration_ms, attempts,
                    exit_code
             FROM stages WHERE run_id = ? ORDER BY position",
        )
        .and_then(|mut s| {
            s.query_map([id.as_str()], |r| {
                Ok(StageRow {
                    name: r.get(0)?,
                    position: r.get(1)?,
                    status: r.get(2)?,
                    started_at: r.get(3)?,
                    finished_at: r.get(4)?,
                    duration_ms: r.get(5)?,
                    attempts: r.get(6)?,
                    exit_code: r.get(7)?,
                    dirty: false,
                })
            })?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(db(path, "read a run's stages"))?;
    let by_name = rows
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), i))
        .collect();
    Ok(Stages { rows, by_name })
}

/// A `runs` row as the queries read it, before its run id is checked.
struct SummaryRow {
    run_id: String,
    pipeline: Option<String>,
    status: String,
    source: Option<String>,
    started_at: Option<String>,
    finished_at: Option<String>,
    duration_ms: Option<i64>,
    reason: Option<String>,
    scheduled_for: Option<String>,
}

fn summary_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SummaryRow> {
    Ok(SummaryRow {
        run_id: r.get(0)?,
        pipeline: r.get(1)?,
        status: r.get(2)?,
        source: r.get(3)?,
        started_at: r.get(4)?,
        finished_at: r.get(5)?,
        duration_ms: r.get(6)?,
        reason: r.get(7)?,
        scheduled_for: r.get(8)?,
    })
}

impl SummaryRow {
    fn into_summary(self, path: &Path) -> Result<RunSummary, IndexError> {
        Ok(RunSummary {
            run_id: parse_id(path, &self.run_id)?,
            pipeline: self.pipeline,
            status: self.status,
            source: self.source,
            started_at: self.started_at,
            finished_at: self.finished_at,
            duration_ms: self.duration_ms.and_then(|d| u64::try_from(d).ok()),
            reason: self.reason,
            scheduled_for: self.scheduled_for,
        })
    }
}

fn parse_id(path: &Path, id: &str) -> Result<RunId, IndexError> {
    RunId::parse(id).map_err(|e| IndexError::BadRow {
        path: path.to_path_buf(),
        what: e.to_string(),
    })
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The text a run sorts by: its start normalized to UTC, or as written if it does not parse.
fn sort_key(timestamp: &str) -> String {
    parse_timestamp(timestamp).map_or_else(|| timestamp.to_string(), format_timestamp)
}

/// Milliseconds from `start` to `end`, if both parse and `end` is not earlier.
fn elapsed_ms(start: &str, end: &str) -> Option<i64> {
    let ms = (parse_timestamp(end)? - parse_timestamp(start)?).num_milliseconds();
    (ms >= 0).then_some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn id(s: &str) -> RunId {
        RunId::parse(s).unwrap()
    }

    /// An event as pipewatch writes it.
    fn ev(stage: &str, event: &str, ts: &str, data: serde_json::Value) -> Event {
        let mut v = json!({
            "run_id": "ignored", "pipeline": "translation", "source": "scheduler",
            "stage": stage, "event": event, "timestamp": ts, "msg": "m",
        });
        if !data.is_null() {
            v["data"] = data;
        }
        serde_json::from_value(v).unwrap()
    }

    /// A batch of `events` for `run`, numbered from `first_seq`, with a matching checkpoint.
    fn batch(run: &str, first_seq: u64, events: Vec<Event>) -> Batch {
        let finished = events.iter().any(Event::is_run_terminal);
        let events: Vec<_> = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| Arc::new(Published::new(id(run), first_seq + i as u64, e)))
            .collect();
        let lines = first_seq + events.len() as u64;
        Batch {
            checkpoint: Checkpoint {
                run_id: id(run),
                dev: 1,
                ino: 2,
                offset: lines * 100,
                lines,
                finished,
            },
            events,
            malformed: 0,
        }
    }

    fn stage<'a>(d: &'a RunDetail, name: &str) -> &'a StageSummary {
        d.stages.iter().find(|s| s.name == name).unwrap()
    }

    fn runner_run() -> Vec<Event> {
        let t = |s: u32| format!("2026-11-29T08:15:{s:02}.000Z");
        vec![
            ev(
                "pipeline",
                "start",
                &t(0),
                json!({"stages": ["extract", "load"]}),
            ),
            ev("extract", "start", &t(1), json!({"attempt": 1})),
            ev("extract", "log", &t(2), json!({"stream": "stdout"})),
            ev(
                "extract",
                "retry",
                &t(3),
                json!({"attempt": 2, "exit_code": 1, "reason": "exit"}),
            ),
            ev("extract", "start", &t(13), json!({"attempt": 2})),
            ev("extract", "log", &t(14), json!({"stream": "stderr"})),
            ev(
                "extract",
                "success",
                &t(15),
                json!({"attempt": 2, "exit_code": 0, "duration_ms": 2000}),
            ),
            ev("load", "start", &t(16), json!({"attempt": 1})),
            ev("load", "log", &t(17), json!({"stream": "stdout"})),
            ev(
                "load",
                "success",
                &t(19),
                json!({"attempt": 1, "exit_code": 0, "duration_ms": 3000}),
            ),
            ev("pipeline", "success", &t(20), json!({"duration_ms": 20000})),
        ]
    }

    #[test]
    fn runner_style_run_goes_from_running_to_success() {
        let mut ix = Index::open_in_memory().unwrap();
        let mut events = runner_run();
        let rest = events.split_off(5);
        ix.apply(&batch("r1", 0, events)).unwrap();

        let d = ix.get_run(&id("r1")).unwrap().unwrap();
        assert_eq!(d.run.status, "running");
        assert_eq!(d.run.pipeline.as_deref(), Some("translation"));
        assert_eq!(d.run.source.as_deref(), Some("scheduler"));
        assert_eq!(
            d.run.started_at.as_deref(),
            Some("2026-11-29T08:15:00.000Z")
        );
        assert_eq!(d.run.finished_at, None);
        let ex = stage(&d, "extract");
        assert_eq!((ex.status.as_str(), ex.attempts), ("running", 2));
        assert_eq!(ix.running_runs().unwrap(), vec![id("r1")]);

        ix.apply(&batch("r1", 5, rest)).unwrap();
        let d = ix.get_run(&id("r1")).unwrap().unwrap();
        assert_eq!(d.run.status, "success");
        assert_eq!(
            d.run.finished_at.as_deref(),
            Some("2026-11-29T08:15:20.000Z")
        );
        assert_eq!(d.run.duration_ms, Some(20000));
        assert_eq!(d.run.reason, None);
        let names: Vec<_> = d.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["extract", "load"]);
        let ex = stage(&d, "extract");
        assert_eq!(ex.status, "success");
        assert_eq!(ex.attempts, 2);
        assert_eq!(ex.exit_code, Some(0));
        assert_eq!(ex.duration_ms, Some(2000));
        assert_eq!(ex.started_at.as_deref(), Some("2026-11-29T08:15:01.000Z"));
        assert_eq!(ex.finished_at.as_deref(), Some("2026-11-29T08:15:15.000Z"));
        let load = stage(&d, "load");
        assert_eq!((load.status.as_str(), load.attempts), ("success", 1));
        assert!(ix.running_runs().unwrap().is_empty());
        assert_eq!(ix.count_runs().unwrap(), 1);

        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["run_id"], "r1");
        assert_eq!(json["stages"][0]["name"], "extract");
        assert!(json.get("scheduled_for").is_none());
    }

    #[test]
    fn applying_a_batch_again_changes_nothing() {
        let mut ix = Index::open_in_memory().unwrap();
        let b = batch("r1", 0, runner_run());
        ix.apply(&b).unwrap();
        let once = ix.get_run(&id("r1")).unwrap();
        // Same lines again (the file read again from its start), then a later batch overlapping.
        ix.apply(&b).unwrap();
        let mut tail = runner_run().split_off(8);
        tail.insert(
            0,
            ev("load", "log", "2026-11-29T08:15:17.000Z", json!(null)),
        );
        ix.apply(&batch("r1", 7, tail)).unwrap();
        assert_eq!(ix.get_run(&id("r1")).unwrap(), once);
        let events: i64 = ix
            .conn
            .query_row("SELECT events FROM runs WHERE run_id = 'r1'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(events, 11);
    }

    #[test]
    fn failure_skipped_and_cancelled_runs() {
        let mut ix = Index::open_in_memory().unwrap();
        let t0 = "2026-11-29T08:00:00.000Z";
        let t1 = "2026-11-29T08:00:05.500Z";
        ix.apply(&batch(
            "failed",
            0,
            vec![
                ev("pipeline", "start", t0, json!(null)),
                ev("a", "start", t0, json!({"attempt": 1})),
                ev(
                    "a",
                    "failure",
                    t1,
                    json!({"attempt": 1, "exit_code": 3, "reason": "exit"}),
                ),
                ev(
                    "b",
                    "skipped",
                    t1,
                    json!({"reason": "needs_failed", "needs": "a"}),
                ),
                ev("pipeline", "failure", t1, json!({"reason": "stage_failed"})),
            ],
        ))
        .unwrap();
        let d = ix.get_run(&id("failed")).unwrap().unwrap();
        assert_eq!(d.run.status, "failure");
        assert_eq!(d.run.reason.as_deref(), Some("stage_failed"));
        // No data.duration_ms: finished − started.
        assert_eq!(d.run.duration_ms, Some(5500));
        let a = stage(&d, "a");
        assert_eq!(
            (a.status.as_str(), a.exit_code, a.duration_ms),
            ("failure", Some(3), Some(5500))
        );
        let b = stage(&d, "b");
        assert_eq!(
            (b.status.as_str(), b.attempts, b.exit_code),
            ("skipped", 0, None)
        );

        ix.apply(&batch(
            "skipped",
            0,
            vec![
                ev("pipeline", "start", t0, json!(null)),
                ev("pipeline", "skipped", t0, json!({"reason": "overlap"})),
            ],
        ))
        .unwrap();
        let d = ix.get_run(&id("skipped")).unwrap().unwrap();
        assert_eq!(
            (d.run.status.as_str(), d.run.reason.as_deref()),
            ("skipped", Some("overlap"))
        );
        assert!(d.stages.is_empty());

        ix.apply(&batch(
            "cancelled",
            0,
            vec![
                ev("pipeline", "start", t0, json!(null)),
                ev("a", "start", t0, json!({"attempt": 1})),
                ev(
                    "a",
                    "cancelled",
                    t1,
                    json!({"reason": "user", "duration_ms": 5000}),
                ),
                ev("b", "cancelled", t1, json!({"reason": "user"})),
                ev(
                    "pipeline",
                    "cancelled",
                    t1,
                    json!({"reason": "user", "duration_ms": 5600}),
                ),
            ],
        ))
        .unwrap();
        let d = ix.get_run(&id("cancelled")).unwrap().unwrap();
        assert_eq!(
            (d.run.status.as_str(), d.run.duration_ms),
            ("cancelled", Some(5600))
        );
        assert!(d.stages.iter().all(|s| s.status == "cancelled"));
        assert_eq!(stage(&d, "b").started_at, None);
        assert!(ix.running_runs().unwrap().is_empty());
    }

    #[test]
    fn missed_run_sorts_at_its_scheduled_time() {
        let mut ix = Index::open_in_memory().unwrap();
        let ran = |ts: &str| vec![ev("pipeline", "start", ts, json!(null))];
        ix.apply(&batch("a", 0, ran("2026-11-29T08:00:00.000Z")))
            .unwrap();
        ix.apply(&batch("c", 0, ran("2026-11-29T09:00:00.000Z")))
            .unwrap();
        ix.apply(&batch(
            "b",
            0,
            vec![ev(
                "pipeline",
                "missed",
                "2026-11-29T10:00:00.000Z",
                json!({"scheduled_for": "2026-11-29T08:30:00Z"}),
            )],
        ))
        .unwrap();
        let runs = ix.list_runs(10, None, None).unwrap();
        let ids: Vec<_> = runs.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["c", "b", "a"]);
        assert_eq!(runs[1].status, "missed");
        assert_eq!(
            runs[1].scheduled_for.as_deref(),
            Some("2026-11-29T08:30:00Z")
        );
        assert_eq!(
            runs[1].finished_at.as_deref(),
            Some("2026-11-29T10:00:00.000Z")
        );
    }

    #[test]
    fn other_tools_files_without_seq_or_run_start() {
        let mut ix = Index::open_in_memory().unwrap();
        let lines = [
            r#"{"run_id":"x","stage":"extract","event":"start","timestamp":"2025-12-08T21:45:00","msg":"go"}"#,
            r#"{"run_id":"x","stage":"extract","event":"progress","timestamp":"2025-12-08T21:45:01","msg":"50%"}"#,
            r#"{"run_id":"x","stage":"extract","event":"success","timestamp":"2025-12-08T21:45:02.250","msg":"ok"}"#,
            r#"{"run_id":"x","stage":"translate","event":"start","timestamp":"2025-12-08T21:45:03+01:00","msg":"go"}"#,
        ];
        let events = lines
            .iter()
            .map(|l| serde_json::from_str::<Event>(l).unwrap())
            .collect();
        ix.apply(&batch("legacy-1", 0, events)).unwrap();
        let d = ix.get_run(&id("legacy-1")).unwrap().unwrap();
        assert_eq!(d.run.run_id, id("legacy-1"));
        assert_eq!(d.run.status, "running");
        assert_eq!(d.run.started_at.as_deref(), Some("2025-12-08T21:45:00"));
        assert_eq!(
            (d.run.pipeline.as_deref(), d.run.source.as_deref()),
            (None, None)
        );
        let ex = stage(&d, "extract");
        assert_eq!((ex.status.as_str(), ex.attempts), ("success", 1));
        assert_eq!(ex.duration_ms, Some(2250));
        assert_eq!(stage(&d, "translate").status, "running");
        assert_eq!(ix.running_runs().unwrap(), vec![id("legacy-1")]);

        // The naive start sorts as UTC, among RFC 3339 ones with offsets.
        ix.apply(&batch(
            "later",
            0,
            vec![ev(
                "pipeline",
                "start",
                "2025-12-08T22:44:00+01:00",
                json!(null),
            )],
        ))
        .unwrap();
        let ids: Vec<_> = ix
            .list_runs(10, None, None)
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(ids, [id("legacy-1"), id("later")]);

        let end = r#"{"run_id":"x","stage":"pipeline","event":"failure","timestamp":"2025-12-08T21:46:00","msg":"bad"}"#;
        ix.apply(&batch(
            "legacy-1",
            4,
            vec![serde_json::from_str(end).unwrap()],
        ))
        .unwrap();
        let d = ix.get_run(&id("legacy-1")).unwrap().unwrap();
        assert_eq!(
            (d.run.status.as_str(), d.run.duration_ms),
            ("failure", Some(60_000))
        );
    }

    #[test]
    fn abandoned_run_is_overwritten_by_a_late_final_event() {
        let mut ix = Index::open_in_memory().unwrap();
        let mut events = runner_run();
        let rest = events.split_off(8);
        ix.apply(&batch("r1", 0, events)).unwrap();
        let at = "2026-11-29T08:16:00.000Z";
        assert!(ix.mark_abandoned(&id("r1"), at).unwrap());
        assert!(
            !ix.mark_abandoned(&id("r1"), at).unwrap(),
            "only a running run"
        );
        assert!(!ix.mark_abandoned(&id("nope"), at).unwrap());
        let d = ix.get_run(&id("r1")).unwrap().unwrap();
        assert_eq!(d.run.status, "abandoned");
        assert_eq!(d.run.finished_at.as_deref(), Some(at));
        assert_eq!(d.run.duration_ms, Some(60_000));
        assert_eq!(stage(&d, "extract").status, "success");
        assert_eq!(stage(&d, "load").status, "abandoned");
        assert_eq!(stage(&d, "load").finished_at.as_deref(), Some(at));
        assert!(ix.running_runs().unwrap().is_empty());
        assert_eq!(ix.list_runs(10, None, Some("abandoned")).unwrap().len(), 1);

        // The runner was alive after all.
        ix.apply(&batch("r1", 8, rest)).unwrap();
        let d = ix.get_run(&id("r1")).unwrap().unwrap();
        assert_eq!(d.run.status, "success");
        assert_eq!(
            d.run.finished_at.as_deref(),
            Some("2026-11-29T08:15:20.000Z")
        );
        assert_eq!(d.run.duration_ms, Some(20000));
        assert_eq!(stage(&d, "load").status, "success");
    }

    /// Runs `r00000`… starting every 10 s, two per start time (ties broken by run id), every
    /// third one failed.
    fn many_runs(ix: &mut Index, n: usize) -> Vec<(String, String)> {
        let base = chrono::Utc::now() - chrono::Duration::days(30);
        let mut runs = Vec::new();
        for i in 0..n {
            let ts = format_timestamp(base + chrono::Duration::seconds(10 * (i / 2) as i64));
            let name = format!("r{:05}", (i * 7919) % n); // ids not in time order
            let status = if i % 3 == 0 { "failure" } else { "success" };
            ix.apply(&batch(
                &name,
                0,
                vec![
                    ev("pipeline", "start", &ts, json!(null)),
                    ev("pipeline", status, &ts, json!(null)),
                ],
            ))
            .unwrap();
            runs.push((ts, name));
        }
        runs
    }

    #[test]
    fn pages_newest_first_with_before_and_status() {
        let mut ix = Index::open_in_memory().unwrap();
        let n = 3000;
        let mut runs = many_runs(&mut ix, n);
        runs.sort();
        runs.reverse();
        let expected: Vec<_> = runs.iter().map(|(_, id)| id.clone()).collect();
        assert_eq!(ix.count_runs().unwrap(), n as u64);

        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = ix.list_runs(128, before.as_ref(), None).unwrap();
            if page.is_empty() {
                break;
            }
            before = page.last().map(|r| r.run_id.clone());
            seen.extend(page.into_iter().map(|r| r.run_id.to_string()));
        }
        assert_eq!(seen, expected);

        let failed: Vec<_> = ix
            .list_runs(n, None, Some("failure"))
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(failed.len(), n / 3);
        let cursor = &failed[99];
        let page = ix.list_runs(50, Some(cursor), Some("failure")).unwrap();
        let ids: Vec<_> = page.iter().map(|r| r.run_id.clone()).collect();
        assert_eq!(ids, failed[100..150]);
        assert!(page.iter().all(|r| r.status == "failure"));
        assert!(ix.list_runs(10, None, Some("running")).unwrap().is_empty());
        assert!(
            ix.list_runs(10, Some(&id("unknown")), None)
                .unwrap()
                .is_empty()
        );
        assert!(ix.list_runs(0, None, None).unwrap().is_empty());

        ix.remove_runs(&failed).unwrap();
        assert_eq!(ix.count_runs().unwrap(), (n - n / 3) as u64);
        assert!(ix.get_run(&failed[0]).unwrap().is_none());
    }

    #[test]
    fn pages_are_index_range_scans() {
        let ix = Index::open_in_memory().unwrap();
        let queries = [
            "SELECT run_id FROM runs WHERE status IS NOT NULL ORDER BY sort_key DESC, run_id DESC LIMIT 50",
            "SELECT run_id FROM runs WHERE status IS NOT NULL AND (sort_key, run_id) < ('k', 'r') ORDER BY sort_key DESC, run_id DESC LIMIT 50",
            "SELECT run_id FROM runs WHERE status = 'failure' AND (sort_key, run_id) < ('k', 'r') ORDER BY sort_key DESC, run_id DESC LIMIT 50",
        ];
        for q in queries {
            let plan: Vec<String> = ix
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {q}"))
                .unwrap()
                .query_map([], |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let plan = plan.join("; ");
            assert!(
                plan.contains("USING INDEX") || plan.contains("USING COVERING INDEX"),
                "{q}: {plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "{q}: {plan}");
        }
    }

    #[test]
    fn checkpoints_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/index.db");
        {
            let mut ix = Index::open(&path).unwrap();
            ix.apply(&batch("r1", 0, runner_run())).unwrap();
            // A file with no event yet (or only bad lines) still has a checkpoint.
            ix.apply(&Batch {
                checkpoint: Checkpoint {
                    run_id: id("empty"),
                    dev: u64::MAX,
                    ino: 1 << 63,
                    offset: 17,
                    lines: 1,
                    finished: false,
                },
                events: Vec::new(),
                malformed: 1,
            })
            .unwrap();
        }
        let (ix, opened) = Index::open_or_reset(&path).unwrap();
        assert_eq!(opened, Opened::Existing);
        let mut cps = ix.checkpoints().unwrap();
        cps.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        assert_eq!(
            cps,
            [
                Checkpoint {
                    run_id: id("empty"),
                    dev: u64::MAX,
                    ino: 1 << 63,
                    offset: 17,
                    lines: 1,
                    finished: false
                },
                Checkpoint {
                    run_id: id("r1"),
                    dev: 1,
                    ino: 2,
                    offset: 1100,
                    lines: 11,
                    finished: true
                },
            ]
        );
        // A run with no event is not a run yet.
        assert!(ix.get_run(&id("empty")).unwrap().is_none());
        assert_eq!(ix.count_runs().unwrap(), 1);
        assert_eq!(ix.list_runs(10, None, None).unwrap().len(), 1);
        let mode: String = ix
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn open_or_reset_replaces_a_file_that_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.db");
        std::fs::write(&path, "this is not a database, just some text ".repeat(100)).unwrap();
        let err = Index::open(&path).err().unwrap();
        assert!(err.needs_rebuild(), "{err}");
        assert!(err.to_string().contains("index.db"), "{err}");

        let (ix, opened) = Index::open_or_reset(&path).unwrap();
        assert!(matches!(opened, Opened::Reset { .. }), "{opened:?}");
        assert_eq!(ix.count_runs().unwrap(), 0);
        assert!(dir.path().join("index.db.broken").exists());
        drop(ix);
        assert_eq!(Index::open_or_reset(&path).unwrap().1, Opened::Existing);
    }

    #[test]
    fn open_or_reset_replaces_another_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE runs (id TEXT); PRAGMA user_version = 99;")
                .unwrap();
        }
        match Index::open(&path) {
            Err(IndexError::Version { found: 99, .. }) => {}
            other => panic!("{:?}", other.map(|_| ())),
        }
        let (mut ix, opened) = Index::open_or_reset(&path).unwrap();
        let Opened::Reset { why } = opened else {
            panic!("{opened:?}")
        };
        assert!(why.contains("version 99"), "{why}");
        ix.apply(&batch("r1", 0, runner_run())).unwrap();
        assert_eq!(ix.count_runs().unwrap(), 1);

        let fresh = dir.path().join("new/sub/index.db");
        assert_eq!(Index::open_or_reset(&fresh).unwrap().1, Opened::Created);
    }

    #[test]
    fn rebuild_reads_every_run_file() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events");
        std::fs::create_dir(&events).unwrap();
        let line = |e: &Event| serde_json::to_string(e).unwrap() + "\n";

        let full: String = runner_run().iter().map(line).collect();
        std::fs::write(events.join("pipeline_r1.jsonl"), &full).unwrap();

        // A bad line in the middle (its seq is left unused) and a last line still being written.
        let mut running = runner_run();
        running.truncate(4);
        let mut text = line(&running[0]) + "{not json\n" + &line(&running[1]);
        text += &line(&running[2]);
        let complete = text.len() as u64;
        text += line(&running[3]).trim_end();
        std::fs::write(events.join("pipeline_r2.jsonl"), &text).unwrap();

        std::fs::write(events.join("notes.txt"), "not a run").unwrap();
        std::fs::write(events.join("pipeline_bad name.jsonl"), &full).unwrap();

        let mut ix = Index::open(&dir.path().join("index.db")).unwrap();
        // Stale content is cleared.
        ix.apply(&batch("gone", 0, runner_run())).unwrap();
        let stats = rebuild(&mut ix, &events).unwrap();
        assert_eq!(
            stats,
            RebuildStats {
                files: 2,
                events: 11 + 3,
                malformed: 1,
                unreadable: 0
            }
        );
        assert!(ix.get_run(&id("gone")).unwrap().is_none());
        assert_eq!(ix.count_runs().unwrap(), 2);
        assert_eq!(
            ix.get_run(&id("r1")).unwrap().unwrap().run.status,
            "success"
        );
        let r2 = ix.get_run(&id("r2")).unwrap().unwrap();
        assert_eq!(r2.run.status, "running");
        assert_eq!(stage(&r2, "extract").attempts, 1);

        let mut cps = ix.checkpoints().unwrap();
        cps.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        assert_eq!(cps.len(), 2);
        assert_eq!(
            (cps[0].offset, cps[0].lines, cps[0].finished),
            (full.len() as u64, 11, true)
        );
        assert_eq!(
            (cps[1].offset, cps[1].lines, cps[1].finished),
            (complete, 4, false)
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(events.join("pipeline_r2.jsonl")).unwrap();
            assert_eq!((cps[1].dev, cps[1].ino), (meta.dev(), meta.ino()));
        }

        // The tailer goes on from the checkpoint: the completed line is seq 4, after the bad one.
        let mut rest = runner_run().split_off(3);
        rest.truncate(2);
        ix.apply(&batch("r2", 4, rest)).unwrap();
        let r2 = ix.get_run(&id("r2")).unwrap().unwrap();
        assert_eq!(stage(&r2, "extract").attempts, 2);

        let missing = rebuild(&mut ix, &dir.path().join("nope")).err().unwrap();
        assert!(matches!(missing, IndexError::ReadDir { .. }), "{missing}");
    }

    /// A line over the tailer's cap (1 MiB) is skipped, not indexed, whether the file is tailed
    /// live by the dashboard or read again by `pipewatch reindex`: both end with the same
    /// summary, the same checkpoint and the same count of skipped lines.
    #[tokio::test]
    async fn a_line_over_the_cap_is_skipped_alike_live_and_by_rebuild() {
        use crate::tail::{DEFAULT_MAX_LINE_BYTES, TailConfig, TailStats, Tailer};

        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events");
        std::fs::create_dir(&events).unwrap();
        let line = |e: &Event| serde_json::to_string(e).unwrap() + "\n";
        let t = "2026-11-29T08:15:00.000Z";
        // A valid event, but longer than the cap: were it read, the stage would have failed.
        let mut huge = ev("a", "failure", t, json!({"exit_code": 1}));
        huge.msg = "x".repeat(DEFAULT_MAX_LINE_BYTES + 10);
        let text = [
            line(&ev("pipeline", "start", t, json!(null))),
            line(&ev("a", "start", t, json!({"attempt": 1}))),
            line(&huge),
            line(&ev("a", "success", t, json!({"exit_code": 0}))),
            line(&ev("pipeline", "success", t, json!(null))),
        ]
        .concat();
        std::fs::write(events.join("pipeline_r1.jsonl"), &text).unwrap();

        // Live: the dashboard's tailer, with its default cap, into an index.
        let mut live = Index::open_in_memory().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let stats = Arc::new(TailStats::default());
        let tailer =
            Tailer::start(TailConfig::new(&events), Vec::new(), tx, stats.clone()).unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut malformed = 0;
        loop {
            let b = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .expect("the tailer hands the file on")
                .expect("tailer running");
            malformed += b.malformed;
            live.apply(&b).unwrap();
            if b.checkpoint.lines == 5 {
                break;
            }
        }
        tailer.stop();
        assert_eq!(malformed, 1);

        // Reindex: the same file rebuilt into another index.
        let mut rebuilt = Index::open_in_memory().unwrap();
        let stats = rebuild(&mut rebuilt, &events).unwrap();
        assert_eq!(
            stats,
            RebuildStats {
                files: 1,
                events: 4,
                malformed: 1,
                unreadable: 0
            }
        );

        let r1 = id("r1");
        let d = rebuilt.get_run(&r1).unwrap().unwrap();
        assert_eq!(stage(&d, "a").status, "success");
        assert_eq!(stage(&d, "a").exit_code, Some(0));
        assert_eq!(live.get_run(&r1).unwrap(), Some(d));
        assert_eq!(live.checkpoints().unwrap(), rebuilt.checkpoints().unwrap());
        assert_eq!(
            live.list_runs(10, None, None).unwrap(),
            rebuilt.list_runs(10, None, None).unwrap()
        );
        let count = |ix: &Index| -> (i64, i64) {
            ix.conn
                .query_row(
                    "SELECT events, last_seq FROM runs WHERE run_id = 'r1'",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap()
        };
        assert_eq!(count(&live), (4, 4));
        assert_eq!(count(&rebuilt), count(&live));
    }
}
