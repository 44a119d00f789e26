//! `serve` with `[cluster]`: every host's events, from the engine's stream.
//!
//! ```text
//!  JetStream PIPEWATCH_EVENTS ──ordered consumer──► mirror <state_dir>/cluster/events/ ──► ingest
//!  (every host's forwarder)        (this task)        pipeline_<run_id>.jsonl, seq = line
//! ```
//!
//! The task here takes the place of the tailer: it reads the stream from its saved position,
//! appends each event to the *mirror* of its run's file, and hands the ingest task the
//! [`Batch`] the tailer would have read from that file (the same reader reads it back). So
//! everything downstream — the index, the bus, the streams, replays, retention, the page —
//! works on the mirror as it works on the events folder without `[cluster]`.
//!
//! # Invariants
//!
//! - **Once, in order, by `(run_id, seq)`.** A line is appended only when its `seq` is the
//!   next line of its mirror file: a repeat (a forwarder sending again, a consumer delivering
//!   again) is dropped. Forwarders send every line of a run file, a line that is not an event
//!   as a placeholder (an empty line here, so `seq` stays the line's index, in the mirror as
//!   in the host's own file). A line past a missing one was stored out of order (publishing is
//!   pipelined: a later line got through while an earlier one was lost); it is dropped, and
//!   comes again after the missing one (`cluster::forward`). A line still missing after more
//!   than [`MAX_AHEAD`] of the run's later lines (more than a forwarder has in flight: the
//!   stream lost it) is given up on, logged, and kept as an empty line. Every dashboard
//!   counts the same messages, so all of them give up at the same line.
//! - **Cursors are stream sequences.** Each batch carries its first event's stream sequence
//!   ([`Batch::cursor`]); a batch holds consecutive messages of one run only, so its events'
//!   sequences follow each other. Every dashboard gives an event the same cursor, so a
//!   client's `since` resumes on any of them.
//! - **The saved position is the feed's last committed cursor.** The ingest task commits a
//!   batch's summaries, its mirror checkpoint and its cursors in one transaction; reading
//!   resumes after the last committed cursor. At start, a mirror file longer than its
//!   committed checkpoint is cut back to it ([`prepare_mirror`]): what was appended and not
//!   committed is consumed again. So `kill -9` at any moment gives every event exactly once.
//! - **Catching up.** When the stream's end as it was at start has been handed on,
//!   [`TailStats::first_scan_done`](crate::tail::TailStats) is set, as the tailer's first scan
//!   sets it: ingest then marks the catch-up read (`server::catchup`).
//! - **An unreachable engine never stops `serve`.** Connecting is retried in the background;
//!   meanwhile health says why (the tailer's `error`). Once connected, the client reconnects
//!   by itself and the ordered consumer is created again from where it got to.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::{self, stream};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use super::state::AppState;
use crate::cluster::{Engine, STREAM, SUBJECT_PREFIX, StreamLimits};
use crate::config::Cluster;
use crate::event::RunId;
use crate::journal::files::file_identity;
use crate::sync::MutexExt;
use crate::tail::{Batch, Checkpoint, DEFAULT_MAX_LINE_BYTES, ReadLimits, parse_line, read_file};

/// The folder under `[server] state_dir` where a dashboard with `[cluster]` keeps what it
/// shows: its own index and the mirror.
pub fn state_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("cluster")
}

/// The mirror of every host's run files.
pub fn mirror_dir(state_dir: &Path) -> PathBuf {
    self::state_dir(state_dir).join("events")
}

/// Messages of one run are appended together up to about this many bytes.
const MAX_GROUP_BYTES: usize = crate::tail::DEFAULT_MAX_BATCH_BYTES;

/// Waits between attempts to reach the engine, doubling up to the last.
const RETRY: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// How often the connection's state is looked at for health.
const HEALTH_EVERY: Duration = Duration::from_secs(1);

