//! The run index: a SQLite summary of every run file, and the tailer's checkpoints.
//!
//! The JSONL files in `events_dir` are the source of truth. The index holds what is needed to
//! answer `/api/runs` and `/api/runs/{run_id}` quickly (`docs/api.md`) — one row per run, one
//! per stage — and where the tailer got to in each file.
//!
//! # Invariants
//!
//! - A [`Batch`](crate::tail::Batch)'s summaries and its
//!   [`Checkpoint`](crate::tail::Checkpoint) are committed in one transaction
//!   ([`Index::apply`]), so after a crash the index never holds events past its checkpoint, nor
//!   a checkpoint past the events it summarizes: the tailer resumes exactly where the summaries
//!   end, and each event is counted once.
//! - Applying is idempotent per run: events at or below the run's last applied `seq` are
//!   ignored, and a batch that starts again at `seq` 0 (a file read again from its start)
//!   rebuilds that run's summary from scratch.
//! - Anything the index holds can be thrown away and rebuilt from the files ([`rebuild()`]),
//!   read as the tailer reads them (same reader, same line cap):
//!   an index from another schema version, or one that is not a database, is moved aside by
//!   [`Index::open_or_reset`] and the caller rebuilds; one of the version before is migrated
//!   instead, keeping the alerts' outbox and the feed, and the caller rebuilds its runs.
//! - Log lines only bump counters: per batch, the work is O(events) in Rust plus one row
//!   write per run and per stage that changed.
//!
//! # Layout
//!
//! | file | owns |
//! |---|---|
//! | `schema.rs` | the DDL and its version; opening, and starting afresh ([`Index::open_or_reset`]) |
//! | `fold.rs` | the pure event → run/stage summary fold (no SQL) |
//! | `write.rs` | applying batches: load rows, fold, write back, with the checkpoint |
//! | `feed.rs` | the all-runs stream's cursors: which events of which file each stretch went to |
//! | `outbox.rs` | the alerts' outbox and what each destination remembers of each pipeline |
//! | `catchup.rs` | the alerts held while `serve` caught up, folded into one summary per destination |
//! | `query.rs` | runs listed and looked up, counts, checkpoints |
//! | `pipelines.rs` | the pipelines with runs; one pipeline's last run, running runs, figures |
//! | `rebuild.rs` | [`rebuild()`] and [`Index::resync_run`], reading through the tailer's reader |
//! | `wal.rs` | checkpoints of the write-ahead log on a connection of their own (`serve`) |
//! | [`history`] | the index read-only, caught up with the files (`pipewatch runs`) |
//!
//! # Who calls it
//!
//! `pipewatch serve` owns one [`Index`] on a dedicated ingest thread (a `Connection` is not
//! `Sync`; SQLite work stays off the async workers), which applies the tailer's batches and
//! answers the API's queries. `pipewatch reindex`, and `serve` when the index is missing, stale
//! or from another version, call [`rebuild()`].
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

mod catchup;
mod feed;
mod fold;
mod outbox;
mod overdue;
mod pipelines;
mod query;
mod rebuild;
mod schema;
#[cfg(test)]
mod testing;
mod wal;
mod write;

pub use catchup::Folded;
pub use feed::{Segment, epoch_start};
pub use outbox::{
    AlertContext, AlertRecord, Ended, FAILED, HELD, Pending, RETRYING, SENT, SUMMARIZED,
    alert_stderr_tail,
};
pub use pipelines::{PipelineRuns, RecentRun, WindowStats};
pub use query::{
    PipelineFigures, RunDetail, RunFilter, RunStatus, RunSummary, StageStatus, StageSummary,
};
pub use rebuild::{RebuildStats, rebuild};
pub use schema::Opened;
pub use wal::{Checkpointed, LogState, WalCheckpoints};

use std::io;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode};

use crate::event::{RunId, kind};
use crate::tail::TailError;

/// The index's file name inside `[server] state_dir`.
pub const FILE_NAME: &str = "index.db";

/// Where the index of a state folder lives.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// Every status a run can have (`docs/api.md`).
pub const RUN_STATUSES: [&str; 7] = [
    "running",
    "success",
    "failure",
    "cancelled",
    "skipped",
    "missed",
    "abandoned",
];

