//! The event bus: every event the dashboard ingests is published here once, to every
//! follower, in ingest order, each with its cursor (`index::feed`).
//!
//! The bus keeps *logs*: the recent events in the order they were published, bounded in
//! bytes, that followers read at their own pace. One log is the all-runs ring (keyed by
//! cursor); each run that someone follows has one too (keyed by `seq`, created when a follower
//! subscribes, dropped when the last one leaves). A follower remembers the key of the last
//! event it took, and takes what comes after it ([`Bus::after`], [`RunLog::after`]); a
//! [`watch`] channel per log wakes it when more is published.
//!
//! Every event is encoded once, when it is published ([`Fed`]), and held once: the logs, the
//! followers' batches and the sockets' queues hold references to it, never a copy. So memory
//! is bounded by `[server] stream_buffer`, not by the number of followers: the ring holds up
//! to that many bytes, and the logs of the followed runs together as many again (mostly the
//! same events as the ring's).
//!
//! A slow follower never slows the publisher or the others: logs drop their oldest events,
//! whoever has read them. A follower that falls behind a log's start is told so
//! ([`Taken::Behind`]) and reads the part that fell out again from the run files, then goes on
//! from the log (`server::routes::streams`). Nobody is cut off for it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OnceCell, watch};

use crate::event::{Json, Published, RunId};
use crate::tail::Checkpoint;

/// The default size of the ring of recent events, in bytes (what [`Fed::cost`] counts): that
/// of `[server] stream_buffer`.
pub const DEFAULT_RING_BYTES: usize = crate::config::DEFAULT_STREAM_BUFFER;

/// An event as published: its cursor and its encodings, built once for every subscriber.
#[derive(Debug)]
pub struct Fed {
    /// Its place in the all-runs stream (`index::feed`).
    pub cursor: u64,
    /// The `/ws/events` frame: the event's JSON with `"cursor"` added.
    pub frame: Json,
    pub event: Arc<Published>,
}

impl Fed {
    pub fn new(cursor: u64, event: Arc<Published>) -> Fed {
        let json: &str = &event.json;
        // The event's JSON is an object with `seq` (never `{}`): the cursor goes last.
        let frame = match json.strip_suffix('}') {
            Some(head) => {
                use std::fmt::Write as _;
                let mut f = String::with_capacity(head.len() + 32);
                let _ = write!(f, "{head},\"cursor\":{cursor}}}");
                Json::from(f)
            }
            None => event.json.clone(),
        };
        Fed {
            cursor,
            frame,
            event,
        }
    }

    /// What holding it costs, roughly, in bytes: both encodings and the parsed event.
    pub fn cost(&self) -> usize {
        self.frame.len() + 2 * self.event.json.len() + 256
    }

    /// Its key in the all-runs ring.
    fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Its key in its run's log.
    fn seq(&self) -> u64 {
        self.event.seq
    }
}

/// What a follower finds in a log after the last event it took.
#[derive(Debug)]
pub enum Taken {
    /// The next events (none: nothing published since).
    Events(Vec<Arc<Fed>>),
    /// The log no longer holds all that follows: the events up to (not including) key `until`
    /// (the log's first; `None` when it is empty) must be read again from the run files.
    Behind { until: Option<u64> },
}

/// Recent events in publication order, their keys growing, bounded in bytes.
#[derive(Default)]
struct Log {
    events: VecDeque<Arc<Fed>>,
    bytes: usize,
    /// The key of the last event dropped (or the key before the first ever published): a
    /// follower before it has missed something.
    dropped: Option<u64>,
}

impl Log {
    fn push(&mut self, e: &Arc<Fed>) {
        self.bytes += e.cost();
        self.events.push_back(e.clone());
    }

    /// Drops the oldest event; false if there is none.
    fn drop_oldest(&mut self, key: fn(&Fed) -> u64) -> bool {
        let Some(old) = self.events.pop_front() else {
            return false;
        };
        self.bytes -= old.cost();
        self.dropped = Some(key(&old));
        true
    }

    fn trim(&mut self, max_bytes: usize, key: fn(&Fed) -> u64) {
        while self.bytes > max_bytes && self.drop_oldest(key) {}
    }

