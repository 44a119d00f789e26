//! Runner → JetStream, the run file as the outbox (contract §9).
//!
//! A run file is written first, as on a single machine; a [`Forwarder`] then publishes its
//! events to the run's subject ([`super::subject`]), each with `Nats-Msg-Id: <run_id>:<seq>`
//! ([`super::msg_id`]), so the stream drops a repeat within its duplicate window. It reads the
//! file only through the one reader ([`tail::read_file`]), from a checkpoint, so a line is an
//! event (or skipped) here exactly as the dashboard sees it, with the same `seq`.
//!
//! # What holds
//!
//! - Publishing is asynchronous and bounded: at most [`MAX_IN_FLIGHT`] events await their
//!   ack, and acks are awaited in order. What the engine acknowledged is recorded per run in a
//!   sidecar ([`super::sidecar`]), written whole, at most every [`SIDECAR_EVERY`] and when a
//!   file is done.
//! - Every line of a file is one message: an event, or a placeholder naming only the run and
//!   the `seq` for a line that is not one (malformed, over the size cap, or larger than the
//!   server's `max_payload`), so that a dashboard can tell a line still to come from one that
//!   is not an event.
//! - Before a process resumes a file (the first time it touches it: after a crash, or a file
//!   another process began), it asks the stream for the run subject's last message and does
//!   not publish again the lines up to its seq; so a crash between an ack and the sidecar
//!   neither repeats nor skips.
//! - Publishing is pipelined, so a reconnect (or a leader election) can lose a line while a
//!   later one gets through. Dashboards take a run's lines in `seq` order only and wait for
//!   the lost one, so the later ones must come again after it, past the duplicate window:
//!   after a failed publish a process waits for the acks in flight and sends what was stored
//!   past the lost line again without `Nats-Msg-Id`; on resume, a stream holding fewer of
//!   the run's messages than its last seq says has lost one that way, and the run goes again
//!   from the sidecar's checkpoint, without `Nats-Msg-Id` up to that seq.
//! - Each forwarder publishes a file's lines in `seq` order; several forwarders on one file
//!   (a run, `serve`, `pipewatch forward`) are safe, the stream keeping one of each message.
//!   A line refused because another is storing the same message at that moment ("duplicate
//!   message id is in process") is asked again with the same id until that store's outcome
//!   is known, for up to [`IN_PROCESS_WAIT`]: a repeat once it is stored, or, if it failed,
//!   stored now, late, and then handled as a lost line.
//! - An engine that is down, slow or partitioned never fails or slows a run: the run's
//!   forwarder ([`InRun`]) connects in the background, the stages never wait for it, and at
//!   the run's end it gets at most [`END_WAIT`]; what is left is forwarded later, by the next
//!   run, `serve` or `pipewatch forward` on the host ([`Forwarder::drain`], oldest run first).
//! - The journal's append hook ([`crate::journal::on_append`]) wakes the forwarder of the
//!   process that writes, so an event reaches the engine within milliseconds.

mod publish;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use tokio::sync::{Notify, watch};

use super::sidecar::{self, Sidecar};
use super::{Engine, EngineError, STREAM, StreamLimits, subject};
use crate::config::{Cluster, Workspace};
use crate::event::RunId;
use crate::journal::files::{self, RunFile, file_identity};
use crate::sync::{MutexExt, blocking};
use crate::tail::{self, Checkpoint, FileRead, ReadLimits};

use publish::InFlight;

/// The most events of one forwarder awaiting the engine's ack.
pub const MAX_IN_FLIGHT: usize = 512;
/// How long a run waits, once its stages are done, for its last events to be acknowledged.
pub const END_WAIT: Duration = Duration::from_secs(1);
/// A sidecar is rewritten at most this often while its file is being forwarded.
pub const SIDECAR_EVERY: Duration = Duration::from_millis(250);
/// A background drain leaves alone an unfinished file whose sidecar another process wrote
/// less than this ago: that process (the run itself) is forwarding it.
pub const BUSY_FOR: Duration = Duration::from_secs(3);
/// Background drains look at the folder at least this often.
pub const POLL: Duration = Duration::from_secs(1);
/// Done files are read again (in case something was appended) every this many drains.
const RECHECK_DONE: u64 = 60;
/// Reads of one older file before the run's own file gets its turn again.
const BACKLOG_STEP: usize = 4;
/// How long a line another forwarder is storing at that moment is asked again for: a store
/// takes milliseconds, a stream electing a leader seconds.
pub const IN_PROCESS_WAIT: Duration = Duration::from_secs(2);

