//! The ingest task (tailer batches → index → bus) and the liveness watchdog that turns runs
//! whose runner died into `abandoned` ones. Both are the live path of alerts: the runs they
//! end are handed to the index's outbox with an [`AlertContext`](crate::index::AlertContext)
//! (in the batch's transaction), and the delivery tasks (`alerting`) are woken.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::feed::Feeder;
use super::state::{AppState, Stats};
use crate::bus::Fed;
use crate::event::{RunId, now_timestamp};
use crate::index::{ABANDONED, Ended, IndexError, NO_RUN_FILE, Segment};
use crate::runner::liveness::{self, Liveness};
use crate::sync::MutexExt;
use crate::tail::{Batch, Checkpoint, ReadLimits, Spent, read_file};

/// How often running runs are checked for a dead runner. With the tailer's own latency this
/// keeps "abandoned within 10 s" with room to spare.
const LIVENESS_EVERY: Duration = Duration::from_secs(2);

/// At most this many events are committed in one transaction.
const MAX_EVENTS_PER_COMMIT: usize = 50_000;

/// A run announced (`notify-scheduled-run`) whose file never appears, and that no runner of
/// this `state_dir` holds, is `abandoned` this long after the dashboard first saw it so: a
/// runner of this configuration writes its file and takes its lock before it announces, so
/// such a run is another project's, or its runner died before writing anything. With the
/// check's period, that is within the 10 s an abandoned run is known in.
const NO_FILE_GRACE: Duration = Duration::from_secs(8);

/// Commits follow each other at least this far apart while batches keep coming: what arrives
/// meanwhile is committed with the next one. The all-runs stream, which waits for the commit,
/// is delayed by at most this; a run's followers are not.
const COMMIT_EVERY: Duration = Duration::from_millis(2);

/// How often runs the index fell behind on are retried while nothing else arrives.
const RESYNC_EVERY: Duration = Duration::from_secs(2);

/// How often ingest looks, while catching up, whether the tailer's first scan is all committed.
const CATCH_UP_CHECK: Duration = Duration::from_millis(50);

