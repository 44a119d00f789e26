//! The event bus: every event the dashboard ingests is published here once, to every
//! follower, in ingest order, each with its cursor (`index::feed`). A run's followers get its
//! events sooner, from the tail thread as it reads them ([`Bus::publish_read`]): they know
//! them by `seq`, and need neither the cursor nor the commit.
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

mod log;
mod run;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::event::RunId;
use crate::sync::MutexExt;
use crate::tail::{Batch, Checkpoint};

use log::Log;
pub use log::{Fed, Taken};
pub use run::{RunLog, RunSubscription, Span};

/// The default size of the ring of recent events, in bytes (what [`Fed::cost`] counts): that
/// of `[server] stream_buffer`.
pub const DEFAULT_RING_BYTES: usize = crate::config::DEFAULT_STREAM_BUFFER;

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

    /// Hands `events` to the followers of their runs, with where the reads they came from
    /// began in the runs' files (`from` of each batch, in the order read), kept as marks for
    /// the followers that fall behind ([`RunLog::span`]).
    ///
    /// A run's log is keyed by `seq`, which the file fixes, so this may come before the batch
    /// is committed to the index: a follower that gets an event again after a restart knows it
    /// by its `seq`.
    pub fn publish_to_runs<'a>(
        &self,
        reads: impl IntoIterator<Item = &'a Checkpoint>,
        events: &[Arc<Fed>],
    ) {
        let mut runs = self.runs.lock_anyway();
        if runs.logs.is_empty() {
            return;
        }
        // A run whose followers have all left keeps no log.
        runs.forget_unfollowed();
        for from in reads {
            if let Some(run) = runs.logs.get(&from.run_id) {
                run.mark(from);
            }
        }
        let mut touched: Vec<Arc<RunLog>> = Vec::new();
        for chunk in events.chunk_by(|a, b| a.run_id == b.run_id) {
            let Some(run) = runs.logs.get(&chunk[0].run_id).cloned() else {
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

    /// Hands the events of one read of a run's file to that run's followers, if it has any,
    /// as the tail thread reads them (before the ingest task has them; a run's followers key
    /// events by `seq`, which the file fixes, so they need no cursor). A follower that
    /// subscribes just after the run was found unfollowed here reads these lines from the
    /// file, which has them already.
    pub fn publish_read(&self, read: &Batch) {
        let Some(run) = self.runs.lock_anyway().logs.get(&read.from.run_id).cloned() else {
            return;
        };
        // The log's last event lends its pipeline's name to the first of these.
        let back = run.lock().events.back().cloned();
        let mut events: Vec<Arc<Fed>> = Vec::with_capacity(read.events.len());
        for e in &read.events {
            let prev = events.last().or(back.as_ref()).map(Arc::as_ref);
            events.push(Arc::new(Fed::for_run(e, prev)));
        }
        self.publish_to_runs([&read.from], &events);
    }

    /// Puts `events` in the ring, for the all-runs stream. Their cursors are only given out
    /// once the batch is committed (`server::ingest`): a cursor must name the same event after
    /// a restart.
    pub fn publish_to_all(&self, events: &[Arc<Fed>]) {
        let Some(end) = events.last() else { return };
        let mut ring = self.ring.lock_anyway();
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
        let mut runs = self.runs.lock_anyway();
        runs.forget_unfollowed();
        let log = runs
            .logs
            .entry(id.clone())
            .or_insert_with(|| Arc::new(RunLog::new()))
            .clone();
        let changed = log.tx.subscribe();
        RunSubscription { log, changed }
    }

    /// Up to `max` events published after cursor `after`, if the ring still holds all of
    /// them (else some are older than the ring: they are in the files).
    pub fn after(&self, after: u64, max: usize) -> Taken {
        self.ring
            .lock_anyway()
            .log
            .after(Fed::cursor, Some(after), max)
    }

    /// The cursor just before the ring's first event: a follower that starts there gets the
    /// whole ring.
    pub fn ring_start(&self) -> u64 {
        let ring = self.ring.lock_anyway();
        ring.log
            .events
            .front()
            .map_or(ring.last, |e| e.cursor.saturating_sub(1))
    }

    /// The cursor of the last event published (the one before the first, before any).
    pub fn last_cursor(&self) -> u64 {
        self.ring.lock_anyway().last
    }

    /// The ring's size now: events and bytes.
    pub fn ring_size(&self) -> (usize, usize) {
        let ring = self.ring.lock_anyway();
        (ring.log.events.len(), ring.log.bytes)
    }

    /// The logs of the followed runs now: how many, and the bytes they hold together.
    pub fn run_logs_size(&self) -> (usize, usize) {
        let runs = self.runs.lock_anyway();
        (runs.logs.len(), runs.bytes)
    }

    /// Current subscribers, all-runs and per-run.
    pub fn subscribers(&self) -> usize {
        let runs = self.runs.lock_anyway();
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
