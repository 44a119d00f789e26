//! Tailing the events folder: turning the lines appended to
//! `<events_dir>/pipeline_<run_id>.jsonl` into [`Batch`]es of
//! [`Published`](crate::event::Published) events, each line handed on exactly once.
//!
//! # Layout
//!
//! - `read.rs`: [`read_file`], the pure, synchronous reader of one file and the only reader of
//!   run files in pipewatch: from a [`Checkpoint`] it reads the new bytes and returns one
//!   bounded [`FileRead`]. It holds no state between calls; what it must remember is in the
//!   checkpoint (persisted by the index) plus one optional hint.
//! - `replay.rs`: [`Replay`], a run file read from its start in bounded batches — for the API,
//!   the streams, the terminal commands and the index rebuild (`index::rebuild`), all with the
//!   dashboard's line cap ([`DEFAULT_MAX_LINE_BYTES`]), so a line skipped live is skipped by
//!   `pipewatch reindex` too.
//! - `watch.rs`: [`Tailer`] runs the reader on a dedicated thread (blocking file I/O stays off
//!   the async runtime) and feeds batches into a bounded tokio channel. The dashboard's ingest
//!   task (the index, then the bus) is the only consumer and calls [`Tailer::start`] /
//!   [`Tailer::stop`]; before handing a batch on, the thread shows it to [`OnRead`], where the
//!   dashboard gives a followed run's new events to its followers. It lists the folder through
//!   [`crate::journal::files`].
//! - `notices/`: what wakes the tail thread — the folder's watch (`inotify` read by the thread
//!   itself on Linux, the `notify` crate elsewhere), pokes and the stop.
//! - `stats.rs`: [`TailStats`], the counters health and metrics show.
//!
//! # Invariants
//!
//! - Only complete lines are read. A line still being written (no `\n` yet) is left for the
//!   next read; [`Checkpoint::offset`] is always the end of the last complete line consumed, so
//!   a restart from a persisted checkpoint never loses or splits a line.
//! - `seq` is the line's index in the file, counting every complete line, good or bad. A line
//!   that is not valid JSON, lacks a required key, is empty, or is longer than
//!   `max_line_bytes` is skipped, counted in [`Batch::malformed`] and logged with its file and
//!   line number; its `seq` stays unused. An over-long line is skipped to its `\n` without
//!   being held in memory, and the file goes on being tailed.
//! - Memory is bounded per read: the file is read in chunks of [`ReadLimits::chunk_bytes`], a
//!   read stops after [`ReadLimits::max_batch_bytes`] of new lines, and a line is buffered only
//!   up to the cap.
//!
//! # Truncated or replaced files
//!
//! A file is identified by its name (the run id) plus its (device, inode) — no content
//! fingerprints. If the identity differs from the checkpoint's, or the file is shorter than
//! the checkpoint's offset, the file was truncated or replaced (pipewatch never does this, but
//! other tools and people may). Policy: the file is re-read from byte 0, and lines whose index
//! is below the checkpoint's `lines` are counted but not handed on again — they were published
//! already, and a `seq` is published at most once. The returned checkpoint switches to the new
//! file only once the new file has reached that many lines; until then the old checkpoint is
//! kept (with its offset set to [`RESCAN_OFFSET`], so every read rescans the file from its start
//! until it has grown past the floor), and the "already published" floor survives a restart
//! without a new field.
//! A file truncated and regrown past its old offset under the same inode between two reads
//! cannot be noticed by size or identity; it is read on from the old offset.
//!
//! The identity is [`crate::journal::files::file_identity`]. On Windows the std library does
//! not expose the file index on stable Rust, so the identity is (0, 0) there and only a shrunk
//! file is noticed.
//!
//! # Scans and notifications
//!
//! One non-recursive watch on the events folder (never one per file) wakes the thread as soon
//! as a file changes: on Linux the thread waits on its `inotify` descriptor itself, elsewhere
//! the `notify` crate's watcher thread passes each notification on (on Windows the watch is on
//! the folder's parent, so that it holds no handle that would keep a deleted events folder from
//! being re-created); see `notices/`. A scan every
//! `poll_interval` catches what notifications miss. A rescan flag or a watcher error forces a full
//! scan; a watcher that cannot start leaves the tailer polling; a folder that is missing or deleted
//! is polled for and watched again when it comes back (then every file in it is checked). An
//! unchanged file (same identity, same size as last read) is not opened, and a growing one is read
//! through the descriptor kept open since its last read (on Unix, where its identity shows that the
//! path still names it; up to 64 files; closed once the run has finished or its file is gone); a
//! finished file is not even `stat`ed on ordinary scans while the watcher is up (only every
//! [`FINISHED_RECHECK_SCANS`]th scan); and while the folder's modification time is unchanged (no
//! file added or removed) and the watcher is up, a scan does not even list the folder, only the
//! files that may still grow. So thousands of finished runs cost an idle dashboard almost nothing.

mod notices;
mod read;
mod replay;
mod stats;
#[cfg(test)]
mod testing;
mod watch;

pub use read::{
    Batch, Checkpoint, DEFAULT_CHUNK_BYTES, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_LINE_BYTES,
    FileRead, RESCAN_OFFSET, ReadLimits, TailError, parse_line, read_file,
};
pub use replay::Replay;
pub use stats::{TailStats, TailStatsSnapshot};
pub use watch::{FINISHED_RECHECK_SCANS, OnRead, Spent, TailConfig, Tailer};