/// Forwarding that could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("NATS JetStream: cannot publish event {msg_id} to {subject}: {reason}")]
    Publish {
        subject: String,
        msg_id: String,
        reason: String,
    },
    #[error("NATS JetStream: cannot read the last event of {subject} in stream {STREAM}: {reason}")]
    LastOf { subject: String, reason: String },
    #[error("cannot list the events folder {path}: {source}")]
    Folder {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} has no [cluster] table: there is no engine to forward events to")]
    NoCluster { path: PathBuf },
}

impl crate::exit::Code for ForwardError {
    fn exit_code(&self) -> u8 {
        match self {
            ForwardError::NoCluster { .. } => crate::exit::USAGE,
            _ => crate::exit::ENVIRONMENT,
        }
    }
}

/// The folders of one configuration that forwarding uses.
#[derive(Debug, Clone)]
pub struct Folders {
    pub events_dir: PathBuf,
    pub state_dir: PathBuf,
}

impl Folders {
    pub fn of(ws: &Workspace) -> Folders {
        let server = &ws.shared().server;
        Folders {
            events_dir: server.events_dir.clone(),
            state_dir: server.state_dir.clone(),
        }
    }
}

/// How far one call got with a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Everything it holds is in the stream and its run has ended.
    Done,
    /// Everything it holds now is in the stream; it may grow.
    CaughtUp,
    /// The call's read budget ran out: call again for the rest.
    More,
    /// It could not be read (removed by retention, say); logged.
    Unreadable,
}

/// What a drain did, for the command's summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Events the engine acknowledged as new.
    pub published: u64,
    /// Events the engine had already (dropped by their `Nats-Msg-Id`).
    pub duplicates: u64,
    /// Events not published again because the stream's last message of their run was past
    /// them.
    pub skipped: u64,
    /// Run files with something forwarded.
    pub runs: u64,
}

/// One file as this process forwards it.
struct FileState {
    run_id: RunId,
    pipeline: String,
    subject: String,
    /// How far every line is acknowledged (or was in the stream already); `None`: nothing yet.
    acked: Option<Checkpoint>,
    /// [`FileRead::partial`] for `acked`.
    hint: u64,
    /// The seq of the run subject's last message in the stream when the file was resumed:
    /// lines up to it are not published again.
    skip_through: Option<u64>,
    /// Lines up to this seq are published without `Nats-Msg-Id`: some were stored out of
    /// order (a later line got through while an earlier one was lost), and dashboards apply a
    /// run's lines in `seq` order only, so they must come again after the lost one, which the
    /// duplicate window would refuse.
    plain_through: Option<u64>,
    done: bool,
    /// What the sidecar holds, as far as this process knows, and when it wrote it.
    saved: Option<Checkpoint>,
    saved_at: Option<Instant>,
}

/// Forwards run files of one events folder to the engine.
pub struct Forwarder {
    engine: Engine,
    limits: StreamLimits,
    folders: Folders,
    sidecars: PathBuf,
    /// The events stream, once found (or created); dropped after an engine error, to be found
    /// again.
    stream: Option<Stream>,
    files: HashMap<RunId, FileState>,
    /// Files still to visit in this pass of the backlog, oldest first.
    backlog: VecDeque<RunFile>,
    backlog_listed: Option<Instant>,
    drains: u64,
    pub totals: Totals,
}

impl Forwarder {
    pub fn new(engine: Engine, folders: Folders, limits: StreamLimits) -> Forwarder {
        Forwarder {
            sidecars: sidecar::dir(&folders.state_dir),
            engine,
            limits,
            folders,
            stream: None,
            files: HashMap::new(),
            backlog: VecDeque::new(),
            backlog_listed: None,
            drains: 0,
            totals: Totals::default(),
        }
    }

    /// The events stream: found, or created with [`Forwarder::limits`] when missing.
    async fn stream(&mut self) -> Result<Stream, ForwardError> {
        if let Some(s) = &self.stream {
            return Ok(s.clone());
        }
        let s = match self.engine.js.get_stream(STREAM).await {
            Ok(s) => s,
            Err(_) => self.engine.ensure_stream(self.limits).await?,
        };
        self.stream = Some(s.clone());
        Ok(s)
    }

