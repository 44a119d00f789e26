//! The index's database: its schema (DDL and version), opening it, and starting afresh when
//! it is unusable.
//!
//! # Invariants
//!
//! - An index carries its schema version (`PRAGMA user_version`); one from another version, one
//!   that is not a database, or one whose tables are not ours is never used as is:
//!   [`Index::open`] fails with an error for which [`IndexError::needs_rebuild`] is true, and
//!   [`Index::open_or_reset`] moves the file aside (`<name>.broken`) so the caller rebuilds.
//! - But for an index of the version before ([`MIGRATES_FROM`]): [`Index::open_or_reset`]
//!   migrates it in one transaction (the new columns added, nothing else changed) and says so
//!   ([`Opened::Migrated`]); the caller then rebuilds the runs from the files
//!   ([`rebuild`](crate::index::rebuild()) replaces the runs and stages only), so a migrated
//!   index holds what a new one would, and keeps the alerts' outbox, their memory and the
//!   feed's cursors, which no file holds. Until that rebuild commits, the index carries a
//!   [`REBUILD_PENDING`] table: stopped in between, the next [`Index::open_or_reset`] says
//!   [`Opened::Migrated`] again. [`Index::open`] (`pipewatch runs`, `alerts`, retention)
//!   never migrates: it has no files to rebuild from.
//! - The database is a regular file in `state_dir`, opened without following a link
//!   (`SQLITE_OPEN_NOFOLLOW`): a link or a FIFO planted under its name is never written through
//!   or waited on, but moved aside like any unusable index.
//! - The database runs in WAL mode with `synchronous = NORMAL` and a busy timeout, so readers
//!   (`pipewatch runs`) do not block the dashboard's writes.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::{Index, IndexError, db};
use crate::sync::MutexExt;

/// Bumped whenever the schema changes; an index with another version is rebuilt, but for one
/// [`migrate_schema`] knows how to bring forward.
const SCHEMA_VERSION: i32 = 6;

/// The version [`migrate_schema`] brings forward to [`SCHEMA_VERSION`], keeping what cannot
/// be read again from the files (the alerts' outbox and memory, the feed's cursors).
const MIGRATES_FROM: i32 = 5;

/// The table a migration leaves until the runs are rebuilt (`rebuild.rs` drops it in the
/// rebuild's transaction): the version migrated from.
pub(super) const REBUILD_PENDING: &str = "rebuild_pending";

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
    -- data.failed_stages of the final event, a JSON array of names.
    failed_stages TEXT,
    -- seq of the run's first event at level error.
    first_error_seq INTEGER,
    -- data.retry_of of the run's start: the run it retries.
    retry_of      TEXT,
    -- The host the run ran on: its events' top-level host, else data.host of its start.
    host          TEXT,
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
CREATE INDEX runs_by_pipeline ON runs (pipeline, sort_key, run_id);
CREATE INDEX runs_by_retry_of ON runs (retry_of, sort_key) WHERE retry_of IS NOT NULL;
CREATE INDEX runs_by_host ON runs (host, sort_key, run_id);
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
    -- data.reason, data.signal and data.needs of the stage's final event.
    reason      TEXT,
    signal      INTEGER,
    needs       TEXT,
    PRIMARY KEY (run_id, name)
) WITHOUT ROWID;
-- The all-runs stream's cursors (`feed.rs`): events of `run_id` with seq_first..=seq_last
-- got cursors first..=last; reading the file from (dev, ino, offset, lines) finds them.
CREATE TABLE feed (
    first     INTEGER PRIMARY KEY,
    last      INTEGER NOT NULL,
    run_id    TEXT NOT NULL,
    seq_first INTEGER NOT NULL,
    seq_last  INTEGER NOT NULL,
    dev       INTEGER NOT NULL,
    ino       INTEGER NOT NULL,
    offset    INTEGER NOT NULL,
    lines     INTEGER NOT NULL
);
CREATE INDEX feed_by_run ON feed (run_id);
-- The alerts' outbox (`outbox.rs`): one row per alert per destination, recorded with the
-- batch that made it; `seq` orders them.
CREATE TABLE alerts (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    destination TEXT NOT NULL,
    kind        TEXT NOT NULL,
    pipeline    TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    -- The alert object, as sent.
    body        TEXT NOT NULL,
    -- retrying (not delivered yet), sent, failed.
    status      TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    at          TEXT NOT NULL,
    -- When the next attempt is due (UTC with milliseconds: sorts as text).
    next_at     TEXT NOT NULL
);
CREATE INDEX alerts_due ON alerts (destination, status, next_at);
-- What each destination remembers of each pipeline: storm suppression and recovery.
CREATE TABLE alert_memory (
    destination   TEXT NOT NULL,
    pipeline      TEXT NOT NULL,
    failing       INTEGER NOT NULL,
    last_alert_at TEXT,
    held_back     INTEGER NOT NULL,
    PRIMARY KEY (destination, pipeline)
) WITHOUT ROWID;
";