    /// Up to `max` events after key `after` (after nothing: from the start).
    fn after(&self, key: fn(&Fed) -> u64, after: Option<u64>, max: usize) -> Taken {
        if let Some(dropped) = self.dropped
            && after.is_none_or(|a| a < dropped)
        {
            return Taken::Behind {
                until: self.events.front().map(|e| key(e)),
            };
        }
        let skip = match after {
            Some(a) => self.events.partition_point(|e| key(e) <= a),
            None => 0,
        };
        Taken::Events(self.events.iter().skip(skip).take(max).cloned().collect())
    }
}

/// The recent events of one run, for the followers of that run.
pub struct RunLog {
    log: Mutex<Log>,
    tx: watch::Sender<()>,
    reread: Mutex<Reread>,
}

/// A tailer read's start is kept as a mark when it is this many lines past the last mark.
const MARK_EVERY: u64 = 256;

/// The most marks a run keeps (the oldest go first): with one per [`MARK_EVERY`] lines, the
/// last four million lines.
const MAX_MARKS: usize = 16_384;

/// The most file bytes of spans read again that a run keeps for its other followers.
const MAX_SPAN_BYTES: u64 = 4 << 20;

/// What the followers of a run that fell behind its log share: the places in its file where
/// the tailer's reads began (*marks*), and the spans between two marks read again lately. A
/// follower behind reads again from mark to mark, and each span is read once: the other
/// followers behind take the same events instead of parsing the file again.
#[derive(Default)]
struct Reread {
    marks: VecDeque<Checkpoint>,
    spans: VecDeque<Span>,
    span_bytes: u64,
}

/// The lines of a run's file between two marks.
#[derive(Clone)]
pub struct Span {
    pub from: Checkpoint,
    pub to: Checkpoint,
    /// Its events, read once by the first follower that needs them, while the others that
    /// need them too wait for that read.
    pub events: Arc<OnceCell<Arc<Vec<Arc<Published>>>>>,
}

impl RunLog {
    fn lock(&self) -> MutexGuard<'_, Log> {
        lock(&self.log)
    }

    /// Up to `max` of the run's events after `seq` `after` (after nothing: all it holds).
    pub fn after(&self, after: Option<u64>, max: usize) -> Taken {
        self.lock().after(Fed::seq, after, max)
    }

    /// The span between two marks that holds the line `line`, shared with the run's other
    /// followers (a run keeps spans up to 4 MiB of its file); `None` if no two marks enclose
    /// it.
    pub fn span(&self, line: u64) -> Option<Span> {
        let mut r = lock(&self.reread);
        if let Some(s) = r
            .spans
            .iter()
            .find(|s| s.from.lines <= line && line < s.to.lines)
        {
            return Some(s.clone());
        }
        let next = r.marks.partition_point(|m| m.lines <= line);
        let (from, to) = (r.marks.get(next.checked_sub(1)?)?, r.marks.get(next)?);
        let span = Span {
            from: from.clone(),
            to: to.clone(),
            events: Arc::default(),
        };
        r.span_bytes += span.to.offset.saturating_sub(span.from.offset);
        r.spans.push_back(span.clone());
        while r.span_bytes > MAX_SPAN_BYTES
            && r.spans.len() > 1
            && let Some(old) = r.spans.pop_front()
        {
            r.span_bytes -= old.to.offset.saturating_sub(old.from.offset);
        }
        Some(span)
    }

    fn mark(&self, at: &Checkpoint) {
        let mut r = lock(&self.reread);
        if let Some(m) = r.marks.back() {
            if (at.dev, at.ino) != (m.dev, m.ino) || at.lines < m.lines {
                // Another file under the same name: the marks of the old one do not hold.
                *r = Reread::default();
            } else if at.lines < m.lines + MARK_EVERY {
                return;
            }
        }
        r.marks.push_back(at.clone());
        if r.marks.len() > MAX_MARKS {
            r.marks.pop_front();
        }
    }
}

/// A follower's subscription to one run: the run's log, and the channel that says it grew.
pub struct RunSubscription {
    pub log: Arc<RunLog>,
    pub changed: watch::Receiver<()>,
}