    /// Publishes what `run`'s file holds past what the engine acknowledged, reading at most
    /// `max_reads` batches of it. An error is the engine's; what was acknowledged before it
    /// stays so, and the next call goes on from there.
    pub async fn forward_file(
        &mut self,
        run: &RunFile,
        max_reads: usize,
    ) -> Result<Progress, ForwardError> {
        let mut state = match self.files.remove(&run.id) {
            Some(s) => s,
            None => match self.open(run).await? {
                Some(s) => s,
                None => return Ok(Progress::CaughtUp),
            },
        };
        let result = self.push(run, &mut state, max_reads).await;
        if result.is_err() {
            // The hint belongs to where reading got, which is past what was acknowledged.
            state.hint = 0;
            self.stream = None;
        }
        let progress = result.as_ref().ok().copied();
        if progress == Some(Progress::Done) || sidecar_due(&state) {
            self.save(run, &mut state).await;
        }
        self.files.insert(run.id.clone(), state);
        result
    }

    /// Where to resume `run`'s file: its sidecar, then the stream's last message of its run.
    /// `None` when it holds no event yet.
    async fn open(&mut self, run: &RunFile) -> Result<Option<FileState>, ForwardError> {
        let side = sidecar::path(&self.sidecars, &run.id);
        let recorded = match blocking(move || sidecar::read(&side)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("{e}: forwarding the run as if it had never been");
                None
            }
        };
        if let Some(s) = &recorded
            && s.finished
            && unchanged_since(&run.path, s).await
        {
            let cp = s.checkpoint(&run.id);
            return Ok(Some(FileState {
                run_id: run.id.clone(),
                subject: subject(&s.pipeline, &run.id),
                pipeline: s.pipeline.clone(),
                acked: Some(cp.clone()),
                hint: 0,
                skip_through: None,
                plain_through: None,
                done: true,
                saved: Some(cp),
                saved_at: None,
            }));
        }
        let pipeline = match &recorded {
            Some(s) => s.pipeline.clone(),
            None => match first_pipeline(run).await {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        let subject = subject(&pipeline, &run.id);
        let stream = self.stream().await?;
        let (skip_through, plain_through) = match resume_at(&stream, &subject).await {
            Ok(s) => s,
            Err(e) => {
                self.stream = None;
                return Err(e);
            }
        };
        let acked = recorded.map(|s| s.checkpoint(&run.id));
        Ok(Some(FileState {
            run_id: run.id.clone(),
            pipeline,
            subject,
            saved: acked.clone(),
            acked,
            hint: 0,
            skip_through,
            plain_through,
            done: false,
            saved_at: None,
        }))
    }

    async fn push(
        &mut self,
        run: &RunFile,
        state: &mut FileState,
        max_reads: usize,
    ) -> Result<Progress, ForwardError> {
        let mut from = state.acked.clone();
        let mut hint = state.hint;
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut reads = 0;
        let mut sent_any = false;
        let more = loop {
            let read = match read(run, from.clone(), hint).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("{e}: not forwarded for now");
                    self.settle_all(state, &mut in_flight).await?;
                    return Ok(Progress::Unreadable);
                }
            };
            hint = read.partial;
            // Every line is a message, so that a dashboard can tell a line still to come from
            // one that is not an event: a skipped line (malformed, or over the size cap) goes
            // as a placeholder that names its run and seq only.
            let mut next = from.as_ref().map_or(0, |c| c.lines);
            let lines = read
                .batch
                .events
                .iter()
                .map(|p| (p.seq, Some(p)))
                .chain(std::iter::once((read.batch.checkpoint.lines, None)));
            for (seq, event) in lines {
                let line = (next..seq)
                    .map(|s| (s, None))
                    .chain(event.map(|p| (seq, Some(p))));
                for (seq, p) in line {
                    if state.skip_through.is_some_and(|last| seq <= last) {
                        self.totals.skipped += 1;
                        continue;
                    }
                    let plain = state.plain_through.is_some_and(|t| seq <= t);
                    in_flight.push_back(self.publish(state, seq, p.map(|p| &**p), plain).await?);
                    sent_any = true;
                    while in_flight.len() >= MAX_IN_FLIGHT {
                        self.settle_front(state, &mut in_flight).await?;
                    }
                }
                next = seq + 1;
            }
            let cp = read.batch.checkpoint;
            from = Some(cp.clone());
            in_flight.push_back(InFlight::ReadEnd(cp));
            reads += 1;
            if !read.more || reads >= max_reads {
                break read.more;
            }
        };
        self.settle_all(state, &mut in_flight).await?;
        state.hint = hint;
        if sent_any {
            self.totals.runs += 1;
        }
        state.done = !more && state.acked.as_ref().is_some_and(|c| c.finished);
        Ok(if more {
            Progress::More
        } else if state.done {
            Progress::Done
        } else {
            Progress::CaughtUp
        })
    }

    /// Records what `state` says was acknowledged in `run`'s sidecar, if that moved.
    async fn save(&self, run: &RunFile, state: &mut FileState) {
        let Some(cp) = state.acked.clone() else {
            return;
        };
        if state.saved.as_ref() == Some(&cp) {
            return;
        }
        let path = sidecar::path(&self.sidecars, &run.id);
        let record = Sidecar::new(&state.pipeline, &cp);
        match blocking(move || sidecar::write(&path, &record).map_err(|e| (path, e))).await {
            Ok(()) => {
                state.saved = Some(cp);
                state.saved_at = Some(Instant::now());
            }
            Err((path, e)) => tracing::warn!(
                sidecar = %path.display(),
                "cannot record what was forwarded: {e} (the stream is asked again on resume)"
            ),
        }
    }

    /// Writes every sidecar that is behind what was acknowledged.
    pub async fn flush(&mut self) {
        let due: Vec<RunId> = self
            .files
            .iter()
            .filter(|(_, s)| s.acked.is_some() && s.acked != s.saved)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let run = RunFile {
                path: files::path(&self.folders.events_dir, &id),
                id: id.clone(),
            };
            if let Some(mut state) = self.files.remove(&id) {
                self.save(&run, &mut state).await;
                self.files.insert(id, state);
            }
        }
    }

    /// One pass over the events folder, oldest run first: every file not done is forwarded
    /// to its end. With `leave_busy`, a file another process is forwarding now is left to it.
    /// Stops at the first engine error.
    pub async fn drain(&mut self, leave_busy: bool) -> Result<(), ForwardError> {
        self.drains += 1;
        let recheck = self.drains.is_multiple_of(RECHECK_DONE);
        let runs = self.list().await?;
        for run in &runs {
            if !recheck && self.files.get(&run.id).is_some_and(|s| s.done) {
                continue;
            }
            if leave_busy && self.busy(run).await {
                continue;
            }
            self.forward_file(run, usize::MAX).await?;
        }
        self.flush().await;
        if recheck {
            self.forget_removed(&runs).await;
        }
        Ok(())
    }

    /// [`Forwarder::drain`] until a pass succeeds, for `pipewatch forward`: a pass the stream
    /// refused an event in (or its last event) is made again after a pause, for up to
    /// 15 s (`RETRY_FOR`). What refuses is passing: a stream electing a new leader, an engine
    /// that lost its quorum for a few seconds ("temporarily unavailable"), another forwarder's
    /// store of the same event still in process past [`IN_PROCESS_WAIT`]. Each pass resumes
    /// from what was acknowledged. An engine that cannot be reached fails at once.
    pub async fn drain_patiently(&mut self) -> Result<(), ForwardError> {
        let started = Instant::now();
        let mut backoff = Backoff::default();
        loop {
            match self.drain(false).await {
                Err(e @ (ForwardError::Publish { .. } | ForwardError::LastOf { .. }))
                    if started.elapsed() < RETRY_FOR =>
                {
                    backoff.failed(&e);
                    tokio::time::sleep(backoff.delay()).await;
                }
                done => return done,
            }
        }
    }

    /// Part of a pass over the older files, for a run forwarding its own file first: at most
    /// `BACKLOG_STEP` reads of one file, never `own`'s, leaving busy files alone. `true`
    /// when there is more to do now.
    pub async fn backlog_step(&mut self, own: Option<&RunId>) -> Result<bool, ForwardError> {
        if self.backlog.is_empty() {
            if self.backlog_listed.is_some_and(|t| t.elapsed() < POLL) {
                return Ok(false);
            }
            self.backlog_listed = Some(Instant::now());
            let runs = self.list().await?;
            self.backlog = runs
                .into_iter()
                .filter(|r| Some(&r.id) != own)
                .filter(|r| !self.files.get(&r.id).is_some_and(|s| s.done))
                .collect();
        }
        let Some(run) = self.backlog.front().cloned() else {
            return Ok(false);
        };
        if self.busy(&run).await {
            self.backlog.pop_front();
            return Ok(!self.backlog.is_empty());
        }
        if self.forward_file(&run, BACKLOG_STEP).await? != Progress::More {
            self.backlog.pop_front();
        }
        Ok(!self.backlog.is_empty())
    }

    async fn list(&self) -> Result<Vec<RunFile>, ForwardError> {
        let dir = self.folders.events_dir.clone();
        match blocking(move || files::list(&dir).map_err(|e| (dir, e))).await {
            Ok(runs) => Ok(runs),
            Err((_, e)) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err((path, source)) => Err(ForwardError::Folder { path, source }),
        }
    }

    /// Whether another process wrote `run`'s sidecar a moment ago and has not finished it.
    async fn busy(&self, run: &RunFile) -> bool {
        let path = sidecar::path(&self.sidecars, &run.id);
        blocking(move || {
            let recent = std::fs::symlink_metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age < BUSY_FOR);
            recent
                && sidecar::read(&path)
                    .ok()
                    .flatten()
                    .is_some_and(|s| !s.finished && s.pid != std::process::id())
        })
        .await
    }

    /// Drops what is known of runs whose files are gone (retention), sidecars included.
    async fn forget_removed(&mut self, runs: &[RunFile]) {
        let present: std::collections::HashSet<&RunId> = runs.iter().map(|r| &r.id).collect();
        self.files.retain(|id, _| present.contains(id));
        let keep: std::collections::HashSet<String> =
            runs.iter().map(|r| format!("{}.json", r.id)).collect();
        let dir = self.sidecars.clone();
        blocking(move || {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                return;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".json") && !keep.contains(&name) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        })
        .await;
    }
}