/// Cuts every mirror file back to what the index has committed of it, and returns where each
/// run's mirror file ends (its checkpoint). A file the index has no checkpoint of was never
/// committed: it is emptied. Runs before the consumer starts, on the blocking pool.
pub fn prepare_mirror(
    dir: &Path,
    checkpoints: &[Checkpoint],
) -> io::Result<HashMap<RunId, Checkpoint>> {
    std::fs::create_dir_all(dir)?;
    let committed: HashMap<&RunId, &Checkpoint> =
        checkpoints.iter().map(|c| (&c.run_id, c)).collect();
    let mut runs = HashMap::new();
    for file in crate::journal::files::list(dir)? {
        let f = crate::fsx::open_read(&file.path)?;
        let meta = f.metadata()?;
        drop(f);
        let identity = file_identity(&meta);
        let cp = committed.get(&file.id).copied();
        // A checkpoint of another file (a run only announced has none of any file) says
        // nothing about this one's bytes.
        let keep = match cp {
            Some(c) if (c.dev, c.ino) == identity => c.offset,
            _ => 0,
        };
        if meta.len() > keep {
            tracing::info!(
                file = %file.path.display(),
                from = meta.len(),
                to = keep,
                "cutting the mirror back to what the index committed; the rest is read again from the stream"
            );
            OpenOptions::new()
                .write(true)
                .open(&file.path)?
                .set_len(keep)?;
        }
        if let Some(c) = cp
            && keep > 0
        {
            runs.insert(file.id.clone(), c.clone());
        }
    }
    Ok(runs)
}

/// One message of the stream as this dashboard applies it.
struct Message {
    /// Its stream sequence.
    stream_seq: u64,
    run_id: RunId,
    seq: u64,
    /// The line to append (with its `\n`); an empty line for a payload that is not an event.
    line: Vec<u8>,
    is_event: bool,
}

/// Reads a message: its run and `seq` from `Nats-Msg-Id` (`<run_id>:<seq>`), else from the
/// payload; `None` (logged) when neither says.
fn read_message(m: &jetstream::Message) -> Option<Message> {
    let stream_seq = match m.info() {
        Ok(info) => info.stream_sequence,
        Err(e) => {
            tracing::warn!(subject = %m.subject, "a message without its stream sequence: {e}");
            return None;
        }
    };
    let payload: &[u8] = &m.payload;
    let parsed = parse_line(payload);
    let from_header = m
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .and_then(|v| {
            let (run, seq) = v.as_str().rsplit_once(':')?;
            Some((RunId::parse(run).ok()?, seq.parse::<u64>().ok()?))
        });
    // An event names its run and seq; so does a forwarder's placeholder for a line of the
    // file that is not an event (`{"run_id", "seq", "host"}`).
    let from_payload = match &parsed {
        Ok(e) => RunId::parse(&e.run_id).ok().zip(e.seq),
        Err(_) => serde_json::from_slice::<Placeholder>(payload)
            .ok()
            .and_then(|p| Some((RunId::parse(&p.run_id).ok()?, p.seq))),
    };
    let Some((run_id, seq)) = from_header.or(from_payload) else {
        tracing::warn!(
            stream_seq,
            subject = %m.subject,
            "skipped a message that names no run and seq (no Nats-Msg-Id, and its payload does not)"
        );
        return None;
    };
    let line = match &parsed {
        Ok(_) => one_line(payload),
        Err(_) if from_placeholder(payload) => None,
        Err(why) => {
            tracing::warn!(
                stream_seq,
                run_id = %run_id,
                seq,
                "a message that is not an event: {why}; its line stays empty"
            );
            None
        }
    };
    let is_event = line.is_some();
    let mut line = line.unwrap_or_default();
    line.push(b'\n');
    Some(Message {
        stream_seq,
        run_id,
        seq,
        line,
        is_event,
    })
}

/// A forwarder's message for a line of a run file that is not an event (malformed, or over
/// the size cap): it keeps the line's `seq`, as an empty line of the mirror.
#[derive(serde::Deserialize)]
struct Placeholder {
    run_id: String,
    seq: u64,
}

fn from_placeholder(payload: &[u8]) -> bool {
    serde_json::from_slice::<Placeholder>(payload).is_ok()
}

