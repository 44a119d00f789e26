//! Checkpoints of the run index's write-ahead log, every second, beside ingest's commits
//! instead of inside them (`index::WalCheckpoints`).

use std::sync::Arc;
use std::time::Duration;

use super::state::{self, AppState};
use crate::index::WalCheckpoints;

/// How often the log is checkpointed. At 10,000 events a second the log grows by about
/// 10 MiB between two checkpoints.
const EVERY: Duration = Duration::from_secs(1);

/// Checkpoints the log every [`EVERY`] until the dashboard closes, when it was written to
/// since the last complete checkpoint. A failure is logged once, and again with the next
/// success: the log only grows meanwhile.
pub async fn run(state: Arc<AppState>, wal: WalCheckpoints) {
    let wal = Arc::new(wal);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + EVERY, EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = state.closing.clone();
    let mut failing = false;
    // The log as the last checkpoint that worked found it.
    let mut checkpointed = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state::closed(&mut closing) => return,
        }
        let now = wal.log_state();
        if now.is_none() || now == checkpointed {
            continue;
        }
        let wal = wal.clone();
        let done = tokio::task::spawn_blocking(move || wal.run()).await;
        // A passive checkpoint leaves the frames a reader still needs: the log is tried again
        // on the next tick, written to since or not, until all of it is in the database.
        if let Ok(Ok(c)) = &done
            && c.complete()
        {
            checkpointed = now;
        }
        match done {
            Ok(Ok(_)) if failing => {
                failing = false;
                tracing::info!("the run index's log is checkpointed again");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::warn!(
                    "cannot checkpoint the run index's log: {e}; trying again every second"
                );
            }
            Ok(Err(_)) => {}
            Err(e) => tracing::warn!("the checkpoint of the run index's log failed: {e}"),
        }
    }
}
