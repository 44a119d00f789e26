//! The one reader of run files: [`read_file`] turns the complete lines added to a run file
//! since a [`Checkpoint`] into one bounded [`FileRead`] ([`read_open`] does the same from a
//! file already open).
//!
//! Every reader of run files goes through here: the tailer ([`super::Tailer`]), the replays of
//! the API, streams and terminal commands ([`super::Replay`]), and the index rebuild
//! (`index::rebuild`, `pipewatch reindex`). So a line is an event, or is skipped, in the same
//! way wherever it is read — the same line cap, the same parser, the same `seq`.
//!
//! It holds no state between calls: what it must remember is in the checkpoint (persisted by
//! the index) plus one optional hint ([`FileRead::partial`]). The invariants and the policy on
//! truncated or replaced files are in the [module doc](super).
//!
//! A read goes in named steps: [`start_of`] works out where to begin from the checkpoint and
//! what the file is now; a [`Lines`] scanner consumes the file chunk by chunk, each complete
//! line handed on ([`parse_line`]) or counted as malformed; [`Lines::finish`] says where the
//! read got to.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::event::{Event, Parsed, Published, RunId};
use crate::journal::files::file_identity;

/// Lines longer than this are skipped (and counted as malformed). `serve`, `reindex` and
/// every reader use this limit: no configuration key changes it. Tests pass smaller ones
/// through [`ReadLimits`] (and the tailer's `TailConfig::max_line_bytes`).
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;
/// A read stops after about this many bytes of new lines (one batch).
pub const DEFAULT_MAX_BATCH_BYTES: usize = 256 * 1024;
/// Size of each `read` from a file.
pub const DEFAULT_CHUNK_BYTES: usize = 64 * 1024;
/// A read's chunk is what the file holds past where it begins, plus this, up to its
/// [`ReadLimits::chunk_bytes`].
const MIN_CHUNK_BYTES: usize = 4 * 1024;

/// The offset of a checkpoint whose file was truncated below its floor: larger than any file,
/// so the next read sees a "shrunk" file and rescans it from the start. Stored in SQLite as a
/// signed integer, hence `i64::MAX`.
pub const RESCAN_OFFSET: u64 = i64::MAX as u64;

/// Where the tailer is in one run file; persisted (in the index) so a restart resumes exactly
/// after the last complete line that was handed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub run_id: RunId,
    /// Identifies the file, so a replaced file is noticed
    /// ([`file_identity`]): (device, inode) on Unix;
    /// (0, 0) where unknown.
    pub dev: u64,
    pub ino: u64,
    /// Byte offset just past the last complete line consumed.
    pub offset: u64,
    /// Number of complete lines consumed (good or bad): the next line's `seq`.
    pub lines: u64,
    /// The run's terminal event has been read; the file is not expected to grow.
    pub finished: bool,
}

impl Checkpoint {
    /// The start of a file never read: nothing consumed.
    pub fn start(run_id: RunId, dev: u64, ino: u64) -> Checkpoint {
        Checkpoint {
            run_id,
            dev,
            ino,
            offset: 0,
            lines: 0,
            finished: false,
        }
    }

    fn identity(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
}

/// What the tailer hands on after reading a file: the new events, in `seq` order, and where it
/// got to. Applied to the index (with the checkpoint, in one transaction) before the events are
/// published on the bus.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Where the read began: reading again from here gives the same events (the all-runs
    /// stream's catch-up does, `index::feed`).
    pub from: Checkpoint,
    pub checkpoint: Checkpoint,
    pub events: Vec<Arc<Published>>,
    /// Lines skipped as malformed or over the size cap in this read.
    pub malformed: u64,
    /// The all-runs cursor of its first event when its source fixes cursors (with
    /// `[cluster]`, the event's JetStream stream sequence, the same on every dashboard; the
    /// batch's events then have consecutive ones); `None`: the next of the dashboard's own.
    pub cursor: Option<u64>,
    /// Its events were handed to their runs' followers as they were read (by the tail
    /// thread's [`OnRead`](super::OnRead)): the consumer does not hand them on again.
    pub followed: bool,
}