/// The payload as one line of JSON (without its `\n`): as it is when it is one line, else
/// written again compactly.
fn one_line(payload: &[u8]) -> Option<Vec<u8>> {
    let trimmed = payload.trim_ascii();
    if !trimmed.contains(&b'\n') {
        return Some(trimmed.to_vec());
    }
    let value: serde_json::Value = serde_json::from_slice(trimmed).ok()?;
    serde_json::to_vec(&value).ok()
}

/// Consecutive messages of one run, to append together and hand on as batches.
struct Group {
    run_id: RunId,
    bytes: Vec<u8>,
    /// The `seq` of the line after the group's last.
    next_seq: u64,
    /// Each event's `seq` and stream sequence, in order.
    cursors: Vec<(u64, u64)>,
}

impl Group {
    /// Whether `m` can follow in this group: the same run, and, for an event, the stream
    /// sequence right after the group's last event's (a batch's cursors follow each other).
    fn takes(&self, m: &Message) -> bool {
        self.run_id == m.run_id
            && self.bytes.len() < MAX_GROUP_BYTES
            && (!m.is_event
                || self
                    .cursors
                    .last()
                    .is_none_or(|&(_, s)| s + 1 == m.stream_seq))
    }
}

/// The consumer's side of the mirror: where each run's file ends, and the group being built.
struct Mirror {
    dir: PathBuf,
    runs: HashMap<RunId, Checkpoint>,
    group: Option<Group>,
    /// Per run, how many of its lines came past a missing one since it went missing.
    ahead: HashMap<RunId, u64>,
    /// Set when this dashboard resumed from before the stream's first message (the stream
    /// dropped what this dashboard had not read: by age or `max_bytes`): the runs seen since.
    /// A run's first line seen then may follow lines the stream no longer holds, which are
    /// not waited for.
    resumed_past_loss: Option<std::collections::HashSet<RunId>>,
}

/// Lines of a run that may come past a missing one before it counts as lost: more than a
/// forwarder has in flight ([`crate::cluster::forward::MAX_IN_FLIGHT`]), so that a line stored
/// out of order (a later one got through while it was lost) is always waited for.
const MAX_AHEAD: u64 = 4 * crate::cluster::forward::MAX_IN_FLIGHT as u64;

impl Mirror {
    fn new(dir: PathBuf, runs: HashMap<RunId, Checkpoint>) -> Mirror {
        Mirror {
            dir,
            runs,
            group: None,
            ahead: HashMap::new(),
            resumed_past_loss: None,
        }
    }

    /// The `seq` the next line of `run` must have.
    fn next_seq(&self, run: &RunId) -> u64 {
        match &self.group {
            Some(g) if g.run_id == *run => g.next_seq,
            _ => self.runs.get(run).map_or(0, |c| c.lines),
        }
    }

    /// Applies a message: dropped if a repeat, added to the group otherwise (the group handed
    /// on first when the message cannot join it).
    async fn apply(&mut self, m: Message, tx: &mpsc::Sender<Batch>) -> Result<(), Stopped> {
        if self.group.as_ref().is_some_and(|g| !g.takes(&m)) {
            self.flush(tx).await?;
        }
        let next = self.next_seq(&m.run_id);
        if m.seq < next {
            tracing::debug!(run_id = %m.run_id, seq = m.seq, "a repeated event dropped");
            return Ok(());
        }
        let first_seen = self
            .resumed_past_loss
            .as_mut()
            .is_some_and(|seen| seen.insert(m.run_id.clone()));
        if m.seq > next && !first_seen {
            // A line past a missing one: the forwarder that lost it sends it again, then the
            // lines after it (`cluster::forward`). Every dashboard counts the same messages
            // of the stream, so all of them wait, or give up, at the same line.
            let ahead = self.ahead.entry(m.run_id.clone()).or_default();
            *ahead += 1;
            if *ahead <= MAX_AHEAD {
                tracing::debug!(run_id = %m.run_id, expected = next, got = m.seq, "a line ahead of a missing one: waiting for it");
                return Ok(());
            }
        }
        self.ahead.remove(&m.run_id);
        let group = self.group.get_or_insert_with(|| Group {
            run_id: m.run_id.clone(),
            bytes: Vec::new(),
            next_seq: next,
            cursors: Vec::new(),
        });
        if m.seq > next {
            tracing::warn!(
                run_id = %m.run_id,
                expected = next,
                got = m.seq,
                "a gap in a run's events from the stream: seq {next} to {} never came (empty lines keep the seqs)",
                m.seq - 1
            );
            group
                .bytes
                .extend(std::iter::repeat_n(b'\n', (m.seq - next) as usize));
        }
        group.bytes.extend_from_slice(&m.line);
        group.next_seq = m.seq + 1;
        if m.is_event {
            group.cursors.push((m.seq, m.stream_seq));
        }
        Ok(())
    }

