//! [`Replay`]: a run file read from its start in bounded batches, through [`read_file`] with
//! the dashboard's line cap. The one loop over the reader for everything but the tailer: the
//! API's replays and streams (`server`), `pipewatch runs`/`tail` (`index::history`,
//! `cli::tail`), and the index rebuild (`index::rebuild`, `pipewatch reindex`).
//!
//! Invariant: a replay sees exactly the events the tailer hands on for the same file — same
//! reader, same [`ReadLimits`] (lines over [`DEFAULT_MAX_LINE_BYTES`] skipped and counted),
//! same `seq`.

use std::path::PathBuf;
use std::sync::Arc;

#[cfg(doc)]
use super::read::DEFAULT_MAX_LINE_BYTES;
use super::read::{Batch, Checkpoint, ReadLimits, TailError, read_file};
use crate::event::{Published, RunId};

/// Reads one run file in bounded batches from its start, remembering where it got to: the one
/// loop over [`read_file`] that readers other than the tailer use (API replays, streams,
/// `pipewatch runs` and `tail`). Call [`Replay::resume`] to pick up lines appended since.
#[derive(Debug, Clone)]
pub struct Replay {
    path: PathBuf,
    run_id: RunId,
    checkpoint: Option<Checkpoint>,
    /// Only events with a greater `seq` are returned by [`Replay::next_batch`].
    after: Option<u64>,
    done: bool,
}

impl Replay {
    pub fn new(path: PathBuf, run_id: RunId, after: Option<u64>) -> Replay {
        Replay {
            path,
            run_id,
            checkpoint: None,
            after,
            done: false,
        }
    }

    /// A replay from `from`, a checkpoint of this file (where an earlier read began): the
    /// lines after it, as they were read then.
    pub fn at(path: PathBuf, run_id: RunId, from: Checkpoint) -> Replay {
        Replay {
            path,
            run_id,
            checkpoint: Some(from),
            after: None,
            done: false,
        }
    }

    /// The next batch as read (events, malformed count, checkpoint), `Ok(None)` at the
    /// current end of the file, an error if the file cannot be read (`NotFound` if it does
    /// not exist yet).
    pub fn next_read(&mut self) -> Result<Option<Batch>, TailError> {
        if self.done {
            return Ok(None);
        }
        let read = read_file(
            &self.path,
            &self.run_id,
            self.checkpoint.as_ref(),
            0,
            ReadLimits::default(),
        )?;
        self.done = !read.more;
        self.checkpoint = Some(read.batch.checkpoint.clone());
        Ok(Some(read.batch))
    }

    /// The next events with `seq > after`, `Ok(None)` at the current end of the file.
    pub fn next_batch(&mut self) -> Result<Option<Vec<Arc<Published>>>, TailError> {
        while let Some(batch) = self.next_read()? {
            let after = self.after;
            let events: Vec<Arc<Published>> = batch
                .events
                .into_iter()
                .filter(|e| after.is_none_or(|a| e.seq > a))
                .collect();
            if !events.is_empty() {
                return Ok(Some(events));
            }
        }
        Ok(None)
    }

    /// Whether the part read so far holds the run's final event.
    pub fn finished(&self) -> bool {
        self.checkpoint.as_ref().is_some_and(|c| c.finished)
    }

    /// Goes on from where the last read stopped (to pick up lines appended since), returning
    /// only events after `after`.
    pub fn resume(&mut self, after: Option<u64>) {
        self.after = after;
        self.done = false;
    }

    /// Goes on from `at`, a checkpoint of this file further on (the lines before it were
    /// read some other way), returning only events after `after`.
    pub fn skip_to(&mut self, at: Checkpoint, after: Option<u64>) {
        self.checkpoint = Some(at);
        self.resume(after);
    }

    /// The events of the lines between two checkpoints of this file, `from` and `to` (the
    /// places two earlier reads began), in one read.
    pub fn span(
        &self,
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<Vec<Arc<Published>>, TailError> {
        let limits = ReadLimits {
            // The read stops at the first line end at or past this: `to`'s.
            max_batch_bytes: to.offset.saturating_sub(from.offset).max(1) as usize,
            ..ReadLimits::default()
        };
        let read = read_file(&self.path, &self.run_id, Some(from), 0, limits)?;
        Ok(read.batch.events)
    }
}