/// Bounds of one [`read_file`] call.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Longer lines (without their `\n`) are skipped without being held in memory.
    pub max_line_bytes: usize,
    /// The read stops after the first complete line that takes it to this many bytes of new
    /// lines; the rest is left for the next call ([`FileRead::more`]).
    pub max_batch_bytes: usize,
    /// Size of each `read` from the file.
    pub chunk_bytes: usize,
}

impl ReadLimits {
    pub fn new(max_line_bytes: usize) -> ReadLimits {
        ReadLimits {
            max_line_bytes,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        }
    }
}

impl Default for ReadLimits {
    /// The limits of the dashboard's tailer: lines up to [`DEFAULT_MAX_LINE_BYTES`].
    fn default() -> ReadLimits {
        ReadLimits::new(DEFAULT_MAX_LINE_BYTES)
    }
}

/// The result of one [`read_file`] call.
#[derive(Debug)]
pub struct FileRead {
    /// The events read, the malformed count and the checkpoint to resume from.
    pub batch: Batch,
    /// Whether the batch says anything new (events, malformed lines or a moved checkpoint);
    /// a read that found nothing need not be handed on.
    pub changed: bool,
    /// The read stopped at its byte budget: call again for the rest.
    pub more: bool,
    /// Bytes after the checkpoint's offset known to hold no `\n` (an incomplete line). Passed
    /// back to the next call, it lets an over-long incomplete line be skipped without being
    /// scanned again.
    pub partial: u64,
    /// The identity of the file read and how far into it the read got.
    pub dev: u64,
    pub ino: u64,
    pub end: u64,
}

/// A run file that could not be read. Not fatal to the tailer: it is logged and retried.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("cannot read run file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Reads the complete lines added to `path` since `from` (the whole file if `None`).
///
/// `partial_hint` is the [`FileRead::partial`] of the previous call for the same checkpoint,
/// or 0 when unknown (after a restart). See the module doc for the invariants and the policy
/// on truncated or replaced files.
pub fn read_file(
    path: &Path,
    run_id: &RunId,
    from: Option<&Checkpoint>,
    partial_hint: u64,
    limits: ReadLimits,
) -> Result<FileRead, TailError> {
    let mut file = open_run_file(path)?;
    read_open(&mut file, path, run_id, from, partial_hint, limits)
}