    /// Appends the group to its mirror file and hands on what the reader reads back, each
    /// batch with its first event's stream sequence. A write that fails is retried (the file
    /// is cut back to its checkpoint first, so a half-written attempt leaves nothing).
    async fn flush(&mut self, tx: &mpsc::Sender<Batch>) -> Result<(), Stopped> {
        let Some(group) = self.group.take() else {
            return Ok(());
        };
        let group = Arc::new(group);
        let from = self.runs.get(&group.run_id).cloned();
        let path = self.dir.join(group.run_id.file_name());
        let mut attempt = 0;
        let batches = loop {
            let (g, f, p) = (group.clone(), from.clone(), path.clone());
            let done = tokio::task::spawn_blocking(move || append_and_read(&p, &g, f.as_ref()))
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
            match done {
                Ok(b) => break b,
                Err(e) => {
                    tracing::error!(file = %path.display(), "cannot write the mirror of a run: {e}; trying again");
                    if tx.is_closed() {
                        return Err(Stopped);
                    }
                    tokio::time::sleep(RETRY[attempt.min(RETRY.len() - 1)]).await;
                    attempt += 1;
                }
            }
        };
        for b in batches {
            self.runs.insert(group.run_id.clone(), b.checkpoint.clone());
            tx.send(b).await.map_err(|_| Stopped)?;
        }
        Ok(())
    }
}

/// Ingest is gone: the dashboard is stopping.
struct Stopped;

/// Appends `group` to the file at `path` whose handed-on part ends at `from` (cutting off
/// anything after it first), and reads the new lines back as the tailer would.
fn append_and_read(
    path: &Path,
    group: &Group,
    from: Option<&Checkpoint>,
) -> io::Result<Vec<Batch>> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    let end = from.map_or(0, |c| c.offset);
    if file.metadata()?.len() > end {
        file.set_len(end)?;
    }
    file.write_all(&group.bytes)?;
    drop(file);
    let limits = ReadLimits::new(DEFAULT_MAX_LINE_BYTES);
    let mut at = from.cloned();
    let mut out = Vec::new();
    loop {
        let read = read_file(path, &group.run_id, at.as_ref(), 0, limits)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let mut batch = read.batch;
        if let Some(first) = batch.events.first() {
            batch.cursor = group
                .cursors
                .binary_search_by_key(&first.seq, |&(seq, _)| seq)
                .ok()
                .map(|i| group.cursors[i].1);
            if batch.cursor.is_none() {
                // The reader and the stream disagree on a line (it cannot happen with lines
                // written here): the batch is not given a cursor of its own.
                tracing::error!(file = %path.display(), seq = first.seq, "an event read back from the mirror has no stream sequence");
            }
        }
        at = Some(batch.checkpoint.clone());
        if read.changed {
            out.push(batch);
        }
        if !read.more {
            return Ok(out);
        }
    }
}

/// What the consumer starts from.
pub struct Start {
    /// Where each run's mirror file ends ([`prepare_mirror`]).
    pub runs: HashMap<RunId, Checkpoint>,
    /// The stream sequence to read from: after the feed's last committed cursor.
    pub next: u64,
}

/// Consumes the engine's stream into the mirror and the ingest task until the dashboard
/// stops (or ingest is gone).
pub async fn run(state: Arc<AppState>, cluster: Cluster, start: Start, tx: mpsc::Sender<Batch>) {
    state.consuming.store(true, Ordering::Relaxed);
    let mut mirror = Mirror::new(state.events_dir.clone(), start.runs);
    let mut next = start.next;
    let closed = state.closed();
    tokio::pin!(closed);
    tokio::select! {
        _ = consume(&state, &cluster, &mut mirror, &mut next, &tx) => {}
        _ = &mut closed => {}
    }
    state.consuming.store(false, Ordering::Relaxed);
}

