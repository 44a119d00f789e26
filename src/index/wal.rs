//! Checkpoints of the index's write-ahead log, on a connection of their own.
//!
//! SQLite checkpoints the log (copies its pages into the database, then syncs both files)
//! from the connection whose commit took the log past 1,000 pages, inside that commit. For
//! `serve` that connection is the one ingest commits on, and a checkpoint then held up the
//! next batch for as long as the disk took to sync: up to tens of milliseconds, which every
//! follower of a run saw as its latency's tail. So `serve` defers them
//! ([`Index::defer_checkpoints`]) and makes them, every second, on a connection of its own
//! ([`WalCheckpoints::run`]): a passive checkpoint runs beside the writer without stopping
//! it. A log that nobody wrote to since the last checkpoint ([`WalCheckpoints::log_state`]:
//! its size and time) is left alone, so an idle dashboard opens no connection for it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rusqlite::{Connection, OpenFlags};

use super::{Index, IndexError, db};
use crate::sync::MutexExt;

/// Makes checkpoints of one index's log; made by [`Index::defer_checkpoints`].
pub struct WalCheckpoints {
    path: PathBuf,
    /// Held while a checkpoint has the file open, and while the index moves it aside
    /// ([`Index::reset_in_place`]): Windows cannot rename a file that is open.
    file: Arc<Mutex<()>>,
}

/// What one checkpoint found: the frames in the log, and how many of them are now in the
/// database too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpointed {
    pub log_frames: i64,
    pub checkpointed: i64,
}

impl Checkpointed {
    /// All of the log is in the database: a reader still on an older state of the index
    /// holds back the frames written after it began.
    pub fn complete(&self) -> bool {
        self.checkpointed >= self.log_frames
    }
}

/// The log file's size and last write: any write changes one of them (a log that grows, its
/// size; one written again from its start, its time). Where a file system is lazy with the
/// time of a file held open, a log written again from its start is checkpointed once it
/// grows past the size it had: it is never left to grow without end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogState {
    len: u64,
    modified: Option<SystemTime>,
}

impl Index {
    /// Stops this connection from checkpointing the log itself: from now on the returned
    /// [`WalCheckpoints`] does, and must be run regularly (the log grows until it is). Kept
    /// when the index is reset in place.
    pub fn defer_checkpoints(&mut self) -> Result<WalCheckpoints, IndexError> {
        self.leave_checkpoints()?;
        let file = self.file.get_or_insert_with(Arc::default).clone();
        Ok(WalCheckpoints {
            path: self.path.clone(),
            file,
        })
    }

    /// Turns this connection's own checkpoints off.
    pub(super) fn leave_checkpoints(&self) -> Result<(), IndexError> {
        self.conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(db(&self.path, "defer checkpoints of the log"))
    }
}

impl WalCheckpoints {
    /// The log file's state now; `None` when there is none (nothing to checkpoint).
    pub fn log_state(&self) -> Option<LogState> {
        let mut log = self.path.clone().into_os_string();
        log.push("-wal");
        let m = std::fs::metadata(log).ok()?;
        Some(LogState {
            len: m.len(),
            modified: m.modified().ok(),
        })
    }

    /// One passive checkpoint, on a connection opened for it (so it follows the file when the
    /// index is reset in place): as much of the log as no reader still needs goes into the
    /// database. Never creates the file.
    pub fn run(&self) -> Result<Checkpointed, IndexError> {
        let p = self.path.as_path();
        let _file = self.file.lock_anyway();
        let conn = Connection::open_with_flags(
            p,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db(p, "open for a checkpoint"))?;
        let (_busy, log_frames, checkpointed): (i64, i64, i64) = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(db(p, "checkpoint the log"))?;
        // Not the last connection (the index's stays open), so closing it leaves the log.
        drop(conn);
        Ok(Checkpointed {
            log_frames,
            checkpointed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::testing::{batch, runner_run};

    fn file_len(p: &std::path::Path) -> u64 {
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    }

    /// Writes 300 runs into `ix`: well past the 1,000 pages of log at which its connection
    /// would checkpoint. Asserts that the database file did not grow (it did not checkpoint).
    fn fill(ix: &mut Index) {
        let empty = file_len(ix.path());
        for r in 0..300 {
            ix.apply(&batch(&format!("r{r}"), 0, runner_run())).unwrap();
        }
        assert_eq!(
            file_len(ix.path()),
            empty,
            "the index's connection checkpointed"
        );
    }

    #[test]
    fn deferred_checkpoints_are_made_by_their_own_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::index::path(dir.path());
        let mut ix = Index::open(&path).unwrap();
        let wal = ix.defer_checkpoints().unwrap();
        let empty = file_len(&path);
        fill(&mut ix);
        let written = wal.log_state().unwrap();
        let done = wal.run().unwrap();
        assert!(done.log_frames > 0, "{done:?}");
        assert_eq!(done.checkpointed, done.log_frames, "{done:?}");
        assert!(file_len(&path) > empty);
        assert_eq!(ix.count_runs().unwrap(), 300);
        // Nothing written since: the log is as it was. A write changes it: written again from
        // its start, at the same size, it has a later time (file times may be as coarse as a
        // few milliseconds).
        assert_eq!(wal.log_state(), Some(written));
        std::thread::sleep(std::time::Duration::from_millis(50));
        ix.apply(&batch("more", 0, runner_run())).unwrap();
        assert_ne!(wal.log_state(), Some(written));
    }

    #[test]
    fn a_checkpoint_a_reader_holds_back_is_partial_and_the_next_completes() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::index::path(dir.path());
        let mut ix = Index::open(&path).unwrap();
        let wal = ix.defer_checkpoints().unwrap();
        ix.apply(&batch("before", 0, runner_run())).unwrap();
        // A reader (a page's query) that began before the next writes.
        let mut reader = Connection::open(&path).unwrap();
        let read = reader.transaction().unwrap();
        let runs: i64 = read
            .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(runs, 1);
        fill(&mut ix);
        let held = wal.run().unwrap();
        assert!(!held.complete(), "{held:?}");
        assert!(held.checkpointed < held.log_frames, "{held:?}");
        // Nothing written since; the reader is done.
        read.commit().unwrap();
        let done = wal.run().unwrap();
        assert!(done.complete(), "{done:?}");
        assert_eq!(done.log_frames, held.log_frames);
    }

    #[test]
    fn a_reset_index_keeps_its_checkpoints_deferred_and_a_missing_file_is_not_made() {
        let dir = tempfile::tempdir().unwrap();
        let mut ix = Index::open(&crate::index::path(dir.path())).unwrap();
        let wal = ix.defer_checkpoints().unwrap();
        ix.reset_in_place().unwrap();
        fill(&mut ix);
        assert!(wal.run().unwrap().checkpointed > 0);

        let gone = WalCheckpoints {
            path: dir.path().join("none.db"),
            file: Arc::default(),
        };
        assert!(gone.run().is_err());
        assert!(!dir.path().join("none.db").exists());
    }
}