/// Opens a run file for [`read_open`].
pub fn open_run_file(path: &Path) -> Result<File, TailError> {
    // Not `File::open`: a FIFO named like a run file would block here for ever, and a link
    // would take the read outside the events folder.
    crate::fsx::open_read(path).map_err(|source| TailError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// [`read_file`] from `file`, opened from `path` (by [`read_file`], or by the tailer, which
/// keeps a growing run's file open from one read to the next). Where the file is now is taken
/// from the file itself, not from the path.
pub fn read_open(
    file: &mut File,
    path: &Path,
    run_id: &RunId,
    from: Option<&Checkpoint>,
    partial_hint: u64,
    limits: ReadLimits,
) -> Result<FileRead, TailError> {
    let io_err = |source| TailError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = file.metadata().map_err(io_err)?;
    let identity = file_identity(&meta);
    let len = meta.len();

    let given = match from {
        Some(c) => c.clone(),
        None => Checkpoint::start(run_id.clone(), identity.0, identity.1),
    };
    let start = start_of(&given, identity, len, partial_hint, limits.max_line_bytes);
    if start.replaced {
        tracing::warn!(
            file = %path.display(),
            old_offset = given.offset,
            new_len = len,
            "run file was truncated or replaced: re-reading it; lines already handed on are \
             not handed on again"
        );
    }
    file.seek(SeekFrom::Start(start.seek)).map_err(io_err)?;

    let mut lines = Lines::new(path, run_id, limits, &given, identity, &start);
    let more = lines
        .read_from(file, len.saturating_sub(start.seek))
        .map_err(io_err)?;
    Ok(lines.finish(&given, more))
}

/// Where a read begins.
struct Start {
    /// The file is not the one the checkpoint was taken of: another identity, or shorter than
    /// the checkpoint's offset. It is read again from byte 0.
    replaced: bool,
    /// The index of the first line read, and the byte it starts at.
    line_no: u64,
    line_start: u64,
    /// Where to seek: `line_start`, or further into an incomplete line already known to be
    /// over the cap (so it is not scanned again from its start).
    seek: u64,
    /// The line at `line_start` is over the cap and is being skipped.
    oversize: bool,
}

/// Works out where to begin from the checkpoint `given` and what the file is now.
fn start_of(
    given: &Checkpoint,
    identity: (u64, u64),
    len: u64,
    partial_hint: u64,
    max_line_bytes: usize,
) -> Start {
    let replaced = given.identity() != identity || len < given.offset;
    let (line_no, line_start) = if replaced {
        (0, 0)
    } else {
        (given.lines, given.offset)
    };
    let oversize = !replaced
        && partial_hint > max_line_bytes as u64
        && len >= line_start.saturating_add(partial_hint);
    Start {
        replaced,
        line_no,
        line_start,
        seek: if oversize {
            line_start + partial_hint
        } else {
            line_start
        },
        oversize,
    }
}

/// The scan of one read: consumes bytes, cuts them into lines, hands on or counts each
/// complete line, and moves the checkpoint past it.
struct Lines<'a> {
    path: &'a Path,
    run_id: &'a RunId,
    limits: ReadLimits,
    /// Lines below this index were consumed already (from this file, or from the one it
    /// replaced): they are only counted, never handed on again.
    floor: u64,
    identity: (u64, u64),
    /// The index of the current line, the byte it starts at, and the next byte to consume.
    line_no: u64,
    line_start: u64,
    cur: u64,
    /// The current line is over the cap: it is scanned to its `\n` but not kept.
    oversize: bool,
    /// The current line's bytes so far (never more than the cap).
    line: Vec<u8>,
    events: Vec<Arc<Published>>,
    malformed: u64,
    /// Bytes of lines consumed at or above the floor, against the batch budget.
    budget_used: usize,
    /// The checkpoint to resume from.
    out: Checkpoint,
}

impl<'a> Lines<'a> {
    fn new(
        path: &'a Path,
        run_id: &'a RunId,
        limits: ReadLimits,
        given: &Checkpoint,
        identity: (u64, u64),
        start: &Start,
    ) -> Lines<'a> {
        let mut lines = Lines {
            path,
            run_id,
            limits,
            floor: given.lines,
            identity,
            line_no: start.line_no,
            line_start: start.line_start,
            cur: start.seek,
            oversize: start.oversize,
            line: Vec::new(),
            events: Vec::new(),
            malformed: 0,
            budget_used: 0,
            out: given.clone(),
        };
        if lines.following() {
            lines.follow();
        }
        lines
    }

    /// Whether the current line is past what was consumed before (so it is new).
    fn following(&self) -> bool {
        self.line_no >= self.floor
    }

    /// Moves the checkpoint to the current line of this file.
    fn follow(&mut self) {
        (self.out.dev, self.out.ino) = self.identity;
        self.out.offset = self.line_start;
        self.out.lines = self.line_no;
    }

    /// Reads the file chunk by chunk to its end or to the batch budget; `true` when it stopped
    /// at the budget (there is more to read). `ahead` is what the file held past where the
    /// read begins when it started.
    fn read_from(&mut self, file: &mut File, ahead: u64) -> io::Result<bool> {
        // The chunk is no larger than what there is to read (and a little more, in case the
        // file grew): a running run's read is often one line of a few hundred bytes, and each
        // read zeroed a 64 KiB buffer for it.
        let size = usize::try_from(ahead.saturating_add(MIN_CHUNK_BYTES as u64))
            .unwrap_or(usize::MAX)
            .min(self.limits.chunk_bytes)
            .max(1);
        let mut buf = vec![0u8; size];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => return Ok(false),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if self.take_chunk(&buf[..n]) {
                return Ok(true);
            }
        }
    }

    /// Consumes one chunk; `true` when the batch budget was reached (the rest of the chunk is
    /// left for the next read).
    fn take_chunk(&mut self, mut chunk: &[u8]) -> bool {
        while !chunk.is_empty() {
            let (piece, complete) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (&chunk[..i], true),
                None => (chunk, false),
            };
            self.take_piece(piece);
            let used = piece.len() + usize::from(complete);
            self.cur += used as u64;
            chunk = &chunk[used..];
            if !complete {
                return false;
            }
            if self.end_line() {
                return true;
            }
        }
        false
    }

    /// Keeps part of the current line. Below the floor lines are only counted; over the cap
    /// they are only scanned.
    fn take_piece(&mut self, piece: &[u8]) {
        if self.following() && !self.oversize {
            if self.line.len() + piece.len() > self.limits.max_line_bytes {
                self.oversize = true;
                self.line = Vec::new();
            } else {
                self.line.extend_from_slice(piece);
            }
        }
    }

    /// The current line has been read to its `\n`: hands it on (or counts it as malformed)
    /// and moves past it. `true` when the batch budget is reached.
    fn end_line(&mut self) -> bool {
        if self.following() {
            if self.oversize {
                self.skip_long_line();
            } else {
                self.take_line();
            }
            self.budget_used += (self.cur - self.line_start) as usize;
        }
        self.line.clear();
        self.oversize = false;
        self.line_no += 1;
        self.line_start = self.cur;
        if !self.following() {
            return false;
        }
        self.follow();
        self.budget_used >= self.limits.max_batch_bytes
    }

    fn skip_long_line(&mut self) {
        self.malformed += 1;
        tracing::warn!(
            file = %self.path.display(),
            line = self.line_no + 1,
            bytes = self.cur - self.line_start - 1,
            max_line_bytes = self.limits.max_line_bytes,
            "skipped a line longer than the cap"
        );
    }

    fn take_line(&mut self) {
        match read_line(&self.line) {
            Ok((parsed, text)) => {
                if parsed.event.is_run_terminal() {
                    self.out.finished = true;
                }
                self.events.push(Arc::new(Published::from_line(
                    self.run_id.clone(),
                    self.line_no,
                    parsed,
                    text,
                )));
            }
            Err(why) => {
                self.malformed += 1;
                tracing::warn!(
                    file = %self.path.display(),
                    line = self.line_no + 1,
                    "skipped a line that is not an event: {why}"
                );
            }
        }
    }

    /// Where the read got to.
    fn finish(mut self, given: &Checkpoint, more: bool) -> FileRead {
        let following = self.following();
        if !following {
            // Truncated below what was handed on: keep the floor, and mark the checkpoint so
            // that every read rescans the file from its start until it has grown past the
            // floor (a file regrown under the same identity would otherwise be resumed
            // mid-line).
            self.out.offset = RESCAN_OFFSET;
        }
        let partial = if more || !following {
            0
        } else {
            self.cur - self.line_start
        };
        let changed = !self.events.is_empty() || self.malformed > 0 || self.out != *given;
        FileRead {
            batch: Batch {
                from: given.clone(),
                checkpoint: self.out,
                events: self.events,
                malformed: self.malformed,
                cursor: None,
                followed: false,
            },
            changed,
            more,
            partial,
            dev: self.identity.0,
            ino: self.identity.1,
            end: self.cur,
        }
    }
}

