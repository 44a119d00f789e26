//! The index rebuilt from the run files: all of it ([`rebuild`]: `pipewatch reindex`, and
//! `serve` when its index is missing, stale or from another version), or one run
//! ([`Index::resync_run`]: the dashboard catching up after failed commits).
//!
//! # Invariants
//!
//! - Files are found with [`crate::journal::files::list`] and read with [`Replay`], the
//!   tailer's own reader with the dashboard's line cap: a rebuilt index holds exactly what live
//!   tailing would have put there — the same events with the same `seq`, the same lines
//!   skipped as malformed or too long, the same checkpoints.
//! - One transaction: until it commits, the index answers from its old content. A file that
//!   cannot be read is logged, counted ([`RebuildStats::unreadable`]) and skipped; a folder
//!   that cannot be listed fails the rebuild ([`IndexError::ReadDir`]) rather than dropping runs.
//! - Memory stays bounded: a file is read in the reader's batches and applied every
//!   [`REBUILD_CHUNK`] events.

use std::path::Path;
use std::sync::Arc;

use rusqlite::Transaction;

use super::write::ingest;
use super::{Index, IndexError, db};
use crate::event::{Published, RunId};
use crate::journal::files;
use crate::tail::{Checkpoint, Replay, TailError};

/// Events kept in memory at once while rebuilding from one file.
const REBUILD_CHUNK: usize = 4096;

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

/// Clears the index and ingests every run file of `events_dir`, as the tailer would from
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
    // A migration's pending rebuild (`schema.rs`) is this one.
    tx.execute_batch(&format!(
        "DELETE FROM stages; DELETE FROM runs; DROP TABLE IF EXISTS {};",
        super::schema::REBUILD_PENDING
    ))
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

impl Index {
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
            // History read again makes no alerts: only the live path does (`outbox.rs`).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::index::testing::{batch, ev, id, runner_run, stage};
    use serde_json::json;

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

        let mut ix = Index::open(&crate::index::path(dir.path())).unwrap();
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
            live.list_runs(10, None, &crate::index::RunFilter::default())
                .unwrap(),
            rebuilt
                .list_runs(10, None, &crate::index::RunFilter::default())
                .unwrap()
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