/// Says in health why the engine cannot be read, or that it can.
fn note_engine(state: &AppState, problem: Option<String>) {
    let mut slot = state.tail_stats.folder_error.lock_anyway();
    if *slot != problem {
        match &problem {
            Some(p) => tracing::warn!("{p}"),
            None => tracing::info!("reading every host's events from the engine"),
        }
    }
    *slot = problem;
}

/// Connects (retrying), then reads the stream from `next` on, again from where it got to
/// after each failure. Returns only when ingest is gone.
async fn consume(
    state: &Arc<AppState>,
    cluster: &Cluster,
    mirror: &mut Mirror,
    next: &mut u64,
    tx: &mpsc::Sender<Batch>,
) {
    let mut attempt = 0usize;
    let mut engine: Option<Engine> = None;
    // The stream's end as it was when first read: reached, the catch-up is read.
    let mut catch_up_end: Option<u64> = None;
    loop {
        if attempt > 0 {
            tokio::time::sleep(RETRY[(attempt - 1).min(RETRY.len() - 1)]).await;
        }
        attempt += 1;
        let e = match &engine {
            Some(e) => e.clone(),
            None => match Engine::connect(cluster).await {
                Ok(e) => {
                    engine = Some(e.clone());
                    e
                }
                Err(e) => {
                    let problem = match e {
                        crate::cluster::EngineError::Unreachable { .. } => {
                            format!("the engine is unreachable: {e}; trying again")
                        }
                        _ => format!("{e}; trying again"),
                    };
                    note_engine(state, Some(problem));
                    continue;
                }
            },
        };
        let limits = StreamLimits::of(&state.workspace());
        let mut stream = match e.ensure_stream(limits).await {
            Ok(s) => s,
            Err(err) => {
                note_engine(state, Some(format!("{err}; trying again")));
                continue;
            }
        };
        let (first, last) = match stream.info().await {
            Ok(info) => (info.state.first_sequence, info.state.last_sequence),
            Err(err) => {
                note_engine(
                    state,
                    Some(format!(
                        "NATS JetStream: cannot read the stream {STREAM}: {err}; trying again"
                    )),
                );
                continue;
            }
        };
        if *next < first && mirror.resumed_past_loss.is_none() {
            tracing::warn!(
                stream_first = first,
                dashboard_next = *next,
                "the stream {STREAM} no longer holds the events from sequence {} to {} (its max \
                 age or max_bytes removed them): the runs they belong to show what is left",
                *next,
                first - 1
            );
            mirror.resumed_past_loss = Some(Default::default());
        }
        if last + 1 < *next {
            tracing::warn!(
                stream_last = last,
                dashboard_next = *next,
                "the stream {STREAM} ends before where this dashboard got to (was it deleted and created again?): \
                 events are shown from sequence {} on; remove {} to read it again from its start",
                *next,
                self::state_dir(&state.config.server.state_dir).display()
            );
        }
        let end = *catch_up_end.get_or_insert(last);
        let messages = match open(&stream, *next).await {
            Ok(m) => m,
            Err(err) => {
                note_engine(state, Some(format!("{err}; trying again")));
                continue;
            }
        };
        note_engine(state, None);
        if *next > end {
            caught_up(state);
        }
        match read(state, &e, messages, mirror, next, end, tx).await {
            Ok(()) => {}
            Err(Stopped) => return,
        }
        // The consumer failed: a new one from where this one got to.
        attempt = 1;
    }
}

/// An ordered consumer of every subject of the stream, from stream sequence `from`.
async fn open(
    stream: &stream::Stream,
    from: u64,
) -> Result<jetstream::consumer::pull::Ordered, String> {
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: format!("{SUBJECT_PREFIX}.>"),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from.max(1),
            },
            ..Default::default()
        })
        .await
        .map_err(|e| format!("NATS JetStream: cannot create a consumer of {STREAM}: {e}"))?;
    consumer
        .messages()
        .await
        .map_err(|e| format!("NATS JetStream: cannot read {STREAM}: {e}"))
}