fn sidecar_due(state: &FileState) -> bool {
    state.acked != state.saved && state.saved_at.is_none_or(|t| t.elapsed() >= SIDECAR_EVERY)
}

async fn read(
    run: &RunFile,
    from: Option<Checkpoint>,
    hint: u64,
) -> Result<FileRead, tail::TailError> {
    let (path, id) = (run.path.clone(), run.id.clone());
    blocking(move || tail::read_file(&path, &id, from.as_ref(), hint, ReadLimits::default())).await
}

/// The pipeline of the file's first event (`""` when it names none), which names the run's
/// subject; `None` while the file holds no event.
async fn first_pipeline(run: &RunFile) -> Option<String> {
    let mut from: Option<Checkpoint> = None;
    loop {
        let r = match read(run, from.clone(), 0).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("{e}: not forwarded for now");
                return None;
            }
        };
        if let Some(first) = r.batch.events.first() {
            return Some(first.event.pipeline.clone().unwrap_or_default());
        }
        if !r.more {
            return None;
        }
        from = Some(r.batch.checkpoint);
    }
}

/// Whether the file is still the one, and as long as, its sidecar says it acknowledged.
async fn unchanged_since(path: &Path, s: &Sidecar) -> bool {
    let path = path.to_path_buf();
    let (dev, ino, offset) = (s.dev, s.ino, s.offset);
    blocking(move || {
        std::fs::symlink_metadata(&path)
            .is_ok_and(|m| file_identity(&m) == (dev, ino) && m.len() == offset)
    })
    .await
}

