//! [`Tailer`]: the dashboard's tail thread. It follows the events folder and hands every
//! complete line on, once, as [`Batch`]es on a bounded channel to the ingest task
//! (`server::ingest`), which is its only user ([`Tailer::start`], [`Tailer::poke`],
//! [`Tailer::stop`]).
//!
//! Files are read with [`read_open`], a running run's kept open from one read to the next
//! ([`FileState::open`]); the folder is listed with
//! [`crate::journal::files::list`], and only when needed: see "Scans and notifications" in
//! the [module doc](super) — while the folder's modification time is unchanged and the watch is
//! up, a scan does not list the folder, and finished files are not `stat`ed. Blocking I/O stays
//! on this thread; a full channel makes it wait (back-pressure, nothing dropped), and a stop is
//! seen within [`STOP_CHECK`] even then.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;

use super::notices::{Notice, Notices, Wake};
use super::read::{
    Batch, Checkpoint, DEFAULT_MAX_LINE_BYTES, ReadLimits, open_run_file, read_open,
};
use super::stats::TailStats;
use crate::event::RunId;
use crate::journal::files::{self, IDENTITY_KNOWN, file_identity};

/// While the watcher is up, finished files are `stat`ed only on every this-many scans (and on
/// forced scans): notifications cover them in between.
pub const FINISHED_RECHECK_SCANS: u64 = 30;
/// How often a send blocked on a full channel looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(50);
/// The most run files kept open between reads; past this many growing runs, a file is opened
/// for each read.
const MAX_KEPT_OPEN: usize = 64;

/// What the tailer is told: where to look and how often.
#[derive(Debug, Clone)]
pub struct TailConfig {
    pub events_dir: PathBuf,
    /// The fallback scan; notifications deliver sooner.
    pub poll_interval: Duration,
    /// Longer lines are skipped and counted as malformed.
    pub max_line_bytes: usize,
    /// Shown each batch on the tail thread before it is handed on.
    pub on_read: Option<OnRead>,
}

/// What the tail thread shows each batch it read, before handing it on: the dashboard gives a
/// run's followers its new events there, without waiting for the ingest task (a thread
/// hand-over less between an append and its followers). The batch is then marked
/// [`Batch::followed`]. It runs on the tail thread, so it must be quick and must not block.
#[derive(Clone)]
pub struct OnRead(pub Arc<dyn Fn(&Batch) + Send + Sync>);

impl std::fmt::Debug for OnRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnRead")
    }
}

impl TailConfig {
    /// The defaults: a scan every 2 s, lines up to 1 MiB.
    pub fn new(events_dir: impl Into<PathBuf>) -> TailConfig {
        TailConfig {
            events_dir: events_dir.into(),
            poll_interval: Duration::from_secs(2),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            on_read: None,
        }
    }
}

/// The tail thread. Dropping it asks the thread to stop without waiting for it.
pub struct Tailer {
    stop: Arc<AtomicBool>,
    /// Wakes the thread out of its wait, so a stop is seen at once rather than at the next scan.
    wake: Wake,
    spent: Spent,
    thread: Option<JoinHandle<()>>,
}

/// Gives batches the consumer is done with back to the tail thread, which frees them.
///
/// Their memory (a line's text, the parsed event's strings) was allocated on the tail thread;
/// freed on another, each piece takes the allocator's cross-thread path, which cost the
/// ingest task about a third of its time in a burst. The tail thread frees them locally,
/// before its next hand-over or its next wait; one given while it waits wakes it, so an idle
/// tail thread holds none.
#[derive(Clone)]
pub struct Spent {
    tx: mpsc::Sender<Vec<Arc<Batch>>>,
    /// The tail thread is waiting for a notification or its next scan.
    idle: Arc<AtomicBool>,
    wake: Wake,
}

