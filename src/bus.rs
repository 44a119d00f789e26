//! The event bus: every event the dashboard ingests is published here once, to every
//! subscriber, in ingest order, each with its cursor (`index::feed`).
//!
//! Three things under one lock: a ring buffer of recent events (bounded in bytes), one
//! `tokio::sync::broadcast` channel for the all-runs stream, and one channel per run that
//! someone follows (created when a follower subscribes, dropped when the last one leaves).
//! Publishing pushes to the ring and sends on the channels under the lock; subscribing takes
//! the ring (or the part of it after a cursor) and a receiver under the same lock. So a
//! subscriber's backlog and its live stream meet exactly: no event in between is missed, none
//! is in both.
//!
//! Every event is encoded once, when it is published ([`Fed`]): each subscriber gets a
//! reference to the same buffers, never a copy.
//!
//! A slow subscriber never slows the publisher or the others: the channels are bounded and a
//! receiver that falls more than its capacity behind gets `Lagged`. Nobody is cut off for it:
//! the streams catch up from the ring, or from the run files through the feed, and go on
//! (`server::routes::streams`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::event::{Json, Published, RunId};

/// The default size of the ring of recent events, in bytes (what [`Fed::cost`] counts): that
/// of `[server] stream_buffer`.
pub const DEFAULT_RING_BYTES: usize = crate::config::DEFAULT_STREAM_BUFFER;

/// How far (in events) an all-runs subscriber may fall behind before it must catch up from
/// the ring or the files. The channel holds this many events alive, so it is kept small.
pub const DEFAULT_LAG: usize = 4096;

/// The same for one run's followers (who catch up from the run's file).
const RUN_LAG: usize = 16_384;

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
}

pub struct Bus {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Fed>>,
}

struct Inner {
    ring: VecDeque<Arc<Fed>>,
    ring_bytes: usize,
    max_ring_bytes: usize,
    /// The cursor of the last event published (the one before the first, before any).
    last: u64,
    runs: HashMap<RunId, broadcast::Sender<Arc<Fed>>>,
}

/// A new subscription: the recent events, then the live receiver.
pub struct Subscription {
    pub backlog: Vec<Arc<Fed>>,
    /// The cursor of the last event published before `live` begins.
    pub last: u64,
    pub live: broadcast::Receiver<Arc<Fed>>,
}