/// Where to resume a file whose run's subject ends at the stream's last message: the seq to
/// skip through, and the seq up to which lines go again without `Nats-Msg-Id`.
///
/// Every line of a file is a message (an event or a placeholder), so the stream holds
/// `last + 1` of the run's messages up to its last seq `last` — unless some were lost while
/// later ones got through (publishing is pipelined). Then the file is sent again from what
/// was acknowledged, and the lines up to `last` without `Nats-Msg-Id`: dashboards take a
/// run's lines in `seq` order only, so those stored out of order must come again.
async fn resume_at(
    stream: &Stream,
    subject: &str,
) -> Result<(Option<u64>, Option<u64>), ForwardError> {
    let Some(last) = last_seq(stream, subject).await? else {
        return Ok((None, None));
    };
    let stored = stored_on(stream, subject).await?;
    if stored <= last {
        tracing::warn!(
            subject,
            "the stream holds {stored} of the {} lines up to seq {last}: some were lost while \
             later ones got through; sending the run again",
            last + 1
        );
        return Ok((None, Some(last)));
    }
    Ok((Some(last), None))
}

/// How many messages the stream holds on `subject`.
async fn stored_on(stream: &Stream, subject: &str) -> Result<u64, ForwardError> {
    use futures_util::StreamExt;
    let err = |e: String| ForwardError::LastOf {
        subject: subject.to_string(),
        reason: e,
    };
    let mut subjects = stream
        .info_with_subjects(subject)
        .await
        .map_err(|e| err(e.to_string()))?;
    while let Some(entry) = subjects.next().await {
        let (s, n) = entry.map_err(|e| err(e.to_string()))?;
        if s == subject {
            return Ok(n as u64);
        }
    }
    Ok(0)
}