/// How [`Index::open_or_reset`] found the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// An index of this version: resume from its checkpoints.
    Existing,
    /// There was none: rebuild from the files.
    Created,
    /// The old file was unusable and has been moved aside: rebuild from the files.
    Reset { why: String },
    /// The index was of version `from` and has been migrated to this one, keeping the
    /// alerts' outbox and the feed: rebuild the runs from the files (the runs' new columns
    /// are filled only by reading them again).
    Migrated { from: i32 },
}

impl Index {
    /// Opens (creating it and its folder if needed) the index at `path`. An index from another
    /// schema version is an [`IndexError::Version`]; see [`Index::open_or_reset`].
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        Index::open_inner(path, false).map(|(index, _)| index)
    }

    /// Opens the index at `path`, starting afresh if the file is unusable: another schema
    /// version, not a database, corrupt or unreadable. The old file is renamed to
    /// `<name>.broken` (replacing an older one) so it can still be looked at. An index of
    /// the version before is migrated instead ([`Opened::Migrated`]). On anything but
    /// [`Opened::Existing`] the caller rebuilds from the files.
    pub fn open_or_reset(path: &Path) -> Result<(Index, Opened), IndexError> {
        match Index::open_inner(path, true) {
            Ok((index, Init::Created)) => Ok((index, Opened::Created)),
            Ok((index, Init::Existing)) => Ok((index, Opened::Existing)),
            Ok((index, Init::Migrated { from })) => {
                tracing::info!(
                    path = %path.display(),
                    "run index migrated from schema version {from} to {SCHEMA_VERSION}"
                );
                Ok((index, Opened::Migrated { from }))
            }
            // Only a file (or a link, or a FIFO: renaming moves the entry, not what it points
            // to) is moved aside: a folder at `path` is left alone.
            Err(e)
                if e.needs_rebuild()
                    && std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir()) =>
            {
                let why = e.to_string();
                tracing::warn!("{why}; starting a new run index");
                move_aside(path)?;
                let (index, _) = Index::open_inner(path, false)?;
                Ok((index, Opened::Reset { why }))
            }
            Err(e) => Err(e),
        }
    }

    /// An empty index in memory, for tests.
    pub fn open_in_memory() -> Result<Index, IndexError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(db(&path, "open"))?;
        Index::init(conn, path, false).map(|(index, _)| index)
    }

    fn open_inner(path: &Path, migrate: bool) -> Result<(Index, Init), IndexError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| IndexError::CreateDir {
                path: path.to_path_buf(),
                source,
            })?;
        }
        // A FIFO would fail SQLite's first read (no wait: nothing writes to it), but as an
        // I/O error, which is no reason to start afresh; what it is, is.
        if let Ok(meta) = std::fs::symlink_metadata(path)
            && !meta.is_file()
            && !meta.is_symlink()
        {
            return Err(IndexError::Schema {
                path: path.to_path_buf(),
                what: format!(
                    "it is {}, not a regular file",
                    crate::fsx::describe(meta.file_type())
                ),
            });
        }
        // Not following a link: SQLite would create or write the database (and its `-wal`
        // and `-shm` files) wherever the link points.
        let flags = OpenFlags::default() | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(path, flags).map_err(db(path, "open"))?;
        Index::init(conn, path.to_path_buf(), migrate)
    }

    /// Sets the connection up and makes sure the schema is ours, migrating it from
    /// [`MIGRATES_FROM`] if `migrate`.
    fn init(conn: Connection, path: PathBuf, migrate: bool) -> Result<(Index, Init), IndexError> {
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
        let found = if version == 0 {
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
            Init::Created
        } else if migrate && version == MIGRATES_FROM {
            check_integrity(&conn, &path)?;
            migrate_schema(&conn, &path, version)?;
            Init::Migrated { from: version }
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
                        scheduled_for, reason, events, last_seq, sort_key, host,
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
            check_integrity(&conn, &path)?;
            match rebuild_pending(&conn, &path)? {
                Some(from) if migrate => Init::Migrated { from },
                _ => Init::Existing,
            }
        };
        Ok((
            Index {
                conn,
                path,
                file: None,
            },
            found,
        ))
    }

    /// Replaces a database found corrupt while in use: closes it, moves it aside as
    /// [`open_or_reset`](Index::open_or_reset) does, and opens a new, empty one at the same
    /// path. The caller rebuilds it from the files.
    pub fn reset_in_place(&mut self) -> Result<(), IndexError> {
        let path = self.path.clone();
        let file = self.file.clone();
        let fresh = Connection::open_in_memory().map_err(db(&path, "open"))?;
        let old = std::mem::replace(&mut self.conn, fresh);
        // A corrupt database may refuse to close cleanly; it is being moved aside anyway.
        let _ = old.close();
        {
            let _file = file.as_deref().map(|f| f.lock_anyway());
            move_aside(&path)?;
        }
        let (index, _) = Index::open_inner(&path, false)?;
        *self = index;
        if file.is_some() {
            // Checkpoints stay deferred, made by the same checkpointer.
            self.file = file;
            self.leave_checkpoints()?;
        }
        Ok(())
    }

    /// The database file (`:memory:` for an in-memory index).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What [`Index::init`] found.
