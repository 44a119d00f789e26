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
//! kept as is, so that the "already published" floor survives a restart without a new field.
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
//! the watcher is up (only every [`FINISHED_RECHECK_SCANS`]th scan), so thousands of finished
//! runs cost little more than reading the folder's names.

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

/// Lines longer than this are skipped unless configured otherwise.
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
        if self.watch.is_none() && self.start_watch(&dir) {
            // Notifications may have been missed before the watch was up.
            force = true;
        }

        let entries = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => return self.dir_unavailable(&dir, &e.to_string()),
        };
        let mut names: Vec<RunId> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(RunId::from_file_name))
            .collect();
        names.sort_unstable();
        self.stats
            .files_watched
            .store(names.len() as u64, Ordering::Relaxed);

        let recheck_finished =
            force || self.watch.is_none() || self.scans.is_multiple_of(FINISHED_RECHECK_SCANS);
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
        if !self.dir_error_logged {
            tracing::warn!(folder = %dir.display(), "events folder unavailable ({why}): polling until it is back");
            self.dir_error_logged = true;
        }
        self.dir_id = None;
        self.watch = None;
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
                let events = read.batch.events.len() as u64;
                let malformed = read.batch.malformed;
                self.hand_on(read.batch)?;
                TailStats::add(&self.stats.events_read, events);
                TailStats::add(&self.stats.malformed_lines, malformed);
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
