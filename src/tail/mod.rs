//! Tailing the events folder: turning the lines appended to `<events_dir>/pipeline_<run_id>.jsonl`
//! into [`Batch`]es of [`Published`] events, each line handed on exactly once.
//!
//! Two layers:
//! - [`read_file`] is the pure, synchronous reader of one file: from a [`Checkpoint`] it reads
//!   the new bytes and returns one bounded [`FileRead`]. It holds no state between calls; what
//!   it must remember is in the checkpoint (persisted by the index) plus one optional hint.
//! - [`Tailer`] runs the reader on a dedicated thread (blocking file I/O stays off the async
//!   runtime) and feeds batches into a bounded tokio channel. The dashboard's ingest task (the
//!   index, then the bus) is the only consumer and calls [`Tailer::start`] / [`Tailer::stop`].
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
//! On Windows the std library does not expose the file index on stable Rust, so the identity
//! is (0, 0) there and only a shrunk file is noticed.
//!
//! # Scans and notifications
//!
//! One non-recursive `notify` watch on the events folder (never one per file) wakes the thread
//! as soon as a file changes; a scan every `poll_interval` catches what notifications miss.
//! A rescan flag or a watcher error forces a full scan; a watcher that cannot start leaves the
//! tailer polling; a folder that is missing or deleted is polled for and watched again when it
//! comes back (then every file in it is checked). An unchanged file (same identity, same size
//! as last read) is not opened; a finished file is not even `stat`ed on ordinary scans while
//! the watcher is up (only every [`FINISHED_RECHECK_SCANS`]th scan); and while the folder's
//! modification time is unchanged (no file added or removed) and the watcher is up, a scan
//! does not even list the folder, only the files that may still grow. So thousands of
//! finished runs cost an idle dashboard almost nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;

use crate::event::{Event, Published, RunId};

/// Lines longer than this are skipped (and counted as malformed). `serve` always uses this
/// limit: no configuration key changes it. Tests pass smaller ones through
/// [`TailConfig::max_line_bytes`] or [`ReadLimits`].
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;
/// A read stops after about this many bytes of new lines (one batch).
pub const DEFAULT_MAX_BATCH_BYTES: usize = 256 * 1024;
/// Size of each `read` from a file.
pub const DEFAULT_CHUNK_BYTES: usize = 64 * 1024;
/// While the watcher is up, finished files are `stat`ed only on every this-many scans (and on
/// forced scans): notifications cover them in between.
pub const FINISHED_RECHECK_SCANS: u64 = 30;
/// How often a send blocked on a full channel looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// The offset of a checkpoint whose file was truncated below its floor: larger than any file,
/// so the next read sees a "shrunk" file and rescans it from the start. Stored in SQLite as a
/// signed integer, hence `i64::MAX`.
pub const RESCAN_OFFSET: u64 = i64::MAX as u64;

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
    pub checkpoint: Checkpoint,
    pub events: Vec<Arc<Published>>,
    /// Lines skipped as malformed or over the size cap in this read.
    pub malformed: u64,
}

/// What the tailer is told: where to look and how often.
#[derive(Debug, Clone)]
pub struct TailConfig {
    pub events_dir: PathBuf,
    /// The fallback scan; notifications deliver sooner.
    pub poll_interval: Duration,
    /// Longer lines are skipped and counted as malformed.
    pub max_line_bytes: usize,
}