enum Init {
    Created,
    Existing,
    Migrated { from: i32 },
}

/// Brings an index of version [`MIGRATES_FROM`] to [`SCHEMA_VERSION`] in one transaction: a
/// failure leaves it as it was (and [`Index::open_or_reset`] then moves it aside).
///
/// Version 6 added `runs.host`; the runs already there get theirs when the caller rebuilds.
fn migrate_schema(conn: &Connection, path: &Path, from: i32) -> Result<(), IndexError> {
    let batch = format!(
        "BEGIN;
         ALTER TABLE runs ADD COLUMN host TEXT;
         CREATE INDEX runs_by_host ON runs (host, sort_key, run_id);
         CREATE TABLE {REBUILD_PENDING} (from_version INTEGER NOT NULL);
         INSERT INTO {REBUILD_PENDING} VALUES ({from});
         PRAGMA user_version = {SCHEMA_VERSION};
         COMMIT;"
    );
    conn.execute_batch(&batch).map_err(|source| {
        // The transaction may be left open by the failed statement.
        let _ = conn.execute_batch("ROLLBACK");
        IndexError::Schema {
            path: path.to_path_buf(),
            what: format!("cannot migrate it from schema version {from}: {source}"),
        }
    })
}

/// The version a migration came from, while its rebuild has not committed yet.
fn rebuild_pending(conn: &Connection, path: &Path) -> Result<Option<i32>, IndexError> {
    let what = "look for a rebuild pending";
    let exists: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?",
            [REBUILD_PENDING],
            |r| r.get(0),
        )
        .map_err(db(path, what))?;
    if exists == 0 {
        return Ok(None);
    }
    conn.query_row(
        &format!("SELECT MIN(from_version) FROM {REBUILD_PENDING}"),
        [],
        |r| r.get::<_, Option<i32>>(0),
    )
    .map(|v| Some(v.unwrap_or(MIGRATES_FROM)))
    .map_err(db(path, what))
}