impl Spent {
    /// Hands `batches` back; once the tail thread has ended they are freed here.
    pub fn give(&self, batches: Vec<Arc<Batch>>) {
        // A send to a thread that has ended gives the batches back, dropped here.
        if self.tx.send(batches).is_err() {
            return;
        }
        // Either the thread sees these batches when it frees before its wait, or this sees
        // it idle and wakes it (the fences pair with the thread's: flag set, then freed).
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.idle.load(Ordering::SeqCst) {
            self.wake.send(Notice::Changed(Vec::new()));
        }
    }
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
        let (notices, wake) = Notices::new()?;
        let (spent_tx, spent_rx) = mpsc::channel();
        let spent = Spent {
            tx: spent_tx,
            idle: Arc::new(AtomicBool::new(false)),
            wake: wake.clone(),
        };
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
            spent: spent_rx,
            idle: spent.idle.clone(),
            watch_failed: false,
            dir_id: None,
            dir_error_logged: false,
            listed: None,
            scans: 0,
            kept_open: 0,
            runtime,
        };
        let thread = std::thread::Builder::new()
            .name("pipewatch-tail".into())
            .spawn(move || worker.run())?;
        Ok(Tailer {
            stop,
            wake,
            spent,
            thread: Some(thread),
        })
    }

    /// Where the consumer gives back the batches it is done with (see [`Spent`]).
    pub fn spent(&self) -> Spent {
        self.spent.clone()
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

    /// Asks the tailer to read `path` now (a run was announced), without waiting for a
    /// notification or the next scan.
    pub fn poke(&self, path: PathBuf) {
        self.wake.send(Notice::Changed(vec![path]));
    }

    /// Whether the thread has ended (stopped, or its receiver was dropped).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        // The thread may be gone already; then there is nobody to wake.
        self.wake.send(Notice::Stop);
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
    /// [`FileRead::partial`](super::FileRead::partial) of the last read.
    partial: u64,
    /// A read error was logged; logged again only after a success.
    failing: bool,
    /// The file as last read, kept open while the run goes on: a run written a line at a
    /// time is then read without opening its file for each line (an open, two `fcntl`s and a
    /// close each time, and where the watch reports opens and closes, a wake-up for each).
    /// Closed once the run has finished, or its path names another file or none.
    open: Option<fs::File>,
}

impl FileState {
    fn new() -> FileState {
        FileState {
            checkpoint: None,
            // An impossible end, so that a new file (even empty) is read once.
            seen: (0, 0, u64::MAX),
            partial: 0,
            failing: false,
            open: None,
        }
    }