pub struct Bus {
    ring: Mutex<Ring>,
    /// Tells the all-runs followers that the ring grew.
    all: watch::Sender<()>,
    runs: Mutex<Runs>,
    max_bytes: usize,
}

struct Ring {
    log: Log,
    /// The cursor of the last event published (the one before the first, before any).
    last: u64,
}

#[derive(Default)]
struct Runs {
    logs: HashMap<RunId, Arc<RunLog>>,
    /// What all the run logs hold, in bytes.
    bytes: usize,
}

/// Everything under a bus lock is consistent between statements, so a poisoned lock is usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Bus {
    /// A bus whose ring (and whose run logs, together) hold up to `max_bytes`, and whose first
    /// event will have cursor `first`.
    pub fn new(max_bytes: usize, first: u64) -> Bus {
        let last = first.saturating_sub(1);
        Bus {
            ring: Mutex::new(Ring {
                log: Log {
                    // What came before this bus is in the files only.
                    dropped: Some(last),
                    ..Log::default()
                },
                last,
            }),
            all: watch::Sender::new(()),
            runs: Mutex::new(Runs::default()),
            max_bytes,
        }
    }

    /// Publishes `events`, in order (their cursors follow each other), to every stream:
    /// [`Bus::publish_to_runs`] then [`Bus::publish_to_all`].
    pub fn publish(&self, events: &[Arc<Fed>]) {
        self.publish_to_runs(events);
        self.publish_to_all(events);
    }

    /// Hands `events` to the followers of their runs. A run's log is keyed by `seq`, which
    /// the file fixes, so this may come before the batch is committed to the index: a
    /// follower that gets an event again after a restart knows it by its `seq`.
    pub fn publish_to_runs(&self, events: &[Arc<Fed>]) {
        let mut runs = lock(&self.runs);
        if runs.logs.is_empty() {
            return;
        }
        // A run whose followers have all left keeps no log.
        runs.forget_unfollowed();
        let mut touched: Vec<Arc<RunLog>> = Vec::new();
        for chunk in events.chunk_by(|a, b| a.event.run_id == b.event.run_id) {
            let Some(run) = runs.logs.get(&chunk[0].event.run_id).cloned() else {
                continue;
            };
            let mut log = run.lock();
            let before = log.bytes;
            for e in chunk {
                log.push(e);
            }
            runs.bytes += log.bytes - before;
            drop(log);
            if !touched.iter().any(|t| Arc::ptr_eq(t, &run)) {
                touched.push(run);
            }
        }
        runs.trim(self.max_bytes);
        drop(runs);
        for run in touched {
            run.tx.send_replace(());
        }
    }

    /// Notes where reads of the followed runs' files began (`from` of each batch, in the
    /// order read), for their followers that fall behind ([`RunLog::span`]).
    pub fn mark_reads<'a>(&self, starts: impl IntoIterator<Item = &'a Checkpoint>) {
        let runs = lock(&self.runs);
        if runs.logs.is_empty() {
            return;
        }
        for from in starts {
            if let Some(run) = runs.logs.get(&from.run_id) {
                run.mark(from);
            }
        }
    }

    /// Puts `events` in the ring, for the all-runs stream. Their cursors are only given out
    /// once the batch is committed (`server::ingest`): a cursor must name the same event after
    /// a restart.
    pub fn publish_to_all(&self, events: &[Arc<Fed>]) {
        let Some(end) = events.last() else { return };
        let mut ring = lock(&self.ring);
        for e in events {
            ring.log.push(e);
        }
        ring.log.trim(self.max_bytes, Fed::cursor);
        ring.last = end.cursor;
        drop(ring);
        self.all.send_replace(());
    }

    /// A channel that changes whenever the ring grows.
    pub fn watch_all(&self) -> watch::Receiver<()> {
        self.all.subscribe()
    }

    /// Subscribes to one run's events from now on (callers read its file first).
    pub fn subscribe_run(&self, id: &RunId) -> RunSubscription {
        let mut runs = lock(&self.runs);
        runs.forget_unfollowed();
        let log = runs
            .logs
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(RunLog {
                    log: Mutex::new(Log::default()),
                    tx: watch::Sender::new(()),
                    reread: Mutex::new(Reread::default()),
                })
            })
            .clone();
        let changed = log.tx.subscribe();
        RunSubscription { log, changed }
    }

    /// Up to `max` events published after cursor `after`, if the ring still holds all of
    /// them (else some are older than the ring: they are in the files).
    pub fn after(&self, after: u64, max: usize) -> Taken {
        lock(&self.ring).log.after(Fed::cursor, Some(after), max)
    }

    /// The cursor just before the ring's first event: a follower that starts there gets the
    /// whole ring.
    pub fn ring_start(&self) -> u64 {
        let ring = lock(&self.ring);
        ring.log
            .events
            .front()
            .map_or(ring.last, |e| e.cursor.saturating_sub(1))
    }

    /// The cursor of the last event published (the one before the first, before any).
    pub fn last_cursor(&self) -> u64 {
        lock(&self.ring).last
    }

    /// The ring's size now: events and bytes.
    pub fn ring_size(&self) -> (usize, usize) {
        let ring = lock(&self.ring);
        (ring.log.events.len(), ring.log.bytes)
    }

    /// Current subscribers, all-runs and per-run.
    pub fn subscribers(&self) -> usize {
        let runs = lock(&self.runs);
        self.all.receiver_count()
            + runs
                .logs
                .values()
                .map(|r| r.tx.receiver_count())
                .sum::<usize>()
    }
}