/// `PRAGMA quick_check`: every page of the file read and its structure checked (in time
/// linear in the file's size: milliseconds for a year of runs). A review overwrote 4 KB inside
/// the file: every later query failed with "database disk image is malformed", after
/// restarts too, while the opening checks passed.
fn check_integrity(conn: &Connection, path: &Path) -> Result<(), IndexError> {
    let mut stmt = conn
        .prepare("PRAGMA quick_check")
        .map_err(db(path, "check its integrity"))?;
    let problems: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(db(path, "check its integrity"))?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    Err(IndexError::Schema {
        path: path.to_path_buf(),
        what: format!(
            "the integrity check failed: {}",
            problems.into_iter().take(3).collect::<Vec<_>>().join("; ")
        ),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Opened;
    use crate::index::testing::{batch, runner_run};

    #[test]
    fn reset_in_place_moves_a_used_index_aside_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::index::path(dir.path());
        let mut ix = Index::open(&path).unwrap();
        ix.apply(&batch("r1", 0, runner_run())).unwrap();
        assert_eq!(ix.count_runs().unwrap(), 1);
        ix.reset_in_place().unwrap();
        assert_eq!(ix.count_runs().unwrap(), 0);
        assert_eq!(ix.path(), path.as_path());
        assert!(dir.path().join("index.db.broken").exists());
        drop(ix);
        assert_eq!(Index::open_or_reset(&path).unwrap().1, Opened::Existing);
    }

    #[test]
    fn open_or_reset_replaces_a_file_that_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::index::path(dir.path());
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

    #[cfg(unix)]
    #[test]
    fn a_planted_link_or_fifo_is_moved_aside_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("elsewhere.db");
        let path = crate::index::path(dir.path());
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let (_ix, opened) = Index::open_or_reset(&path).unwrap();
        assert!(matches!(opened, Opened::Reset { .. }), "{opened:?}");
        assert!(
            !target.exists(),
            "the index was created where the link points"
        );
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());

        let dir = tempfile::tempdir().unwrap();
        let path = crate::index::path(dir.path());
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = Index::open(&path).err().unwrap();
        assert!(err.to_string().contains("a FIFO"), "{err}");
        let (_ix, opened) = Index::open_or_reset(&path).unwrap();
        assert!(matches!(opened, Opened::Reset { .. }), "{opened:?}");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
    }

    /// An index as version 5 made it: no `runs.host`.
    fn version_5(path: &Path) {
        let ddl = SCHEMA
            .replace(
                "    -- The host the run ran on: its events' top-level host, else data.host of its start.\n    host          TEXT,\n",
                "",
            )
            .replace(
                "CREATE INDEX runs_by_host ON runs (host, sort_key, run_id);\n",
                "",
            );
        assert!(!ddl.contains("host"), "{ddl}");
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(&format!("BEGIN; {ddl} PRAGMA user_version = 5; COMMIT;"))
            .unwrap();
    }

    #[test]
    fn a_version_5_index_is_migrated_keeping_alerts_and_feed_and_rebuilt_as_a_new_one() {
        use crate::event::Event;
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events");
        std::fs::create_dir(&events).unwrap();
        let line = |e: &Event| serde_json::to_string(e).unwrap() + "\n";
        // A run of this machine (its start names it) and one forwarded from etl-01.
        let mut local = runner_run();
        local[0].data.as_mut().unwrap().insert("host", "box".into());
        let forwarded: Vec<Event> = runner_run()
            .into_iter()
            .map(|mut e| {
                e.host = Some("etl-01".to_string());
                e
            })
            .collect();
        std::fs::write(
            events.join("pipeline_r1.jsonl"),
            local.iter().map(line).collect::<String>(),
        )
        .unwrap();
        std::fs::write(
            events.join("pipeline_r2.jsonl"),
            forwarded.iter().map(line).collect::<String>(),
        )
        .unwrap();

        let path = crate::index::path(dir.path());
        version_5(&path);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "INSERT INTO runs (run_id, pipeline, status, events, sort_key)
                     VALUES ('r1', 'translation', 'success', 11, '2026-11-29T08:15:00.000Z');
                 INSERT INTO feed VALUES (1, 11, 'r1', 0, 10, 1, 2, 0, 11);
                 INSERT INTO alerts (id, destination, kind, pipeline, run_id, body, status, at,
                                     next_at)
                     VALUES ('a1', 'ops', 'failure', 'translation', 'r1', '{}', 'retrying',
                             't', 't');
                 INSERT INTO alert_memory VALUES ('ops', 'translation', 1, 't', 0);",
            )
            .unwrap();
        }
        // Only the path that rebuilds afterwards migrates.
        match Index::open(&path) {
            Err(IndexError::Version { found: 5, .. }) => {}
            other => panic!("{:?}", other.map(|_| ())),
        }
        let (ix, opened) = Index::open_or_reset(&path).unwrap();
        assert_eq!(opened, Opened::Migrated { from: 5 });
        assert!(!dir.path().join("index.db.broken").exists());
        // The run already there is kept, without its host until the rebuild reads it.
        assert_eq!(
            ix.get_run(&crate::index::testing::id("r1"))
                .unwrap()
                .unwrap()
                .run
                .host,
            None
        );
        // Stopped before the rebuild: the next opening asks for it again.
        drop(ix);
        let (mut ix, opened) = Index::open_or_reset(&path).unwrap();
        assert_eq!(opened, Opened::Migrated { from: 5 });
        crate::index::rebuild(&mut ix, &events).unwrap();
        let count = |table: &str| -> i64 {
            ix.conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(
            (count("alerts"), count("alert_memory"), count("feed")),
            (1, 1, 1)
        );
        let hosts: Vec<_> = ix
            .list_runs(10, None, &crate::index::RunFilter::default())
            .unwrap()
            .into_iter()
            .map(|r| (r.run_id.to_string(), r.host))
            .collect();
        assert_eq!(
            hosts,
            [
                ("r2".to_string(), Some("etl-01".to_string())),
                ("r1".to_string(), Some("box".to_string()))
            ]
        );

        // What a new index rebuilt from the same files holds, run for run.
        let fresh_dir = tempfile::tempdir().unwrap();
        let (mut fresh, opened) =
            Index::open_or_reset(&crate::index::path(fresh_dir.path())).unwrap();
        assert_eq!(opened, Opened::Created);
        crate::index::rebuild(&mut fresh, &events).unwrap();
        let all = |ix: &Index| {
            ix.list_runs(10, None, &crate::index::RunFilter::default())
                .unwrap()
                .into_iter()
                .map(|r| ix.get_run(&r.run_id).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(all(&ix), all(&fresh));
        assert_eq!(
            ix.checkpoints().unwrap().len(),
            fresh.checkpoints().unwrap().len()
        );
        let on = |ix: &Index, host: &str| {
            let filter = crate::index::RunFilter {
                host: Some(host.to_string()),
                ..Default::default()
            };
            ix.list_runs(10, None, &filter)
                .unwrap()
                .into_iter()
                .map(|r| r.run_id.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(on(&ix, "etl-01"), ["r2"]);
        assert_eq!(on(&fresh, "box"), ["r1"]);
        assert!(on(&ix, "etl-02").is_empty());

        // Migrated, it opens as any index of this version.
        drop(ix);
        assert_eq!(Index::open_or_reset(&path).unwrap().1, Opened::Existing);
        assert!(Index::open(&path).is_ok());
    }

    #[test]
    fn open_or_reset_replaces_another_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::index::path(dir.path());
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
}
