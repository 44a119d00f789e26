//! The event bus: every event the dashboard ingests is published here once, to every
//! subscriber, in ingest order.
//!
//! A ring buffer of recent events plus a `tokio::sync::broadcast` channel. Publishing pushes
//! to the ring and sends on the channel under one lock; subscribing takes the ring snapshot
//! and the channel receiver under the same lock. So a subscriber's backlog and its live stream
//! meet exactly: no event in between is missed, none is in both.
//!
//! A slow subscriber never slows the publisher or the others: the broadcast channel is bounded
//! and a receiver that falls more than its capacity behind gets `Lagged` — the WebSocket layer
//! closes it with code 4000 and the client resumes with `since`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::event::Published;

/// The default number of recent events kept for new `/ws/events` subscribers.
pub const DEFAULT_RING: usize = 10_000;

/// How far (in events) a subscriber may fall behind before it is dropped.
pub const DEFAULT_LAG: usize = 16_384;

pub struct Bus {
    /// Guards the ring and makes "push + send" and "snapshot + subscribe" atomic w.r.t. each
    /// other.
    ring: Mutex<VecDeque<Arc<Published>>>,
    capacity: usize,
    tx: broadcast::Sender<Arc<Published>>,
}

/// A new subscription: the recent events, then the live receiver.
pub struct Subscription {
    pub backlog: Vec<Arc<Published>>,
    pub live: broadcast::Receiver<Arc<Published>>,
}

impl Bus {
    pub fn new(ring: usize, lag: usize) -> Bus {
        let (tx, _) = broadcast::channel(lag.max(16));
        Bus {
            ring: Mutex::new(VecDeque::with_capacity(ring.min(65_536))),
            capacity: ring,
            tx,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Published>>> {
        // The ring is always consistent between statements, so a poisoned lock is usable.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes `events`, in order.
    pub fn publish(&self, events: &[Arc<Published>]) {
        if events.is_empty() {
            return;
        }
        let mut ring = self.lock();
        for e in events {
            if self.capacity > 0 {
                if ring.len() == self.capacity {
                    ring.pop_front();
                }
                ring.push_back(e.clone());
            }
            // No receivers is not an error: nobody is watching.
            let _ = self.tx.send(e.clone());
        }
    }

    /// Subscribes: the ring's events so far, and every event published after them.
    pub fn subscribe(&self) -> Subscription {
        let ring = self.lock();
        Subscription {
            backlog: ring.iter().cloned().collect(),
            live: self.tx.subscribe(),
        }
    }

    /// Subscribes to live events only (callers that replay from the file themselves).
    pub fn subscribe_live(&self) -> broadcast::Receiver<Arc<Published>> {
        let _ring = self.lock();
        self.tx.subscribe()
    }

    /// Current subscribers.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, RunId};

    fn ev(seq: u64) -> Arc<Published> {
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
        };
        Arc::new(Published::new(RunId::parse("r").unwrap(), seq, e))
    }

    #[test]
    fn ring_keeps_the_most_recent() {
        let bus = Bus::new(3, 16);
        bus.publish(&(0..5).map(ev).collect::<Vec<_>>());
        let seqs: Vec<u64> = bus.subscribe().backlog.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![2, 3, 4]);
    }

    #[test]
    fn subscribing_while_publishing_has_no_gap_and_no_duplicate() {
        let bus = Arc::new(Bus::new(100_000, 100_000));
        let publisher = {
            let bus = bus.clone();
            std::thread::spawn(move || {
                for i in 0..20_000 {
                    bus.publish(&[ev(i)]);
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
            let mut seqs: Vec<u64> = s.backlog.iter().map(|e| e.seq).collect();
            while let Ok(e) = s.live.try_recv() {
                seqs.push(e.seq);
            }
            let expected: Vec<u64> = (0..20_000).collect();
            assert_eq!(seqs, expected);
        }
    }

    #[test]
    fn a_slow_subscriber_lags_without_holding_anyone_back() {
        let bus = Bus::new(10, 16);
        let mut slow = bus.subscribe_live();
        let mut fast = bus.subscribe_live();
        for i in 0..100 {
            bus.publish(&[ev(i)]);
            assert_eq!(fast.try_recv().unwrap().seq, i);
        }
        assert!(matches!(
            slow.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}
