//! Tailing the events folder (to be written): see the module plan in lib.rs.

use crate::event::{Published, RunId};
use std::sync::Arc;

/// Where the tailer is in one run file; persisted (in the index) so a restart resumes exactly
/// after the last complete line that was handed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub run_id: RunId,
    /// Identifies the file, so a replaced file is noticed: (device, inode) on Unix,
    /// (volume serial, file index) on Windows; (0, 0) where unknown.
    pub dev: u64,
    pub ino: u64,
    /// Byte offset just past the last complete line consumed.
    pub offset: u64,
    /// Number of complete lines consumed (good or bad): the next line's `seq`.
    pub lines: u64,
    /// The run's terminal event has been read; the file is not expected to grow.
    pub finished: bool,
}

/// What the tailer hands on after reading a file: the new events, in `seq` order, and where it
/// got to. Applied to the index (with the checkpoint, in one transaction) before the events are
/// published on the bus.
#[derive(Debug, Clone)]
pub struct Batch {
    pub checkpoint: Checkpoint,
    pub events: Vec<Arc<Published>>,
    /// Lines skipped as malformed or over the size cap in this read.
    pub malformed: u64,
}