/// The catch-up is read once ingest has committed what was handed on ([`TailStats`]).
///
/// [`TailStats`]: crate::tail::TailStats
fn caught_up(state: &AppState) {
    state
        .tail_stats
        .first_scan_done
        .store(true, Ordering::Release);
}

/// Reads messages until the consumer fails (`Ok`) or ingest is gone (`Err`). What is waiting
/// is taken together; when nothing more is, the group is handed on.
async fn read(
    state: &Arc<AppState>,
    engine: &Engine,
    mut messages: jetstream::consumer::pull::Ordered,
    mirror: &mut Mirror,
    next: &mut u64,
    end: u64,
    tx: &mpsc::Sender<Batch>,
) -> Result<(), Stopped> {
    let mut health = tokio::time::interval(HEALTH_EVERY);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let item = if mirror.group.is_some() {
            match messages.next().now_or_never() {
                Some(item) => item,
                None => {
                    mirror.flush(tx).await?;
                    if *next > end {
                        caught_up(state);
                    }
                    continue;
                }
            }
        } else {
            tokio::select! {
                item = messages.next() => item,
                _ = health.tick() => {
                    use async_nats::connection::State;
                    let problem = match engine.client.connection_state() {
                        State::Connected => None,
                        _ => Some(format!(
                            "the engine is unreachable: disconnected from NATS ({}); reconnecting",
                            engine_servers(state)
                        )),
                    };
                    note_engine(state, problem);
                    continue;
                }
            }
        };
        match item {
            Some(Ok(m)) => {
                let Some(msg) = read_message(&m) else {
                    // Unreadable: passed over, and the position moves on.
                    if let Ok(info) = m.info() {
                        *next = info.stream_sequence + 1;
                    }
                    continue;
                };
                let stream_seq = msg.stream_seq;
                mirror.apply(msg, tx).await?;
                *next = stream_seq + 1;
                if mirror.group.is_none() && *next > end {
                    caught_up(state);
                }
            }
            Some(Err(e)) => {
                mirror.flush(tx).await?;
                tracing::warn!(
                    "reading the stream {STREAM} failed: {e}; reading again from sequence {}",
                    *next
                );
                return Ok(());
            }
            None => {
                mirror.flush(tx).await?;
                return Ok(());
            }
        }
    }
}