impl TailConfig {
    /// The defaults: a scan every 2 s, lines up to 1 MiB.
    pub fn new(events_dir: impl Into<PathBuf>) -> TailConfig {
        TailConfig {
            events_dir: events_dir.into(),
            poll_interval: Duration::from_secs(2),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
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

/// The file's identity (see [`Checkpoint::dev`]). The only per-OS code in this module.
#[cfg(unix)]
fn file_identity(meta: &Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// The file's identity: unknown on platforms where std does not expose it on stable Rust.
#[cfg(not(unix))]
fn file_identity(_meta: &Metadata) -> (u64, u64) {
    (0, 0)
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
    let io_err = |source| TailError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    let (dev, ino) = file_identity(&meta);
    let len = meta.len();

    let given = match from {
        Some(c) => c.clone(),
        None => Checkpoint::start(run_id.clone(), dev, ino),
    };
    let replaced = given.identity() != (dev, ino) || len < given.offset;
    if replaced {
        tracing::warn!(
            file = %path.display(),
            old_offset = given.offset,
            new_len = len,
            "run file was truncated or replaced: re-reading it; lines already handed on are \
             not handed on again"
        );
    }
    // Lines below the floor were consumed from this file (or the one it replaced) already.
    let floor = given.lines;
    let (mut line_no, mut line_start) = if replaced {
        (0, 0)
    } else {
        (given.lines, given.offset)
    };

    let mut out = given.clone();
    let follow = |out: &mut Checkpoint, offset: u64, lines: u64| {
        out.dev = dev;
        out.ino = ino;
        out.offset = offset;
        out.lines = lines;
    };
    if line_no >= floor {
        follow(&mut out, line_start, line_no);
    }

    // An incomplete line already known to be over the cap is skipped from where the last
    // scan of it ended, not from its start.
    let mut oversize = false;
    let mut cur = line_start;
    if !replaced
        && partial_hint > limits.max_line_bytes as u64
        && len >= line_start.saturating_add(partial_hint)
    {
        oversize = true;
        cur = line_start + partial_hint;
    }
    file.seek(SeekFrom::Start(cur)).map_err(io_err)?;

    let max_line = limits.max_line_bytes;
    let mut buf = vec![0u8; limits.chunk_bytes.max(1)];
    let mut line: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    let mut malformed = 0u64;
    let mut budget_used = 0usize;
    let mut more = false;

    'read: loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        };
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            let (piece, complete) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (&chunk[..i], true),
                None => (chunk, false),
            };
            // Below the floor lines are only counted; over the cap they are only scanned.
            if line_no >= floor && !oversize {
                if line.len() + piece.len() > max_line {
                    oversize = true;
                    line = Vec::new();
                } else {
                    line.extend_from_slice(piece);
                }
            }
            let used = piece.len() + usize::from(complete);
            cur += used as u64;
            chunk = &chunk[used..];
            if !complete {
                break;
            }

            if line_no >= floor {
                if oversize {
                    malformed += 1;
                    tracing::warn!(
                        file = %path.display(),
                        line = line_no + 1,
                        bytes = cur - line_start - 1,
                        max_line_bytes = max_line,
                        "skipped a line longer than the cap"
                    );
                } else {
                    match parse_line(&line) {
                        Ok(event) => {
                            if event.is_run_terminal() {
                                out.finished = true;
                            }
                            events.push(Arc::new(Published::new(run_id.clone(), line_no, event)));
                        }
                        Err(why) => {
                            malformed += 1;
                            tracing::warn!(
                                file = %path.display(),
                                line = line_no + 1,
                                "skipped a line that is not an event: {why}"
                            );
                        }
                    }
                }
                budget_used += (cur - line_start) as usize;
            }
            line.clear();
            oversize = false;
            line_no += 1;
            line_start = cur;
            if line_no >= floor {
                follow(&mut out, line_start, line_no);
                if budget_used >= limits.max_batch_bytes {
                    more = true;
                    break 'read;
                }
            }
        }
    }

    let following = line_no >= floor;
    if !following {
        // Truncated below what was handed on: keep the floor, and mark the checkpoint so that
        // every read rescans the file from its start until it has grown past the floor (a
        // file regrown under the same identity would otherwise be resumed mid-line).
        out.offset = RESCAN_OFFSET;
    }
    let partial = if more || !following {
        0
    } else {
        cur - line_start
    };
    let changed = !events.is_empty() || malformed > 0 || out != given;
    Ok(FileRead {
        batch: Batch {
            checkpoint: out,
            events,
            malformed,
        },
        changed,
        more,
        partial,
        dev,
        ino,
        end: cur,
    })
}

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
            ReadLimits::new(DEFAULT_MAX_LINE_BYTES),
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

    /// Goes on from where the last read stopped (to pick up lines appended since), returning
    /// only events after `after`.
    pub fn resume(&mut self, after: Option<u64>) {
        self.after = after;
        self.done = false;
    }
}