    /// A file read before, as persisted: unchanged while its size is still the offset.
    fn resumed(c: Checkpoint) -> FileState {
        FileState {
            seen: (c.dev, c.ino, c.offset),
            partial: 0,
            failing: false,
            open: None,
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
    /// What wakes the thread, and the one watch on the events folder, dropped (which removes
    /// it) when the folder goes away or is replaced.
    notices: Notices,
    /// Batches the consumer gave back, freed here ([`Spent`]).
    spent: mpsc::Receiver<Vec<Arc<Batch>>>,
    /// [`Spent::idle`]: set while the thread waits.
    idle: Arc<AtomicBool>,
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
    /// How many [`FileState::open`] hold a file.
    kept_open: usize,
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
        // Released after the scan's last send: who sees it set sees those batches queued.
        self.stats.first_scan_done.store(true, Ordering::Release);
        let poll = self.config.poll_interval;
        let mut next_scan = Instant::now() + poll;
        loop {
            if self.stopped() {
                return Err(Stopped);
            }
            // Idle first, then freed: a batch given back after this frees sees the flag and
            // wakes the thread ([`Spent::give`]).
            self.idle.store(true, Ordering::SeqCst);
            std::sync::atomic::fence(Ordering::SeqCst);
            self.free_spent();
            let wait = next_scan.saturating_duration_since(Instant::now());
            let notice = self.notices.recv_timeout(wait);
            self.idle.store(false, Ordering::SeqCst);
            let Some(first) = notice else {
                self.full_scan(false)?;
                next_scan = Instant::now() + poll;
                continue;
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
                                .and_then(files::run_id_of)
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
                notice = self.notices.try_recv();
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

        let dir_meta = match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => m,
            Ok(_) => return self.dir_unavailable(&dir, "it is not a folder"),
            Err(e) => return self.dir_unavailable(&dir, &e.to_string()),
        };
        let dir_id = file_identity(&dir_meta);
        if self.dir_id != Some(dir_id) {
            if self.dir_id.is_some() || self.scans > 1 {
                tracing::info!(folder = %dir.display(), "events folder (re)appeared: reading it");
            }
            // A folder that came back may hold files written while it was unwatched.
            force = true;
            self.dir_id = Some(dir_id);
            self.notices.unwatch();
        }
        self.dir_error_logged = false;
        self.stats.set_folder_error(None);
        if !self.notices.watching() && self.start_watch(&dir) {
            // Notifications may have been missed before the watch was up.
            force = true;
        }

        let safety_net = self.scans.is_multiple_of(FINISHED_RECHECK_SCANS);
        let mtime = dir_meta.modified().ok();
        if !force
            && !safety_net
            && self.notices.watching()
            && mtime.is_some()
            && mtime == self.listed
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

        let names: Vec<RunId> = match files::list(&dir) {
            Ok(list) => list.into_iter().map(|f| f.id).collect(),
            Err(e) => return self.dir_unavailable(&dir, &e.to_string()),
        };
        self.listed = mtime;
        self.stats
            .files_watched
            .store(names.len() as u64, Ordering::Relaxed);

        let recheck_finished = force || !self.notices.watching() || safety_net;
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
        self.notices.unwatch();
        self.listed = None;
        self.stats.watching.store(false, Ordering::Relaxed);
        self.stats.files_watched.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Sets up the one watch on the folder; true if it is up.
    fn start_watch(&mut self, dir: &Path) -> bool {
        match self.notices.watch(dir) {
            Ok(()) => {
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
        let path = files::path(&self.config.events_dir, id);
        let state = self.files.entry(id.clone()).or_insert_with(FileState::new);
        // Not following a link: a link named like a run file is no run file (the listing
        // warns about it), and neither is a FIFO.
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => Some(m),
            Ok(_) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                if !state.failing {
                    tracing::warn!(file = %path.display(), "cannot stat run file: {e}");
                    state.failing = true;
                }
                None
            }
        };
        let Some(meta) = meta else {
            // Deleted (retention) or not a file: nothing to read, and a file kept open is let
            // go (open, a deleted file keeps its space). The state is kept, so a file that
            // comes back is deduplicated against what was handed on.
            self.kept_open -= usize::from(state.open.take().is_some());
            return Ok(());
        };
        let (dev, ino) = file_identity(&meta);
        if (dev, ino, meta.len()) == state.seen {
            return Ok(());
        }
        // The file kept open since the last read, if the path still names it (while it is
        // open, its identity cannot be another file's).
        let mut file = state.open.take();
        self.kept_open -= usize::from(file.is_some());
        if (dev, ino) != (state.seen.0, state.seen.1) {
            file = None;
        }

        loop {
            let Some(state) = self.files.get_mut(id) else {
                return Ok(());
            };
            TailStats::add(&self.stats.file_reads, 1);
            let limits = self.limits;
            let read = file
                .take()
                .map_or_else(|| open_run_file(&path), Ok)
                .and_then(|mut f| {
                    let read = read_open(
                        &mut f,
                        &path,
                        id,
                        state.checkpoint.as_ref(),
                        state.partial,
                        limits,
                    )?;
                    Ok((f, read))
                });
            let (opened, read) = match read {
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
            let finished = read.batch.checkpoint.finished;
            if read.changed {
                state.checkpoint = Some(read.batch.checkpoint.clone());
                // Counted before the send, so a consumer that has the batch sees it counted.
                TailStats::add(&self.stats.events_read, read.batch.events.len() as u64);
                TailStats::add(&self.stats.malformed_lines, read.batch.malformed);
                let mut batch = read.batch;
                if let Some(OnRead(on_read)) = &self.config.on_read {
                    on_read(&batch);
                    batch.followed = true;
                }
                self.hand_on(batch)?;
            } else if state.checkpoint.is_none() {
                state.checkpoint = Some(read.batch.checkpoint);
            }
            if more {
                if self.stopped() {
                    return Err(Stopped);
                }
                file = Some(opened);
                continue;
            }
            if IDENTITY_KNOWN
                && !finished
                && self.kept_open < MAX_KEPT_OPEN
                && let Some(state) = self.files.get_mut(id)
            {
                state.open = Some(opened);
                self.kept_open += 1;
            }
            return Ok(());
        }
    }

    /// Frees the batches the consumer gave back.
    fn free_spent(&self) {
        for batches in self.spent.try_iter() {
            drop(batches);
        }
    }

    /// Sends one batch, waiting while the channel is full (back-pressure: never dropped).
    fn hand_on(&self, batch: Batch) -> Result<(), Stopped> {
        self.free_spent();
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
    use crate::tail::testing::{append, good, rid, terminal};
    use crate::tail::{TailStats, read_file};
    use tokio::sync::mpsc as tmpsc;

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
    async fn each_read_is_shown_before_it_is_handed_on_even_to_a_consumer_that_waits() {
        let root = tempfile::tempdir().unwrap();
        let shown: Arc<std::sync::Mutex<Vec<(String, u64)>>> = Arc::default();
        let mut config = TailConfig::new(root.path());
        config.poll_interval = Duration::from_millis(20);
        config.on_read = Some(OnRead({
            let shown = shown.clone();
            Arc::new(move |b: &Batch| {
                assert!(!b.followed);
                let mut shown = shown.lock().unwrap();
                shown.extend(b.events.iter().map(|e| (e.run_id.to_string(), e.seq)));
            })
        }));
        // Room for one batch, and nobody reading yet: the second read waits to be handed on.
        let (tx, mut rx) = tmpsc::channel(1);
        let tailer = Tailer::start(config, Vec::new(), tx, Arc::new(TailStats::default())).unwrap();
        append(&root.path().join("pipeline_r1.jsonl"), good("a").as_bytes());
        let seen = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while shown.lock().unwrap().len() < n {
                assert!(
                    Instant::now() < deadline,
                    "shown {:?}",
                    shown.lock().unwrap()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        seen(1);
        // The channel is full: this one is shown, then waits to be handed on.
        append(&root.path().join("pipeline_r2.jsonl"), good("b").as_bytes());
        seen(2);
        append(&root.path().join("pipeline_r3.jsonl"), good("c").as_bytes());
        let mut handed = Vec::new();
        while handed.len() < 3 {
            let b = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("a batch")
                .expect("tailer ended");
            assert!(b.followed, "handed on marked as shown");
            handed.extend(b.events.iter().map(|e| (e.run_id.to_string(), e.seq)));
        }
        assert_eq!(
            handed,
            *shown.lock().unwrap(),
            "shown and handed on in the same order"
        );
        tailer.stop();
    }

    /// A tailer of `dir` whose watch is up and whose scans are an hour apart: only a
    /// notification makes it read within a test's deadline.
    fn watching(dir: &Path) -> (Tailer, tmpsc::Receiver<Batch>) {
        let mut config = TailConfig::new(dir);
        config.poll_interval = Duration::from_secs(3600);
        let (tx, rx) = tmpsc::channel(16);
        let stats = Arc::new(TailStats::default());
        let tailer = Tailer::start(config, Vec::new(), tx, stats.clone()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stats.snapshot().watching {
            assert!(Instant::now() < deadline, "watcher never started");
            std::thread::sleep(Duration::from_millis(5));
        }
        (tailer, rx)
    }

    /// Waits until the tail thread waits for something to read.
    fn until_idle(spent: &Spent) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !spent.idle.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "the tail thread never went idle");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until nothing holds the event any more.
    fn until_freed(event: &std::sync::Weak<crate::event::Published>, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while event.upgrade().is_some() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Batches given back are freed by the tail thread, which they wake if it is idle (its
    /// scans are an hour apart here), and never held after it has ended.
    #[tokio::test]
    async fn spent_batches_are_freed_by_the_tail_thread_and_never_held_while_idle() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("pipeline_s.jsonl");
        let (tailer, mut rx) = watching(root.path());
        let spent = tailer.spent();
        let mut next = async |line: &str| {
            append(&file, good(line).as_bytes());
            let batch = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("a batch within 10 s")
                .expect("tailer ended");
            let event = Arc::downgrade(&batch.events[0]);
            (vec![Arc::new(batch)], event)
        };

        // Given back while the thread waits: it wakes and frees them.
        let (batches, event) = next("one").await;
        until_idle(&spent);
        spent.give(batches);
        until_freed(&event, "held by an idle tail thread");

        // Given back after the thread ended: freed by the giver at once.
        let (batches, event) = next("three").await;
        tailer.stop();
        spent.give(batches);
        assert!(
            event.upgrade().is_none(),
            "held after the tail thread ended"
        );
    }

    #[tokio::test]
    async fn notifications_deliver_without_waiting_for_a_scan() {
        let root = tempfile::tempdir().unwrap();
        let (tailer, mut rx) = watching(root.path());
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

    /// A running run's file kept open, seen through `/proc/self/fd`.
    #[cfg(target_os = "linux")]
    mod kept_open {
        use super::*;
        use crate::tail::testing::replace;

        /// How many of this process's descriptors are open on `path`, or on what was at `path`
        /// before it was deleted or replaced.
        fn open_on(path: &Path) -> usize {
            let name = path.to_string_lossy().into_owned();
            fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
                .filter(|t| {
                    let t = t.to_string_lossy();
                    t == name || t == format!("{name} (deleted)")
                })
                .count()
        }

        async fn until_open_on(path: &Path, n: usize) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while open_on(path) != n {
                assert!(
                    Instant::now() < deadline,
                    "{} stays open {} times",
                    path.display(),
                    open_on(path)
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }

        #[tokio::test]
        async fn a_running_runs_file_is_kept_open_and_let_go_once_it_ends_or_goes() {
            let root = tempfile::tempdir().unwrap();
            let (tailer, mut rx) = watching(root.path());
            let [ended, removed, replaced] = ["ended", "removed", "replaced"]
                .map(|n| root.path().join(format!("pipeline_{n}.jsonl")));
            let mut seen = Vec::new();
            let count = |run: &'static str| {
                move |s: &[(String, u64)]| s.iter().filter(|e| e.0 == run).count()
            };

            // Read a line at a time, through the one descriptor.
            for i in 0..3 {
                append(&ended, good("a").as_bytes());
                collect_until(&mut rx, &mut seen, |s| count("ended")(s) == i + 1).await;
                assert_eq!(open_on(&ended), 1);
            }
            append(&ended, terminal().as_bytes());
            collect_until(&mut rx, &mut seen, |s| count("ended")(s) == 4).await;
            // A finished run's file is closed (just after its batch is handed on).
            until_open_on(&ended, 0).await;

            append(&removed, good("b").as_bytes());
            collect_until(&mut rx, &mut seen, |s| count("removed")(s) == 1).await;
            assert_eq!(open_on(&removed), 1);
            fs::remove_file(&removed).unwrap();
            until_open_on(&removed, 0).await;

            // A new file in place of the open one: the old one is let go, the new one read from
            // its start (its first line is one already handed on, the second is new).
            append(&replaced, good("c").as_bytes());
            collect_until(&mut rx, &mut seen, |s| count("replaced")(s) == 1).await;
            replace(&replaced, (good("c") + &good("d")).as_bytes());
            collect_until(&mut rx, &mut seen, |s| count("replaced")(s) == 2).await;
            until_open_on(&replaced, 1).await;
            assert_eq!(
                seen.iter()
                    .filter(|e| e.0 == "replaced")
                    .map(|e| e.1)
                    .collect::<Vec<_>>(),
                [0, 1]
            );
            tailer.stop();
        }
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