impl Bus {
    /// A bus whose ring holds up to `ring_bytes`, whose all-runs subscribers may fall `lag`
    /// events behind, and whose first event will have cursor `first`.
    pub fn new(ring_bytes: usize, lag: usize, first: u64) -> Bus {
        let (tx, _) = broadcast::channel(lag.max(16));
        Bus {
            inner: Mutex::new(Inner {
                ring: VecDeque::new(),
                ring_bytes: 0,
                max_ring_bytes: ring_bytes,
                last: first.saturating_sub(1),
                runs: HashMap::new(),
            }),
            tx,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Everything under the lock is consistent between statements, so a poisoned lock is
        // usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes `events`, in order (their cursors follow each other), to every stream:
    /// [`Bus::publish_to_runs`] then [`Bus::publish_to_all`].
    pub fn publish(&self, events: &[Arc<Fed>]) {
        self.publish_to_runs(events);
        self.publish_to_all(events);
    }

    /// Hands `events` to the followers of their runs. A run's stream is keyed by `seq`, which
    /// the file fixes, so this may come before the batch is committed to the index: a
    /// follower that gets an event again after a restart knows it by its `seq`.
    pub fn publish_to_runs(&self, events: &[Arc<Fed>]) {
        let mut inner = self.lock();
        if inner.runs.is_empty() {
            return;
        }
        let mut run: Option<(&RunId, Option<&broadcast::Sender<Arc<Fed>>>)> = None;
        for e in events {
            // Events come in runs of one file: one lookup per change of run.
            let id = &e.event.run_id;
            if run.is_none_or(|(r, _)| r != id) {
                run = Some((id, inner.runs.get(id)));
            }
            if let Some((_, Some(tx))) = run {
                // No receivers is not an error: nobody is watching.
                let _ = tx.send(e.clone());
            }
        }
        // A run whose followers have all left keeps no channel.
        inner.runs.retain(|_, tx| tx.receiver_count() > 0);
    }

    /// Puts `events` in the ring and on the all-runs stream. Their cursors are only given
    /// out once the batch is committed (`server::ingest`): a cursor must name the same event
    /// after a restart.
    pub fn publish_to_all(&self, events: &[Arc<Fed>]) {
        let Some(end) = events.last() else { return };
        let mut inner = self.lock();
        for e in events {
            if inner.max_ring_bytes > 0 {
                inner.ring_bytes += e.cost();
                inner.ring.push_back(e.clone());
                while inner.ring_bytes > inner.max_ring_bytes {
                    let Some(old) = inner.ring.pop_front() else {
                        break;
                    };
                    inner.ring_bytes -= old.cost();
                }
            }
            // No receivers is not an error: nobody is watching.
            let _ = self.tx.send(e.clone());
        }
        inner.last = end.cursor;
    }

    /// Subscribes: the ring's events so far, and every event published after them.
    pub fn subscribe(&self) -> Subscription {
        let inner = self.lock();
        Subscription {
            backlog: inner.ring.iter().cloned().collect(),
            last: inner.last,
            live: self.tx.subscribe(),
        }
    }

    /// Subscribes to live events only (callers that catch up themselves).
    pub fn subscribe_live(&self) -> broadcast::Receiver<Arc<Fed>> {
        let _inner = self.lock();
        self.tx.subscribe()
    }

    /// Subscribes to one run's live events (callers that read its file themselves).
    pub fn subscribe_run(&self, id: &RunId) -> broadcast::Receiver<Arc<Fed>> {
        let mut inner = self.lock();
        inner
            .runs
            .entry(id.clone())
            .or_insert_with(|| broadcast::channel(RUN_LAG).0)
            .subscribe()
    }

    /// The events published after cursor `after`, if the ring still holds all of them
    /// (`None` if some are older than the ring: they are in the files).
    pub fn after(&self, after: u64) -> Option<Vec<Arc<Fed>>> {
        let inner = self.lock();
        if after >= inner.last {
            return Some(Vec::new());
        }
        let first = inner.ring.front()?.cursor;
        if first > after.saturating_add(1) {
            return None;
        }
        // Cursors grow along the ring (with `[cluster]` they may skip numbers): the first
        // event after `after` is found by bisection.
        let skip = inner.ring.partition_point(|e| e.cursor <= after);
        Some(inner.ring.iter().skip(skip).cloned().collect())
    }

    /// The cursor of the last event published (the one before the first, before any).
    pub fn last_cursor(&self) -> u64 {
        self.lock().last
    }

    /// The ring's size now: events and bytes.
    pub fn ring_size(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.ring.len(), inner.ring_bytes)
    }

    /// Current subscribers, all-runs and per-run.
    pub fn subscribers(&self) -> usize {
        let inner = self.lock();
        self.tx.receiver_count()
            + inner
                .runs
                .values()
                .map(broadcast::Sender::receiver_count)
                .sum::<usize>()
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
        let bus = Bus::new(3 * one, 16, 1);
        bus.publish(&(1..=5).map(fed).collect::<Vec<_>>());
        let cursors: Vec<u64> = bus.subscribe().backlog.iter().map(|e| e.cursor).collect();
        assert_eq!(cursors, vec![3, 4, 5]);
        assert_eq!(bus.ring_size(), (3, 3 * one));
        assert_eq!(bus.last_cursor(), 5);
    }

    #[test]
    fn after_a_cursor_from_the_ring_or_not_at_all() {
        let one = fed(10).cost();
        let bus = Bus::new(3 * one, 16, 10);
        assert_eq!(bus.after(9).map(|v| v.len()), Some(0));
        bus.publish(&(10..=15).map(fed).collect::<Vec<_>>());
        let got = |after| {
            bus.after(after)
                .map(|v| v.iter().map(|e| e.cursor).collect::<Vec<_>>())
        };
        assert_eq!(got(12), Some(vec![13, 14, 15]));
        assert_eq!(got(14), Some(vec![15]));
        assert_eq!(got(15), Some(vec![]));
        assert_eq!(got(99), Some(vec![]));
        assert_eq!(got(11), None, "cursor 12 is no longer in the ring");
    }

    #[test]
    fn subscribing_while_publishing_has_no_gap_and_no_duplicate() {
        let bus = Arc::new(Bus::new(usize::MAX, 100_000, 0));
        let publisher = {
            let bus = bus.clone();
            std::thread::spawn(move || {
                for i in 0..20_000 {
                    bus.publish(&[fed(i)]);
                }
            })
        };
        let mut subs = Vec::new();
        for _ in 0..20 {
            subs.push(bus.subscribe());
            std::thread::yield_now();
        }
        publisher.join().unwrap();
        for mut s in subs {
            let mut cursors: Vec<u64> = s.backlog.iter().map(|e| e.cursor).collect();
            while let Ok(e) = s.live.try_recv() {
                cursors.push(e.cursor);
            }
            let expected: Vec<u64> = (0..20_000).collect();
            assert_eq!(cursors, expected);
        }
    }

    #[test]
    fn a_slow_subscriber_lags_without_holding_anyone_back() {
        let bus = Bus::new(1024, 16, 0);
        let mut slow = bus.subscribe_live();
        let mut fast = bus.subscribe_live();
        for i in 0..100 {
            bus.publish(&[fed(i)]);
            assert_eq!(fast.try_recv().unwrap().cursor, i);
        }
        assert!(matches!(
            slow.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }

    #[test]
    fn a_runs_followers_get_its_events_before_the_all_runs_stream_does() {
        let bus = Bus::new(usize::MAX, 16, 0);
        let a = RunId::parse("r").unwrap();
        let mut run = bus.subscribe_run(&a);
        let mut all = bus.subscribe_live();
        let events: Vec<Arc<Fed>> = (0..3).map(fed).collect();
        bus.publish_to_runs(&events);
        let got: Vec<u64> = std::iter::from_fn(|| run.try_recv().ok())
            .map(|e| e.cursor)
            .collect();
        assert_eq!(got, vec![0, 1, 2]);
        // Not committed yet: no cursor given out, nothing in the ring.
        assert!(all.try_recv().is_err());
        assert_eq!(bus.ring_size().0, 0);
        bus.publish_to_all(&events);
        assert_eq!(all.try_recv().map(|e| e.cursor).ok(), Some(0));
        assert_eq!(bus.last_cursor(), 2);
        assert!(
            run.try_recv().is_err(),
            "a run's followers get each event once"
        );
    }

    #[test]
    fn a_runs_channel_gets_only_its_run_and_goes_when_its_followers_do() {
        let bus = Bus::new(0, 16, 0);
        let a = RunId::parse("a").unwrap();
        let mut rx = bus.subscribe_run(&a);
        assert_eq!(bus.subscribers(), 1);
        let events: Vec<Arc<Fed>> = [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
            .iter()
            .enumerate()
            .map(|(i, (run, seq))| Arc::new(Fed::new(i as u64, ev(run, *seq))))
            .collect();
        bus.publish(&events);
        let got: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| e.cursor)
            .collect();
        assert_eq!(got, vec![0, 2]);
        drop(rx);
        bus.publish(&[Arc::new(Fed::new(4, ev("a", 2)))]);
        assert_eq!(bus.subscribers(), 0);
        assert!(bus.lock().runs.is_empty());
    }
}