/// One line as an event, or why it is not one: the parser of every reader of run files, and
/// of the events `serve` takes from JetStream (`server::cluster`).
pub fn parse_line(line: &[u8]) -> Result<Event, String> {
    read_line(line).map(|(parsed, _)| parsed.event)
}

/// The same, with the line as text and whether it said exactly the event
/// ([`Published::from_line`] publishes such a line as it is).
pub fn read_line(line: &[u8]) -> Result<(Parsed, &str), String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err("empty line".to_string());
    }
    let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
    let parsed = serde_json::from_str::<Parsed>(text).map_err(|e| e.to_string())?;
    Ok((parsed, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tail::testing::{append, good, msgs, read_all, replace, rid, terminal};
    use proptest::prelude::*;
    use std::fs;

    #[test]
    fn original_format_lines_get_seq_and_run_id_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::journal::files::path(dir.path(), &rid("r"));
        append(&path, (good("a") + &good("b")).as_bytes());
        let r = read_file(&path, &rid("r"), None, 0, ReadLimits::new(1024)).unwrap();
        assert!(r.changed && !r.more);
        let seqs: Vec<u64> = r.batch.events.iter().map(|p| p.seq).collect();
        assert_eq!(seqs, [0, 1]);
        let json: serde_json::Value = serde_json::from_str(&r.batch.events[1].json).unwrap();
        assert_eq!(json["seq"], 1);
        assert_eq!(json["run_id"], "r");
        assert_eq!(r.batch.checkpoint.lines, 2);
        assert_eq!(
            r.batch.checkpoint.offset,
            fs::metadata(&path).unwrap().len()
        );
        assert!(!r.batch.checkpoint.finished);
    }

    #[test]
    fn what_the_file_holds_past_its_size_when_the_read_began_is_read_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::journal::files::path(dir.path(), &rid("r"));
        let text: String = (0..200).map(|i| good(&format!("line {i}"))).collect();
        assert!(text.len() > 3 * MIN_CHUNK_BYTES);
        append(&path, text.as_bytes());
        // As if the file had been empty when the read began and grew before it was read: the
        // chunk is sized for nothing, and the lines are read all the same, chunk by chunk.
        let mut file = open_run_file(&path).unwrap();
        let identity = file_identity(&file.metadata().unwrap());
        let given = Checkpoint::start(rid("r"), identity.0, identity.1);
        let limits = ReadLimits::new(1024);
        let start = start_of(&given, identity, 0, 0, limits.max_line_bytes);
        let id = rid("r");
        let mut lines = Lines::new(&path, &id, limits, &given, identity, &start);
        let more = lines.read_from(&mut file, 0).unwrap();
        let r = lines.finish(&given, more);
        assert!(!r.more);
        assert_eq!(r.batch.events.len(), 200);
        let last = &r.batch.events[199];
        assert_eq!((last.seq, last.event.msg.as_str()), (199, "line 199"));
        assert_eq!(r.batch.checkpoint.offset, text.len() as u64);
    }

    #[test]
    fn half_written_line_is_not_read_until_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::journal::files::path(dir.path(), &rid("r"));
        let line = good("whole");
        let (first, rest) = line.split_at(20);
        append(&path, first.as_bytes());
        let (mut cp, mut hint) = (None, 0);
        let (events, malformed) = read_all(&path, &mut cp, &mut hint, ReadLimits::new(1024));
        assert!(events.is_empty());
        assert_eq!(malformed, 0);
        assert_eq!(cp.as_ref().unwrap().offset, 0);
        assert_eq!(hint, 20);

        append(&path, rest.as_bytes());
        let (events, _) = read_all(&path, &mut cp, &mut hint, ReadLimits::new(1024));
        assert_eq!(msgs(&events), [(0, "whole")]);
        assert_eq!(cp.unwrap().offset, line.len() as u64);
    }

    #[test]
    fn bad_lines_are_counted_and_keep_their_seq() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::journal::files::path(dir.path(), &rid("r"));
        let mut text =
            (good("a") + "not json\n" + "\n" + r#"{"run_id":"r","stage":"s"}"# + "\n" + &good("b"))
                .into_bytes();
        // Not UTF-8.
        text.extend_from_slice(b"{\"msg\":\"\xff\"}\n");
        text.extend_from_slice(terminal().as_bytes());
        append(&path, &text);
        let (mut cp, mut hint) = (None, 0);
        let (events, malformed) = read_all(&path, &mut cp, &mut hint, ReadLimits::new(1024));
        assert_eq!(msgs(&events), [(0, "a"), (4, "b"), (6, "done")]);
        assert_eq!(malformed, 4);
        let cp = cp.unwrap();
        assert_eq!(cp.lines, 7);
        assert!(cp.finished);
    }

    #[test]
    fn line_over_the_cap_is_skipped_and_tailing_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::journal::files::path(dir.path(), &rid("r"));
        let limits = ReadLimits {
            max_line_bytes: 200,
            max_batch_bytes: 1 << 20,
            chunk_bytes: 64,
        };
        append(&path, good("a").as_bytes());
        // The long line arrives in pieces; while incomplete it is neither emitted nor counted.
        let (mut cp, mut hint) = (None, 0);
        append(&path, &[b'x'; 300]);
        let (events, malformed) = read_all(&path, &mut cp, &mut hint, limits);
        assert_eq!((msgs(&events), malformed), (vec![(0, "a")], 0));
        assert_eq!(hint, 300);
        append(&path, &[b'y'; 5000]);
        let (events, malformed) = read_all(&path, &mut cp, &mut hint, limits);
        assert_eq!((events.len(), malformed), (0, 0));
        assert_eq!(hint, 5300);
        append(&path, ("zzz\n".to_string() + &good("b")).as_bytes());
        let (events, malformed) = read_all(&path, &mut cp, &mut hint, limits);
        assert_eq!(msgs(&events), [(2, "b")]);
        assert_eq!(malformed, 1);
        assert_eq!(cp.as_ref().unwrap().lines, 3);

        // A whole over-long line in the middle of a file read in one go.
        let path2 = dir.path().join("pipeline_r2.jsonl");
        let text = good("a") + &"q".repeat(10_000) + "\n" + &good("b");
        append(&path2, text.as_bytes());
        let (mut cp, mut hint) = (None, 0);
        let (events, malformed) = read_all(&path2, &mut cp, &mut hint, limits);
        assert_eq!(msgs(&events), [(0, "a"), (2, "b")]);
        assert_eq!(malformed, 1);
    }

    #[test]
    fn big_file_is_read_in_bounded_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::journal::files::path(dir.path(), &rid("r"));
        let text: String = (0..1000).map(|i| good(&i.to_string())).collect();
        append(&path, text.as_bytes());
        let limits = ReadLimits {
            max_line_bytes: 1024,
            max_batch_bytes: 4096,
            chunk_bytes: 1000,
        };
        let mut cp: Option<Checkpoint> = None;
        let mut calls = 0;
        let mut seqs = Vec::new();
        loop {
            let r = read_file(&path, &rid("r"), cp.as_ref(), 0, limits).unwrap();
            calls += 1;
            let bytes: usize = r.batch.events.iter().map(|_| good("000").len()).sum();
            assert!(bytes <= 4096 + 200, "batch of {bytes} bytes");
            seqs.extend(r.batch.events.iter().map(|p| p.seq));
            cp = Some(r.batch.checkpoint);
            if !r.more {
                break;
            }
        }
        assert!(calls > 10);
        assert_eq!(seqs, (0..1000).collect::<Vec<u64>>());
    }

    #[test]
    fn restart_from_a_checkpoint_does_not_hand_lines_on_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::journal::files::path(dir.path(), &rid("r"));
        append(&path, (good("a") + &good("b") + "{\"par").as_bytes());
        let (mut cp, mut hint) = (None, 0);
        let (events, _) = read_all(&path, &mut cp, &mut hint, ReadLimits::new(1024));
        assert_eq!(events.len(), 2);
        // A restart: only the persisted checkpoint survives.
        let persisted = cp.clone();
        append(&path, b"tial\n");
        append(&path, good("c").as_bytes());
        let (mut cp, mut hint) = (persisted, 0);
        let (events, malformed) = read_all(&path, &mut cp, &mut hint, ReadLimits::new(1024));
        assert_eq!(msgs(&events), [(3, "c")]);
        assert_eq!(malformed, 1);
        // Nothing new: nothing to say.
        let r = read_file(&path, &rid("r"), cp.as_ref(), 0, ReadLimits::new(1024)).unwrap();
        assert!(!r.changed && r.batch.events.is_empty());
    }

    #[test]
    fn truncated_file_is_reread_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::journal::files::path(dir.path(), &rid("r"));
        append(&path, (good("a") + &good("b") + &good("c")).as_bytes());
        let (mut cp, mut hint) = (None, 0);
        read_all(&path, &mut cp, &mut hint, ReadLimits::new(1024));
        let old = cp.clone().unwrap();

        // Cut back to one line: nothing to hand on, the checkpoint holds on to its floor.
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(good("a").len() as u64)
            .unwrap();
        let (events, _) = read_all(&path, &mut cp, &mut hint, ReadLimits::new(1024));
        assert!(events.is_empty());
        let held = cp.clone().unwrap();
        assert_eq!((held.lines, held.offset), (old.lines, RESCAN_OFFSET));

        // Regrown by a partial line and past the old offset under the same identity: still
        // nothing new below the floor, and no line read from the middle.
        append(&path, (good("B") + "{\"half").as_bytes());
        let (events, malformed) = read_all(&path, &mut cp, &mut hint, ReadLimits::new(1024));
        assert!(events.is_empty() && malformed == 0, "{events:?}");
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len((good("a") + &good("B")).len() as u64)
            .unwrap();

        // Regrown past the old line count: only the lines past it are new.
        append(&path, (good("C") + &good("d")).as_bytes());
        let (events, _) = read_all(&path, &mut cp, &mut hint, ReadLimits::new(1024));
        assert_eq!(msgs(&events), [(3, "d")]);
        assert_eq!(cp.unwrap().lines, 4);
    }

    #[test]
    fn replaced_file_is_reread_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::journal::files::path(dir.path(), &rid("r"));
        append(&path, (good("a") + &good("b")).as_bytes());
        let (mut cp, mut hint) = (None, 0);
        read_all(&path, &mut cp, &mut hint, ReadLimits::new(1024));
        let old = cp.clone().unwrap();

        // Same size or bigger, another inode: re-read from 0, dedup by line index.
        replace(&path, (good("a") + &good("b") + &good("c")).as_bytes());
        let (events, _) = read_all(&path, &mut cp, &mut hint, ReadLimits::new(1024));
        assert_eq!(msgs(&events), [(2, "c")]);
        let new = cp.clone().unwrap();
        assert_eq!(new.lines, 3);
        if cfg!(unix) {
            assert_ne!((new.dev, new.ino), (old.dev, old.ino));
        }
        // And then it is followed as usual.
        append(&path, good("d").as_bytes());
        let (events, _) = read_all(&path, &mut cp, &mut hint, ReadLimits::new(1024));
        assert_eq!(msgs(&events), [(3, "d")]);
    }

    /// One step of the model-based test.
    #[derive(Debug, Clone)]
    enum Op {
        /// Append the next n bytes of the stream (cut anywhere, mid-line included).
        Append(usize),
        /// Read until the reader has nothing more.
        Read,
        /// One read call only, as if the process died before the next.
        ReadOnce,
        /// Drop what is only in memory (the hint); resume from the last checkpoint.
        Restart,
        /// Cut the file (same inode) back to this fraction of its length.
        Truncate(f64),
        /// Replace the file (new inode) by this fraction of its content.
        Replace(f64),
    }

    #[derive(Debug, Clone)]
    enum Line {
        Good,
        Terminal,
        Garbage(String),
        Empty,
        Long(usize),
    }

    fn line_strategy() -> impl Strategy<Value = Line> {
        prop_oneof![
            8 => Just(Line::Good),
            1 => Just(Line::Terminal),
            1 => "[a-z{}\":]{1,30}".prop_map(Line::Garbage),
            1 => Just(Line::Empty),
            1 => (121usize..400).prop_map(Line::Long),
        ]
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0usize..250).prop_map(Op::Append),
            3 => Just(Op::Read),
            2 => Just(Op::ReadOnce),
            1 => Just(Op::Restart),
            1 => (0.0f64..1.0).prop_map(Op::Truncate),
            1 => (0.0f64..1.0).prop_map(Op::Replace),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The file is always a prefix of one stream of lines (appends continue it, truncations
        /// and replacements cut it back), so each line index names one line. Whatever the
        /// sequence, every complete line is consumed exactly once: good ones emitted with their
        /// index as `seq`, bad ones counted; never a partial line, never twice.
        #[test]
        fn reader_hands_on_every_complete_line_once(
            lines in prop::collection::vec(line_strategy(), 0..40),
            ops in prop::collection::vec(op_strategy(), 0..60),
            chunk in 1usize..100,
            batch in 1usize..400,
        ) {
            let limits = ReadLimits {
                max_line_bytes: 120,
                max_batch_bytes: batch,
                chunk_bytes: chunk,
            };
            check_model(&lines, &ops, limits)?;
        }
    }

    fn check_model(lines: &[Line], ops: &[Op], limits: ReadLimits) -> Result<(), TestCaseError> {
        let mut stream = Vec::new();
        let mut expected_good = Vec::new();
        let mut bad = 0u64;
        let mut has_terminal = false;
        for (i, l) in lines.iter().enumerate() {
            let text = match l {
                Line::Good => {
                    expected_good.push(i as u64);
                    good(&format!("m{i}"))
                }
                Line::Terminal => {
                    expected_good.push(i as u64);
                    has_terminal = true;
                    terminal()
                }
                Line::Garbage(g) => {
                    bad += 1;
                    format!("{g}\n")
                }
                Line::Empty => {
                    bad += 1;
                    "\n".to_string()
                }
                Line::Long(n) => {
                    bad += 1;
                    format!("{}\n", "x".repeat(*n))
                }
            };
            stream.extend_from_slice(text.as_bytes());
        }
        // A line still being written at the end: never read.
        stream.extend_from_slice(br#"{"run_id":"r","stage":"s","#);

        let dir = tempfile::tempdir().unwrap();
        let path = crate::journal::files::path(dir.path(), &rid("r"));
        fs::write(&path, b"").unwrap();
        let mut len = 0usize;
        let mut cp: Option<Checkpoint> = None;
        let mut hint = 0u64;
        let mut emitted: Vec<(u64, String)> = Vec::new();
        let mut malformed = 0u64;

        let read_once = |cp: &mut Option<Checkpoint>,
                         hint: &mut u64,
                         emitted: &mut Vec<(u64, String)>,
                         malformed: &mut u64|
         -> bool {
            let r = read_file(&path, &rid("r"), cp.as_ref(), *hint, limits).unwrap();
            *hint = r.partial;
            emitted.extend(r.batch.events.iter().map(|p| (p.seq, p.event.msg.clone())));
            *malformed += r.batch.malformed;
            *cp = Some(r.batch.checkpoint);
            r.more
        };

        let final_ops = [Op::Append(usize::MAX), Op::Read];
        for op in ops.iter().chain(final_ops.iter()) {
            match *op {
                Op::Append(n) => {
                    let end = len.saturating_add(n).min(stream.len());
                    append(&path, &stream[len..end]);
                    len = end;
                }
                Op::Read => while read_once(&mut cp, &mut hint, &mut emitted, &mut malformed) {},
                Op::ReadOnce => {
                    read_once(&mut cp, &mut hint, &mut emitted, &mut malformed);
                }
                Op::Restart => hint = 0,
                Op::Truncate(f) => {
                    len = (len as f64 * f) as usize;
                    fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .unwrap()
                        .set_len(len as u64)
                        .unwrap();
                }
                Op::Replace(f) => {
                    len = (len as f64 * f) as usize;
                    replace(&path, &stream[..len]);
                }
            }
        }

        let seqs: Vec<u64> = emitted.iter().map(|(s, _)| *s).collect();
        prop_assert_eq!(
            &seqs,
            &expected_good,
            "emitted exactly the good lines, once, in order"
        );
        for (seq, msg) in &emitted {
            let want = match lines[*seq as usize] {
                Line::Terminal => "done".to_string(),
                _ => format!("m{seq}"),
            };
            prop_assert_eq!(msg, &want);
        }
        prop_assert_eq!(malformed, bad);
        let cp = cp.unwrap();
        prop_assert_eq!(cp.lines, lines.len() as u64);
        prop_assert_eq!(
            cp.offset,
            (stream.len() - br#"{"run_id":"r","stage":"s","#.len()) as u64
        );
        prop_assert_eq!(cp.finished, has_terminal);
        Ok(())
    }
}