/// Every status a stage can have: `running` until one of [`kind::STAGE_FINAL`] names it, or
/// `abandoned` with its run.
pub const STAGE_STATUSES: [&str; 6] = [
    RUNNING,
    kind::SUCCESS,
    kind::FAILURE,
    kind::CANCELLED,
    kind::SKIPPED,
    ABANDONED,
];

/// Run and stage statuses the index writes besides the event names themselves.
pub const RUNNING: &str = "running";
pub const ABANDONED: &str = "abandoned";

/// The reason of a run announced to the dashboard whose file never appeared (and that no
/// runner holds): `abandoned`, until its file does appear.
pub const NO_RUN_FILE: &str = "its run file never appeared";

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
    /// The blocking task working on the index panicked or was cancelled; the index itself
    /// may be fine.
    #[error("run index: the task using it failed: {0}")]
    TaskFailed(String),
}

/// The index is the dashboard's and the machine's business, never a usage error.
impl crate::exit::Code for IndexError {
    fn exit_code(&self) -> u8 {
        crate::exit::ENVIRONMENT
    }
}

impl IndexError {
    /// Whether SQLite found the file damaged while using it (not at opening, where
    /// [`needs_rebuild`](IndexError::needs_rebuild) decides).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            IndexError::Sqlite { source, .. }
                if matches!(
                    source.sqlite_error_code(),
                    Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
                )
        )
    }

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

/// The run index. Owned by one thread; see the module docs.
pub struct Index {
    conn: Connection,
    /// For error messages; `:memory:` for an in-memory index.
    path: PathBuf,
    /// With checkpoints of the log deferred ([`Index::defer_checkpoints`]): held while the
    /// file is moved aside, so that no checkpoint has it open then.
    file: Option<std::sync::Arc<std::sync::Mutex<()>>>,
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

#[cfg(test)]
mod tests {
    use super::testing::{batch, ev, id, stage};
    use super::*;
    use serde_json::json;

    /// The lists the page is given (`/js/statuses.js`) are the ones this fold acts on: each
    /// final event ends a run or a stage with its own name as the status, and no other does.
    #[test]
    fn final_event_lists_and_statuses_match_the_fold() {
        let kinds = [
            kind::START,
            kind::SUCCESS,
            kind::FAILURE,
            kind::CANCELLED,
            kind::SKIPPED,
            kind::MISSED,
            kind::LOG,
            kind::RETRY,
            "checkpoint",
        ];
        let (t0, t1) = ("2026-11-29T08:15:00.000Z", "2026-11-29T08:15:01.000Z");
        let mut ix = Index::open_in_memory().unwrap();
        for (i, k) in kinds.into_iter().enumerate() {
            let run = format!("r{i}");
            let events = vec![
                ev("pipeline", kind::START, t0, json!(null)),
                ev("s", kind::START, t0, json!(null)),
                ev("s", k, t1, json!(null)),
                ev("pipeline", k, t1, json!(null)),
            ];
            ix.apply(&batch(&run, 0, events)).unwrap();
            let d = ix.get_run(&id(&run)).unwrap().unwrap();
            let want = if kind::STAGE_FINAL.contains(&k) {
                k
            } else {
                RUNNING
            };
            assert_eq!(stage(&d, "s").status, want, "stage event {k}");
            let want = if kind::RUN_FINAL.contains(&k) {
                k
            } else {
                RUNNING
            };
            assert_eq!(d.run.status, want, "run event {k}");
            assert!(STAGE_STATUSES.contains(&stage(&d, "s").status.as_str()));
            assert!(RUN_STATUSES.contains(&d.run.status.as_str()));
        }
        let ends = |k: &str| kind::STAGE_FINAL.contains(&k);
        assert!(
            STAGE_STATUSES
                .iter()
                .all(|s| ends(s) || [RUNNING, ABANDONED].contains(s))
        );
        let ends = |k: &str| kind::RUN_FINAL.contains(&k);
        assert!(
            RUN_STATUSES
                .iter()
                .all(|s| ends(s) || [RUNNING, ABANDONED].contains(s))
        );
    }

    #[test]
    fn a_failed_task_is_not_a_broken_index() {
        let e = IndexError::TaskFailed("task 7 panicked".to_string());
        assert!(!e.needs_rebuild(), "nothing says the database is unusable");
        assert_eq!(
            e.to_string(),
            "run index: the task using it failed: task 7 panicked"
        );
    }
}