/// Gives the batches' events their cursors ([`Feeder`]) and hands them to their runs'
/// followers (unless the tail thread did as it read them, [`Batch::followed`]), commits the
/// batches (summaries, checkpoints and the feed's segments together), then publishes the
/// events on the all-runs stream. Batches already waiting are taken together into one
/// transaction, and commits follow each other at least [`COMMIT_EVERY`] apart while batches
/// keep coming: at a high write rate the commit is the cost, and one per tailer read would let
/// ingest fall behind.
///
/// If a commit fails (a full disk, a broken or locked database), the events are published
/// anyway — the files are the source of truth and clients must not wait on the index — and
/// their runs are remembered with the checkpoint the tailer reached. They are re-read into the
/// index ([`crate::index::Index::resync_run`]) as soon as it works again, so its summaries
/// catch up and its checkpoints match what was published: nothing is published twice after a
/// restart. (Only a restart while the index is still failing re-publishes those events.)
///
/// Batches it is done with go back to the tailer that read them, through `spent` (see
/// [`Spent`]: the tailer frees what it allocated).
pub async fn run(state: Arc<AppState>, mut rx: mpsc::Receiver<Batch>, spent: Option<Spent>) {
    // Runs the index is behind on, with the checkpoint the tailer reached. While it is not
    // empty the index is failing: batches are published without waiting on it, and a resync
    // runs in the background every few seconds.
    let mut behind: HashMap<RunId, Checkpoint> = HashMap::new();
    let mut resyncing: Option<tokio::task::JoinHandle<Result<Vec<Checkpoint>, IndexError>>> = None;
    let mut feeder = Feeder::new(state.bus.last_cursor() + 1);
    let mut last_commit: Option<tokio::time::Instant> = None;
    let mut retry = tokio::time::interval(RESYNC_EVERY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut catching_up = tokio::time::interval(CATCH_UP_CHECK);
    loop {
        let first = tokio::select! {
            b = rx.recv() => match b {
                Some(b) => b,
                None => return,
            },
            // Everything received is committed here: once the tailer's first scan is done
            // and nothing of it is left queued, the run files are read (`catchup`).
            _ = catching_up.tick(), if !state.catch_up.is_read() => {
                if state.tail_stats.first_scan_done.load(std::sync::atomic::Ordering::Acquire)
                    && rx.is_empty()
                {
                    state.catch_up.note_read();
                }
                continue;
            }
            _ = state.index_repair.notified(), if resyncing.is_none() => {
                if repair(&state).await {
                    // The rebuild read every file to its end: nothing is behind any more, and
                    // what the tailer hands on next that the rebuild already read is skipped
                    // by `seq` (the index applies each event once).
                    behind.clear();
                }
                continue;
            }
            _ = retry.tick(), if !behind.is_empty() && resyncing.is_none() => {
                resyncing = Some(tokio::spawn(resync_all(state.clone(), behind.values().cloned().collect())));
                continue;
            }
            done = async { resyncing.as_mut().expect("guarded by is_some").await }, if resyncing.is_some() => {
                resyncing = None;
                if let Ok(Ok(done)) = done {
                    forget_caught_up(&mut behind, done);
                    // The index works again: what arrived meanwhile is quick to catch up on,
                    // and then commits go back to preceding publication.
                    if !behind.is_empty()
                        && let Ok(done) = resync_all(state.clone(), behind.values().cloned().collect()).await
                    {
                        forget_caught_up(&mut behind, done);
                    }
                    if behind.is_empty() && record_feed(&state, &mut feeder).await {
                        tracing::info!("the run index has caught up");
                        *state.ingest_error.lock_anyway() = None;
                    }
                }
                continue;
            }
        };
        let mut batches = vec![Arc::new(first)];
        let mut events = batches[0].events.len();
        take_waiting(&mut rx, &mut batches, &mut events);
        let mut fed = Vec::with_capacity(events);
        feed(&state, &mut feeder, &batches, &mut fed);
        // Right after a commit, what arrives within the next few milliseconds goes into the
        // same transaction: a run written a line at a time would otherwise cost a commit per
        // line (its followers have had each line already).
        if let Some(last) = last_commit
            && last + COMMIT_EVERY > tokio::time::Instant::now()
            && events < MAX_EVENTS_PER_COMMIT
        {
            tokio::time::sleep_until(last + COMMIT_EVERY).await;
            let from = batches.len();
            take_waiting(&mut rx, &mut batches, &mut events);
            feed(&state, &mut feeder, &batches[from..], &mut fed);
        }
        // While the index is behind, batches are not committed (the resync catches up from
        // the checkpoints); otherwise a failed commit puts their runs behind.
        let committed = behind.is_empty() && commit(&state, &batches, feeder.to_write()).await;
        last_commit = Some(tokio::time::Instant::now());
        if committed {
            feeder.committed();
        } else {
            for b in &batches {
                behind.insert(b.checkpoint.run_id.clone(), b.checkpoint.clone());
            }
        }
        Stats::add(&state.stats.batches, batches.len() as u64);
        Stats::add(&state.stats.events_published, events as u64);
        state.bus.publish_to_all(&fed);
        if let Some(spent) = &spent {
            spent.give(batches);
        }
    }
}

/// Gives the batches' events their cursors (appended to `fed`), and hands those the tail
/// thread did not already hand on ([`Batch::followed`]: with `[cluster]`, none) to their runs'
/// followers. A run's followers know its events by `seq`: they need not wait for the commit.
fn feed(state: &AppState, feeder: &mut Feeder, batches: &[Arc<Batch>], fed: &mut Vec<Arc<Fed>>) {
    for b in batches {
        let events = feeder.feed(b);
        if !b.followed {
            state.bus.publish_to_runs([&b.from], &events);
        }
        fed.extend(events);
    }
}

/// Adds the batches already waiting on `rx` to `batches`, up to [`MAX_EVENTS_PER_COMMIT`]
/// events in all.
fn take_waiting(rx: &mut mpsc::Receiver<Batch>, batches: &mut Vec<Arc<Batch>>, events: &mut usize) {
    while *events < MAX_EVENTS_PER_COMMIT {
        match rx.try_recv() {
            Ok(b) => {
                *events += b.events.len();
                batches.push(Arc::new(b));
            }
            Err(_) => break,
        }
    }
}

/// Commits the batches' summaries and checkpoints, and the feed's segments; a failure is
/// logged and shown in health.
async fn commit(state: &Arc<AppState>, batches: &[Arc<Batch>], segments: Vec<Segment>) -> bool {
    let batches = batches.to_vec();
    let s = state.clone();
    match state
        .with_index(move |idx| {
            // Under the index's lock: held or not agrees with the catch-up's fold.
            let alerting = s.alert_context();
            idx.apply_alerting(&batches, &segments, alerting.as_ref())
        })
        .await
    {
        Ok(recorded) => {
            if recorded > 0 {
                state.alerts_recorded.notify_waiters();
            }
            true
        }
        Err(e) => {
            tracing::error!(
                "cannot update the run index: {e}; streaming goes on, the index will catch up"
            );
            *state.ingest_error.lock_anyway() = Some(format!("the run index is behind: {e}"));
            false
        }
    }
}

/// Writes the feed's segments that could not be committed with their batches (the index was
/// failing); returns whether that worked.
async fn record_feed(state: &Arc<AppState>, feeder: &mut Feeder) -> bool {
    let segments = feeder.to_write();
    match state
        .with_index(move |idx| idx.record_feed(&segments))
        .await
    {
        Ok(()) => {
            feeder.committed();
            true
        }
        Err(e) => {
            tracing::error!("cannot record the all-runs stream's cursors: {e}");
            false
        }
    }
}

/// Rebuilds an index found corrupt while in use from the run files, in place (the damaged
/// file is kept as `index.db.broken`), between two commits. Returns whether it succeeded;
/// if not, the error stays in health and the next corrupt answer tries again.
async fn repair(state: &Arc<AppState>) -> bool {
    let events_dir = state.events_dir.clone();
    let result = state
        .with_index(move |idx| {
            tracing::warn!(path = %idx.path().display(), "the run index is corrupt; rebuilding it from the run files");
            idx.reset_in_place()?;
            match crate::index::rebuild(idx, &events_dir) {
                Err(IndexError::ReadDir { .. }) => Ok(crate::index::RebuildStats::default()),
                other => other,
            }
        })
        .await;
    match result {
        Ok(stats) => {
            tracing::info!(
                files = stats.files,
                events = stats.events,
                "run index rebuilt from {}",
                state.events_dir.display()
            );
            *state.ingest_error.lock_anyway() = None;
            true
        }
        Err(e) => {
            tracing::error!("cannot rebuild the run index: {e}");
            false
        }
    }
}

/// Re-reads runs the index fell behind on, up to the given checkpoints; returns those done.
async fn resync_all(
    state: Arc<AppState>,
    todo: Vec<Checkpoint>,
) -> Result<Vec<Checkpoint>, IndexError> {
    let events_dir = state.events_dir.clone();
    state
        .with_index(move |idx| {
            let mut done = Vec::new();
            for c in todo {
                idx.resync_run(&events_dir.join(c.run_id.file_name()), &c)?;
                done.push(c);
            }
            Ok(done)
        })
        .await
}

/// Forgets the runs whose resync reached their latest checkpoint.
fn forget_caught_up(behind: &mut HashMap<RunId, Checkpoint>, done: Vec<Checkpoint>) {
    for c in done {
        if behind.get(&c.run_id) == Some(&c) {
            behind.remove(&c.run_id);
        }
    }
}

/// Marks `running` runs whose runner is gone as `abandoned`.
///
/// A run is abandoned when its lock file is there but nobody holds it: the runner died (the OS
/// released its lock). Before marking, the index must have read the whole file: a final
/// event still on its way wins. A run with no lock file but a run file is written by another
/// tool and is left alone. A run with neither is abandoned after [`NO_FILE_GRACE`], unless this
/// dashboard started it and its runner has not exited (`AppState::launched`).
///
/// With `[cluster]` the run files read are the mirror's (`server::cluster`), and runs of
/// other hosts (their events' `host` is not `[cluster] host`) are not judged at all: their
/// runners' processes cannot be seen from here. A run of this host whose runner is gone is
/// caught up when the mirror holds as many lines as the host's own file: its last events may
/// still be on their way through the engine.
pub async fn watch_liveness(state: Arc<AppState>) {
    // Running runs with neither a run file nor a lock file, and since when.
    let mut fileless: HashMap<RunId, Instant> = HashMap::new();
    // With `[cluster]`: whether each run seen is this host's (a run's host does not change).
    let mut local: HashMap<RunId, bool> = HashMap::new();
    let this_host = state.config.cluster.as_ref().map(|c| c.host.clone());
    let mut tick = tokio::time::interval(LIVENESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether the last pass started after the files were read.
    let mut read = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // Catching up: the pass that ends it runs as soon as the files are read, also
            // when they were read during the pass before (this resolves at once then; asking
            // whether they are read *now* would leave that to the next tick, 2 s later).
            _ = state.catch_up.read_notified(), if !read => {}
        }
        // Read before the pass: the pass that ends the catch-up must start after the read.
        read = state.catch_up.is_read();
        let dir = state.config.server.state_dir.clone();
        // Stages left running by runners that died end with them.
        let _ = tokio::task::spawn_blocking(move || liveness::reap_orphans(&dir)).await;
        let state_dir = state.config.server.state_dir.clone();
        let events_dir = state.events_dir.clone();
        let own_dir = state.config.server.events_dir.clone();
        let seen = std::mem::take(&mut fileless);
        let mut hosts = std::mem::take(&mut local);
        let launched = state.launched.lock_anyway().clone();
        let this_host = this_host.clone();
        let s = state.clone();
        let result = state
            .with_index(move |idx| {
                let alerting = s.alert_context();
                let mut marked = Vec::new();
                let mut still = HashMap::new();
                let running = idx.running_runs()?;
                let still_running: std::collections::HashSet<&RunId> = running.iter().collect();
                hosts.retain(|id, _| still_running.contains(id));
                for id in running {
                    let file = events_dir.join(id.file_name());
                    if let Some(host) = &this_host
                        && !is_local(&mut hosts, &id, &file, host)
                    {
                        continue;
                    }
                    if !liveness::has_lock_file(&state_dir, &id) {
                        // Written by another tool (no lock): its final event ends it. Neither
                        // a file nor a lock: announced, and never written here.
                        if std::fs::symlink_metadata(&file).is_ok() {
                            continue;
                        }
                        // Started here, and its runner has not exited: it waits to begin
                        // (`overlap = "queue"`, its occurrence's claim). Its exit settles it
                        // (`launch`).
                        if launched.contains(&id) {
                            continue;
                        }
                        let since = seen.get(&id).copied().unwrap_or_else(Instant::now);
                        if since.elapsed() < NO_FILE_GRACE {
                            still.insert(id, since);
                        } else if idx.mark_abandoned(&id, &now_timestamp(), Some(NO_RUN_FILE))? {
                            marked.push((id, NO_RUN_FILE));
                        }
                        continue;
                    }
                    if liveness::liveness(&state_dir, &id) == Liveness::Alive {
                        continue;
                    }
                    let offset = idx.offset_of(&id)?.unwrap_or(0);
                    if this_host.is_some() {
                        let own = own_dir.join(id.file_name());
                        if count_lines(&file, offset) < count_lines(&own, u64::MAX) {
                            continue; // its last events are still on their way
                        }
                    } else {
                        let size = std::fs::symlink_metadata(&file)
                            .map(|m| m.len())
                            .unwrap_or(0);
                        if offset < size {
                            continue; // not caught up yet: the final event may be in there
                        }
                    }
                    if idx.mark_abandoned(&id, &now_timestamp(), None)? {
                        marked.push((id, "its runner is gone without a final event"));
                    }
                }
                // Alerts about the runs just abandoned, recorded before any is sent.
                let ended: Vec<Ended> = marked
                    .iter()
                    .map(|(id, _)| Ended {
                        run_id: id.clone(),
                        status: ABANDONED.to_string(),
                    })
                    .collect();
                let recorded = match &alerting {
                    Some(ctx) if !ended.is_empty() => {
                        idx.record_alerts(&ended, ctx).unwrap_or_else(|e| {
                            tracing::error!("cannot record the alerts of abandoned runs: {e}");
                            0
                        })
                    }
                    _ => 0,
                };
                Ok((marked, still, recorded, hosts))
            })
            .await;
        match result {
            Ok((marked, still, recorded, hosts)) => {
                if recorded > 0 {
                    state.alerts_recorded.notify_waiters();
                }
                fileless = still;
                local = hosts;
                for (id, why) in &marked {
                    tracing::warn!(run_id = %id, "run abandoned: {why}");
                    liveness::remove_stale_lock(&state.config.server.state_dir, id);
                }
                Stats::add(&state.stats.abandoned, marked.len() as u64);
            }
            Err(e) => tracing::error!("liveness check failed: {e}"),
        }
        if read && !state.catch_up.is_over() {
            super::catchup::finish(&state).await;
        }
    }
}