/// The configured NATS servers, for messages.
fn engine_servers(state: &AppState) -> String {
    state
        .config
        .cluster
        .as_ref()
        .map(|c| c.nats.join(","))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> RunId {
        RunId::parse(s).unwrap()
    }

    fn msg(stream_seq: u64, run: &str, seq: u64) -> Message {
        let line = format!(
            "{{\"seq\":{seq},\"run_id\":\"{run}\",\"stage\":\"a\",\"event\":\"log\",\"timestamp\":\"2026-12-03T10:15:00.000Z\",\"msg\":\"m{seq}\",\"host\":\"h\"}}\n"
        );
        Message {
            stream_seq,
            run_id: id(run),
            seq,
            line: line.into_bytes(),
            is_event: true,
        }
    }

    /// Applies the messages and hands on what is left; returns the batches, each as its
    /// cursor and its events' `(seq, cursor)`.
    async fn apply_all(mirror: &mut Mirror, msgs: Vec<Message>) -> Vec<(Option<u64>, Vec<u64>)> {
        let (tx, mut rx) = mpsc::channel(1024);
        for m in msgs {
            assert!(mirror.apply(m, &tx).await.is_ok());
        }
        assert!(mirror.flush(&tx).await.is_ok());
        drop(tx);
        let mut out = Vec::new();
        while let Some(b) = rx.recv().await {
            out.push((b.cursor, b.events.iter().map(|e| e.seq).collect()));
        }
        out
    }

    #[tokio::test]
    async fn repeats_are_dropped_lines_wait_for_a_missing_one_and_batches_carry_stream_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let mut mirror = Mirror::new(dir.path().to_path_buf(), HashMap::new());
        let got = apply_all(
            &mut mirror,
            vec![
                msg(1, "r", 0),
                msg(2, "r", 1),
                msg(3, "o", 0),
                // A repeat: dropped, and the next event starts a new batch.
                msg(4, "r", 1),
                msg(5, "r", 2),
                // Stored before seq 3, which was lost: waited for, not shown out of order.
                msg(6, "r", 4),
                msg(7, "r", 3),
                // Sent again after it, as the forwarder does.
                msg(8, "r", 4),
            ],
        )
        .await;
        assert_eq!(
            got,
            vec![
                (Some(1), vec![0, 1]),
                (Some(3), vec![0]),
                (Some(5), vec![2]),
                (Some(7), vec![3, 4]),
            ]
        );
        let text = std::fs::read_to_string(dir.path().join(id("r").file_name())).unwrap();
        assert_eq!(text.lines().count(), 5);
        assert_eq!(mirror.runs[&id("r")].lines, 5);
        // The same again (a consumer reading from further back): nothing new.
        let again = apply_all(&mut mirror, vec![msg(7, "r", 3), msg(8, "r", 4)]).await;
        assert!(again.is_empty(), "{again:?}");
    }

    #[tokio::test]
    async fn a_line_that_never_comes_is_given_up_on_after_more_than_a_forwarder_has_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let mut mirror = Mirror::new(dir.path().to_path_buf(), HashMap::new());
        // Seq 1 never comes: the lines after it wait, until more have come than any
        // forwarder has in flight; from there on the run goes on, seq 1 an empty line.
        let mut msgs = vec![msg(1, "r", 0)];
        let last = MAX_AHEAD + 2;
        msgs.extend((2..=last).map(|seq| msg(seq, "r", seq)));
        let got = apply_all(&mut mirror, msgs).await;
        assert_eq!(got, vec![(Some(1), vec![0]), (Some(last), vec![last])]);
        let text = std::fs::read_to_string(dir.path().join(id("r").file_name())).unwrap();
        assert_eq!(text.lines().count() as u64, last + 1);
    }

    #[tokio::test]
    async fn after_the_stream_dropped_what_was_not_read_a_run_shows_what_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let mut mirror = Mirror::new(dir.path().to_path_buf(), HashMap::new());
        mirror.resumed_past_loss = Some(Default::default());
        // Seqs 0 to 2 were removed from the stream: the first line seen is taken as it is;
        // a line missing after that is still waited for.
        let got = apply_all(
            &mut mirror,
            vec![
                msg(10, "r", 3),
                msg(11, "r", 5),
                msg(12, "r", 4),
                msg(13, "r", 5),
            ],
        )
        .await;
        assert_eq!(got, vec![(Some(10), vec![3]), (Some(12), vec![4, 5])]);
    }

    #[tokio::test]
    async fn a_mirror_longer_than_its_committed_checkpoint_is_cut_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut mirror = Mirror::new(dir.path().to_path_buf(), HashMap::new());
        apply_all(&mut mirror, vec![msg(1, "r", 0), msg(2, "r", 1)]).await;
        let committed = mirror.runs[&id("r")].clone();
        apply_all(&mut mirror, vec![msg(3, "r", 2), msg(4, "u", 0)]).await;
        // A restart with only the first batch committed: the rest is read again.
        let runs = prepare_mirror(dir.path(), std::slice::from_ref(&committed)).unwrap();
        assert_eq!(runs[&id("r")], committed);
        assert!(!runs.contains_key(&id("u")));
        let len = |run: &str| {
            std::fs::metadata(dir.path().join(id(run).file_name()))
                .unwrap()
                .len()
        };
        assert_eq!(len("r"), committed.offset);
        assert_eq!(len("u"), 0);
        let mut mirror = Mirror::new(dir.path().to_path_buf(), runs);
        let got = apply_all(
            &mut mirror,
            vec![msg(3, "r", 2), msg(4, "u", 0), msg(5, "r", 3)],
        )
        .await;
        assert_eq!(
            got,
            vec![(Some(3), vec![2]), (Some(4), vec![0]), (Some(5), vec![3]),]
        );
    }
}