/// One line as an event, or why it is not one.
fn parse_line(line: &[u8]) -> Result<Event, String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err("empty line".to_string());
    }
    let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
    serde_json::from_str::<Event>(text).map_err(|e| e.to_string())
}

/// Counters for health and metrics, shared with the server.
#[derive(Debug, Default)]
pub struct TailStats {
    /// Run files in the events folder at the last full scan (plus new ones seen since).
    pub files_watched: AtomicU64,
    /// Events handed on.
    pub events_read: AtomicU64,
    /// Lines skipped as malformed or over the cap.
    pub malformed_lines: AtomicU64,
    /// Full scans of the folder.
    pub scans: AtomicU64,
    /// Times a file was opened and read (unchanged files are not).
    pub file_reads: AtomicU64,
    /// Watcher errors, and failures to start or re-create the watch.
    pub watcher_errors: AtomicU64,
    /// Rescans forced by the watcher (its queue overflowed).
    pub rescans: AtomicU64,
    /// Whether notifications are coming (else the tailer is polling only).
    pub watching: AtomicBool,
    /// Why the events folder cannot be read right now, if it cannot.
    pub folder_error: std::sync::Mutex<Option<String>>,
}

impl TailStats {
    /// Why the events folder cannot be read right now, if it cannot (for health).
    pub fn folder_error(&self) -> Option<String> {
        self.folder_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_folder_error(&self, e: Option<String>) {
        *self.folder_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }
}

/// A plain copy of [`TailStats`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TailStatsSnapshot {
    pub files_watched: u64,
    pub events_read: u64,
    pub malformed_lines: u64,
    pub scans: u64,
    pub file_reads: u64,
    pub watcher_errors: u64,
    pub rescans: u64,
    pub watching: bool,
}

