//! Catching up after an outage: a dashboard that comes back after a day down sends what it
//! missed as one summary per destination, not an alert per run (`docs/alerts.md`, "After an
//! outage").
//!
//! `serve` is *catching up* from its start until three things have happened, in this order:
//!
//! 1. the tailer has read every run file to its end once (its first full scan,
//!    [`TailStats::first_scan_done`](crate::tail::TailStats::first_scan_done)), and
//! 2. ingest has committed every batch of that scan ([`CatchUp::note_read`], from
//!    `ingest::run`), and
//! 3. one pass of the liveness watchdog has run after that, so that runs whose runner died
//!    while nobody watched are `abandoned` within the catch-up too.
//!
//! Every alert recorded while catching up is recorded `held` (the decision is taken under the
//! index's lock, [`AppState::alert_context`]). At the end of that watchdog pass the held rows
//! are folded, in one transaction, into one summary per destination
//! (`Index::fold_held`), and [`CatchUp::is_over`] turns true under the same lock: an alert
//! recorded after the fold is live, one recorded before it is in the fold. Nothing here reads
//! the clock, so which alerts are summarized does not depend on timing.
//!
//! A crash (`kill -9`) at any point is safe: held rows are committed with the batch that made
//! them, and a start with held rows in the index folds them at the end of its own catch-up into
//! the same summary (the fold is idempotent, see `index::catchup`). The first start, which
//! builds the index from the files, makes no alert at all (history is not news).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

use super::state::AppState;

/// Where the dashboard is in its catch-up.
#[derive(Default)]
pub struct CatchUp {
    /// Ingest has committed everything the tailer's first full scan read.
    read: AtomicBool,
    /// The held alerts were folded: alerts are live from now on.
    over: AtomicBool,
    /// Wakes the watchdog as soon as everything is read, instead of at its next tick.
    read_now: Notify,
}

impl CatchUp {
    /// Whether the first full read of the run files is committed.
    pub fn is_read(&self) -> bool {
        self.read.load(Ordering::Acquire)
    }

    /// Whether the catch-up is over: alerts recorded now are sent as they are.
    pub fn is_over(&self) -> bool {
        self.over.load(Ordering::Acquire)
    }

    /// Ingest has committed everything the tailer's first full scan read.
    pub fn note_read(&self) {
        if !self.read.swap(true, Ordering::AcqRel) {
            self.read_now.notify_one();
        }
    }

    /// Resolves once [`CatchUp::note_read`] was called (at once if it was before).
    pub async fn read_notified(&self) {
        if !self.is_read() {
            self.read_now.notified().await;
        }
    }
}

/// Ends the catch-up: folds the held alerts into one summary per destination and makes alerts
/// live, under one hold of the index's lock. Called by the watchdog at the end of its first
/// pass after [`CatchUp::is_read`]; a failure is logged and tried again at the next pass.
pub async fn finish(state: &Arc<AppState>) {
    let base_url = state.base_url();
    let s = state.clone();
    let folded = state
        .with_index(move |idx| {
            let folded = idx.fold_held(&base_url, chrono::Utc::now())?;
            s.catch_up.over.store(true, Ordering::Release);
            Ok(folded)
        })
        .await;
    match folded {
        Ok(folded) => {
            for f in &folded {
                if f.summary {
                    tracing::info!(destination = %f.destination, alerts = f.alerts, id = %f.id, "alerts made while catching up folded into one summary");
                } else {
                    tracing::info!(destination = %f.destination, id = %f.id, "the one alert made while catching up is sent as it is");
                }
            }
            if !folded.is_empty() {
                state.alerts_recorded.notify_waiters();
            }
            tracing::info!("caught up on the run files: alerts are live");
        }
        Err(e) => {
            tracing::error!("cannot fold the alerts held while catching up: {e}; trying again")
        }
    }
}