/// Whether the run whose (mirror) file is `file` is this host's: its first event's `host` is
/// `host`, or names none. Remembered in `known` once a first event says; a run with no event
/// in its file yet counts as this host's (announced here).
fn is_local(known: &mut HashMap<RunId, bool>, id: &RunId, file: &Path, host: &str) -> bool {
    if let Some(&l) = known.get(id) {
        return l;
    }
    let limits = ReadLimits {
        max_batch_bytes: 1,
        ..ReadLimits::default()
    };
    let mut at = None;
    // The first event, past at most a few lines that are not.
    for _ in 0..4 {
        let Ok(read) = read_file(file, id, at.as_ref(), 0, limits) else {
            return true;
        };
        if let Some(first) = read.batch.events.first() {
            let l = first.event.host.as_deref().is_none_or(|h| h == host);
            known.insert(id.clone(), l);
            return l;
        }
        if !read.changed {
            break;
        }
        at = Some(read.batch.checkpoint);
    }
    true
}

/// The complete lines in the first `limit` bytes of `path` (0 when it cannot be read).
fn count_lines(path: &Path, limit: u64) -> u64 {
    use std::io::Read;
    let Ok(file) = crate::fsx::open_read(path) else {
        return 0;
    };
    let mut reader = std::io::BufReader::new(file).take(limit);
    let mut buf = [0u8; 64 * 1024];
    let mut lines = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => return lines,
            Ok(n) => lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64,
        }
    }
}