impl TailStats {
    pub fn snapshot(&self) -> TailStatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TailStatsSnapshot {
            files_watched: get(&self.files_watched),
            events_read: get(&self.events_read),
            malformed_lines: get(&self.malformed_lines),
            scans: get(&self.scans),
            file_reads: get(&self.file_reads),
            watcher_errors: get(&self.watcher_errors),
            rescans: get(&self.rescans),
            watching: self.watching.load(Ordering::Relaxed),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What wakes the tail thread.
#[derive(Debug)]
enum Notice {
    /// Something happened to these paths.
    Changed(Vec<PathBuf>),
    /// The watcher lost events: look at everything.
    Rescan,
    WatchError(String),
    /// [`Tailer::stop`] was called.
    Stop,
}

/// The tail thread. Dropping it asks the thread to stop without waiting for it.
pub struct Tailer {
    stop: Arc<AtomicBool>,
    /// Wakes the thread out of its wait, so a stop is seen at once rather than at the next scan.
    wake: mpsc::Sender<Notice>,
    thread: Option<JoinHandle<()>>,
}

impl Tailer {
    /// Starts tailing `config.events_dir` on a dedicated thread, resuming from `start` (the
    /// persisted checkpoints; files without one are read from the beginning). Batches go to
    /// `tx`; when it is full the thread waits (back-pressure, nothing is dropped); when its
    /// receiver is dropped the thread ends.
    pub fn start(
        config: TailConfig,
        start: Vec<Checkpoint>,
        tx: Sender<Batch>,
        stats: Arc<TailStats>,
    ) -> io::Result<Tailer> {
        let stop = Arc::new(AtomicBool::new(false));
        let (wake, notices) = mpsc::channel();
        // A later checkpoint for the same run wins.
        let files = start
            .into_iter()
            .map(|c| (c.run_id.clone(), FileState::resumed(c)))
            .collect();
        // Building a current-thread runtime only needs a timer; should it fail, sends fall back
        // to `blocking_send`, which cannot look at the stop flag while it waits.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| tracing::warn!("tailer: no runtime for stoppable sends: {e}"))
            .ok();
        let worker = Worker {
            limits: ReadLimits::new(config.max_line_bytes),
            config,
            files,
            tx,
            stats,
            stop: stop.clone(),
            notices,
            notice_tx: wake.clone(),
            watch: None,
            watch_failed: false,
            dir_id: None,
            dir_error_logged: false,
            listed: None,
            scans: 0,
            runtime,
        };
        let thread = std::thread::Builder::new()
            .name("pipewatch-tail".into())
            .spawn(move || worker.run())?;
        Ok(Tailer {
            stop,
            wake,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it: it returns at once from a wait or between two
    /// batches, and within a few tens of milliseconds from a send blocked on a full channel.
    pub fn stop(mut self) {
        self.request_stop();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the tail thread panicked");
        }
    }

    /// Whether the thread has ended (stopped, or its receiver was dropped).
    /// Asks the tailer to read `path` now (a run was announced), without waiting for a
    /// notification or the next scan.
    pub fn poke(&self, path: PathBuf) {
        let _ = self.wake.send(Notice::Changed(vec![path]));
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        // The thread may be gone already; then there is nobody to wake.
        let _ = self.wake.send(Notice::Stop);
    }
}

impl Drop for Tailer {
    fn drop(&mut self) {
        self.request_stop();
    }
}

/// The thread must end: stop was asked, or nobody receives batches any more.
struct Stopped;

/// What the thread knows of one run file.
struct FileState {
    /// Where reading resumes; `None` for a file never read.
    checkpoint: Option<Checkpoint>,
    /// (dev, ino, end) of the file at the last read: if a `stat` shows the same, there is
    /// nothing new and the file is not opened.
    seen: (u64, u64, u64),
    /// [`FileRead::partial`] of the last read.
    partial: u64,
    /// A read error was logged; logged again only after a success.
    failing: bool,
}

impl FileState {
    fn new() -> FileState {
        FileState {
            checkpoint: None,
            // An impossible end, so that a new file (even empty) is read once.
            seen: (0, 0, u64::MAX),
            partial: 0,
            failing: false,
        }
    }

    /// A file read before, as persisted: unchanged while its size is still the offset.
    fn resumed(c: Checkpoint) -> FileState {
        FileState {
            seen: (c.dev, c.ino, c.offset),
            partial: 0,
            failing: false,
            checkpoint: Some(c),
        }
    }

    fn finished(&self) -> bool {
        self.checkpoint.as_ref().is_some_and(|c| c.finished)
    }
}

struct Worker {
    config: TailConfig,
    limits: ReadLimits,
    files: BTreeMap<RunId, FileState>,
    tx: Sender<Batch>,
    stats: Arc<TailStats>,
    stop: Arc<AtomicBool>,
    notices: mpsc::Receiver<Notice>,
    /// Cloned into each watcher's callback.
    notice_tx: mpsc::Sender<Notice>,
    /// The one watch on the events folder; kept alive for its notifications, dropped (which
    /// removes the watch) when the folder goes away or is replaced.
    watch: Option<RecommendedWatcher>,
    /// The last attempt to watch failed (logged once until a watch succeeds).
    watch_failed: bool,
    /// The events folder's identity at the last scan; `None` while it is missing. A different
    /// one means the folder was deleted and re-created, and the watch points at the old one.
    dir_id: Option<(u64, u64)>,
    dir_error_logged: bool,
    /// The folder's modification time at its last listing: while it is unchanged and the
    /// watch is up, no file was added or removed, so a scan need not list the folder again.
    listed: Option<std::time::SystemTime>,
    scans: u64,
    /// Lets a send blocked on a full channel look at the stop flag now and then.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Worker {
    fn run(mut self) {
        let _ = self.loop_until_stopped();
        self.stats.watching.store(false, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn loop_until_stopped(&mut self) -> Result<(), Stopped> {
        self.full_scan(true)?;
        let poll = self.config.poll_interval;
        let mut next_scan = Instant::now() + poll;
        loop {
            if self.stopped() {
                return Err(Stopped);
            }
            let wait = next_scan.saturating_duration_since(Instant::now());
            let first = match self.notices.recv_timeout(wait) {
                Ok(notice) => notice,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.full_scan(false)?;
                    next_scan = Instant::now() + poll;
                    continue;
                }
                // We hold a sender ourselves, so this does not happen; end rather than spin.
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(Stopped),
            };

            // Take everything already queued, so a burst of writes means one read per file.
            let mut dirty = BTreeSet::new();
            let mut rescan = false;
            let mut check_dir = false;
            let mut notice = Some(first);
            while let Some(n) = notice {
                match n {
                    Notice::Stop => return Err(Stopped),
                    Notice::Rescan => {
                        TailStats::add(&self.stats.rescans, 1);
                        tracing::warn!(
                            "file notifications overflowed: rescanning the events folder"
                        );
                        rescan = true;
                    }
                    Notice::WatchError(e) => {
                        TailStats::add(&self.stats.watcher_errors, 1);
                        tracing::warn!("file watcher error: {e}; rescanning the events folder");
                        rescan = true;
                    }
                    Notice::Changed(paths) => {
                        for p in paths {
                            match p
                                .file_name()
                                .and_then(|n| n.to_str())
                                .and_then(RunId::from_file_name)
                            {
                                Some(id) => {
                                    dirty.insert(id);
                                }
                                // The folder itself (deleted or moved): see what is left.
                                None if p == self.config.events_dir => check_dir = true,
                                None => {}
                            }
                        }
                    }
                }
                notice = self.notices.try_recv().ok();
            }

            if rescan {
                self.full_scan(true)?;
                next_scan = Instant::now() + poll;
                continue;
            }
            if check_dir {
                self.full_scan(false)?;
                next_scan = Instant::now() + poll;
            }
            for id in dirty {
                if !self.files.contains_key(&id) {
                    TailStats::add(&self.stats.files_watched, 1);
                }
                self.process_file(&id)?;
            }
        }
    }

    /// Lists the folder and checks its files in run-id order. `force`: also the finished ones
    /// (start-up, rescan, a watcher error, a folder that came back).
    fn full_scan(&mut self, mut force: bool) -> Result<(), Stopped> {
        self.scans += 1;
        TailStats::add(&self.stats.scans, 1);
        let dir = self.config.events_dir.clone();

        let dir_id = match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => file_identity(&m),
            Ok(_) => return self.dir_unavailable(&dir, "it is not a folder"),
            Err(e) => return self.dir_unavailable(&dir, &e.to_string()),
        };
        if self.dir_id != Some(dir_id) {
            if self.dir_id.is_some() || self.scans > 1 {
                tracing::info!(folder = %dir.display(), "events folder (re)appeared: reading it");
            }
            // A folder that came back may hold files written while it was unwatched.
            force = true;
            self.dir_id = Some(dir_id);
            self.watch = None;
        }
        self.dir_error_logged = false;
        self.stats.set_folder_error(None);
        if self.watch.is_none() && self.start_watch(&dir) {
            // Notifications may have been missed before the watch was up.
            force = true;
        }

        let safety_net = self.scans.is_multiple_of(FINISHED_RECHECK_SCANS);
        let mtime = fs::metadata(&dir).and_then(|m| m.modified()).ok();
        if !force && !safety_net && self.watch.is_some() && mtime.is_some() && mtime == self.listed
        {
            // Nothing added or removed since the last listing, and notifications cover
            // appends: look only at the files that may still grow. With thousands of finished
            // runs, this is what keeps an idle dashboard idle.
            let open: Vec<RunId> = self
                .files
                .iter()
                .filter(|(_, f)| !f.finished())
                .map(|(id, _)| id.clone())
                .collect();
            for id in open {
                if self.stopped() {
                    return Err(Stopped);
                }
                self.process_file(&id)?;
            }
            return Ok(());
        }

        let entries = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => return self.dir_unavailable(&dir, &e.to_string()),
        };
        self.listed = mtime;
        let mut names: Vec<RunId> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(RunId::from_file_name))
            .collect();
        names.sort_unstable();
        self.stats
            .files_watched
            .store(names.len() as u64, Ordering::Relaxed);

        let recheck_finished = force || self.watch.is_none() || safety_net;
        for id in names {
            if self.stopped() {
                return Err(Stopped);
            }
            let skip = !recheck_finished && self.files.get(&id).is_some_and(FileState::finished);
            if !skip {
                self.process_file(&id)?;
            }
        }
        Ok(())
    }

    fn dir_unavailable(&mut self, dir: &Path, why: &str) -> Result<(), Stopped> {
        self.stats.set_folder_error(Some(format!(
            "events folder {} unavailable: {why}",
            dir.display()
        )));
        if !self.dir_error_logged {
            tracing::warn!(
                folder = %dir.display(),
                "events folder unavailable ({why}): polling until it is back"
            );
            self.dir_error_logged = true;
        }
        self.dir_id = None;
        self.watch = None;
        self.listed = None;
        self.stats.watching.store(false, Ordering::Relaxed);
        self.stats.files_watched.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Sets up the one watch on the folder; true if it is up.
    fn start_watch(&mut self, dir: &Path) -> bool {
        let tx = self.notice_tx.clone();
        let handler = move |res: notify::Result<notify::Event>| {
            let notice = match res {
                Ok(ev) if ev.need_rescan() => Notice::Rescan,
                // Opens and closes (ours included) say nothing about new data.
                Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => return,
                Ok(ev) => Notice::Changed(ev.paths),
                Err(e) => Notice::WatchError(e.to_string()),
            };
            // A closed channel means the tail thread has ended.
            let _ = tx.send(notice);
        };
        let watcher = notify::recommended_watcher(handler).and_then(|mut w| {
            w.watch(dir, RecursiveMode::NonRecursive)?;
            Ok(w)
        });
        match watcher {
            Ok(w) => {
                self.watch = Some(w);
                self.watch_failed = false;
                self.stats.watching.store(true, Ordering::Relaxed);
                true
            }
            Err(e) => {
                if !self.watch_failed {
                    TailStats::add(&self.stats.watcher_errors, 1);
                    tracing::warn!(
                        folder = %dir.display(),
                        "cannot watch the events folder ({e}): polling every {:?}",
                        self.config.poll_interval
                    );
                    self.watch_failed = true;
                }
                self.stats.watching.store(false, Ordering::Relaxed);
                false
            }
        }
    }

    /// Reads what is new in one run file and hands it on, batch by batch.
    fn process_file(&mut self, id: &RunId) -> Result<(), Stopped> {
        let path = self.config.events_dir.join(id.file_name());
        let state = self.files.entry(id.clone()).or_insert_with(FileState::new);
        let meta = match fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            // Deleted (retention) or not a file: nothing to read. The state is kept, so a file
            // that comes back is deduplicated against what was handed on.
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                if !state.failing {
                    tracing::warn!(file = %path.display(), "cannot stat run file: {e}");
                    state.failing = true;
                }
                return Ok(());
            }
        };
        let (dev, ino) = file_identity(&meta);
        if (dev, ino, meta.len()) == state.seen {
            return Ok(());
        }

        loop {
            let Some(state) = self.files.get_mut(id) else {
                return Ok(());
            };
            TailStats::add(&self.stats.file_reads, 1);
            let read = match read_file(
                &path,
                id,
                state.checkpoint.as_ref(),
                state.partial,
                self.limits,
            ) {
                Ok(r) => r,
                Err(e) => {
                    if !state.failing {
                        tracing::warn!("{e}");
                        state.failing = true;
                    }
                    return Ok(());
                }
            };
            state.failing = false;
            state.partial = read.partial;
            state.seen = (read.dev, read.ino, read.end);
            let more = read.more;
            if read.changed {
                state.checkpoint = Some(read.batch.checkpoint.clone());
                // Counted before the send, so a consumer that has the batch sees it counted.
                TailStats::add(&self.stats.events_read, read.batch.events.len() as u64);
                TailStats::add(&self.stats.malformed_lines, read.batch.malformed);
                self.hand_on(read.batch)?;
            } else if state.checkpoint.is_none() {
                state.checkpoint = Some(read.batch.checkpoint);
            }
            if !more {
                return Ok(());
            }
            if self.stopped() {
                return Err(Stopped);
            }
        }
    }

    /// Sends one batch, waiting while the channel is full (back-pressure: never dropped).
    fn hand_on(&self, batch: Batch) -> Result<(), Stopped> {
        let batch = match self.tx.try_send(batch) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Closed(_)) => return Err(Stopped),
            Err(TrySendError::Full(b)) => b,
        };
        let Some(rt) = &self.runtime else {
            return self.tx.blocking_send(batch).map_err(|_| Stopped);
        };
        // Waiting in slices lets a stop through even if the consumer has stopped reading.
        rt.block_on(async {
            loop {
                if self.stopped() {
                    return Err(Stopped);
                }
                match tokio::time::timeout(STOP_CHECK, self.tx.reserve()).await {
                    Ok(Ok(permit)) => {
                        permit.send(batch);
                        return Ok(());
                    }
                    Ok(Err(_closed)) => return Err(Stopped),
                    Err(_elapsed) => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;
    use tokio::sync::mpsc as tmpsc;

    fn rid(s: &str) -> RunId {
        RunId::parse(s).unwrap()
    }

    /// An event line in the original format: the five required keys, no `seq`.
    fn good(msg: &str) -> String {
        format!(
            r#"{{"run_id":"r","stage":"s","event":"log","timestamp":"2025-12-08T21:45:00","msg":"{msg}"}}"#
        ) + "\n"
    }

    fn terminal() -> String {
        r#"{"run_id":"r","stage":"pipeline","event":"success","timestamp":"2025-12-08T21:45:00","msg":"done"}"#
            .to_string()
            + "\n"
    }

    fn append(path: &Path, bytes: &[u8]) {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(bytes).unwrap();
    }

    /// Writes `bytes` as a new file (a new inode) in place of `path`.
    fn replace(path: &Path, bytes: &[u8]) {
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, bytes).unwrap();
        fs::rename(&tmp, path).unwrap();
    }

    /// Reads until the reader has nothing more, as the tailer does.
    fn read_all(
        path: &Path,
        cp: &mut Option<Checkpoint>,
        hint: &mut u64,
        limits: ReadLimits,
    ) -> (Vec<(u64, String)>, u64) {
        let mut events = Vec::new();
        let mut malformed = 0;
        loop {
            let r = read_file(path, &rid("r"), cp.as_ref(), *hint, limits).unwrap();
            *hint = r.partial;
            events.extend(r.batch.events.iter().map(|p| (p.seq, p.event.msg.clone())));
            malformed += r.batch.malformed;
            *cp = Some(r.batch.checkpoint);
            if !r.more {
                return (events, malformed);
            }
        }
    }

    fn msgs(events: &[(u64, String)]) -> Vec<(u64, &str)> {
        events.iter().map(|(s, m)| (*s, m.as_str())).collect()
    }

    #[test]
    fn original_format_lines_get_seq_and_run_id_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipeline_r.jsonl");
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
    fn half_written_line_is_not_read_until_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipeline_r.jsonl");
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
        let path = dir.path().join("pipeline_r.jsonl");
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
        let path = dir.path().join("pipeline_r.jsonl");
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
        let path = dir.path().join("pipeline_r.jsonl");
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
        let path = dir.path().join("pipeline_r.jsonl");
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
        let path = dir.path().join("pipeline_r.jsonl");
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
        let path = dir.path().join("pipeline_r.jsonl");
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
        let path = dir.path().join("pipeline_r.jsonl");
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

    /// Receives batches until `done` says the collected events are enough, or fails at the
    /// deadline.
    async fn collect_until(
        rx: &mut tmpsc::Receiver<Batch>,
        seen: &mut Vec<(String, u64)>,
        done: impl Fn(&[(String, u64)]) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done(seen) {
            let batch = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out; got {seen:?}"))
                .expect("tailer ended");
            for e in &batch.events {
                seen.push((e.run_id.to_string(), e.seq));
            }
        }
    }

    #[tokio::test]
    async fn tailer_follows_a_folder_created_late_deleted_and_recreated() {
        let root = tempfile::tempdir().unwrap();
        let events = root.path().join("events");
        let mut config = TailConfig::new(&events);
        config.poll_interval = Duration::from_millis(50);
        let (tx, mut rx) = tmpsc::channel(4);
        let stats = Arc::new(TailStats::default());
        let tailer = Tailer::start(config, Vec::new(), tx, stats.clone()).unwrap();

        fs::create_dir(&events).unwrap();
        let f1 = events.join("pipeline_run1.jsonl");
        let line = good("one");
        append(&f1, (good("zero") + &line[..10]).as_bytes());
        append(&events.join("not-a-run.txt"), b"ignored\n");
        let mut seen = Vec::new();
        collect_until(&mut rx, &mut seen, |s| !s.is_empty()).await;
        assert_eq!(seen, [("run1".to_string(), 0)]);

        append(&f1, (line[10..].to_string() + &terminal()).as_bytes());
        collect_until(&mut rx, &mut seen, |s| s.len() >= 3).await;
        assert_eq!(
            seen[1..],
            [("run1".to_string(), 1), ("run1".to_string(), 2)]
        );

        fs::remove_dir_all(&events).unwrap();
        fs::create_dir(&events).unwrap();
        append(
            &events.join("pipeline_run2.jsonl"),
            good("again").as_bytes(),
        );
        collect_until(&mut rx, &mut seen, |s| s.len() >= 4).await;
        assert_eq!(seen[3], ("run2".to_string(), 0));

        let s = stats.snapshot();
        assert_eq!(s.events_read, 4);
        assert!(s.scans >= 1);
        tailer.stop();
        assert_eq!(seen.len(), 4, "no duplicates: {seen:?}");
    }

    #[tokio::test]
    async fn notifications_deliver_without_waiting_for_a_scan() {
        let root = tempfile::tempdir().unwrap();
        let mut config = TailConfig::new(root.path());
        // Only a notification can deliver within the test's deadline.
        config.poll_interval = Duration::from_secs(3600);
        let (tx, mut rx) = tmpsc::channel(4);
        let stats = Arc::new(TailStats::default());
        let tailer = Tailer::start(config, Vec::new(), tx, stats.clone()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stats.snapshot().watching {
            assert!(Instant::now() < deadline, "watcher never started");
            std::thread::sleep(Duration::from_millis(5));
        }
        append(
            &root.path().join("pipeline_n.jsonl"),
            good("now").as_bytes(),
        );
        let mut seen = Vec::new();
        collect_until(&mut rx, &mut seen, |s| !s.is_empty()).await;
        assert_eq!(seen, [("n".to_string(), 0)]);
        // Stopping does not wait for the hour-long scan interval.
        let asked = Instant::now();
        tailer.stop();
        assert!(asked.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn start_up_does_not_read_unchanged_files() {
        let root = tempfile::tempdir().unwrap();
        let mut start = Vec::new();
        for i in 0..20 {
            let id = rid(&format!("old{i:02}"));
            let path = root.path().join(id.file_name());
            append(&path, (good("a") + &terminal()).as_bytes());
            let r = read_file(&path, &id, None, 0, ReadLimits::new(1024)).unwrap();
            start.push(r.batch.checkpoint);
        }
        // One file grew while the dashboard was down.
        append(
            &root.path().join("pipeline_old05.jsonl"),
            good("late").as_bytes(),
        );
        let mut config = TailConfig::new(root.path());
        config.poll_interval = Duration::from_secs(3600);
        let (tx, mut rx) = tmpsc::channel(4);
        let stats = Arc::new(TailStats::default());
        let tailer = Tailer::start(config, start, tx, stats.clone()).unwrap();
        let mut seen = Vec::new();
        collect_until(&mut rx, &mut seen, |s| !s.is_empty()).await;
        assert_eq!(seen, [("old05".to_string(), 2)]);
        let s = stats.snapshot();
        assert_eq!(s.file_reads, 1, "only the changed file is opened");
        assert_eq!(s.files_watched, 20);
        tailer.stop();
    }

    #[test]
    fn stop_is_prompt_while_the_consumer_is_not_reading() {
        let root = tempfile::tempdir().unwrap();
        for i in 0..5 {
            append(
                &root.path().join(format!("pipeline_b{i}.jsonl")),
                good("x").as_bytes(),
            );
        }
        let (tx, rx) = tmpsc::channel(1);
        let stats = Arc::new(TailStats::default());
        let tailer =
            Tailer::start(TailConfig::new(root.path()), Vec::new(), tx, stats.clone()).unwrap();
        // The channel holds one batch; the thread is then blocked handing on the next.
        let deadline = Instant::now() + Duration::from_secs(10);
        while stats.snapshot().file_reads < 2 {
            assert!(Instant::now() < deadline, "tailer never read");
            std::thread::sleep(Duration::from_millis(5));
        }
        let asked = Instant::now();
        tailer.stop();
        assert!(asked.elapsed() < Duration::from_secs(5));
        assert_eq!(rx.len(), 1, "nothing dropped, nothing beyond capacity");
    }
}
