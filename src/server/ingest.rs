//! The ingest task (tailer batches → index → bus) and the liveness watchdog that turns runs
//! whose runner died into `abandoned` ones.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{AppState, Stats};
use crate::event::now_timestamp;
use crate::liveness::{self, Liveness};
use crate::tail::Batch;

/// How often running runs are checked for a dead runner. With the tailer's own latency this
/// keeps "abandoned within 10 s" with room to spare.
const LIVENESS_EVERY: Duration = Duration::from_secs(2);

/// At most this many events are committed in one transaction.
const MAX_EVENTS_PER_COMMIT: usize = 50_000;

/// Commits batches (summaries and checkpoints together), then publishes their events. Batches
/// already waiting are taken together into one transaction: at a high write rate the commit
/// is the cost, and one per tailer read would let ingest fall behind.
pub async fn run(state: Arc<AppState>, mut rx: mpsc::Receiver<Batch>) {
    while let Some(first) = rx.recv().await {
        let mut batches = vec![Arc::new(first)];
        let mut events = batches[0].events.len();
        while events < MAX_EVENTS_PER_COMMIT {
            match rx.try_recv() {
                Ok(b) => {
                    events += b.events.len();
                    batches.push(Arc::new(b));
                }
                Err(_) => break,
            }
        }
        let applied = {
            let batches = batches.clone();
            state.with_index(move |idx| idx.apply_all(&batches)).await
        };
        if let Err(e) = &applied {
            // The files stay the source of truth: keep streaming what was read; the
            // checkpoints did not move, so a restart reads these lines again into the index.
            tracing::error!("cannot update the run index: {e}");
        }
        Stats::add(&state.stats.batches, batches.len() as u64);
        Stats::add(&state.stats.events_published, events as u64);
        for b in &batches {
            state.bus.publish(&b.events);
        }
    }
}

/// Marks `running` runs whose runner is gone as `abandoned`.
///
/// A run is abandoned when its lock file is there but nobody holds it: the runner died (the OS
/// released its lock). A run with no lock file is left alone: its runner may not have taken
/// the lock yet (a run announced a moment ago), or it is written by another tool. Before
/// marking, the index must have read the whole file: a final event still on its way wins.
pub async fn watch_liveness(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(LIVENESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let state_dir = state.config.server.state_dir.clone();
        let events_dir = state.config.server.events_dir.clone();
        let result = state
            .with_index(move |idx| {
                let mut marked = Vec::new();
                for id in idx.running_runs()? {
                    if !liveness::has_lock_file(&state_dir, &id)
                        || liveness::liveness(&state_dir, &id) == Liveness::Alive
                    {
                        continue;
                    }
                    let size = std::fs::metadata(events_dir.join(id.file_name()))
                        .map(|m| m.len())
                        .unwrap_or(0);
                    if idx.offset_of(&id)?.unwrap_or(0) < size {
                        continue; // not caught up yet: the final event may be in there
                    }
                    if idx.mark_abandoned(&id, &now_timestamp())? {
                        marked.push(id);
                    }
                }
                Ok(marked)
            })
            .await;
        match result {
            Ok(marked) => {
                for id in &marked {
                    tracing::warn!(run_id = %id, "run abandoned: its runner is gone without a final event");
                    liveness::remove_stale_lock(&state.config.server.state_dir, id);
                }
                Stats::add(&state.stats.abandoned, marked.len() as u64);
            }
            Err(e) => tracing::error!("liveness check failed: {e}"),
        }
    }
}