impl Runs {
    fn forget_unfollowed(&mut self) {
        let mut freed = 0;
        self.logs.retain(|_, r| {
            let followed = r.tx.receiver_count() > 0;
            if !followed {
                freed += r.lock().bytes;
            }
            followed
        });
        self.bytes -= freed;
    }

    /// Drops the oldest events of the largest logs until all of them hold `max_bytes` at most.
    fn trim(&mut self, max_bytes: usize) {
        while self.bytes > max_bytes {
            let Some(largest) = self.logs.values().max_by_key(|r| r.lock().bytes) else {
                return;
            };
            let mut log = largest.lock();
            let before = log.bytes;
            // All that must go, from this one if it holds that much.
            let goal = before.saturating_sub(self.bytes - max_bytes);
            while log.bytes > goal && log.drop_oldest(Fed::seq) {}
            let freed = before - log.bytes;
            drop(log);
            self.bytes -= freed;
            if freed == 0 {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    fn ev(run: &str, seq: u64) -> Arc<Published> {
        let e = Event {
            seq: None,
            run_id: String::new(),
            pipeline: None,
            stage: "s".into(),
            event: "log".into(),
            level: None,
            timestamp: "2026-11-29T08:15:00.000Z".into(),
            source: None,
            msg: seq.to_string(),
            data: None,
            host: None,
        };
        Arc::new(Published::new(RunId::parse(run).unwrap(), seq, e))
    }

    fn fed(cursor: u64) -> Arc<Fed> {
        Arc::new(Fed::new(cursor, ev("r", cursor)))
    }

    fn cursors(taken: Taken) -> Vec<u64> {
        match taken {
            Taken::Events(v) => v.iter().map(|e| e.cursor).collect(),
            Taken::Behind { until } => panic!("behind, until {until:?}"),
        }
    }

    #[test]
    fn the_frame_is_the_event_with_its_cursor() {
        let f = fed(7);
        let v: serde_json::Value = serde_json::from_str(&f.frame).unwrap();
        assert_eq!(v["cursor"], 7);
        assert_eq!(v["seq"], 7);
        assert_eq!(v["run_id"], "r");
        assert!(!f.event.json.contains("cursor"));
    }

    #[test]
    fn ring_keeps_the_most_recent_bytes() {
        let one = fed(0).cost();
        let bus = Bus::new(3 * one, 1);
        bus.publish(&(1..=5).map(fed).collect::<Vec<_>>());
        assert_eq!(bus.ring_start(), 2);
        assert_eq!(cursors(bus.after(bus.ring_start(), 100)), vec![3, 4, 5]);
        assert_eq!(bus.ring_size(), (3, 3 * one));
        assert_eq!(bus.last_cursor(), 5);
    }

    #[test]
    fn after_a_cursor_from_the_ring_or_behind_it() {
        let one = fed(10).cost();
        let bus = Bus::new(3 * one, 10);
        assert_eq!(cursors(bus.after(9, 100)), Vec::<u64>::new());
        assert!(matches!(bus.after(8, 100), Taken::Behind { until: None }));
        bus.publish(&(10..=15).map(fed).collect::<Vec<_>>());
        assert_eq!(cursors(bus.after(12, 100)), vec![13, 14, 15]);
        assert_eq!(cursors(bus.after(12, 2)), vec![13, 14]);
        assert_eq!(cursors(bus.after(14, 100)), vec![15]);
        assert_eq!(cursors(bus.after(15, 100)), Vec::<u64>::new());
        assert_eq!(cursors(bus.after(99, 100)), Vec::<u64>::new());
        assert!(
            matches!(bus.after(11, 100), Taken::Behind { until: Some(13) }),
            "cursor 12 is no longer in the ring"
        );
    }

    #[test]
    fn cursors_that_skip_numbers_are_found_and_not_taken_for_a_gap() {
        let bus = Bus::new(usize::MAX, 1);
        bus.publish(&[fed(1), fed(5), fed(9)]);
        assert_eq!(cursors(bus.after(0, 100)), vec![1, 5, 9]);
        assert_eq!(cursors(bus.after(3, 100)), vec![5, 9]);
        assert_eq!(cursors(bus.after(5, 100)), vec![9]);
    }

    #[test]
    fn following_while_publishing_has_no_gap_and_no_duplicate() {
        let bus = Arc::new(Bus::new(usize::MAX, 0));
        let publisher = {
            let bus = bus.clone();
            std::thread::spawn(move || {
                for i in 0..20_000 {
                    bus.publish(&[fed(i)]);
                }
            })
        };
        let mut followers: Vec<(u64, Vec<u64>)> = Vec::new();
        for _ in 0..20 {
            followers.push((bus.ring_start(), Vec::new()));
            std::thread::yield_now();
        }
        publisher.join().unwrap();
        for (mut last, mut got) in followers {
            let start = last;
            loop {
                let more = cursors(bus.after(last, 1000));
                let Some(&l) = more.last() else { break };
                last = l;
                got.extend(more);
            }
            let expected: Vec<u64> = (start + 1..20_000).collect();
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn a_slow_follower_falls_behind_without_holding_anyone_back() {
        // Cursors of three digits: every event costs the same.
        let one = fed(100).cost();
        let bus = Bus::new(16 * one, 100);
        let slow = bus.ring_start();
        let mut fast = bus.ring_start();
        let mut watch = bus.watch_all();
        for i in 100..200 {
            bus.publish(&[fed(i)]);
            assert!(watch.has_changed().unwrap());
            watch.mark_unchanged();
            assert_eq!(cursors(bus.after(fast, 100)), vec![i]);
            fast = i;
        }
        assert!(matches!(
            bus.after(slow, 100),
            Taken::Behind { until: Some(184) }
        ));
    }

    fn run_seqs(log: &RunLog, after: Option<u64>) -> Vec<u64> {
        match log.after(after, 100) {
            Taken::Events(v) => v.iter().map(|e| e.event.seq).collect(),
            Taken::Behind { until } => panic!("behind, until {until:?}"),
        }
    }

    #[test]
    fn a_runs_followers_get_its_events_before_the_all_runs_stream_does() {
        let bus = Bus::new(usize::MAX, 0);
        let a = RunId::parse("r").unwrap();
        let mut run = bus.subscribe_run(&a);
        let all = bus.watch_all();
        let events: Vec<Arc<Fed>> = (0..3).map(fed).collect();
        bus.publish_to_runs(&events);
        assert!(run.changed.has_changed().unwrap());
        run.changed.mark_unchanged();
        assert_eq!(run_seqs(&run.log, None), vec![0, 1, 2]);
        assert_eq!(run_seqs(&run.log, Some(0)), vec![1, 2]);
        // Not committed yet: no cursor given out, nothing in the ring.
        assert!(!all.has_changed().unwrap());
        assert_eq!(bus.ring_size().0, 0);
        bus.publish_to_all(&events);
        assert!(all.has_changed().unwrap());
        assert_eq!(bus.last_cursor(), 2);
        assert!(
            !run.changed.has_changed().unwrap(),
            "a run's followers get each event once"
        );
    }

    #[test]
    fn a_runs_log_gets_only_its_run_and_goes_when_its_followers_do() {
        let bus = Bus::new(usize::MAX, 0);
        let a = RunId::parse("a").unwrap();
        let sub = bus.subscribe_run(&a);
        assert_eq!(bus.subscribers(), 1);
        let events: Vec<Arc<Fed>> = [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
            .iter()
            .enumerate()
            .map(|(i, (run, seq))| Arc::new(Fed::new(i as u64, ev(run, *seq))))
            .collect();
        bus.publish(&events);
        assert_eq!(run_seqs(&sub.log, None), vec![0, 1]);
        drop(sub);
        bus.publish(&[Arc::new(Fed::new(4, ev("a", 2)))]);
        assert_eq!(bus.subscribers(), 0);
        let runs = lock(&bus.runs);
        assert!(runs.logs.is_empty());
        assert_eq!(runs.bytes, 0);
    }

    #[test]
    fn the_run_logs_together_hold_what_the_ring_may() {
        // Cursors of three digits and `seq`s of two: every event costs the same.
        let one = Arc::new(Fed::new(100, ev("a", 10))).cost();
        let bus = Bus::new(10 * one, 100);
        let (a, b) = (RunId::parse("a").unwrap(), RunId::parse("b").unwrap());
        let (sa, sb) = (bus.subscribe_run(&a), bus.subscribe_run(&b));
        let mut cursor = 100;
        let mut publish = |run: &str, seqs: std::ops::Range<u64>| {
            let events: Vec<Arc<Fed>> = seqs
                .map(|s| {
                    cursor += 1;
                    Arc::new(Fed::new(cursor, ev(run, s)))
                })
                .collect();
            bus.publish_to_runs(&events);
        };
        publish("b", 10..14);
        publish("a", 10..30);
        // The largest log gave up its oldest: b keeps all of its own.
        assert_eq!(run_seqs(&sb.log, None), vec![10, 11, 12, 13]);
        assert!(matches!(
            sa.log.after(Some(15), 100),
            Taken::Behind { until: Some(24) }
        ));
        assert_eq!(run_seqs(&sa.log, Some(23)), (24..30).collect::<Vec<_>>());
        assert_eq!(lock(&bus.runs).bytes, 10 * one);
    }

    #[test]
    fn a_runs_marks_enclose_spans_that_its_followers_share() {
        let bus = Bus::new(usize::MAX, 0);
        let a = RunId::parse("a").unwrap();
        let sub = bus.subscribe_run(&a);
        let at = |lines: u64, ino: u64| Checkpoint {
            offset: lines * 100,
            lines,
            ..Checkpoint::start(a.clone(), 1, ino)
        };
        let other = Checkpoint::start(RunId::parse("b").unwrap(), 1, 1);
        bus.mark_reads(&[at(0, 1), at(100, 1), other, at(300, 1), at(600, 1)]);
        let lines = |s: Option<Span>| s.map(|s| (s.from.lines, s.to.lines, s.events.initialized()));
        assert_eq!(lines(sub.log.span(0)), Some((0, 300, false)));
        assert_eq!(lines(sub.log.span(299)), Some((0, 300, false)));
        assert_eq!(lines(sub.log.span(300)), Some((300, 600, false)));
        assert_eq!(lines(sub.log.span(600)), None, "no mark after it yet");
        let span = sub.log.span(10).unwrap();
        span.events.set(Arc::new(vec![ev("a", 0)])).unwrap();
        assert_eq!(lines(sub.log.span(10)), Some((0, 300, true)), "shared");
        // Another file under the same name: the old marks are forgotten.
        bus.mark_reads(&[at(0, 2)]);
        assert_eq!(lines(sub.log.span(10)), None);
    }
}