/// The seq of the last event the stream holds on `subject`, from its `Nats-Msg-Id`
/// (`<run_id>:<seq>`, or the payload's `seq`); `None` when it holds none.
async fn last_seq(stream: &Stream, subject: &str) -> Result<Option<u64>, ForwardError> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(m) => {
            let from_id = m
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .and_then(|v| v.as_str().rsplit_once(':').map(|(_, s)| s.to_string()))
                .and_then(|s| s.parse::<u64>().ok());
            let seq = from_id.or_else(|| {
                serde_json::from_slice::<serde_json::Value>(&m.payload)
                    .ok()
                    .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64))
            });
            if seq.is_none() {
                tracing::warn!(
                    subject,
                    "the stream's last message of this run names no seq: forwarding it all"
                );
            }
            Ok(seq)
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(ForwardError::LastOf {
            subject: subject.to_string(),
            reason: e.to_string(),
        }),
    }
}

/// What wakes forwarders in this process: the journal's appends, and the last run file
/// appended to (a run's own).
struct Wake {
    notify: Notify,
    latest: Mutex<Option<PathBuf>>,
}

fn wake() -> &'static Wake {
    static WAKE: OnceLock<Wake> = OnceLock::new();
    static HOOK: Once = Once::new();
    let w = WAKE.get_or_init(|| Wake {
        notify: Notify::new(),
        latest: Mutex::new(None),
    });
    HOOK.call_once(|| {
        crate::journal::on_append(Box::new(|path| {
            if let Some(w) = WAKE.get() {
                let mut latest = w.latest.lock_anyway();
                if latest.as_deref() != Some(path) {
                    *latest = Some(path.to_path_buf());
                }
                drop(latest);
                w.notify.notify_one();
            }
        }));
    });
    w
}

impl Wake {
    /// The run file this process appended to last.
    fn latest(&self) -> Option<RunFile> {
        let path = self.latest.lock_anyway().clone()?;
        let id = files::run_id_of(path.file_name()?.to_str()?)?;
        Some(RunFile { id, path })
    }
}

/// Starts listening to this process's journal appends; call before the first is written.
pub fn listen() {
    wake();
}

/// The forwarding of one `pipewatch run`: its own file first, as it is written, and the older
/// files the host left pending while there is time. Start it inside the runtime, before the
/// run writes; [`InRun::finish`] after the run.
pub struct InRun {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl InRun {
    pub fn start(cluster: Cluster, folders: Folders, limits: StreamLimits) -> InRun {
        listen();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(in_run(cluster, folders, limits, stopped));
        InRun { stop, task }
    }

    /// Lets the forwarder send the run's last events, for at most [`END_WAIT`]; what it has
    /// not sent by then is left for later.
    /// Returns whether it was done by then.
    pub async fn finish(self) -> bool {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(END_WAIT, &mut task).await.is_err() {
            task.abort();
            tracing::debug!("run's events not all forwarded at its end: left for later");
            return false;
        }
        true
    }
}

/// Hands what a run left unforwarded to a `pipewatch forward` of `config` in the background,
/// so that the run's last events reach the dashboards without the run waiting for them: the
/// process outlives the run (its own process group; on Windows, detached from the console),
/// and exits once everything is sent or the engine cannot be reached.
pub fn hand_over(config: &Path) -> io::Result<()> {
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--config")
        .arg(config)
        .args(["forward", "--quiet"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    #[cfg(windows)]
    {
        // DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP
        std::os::windows::process::CommandExt::creation_flags(&mut cmd, 0x0000_0008 | 0x0000_0200);
    }
    cmd.spawn().map(drop)
}

async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Connects, retrying every second, until connected or `stop`. With `finish_attempt`, an
/// attempt under way when `stop` comes is let run (a run that ends while it connects still
/// gets its events out, within what [`InRun::finish`] allows).
async fn connect_until(
    cluster: &Cluster,
    stop: &mut watch::Receiver<bool>,
    finish_attempt: bool,
) -> Option<Engine> {
    let mut said = false;
    loop {
        let attempt = if finish_attempt {
            Some(Engine::connect(cluster).await)
        } else {
            tokio::select! {
                r = Engine::connect(cluster) => Some(r),
                _ = stop_requested(stop) => None,
            }
        };
        match attempt {
            None => return None,
            Some(Ok(e)) => return Some(e),
            Some(Err(e)) if !said => {
                tracing::warn!("{e}: events are forwarded once it answers");
                said = true;
            }
            Some(Err(_)) => {}
        }
        if *stop.borrow() {
            return None;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop_requested(stop) => return None,
        }
    }
}

async fn in_run(
    cluster: Cluster,
    folders: Folders,
    limits: StreamLimits,
    mut stop: watch::Receiver<bool>,
) {
    let Some(engine) = connect_until(&cluster, &mut stop, true).await else {
        return;
    };
    let mut fwd = Forwarder::new(engine, folders, limits);
    let mut backoff = Backoff::default();
    loop {
        let stopping = *stop.borrow();
        let own = wake().latest();
        let mut result = match &own {
            Some(run) => fwd.forward_file(run, usize::MAX).await.map(|_| ()),
            None => Ok(()),
        };
        if stopping {
            fwd.flush().await;
            return;
        }
        let mut more = false;
        if result.is_ok() {
            match fwd.backlog_step(own.as_ref().map(|r| &r.id)).await {
                Ok(m) => more = m,
                Err(e) => result = Err(e),
            }
        }
        match result {
            Ok(()) => backoff.reset(),
            Err(e) => {
                backoff.failed(&e);
                tokio::select! {
                    _ = tokio::time::sleep(backoff.delay()) => {}
                    _ = stop_requested(&mut stop) => {}
                }
                continue;
            }
        }
        if !more {
            fwd.flush().await;
            tokio::select! {
                _ = wake().notify.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = stop_requested(&mut stop) => {}
            }
        }
    }
}

/// Drains the events folder for as long as `stop` is not set: at once, then on every append
/// this process makes and at least every [`POLL`]; engine errors are logged and retried.
/// With `leave_busy`, files other processes are forwarding now are left to them (`serve`).
pub async fn drain_until(
    cluster: Cluster,
    folders: Folders,
    limits: StreamLimits,
    leave_busy: bool,
    mut stop: watch::Receiver<bool>,
) {
    listen();
    if let Some(engine) = connect_until(&cluster, &mut stop, false).await {
        drain_with(engine, folders, limits, leave_busy, stop).await;
    }
}

/// [`drain_until`] on a connection made already.
pub async fn drain_with(
    engine: Engine,
    folders: Folders,
    limits: StreamLimits,
    leave_busy: bool,
    mut stop: watch::Receiver<bool>,
) {
    listen();
    let mut fwd = Forwarder::new(engine, folders, limits);
    let mut backoff = Backoff::default();
    loop {
        let delay = match fwd.drain(leave_busy).await {
            Ok(()) => {
                backoff.reset();
                POLL
            }
            Err(e) => {
                backoff.failed(&e);
                backoff.delay()
            }
        };
        tokio::select! {
            _ = wake().notify.notified() => {}
            _ = tokio::time::sleep(delay) => {}
            _ = stop_requested(&mut stop) => {
                fwd.flush().await;
                return;
            }
        }
    }
}

/// How long [`Forwarder::drain_patiently`] makes a pass again after the stream refused one.
const RETRY_FOR: Duration = Duration::from_secs(15);

/// Waits between attempts after engine errors: from a quarter second, doubling to 4 s; the
/// first error of a series is logged as a warning, the rest at debug level.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn failed(&mut self, e: &ForwardError) {
        if self.failures == 0 {
            tracing::warn!("forwarding events: {e}; trying again");
        } else {
            tracing::debug!("forwarding events: {e}; trying again");
        }
        self.failures = self.failures.saturating_add(1);
    }

    fn reset(&mut self) {
        if self.failures > 0 {
            tracing::info!("forwarding events again");
        }
        self.failures = 0;
    }

    fn delay(&self) -> Duration {
        let shift = self.failures.saturating_sub(1).min(4);
        Duration::from_millis(250u64 << shift)
    }
}
