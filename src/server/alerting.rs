//! Delivering the alerts recorded in the outbox (`index::outbox`): one task per
//! `[[alerts]]` destination, so a slow or unreachable destination delays only its own alerts,
//! never the others, the tailer or ingest.
//!
//! Each task takes its due rows oldest first and sends each on a blocking thread
//! ([`crate::alerts::send`]). Success marks the row `sent` (never sent again, even after a
//! restart); a failure records the error and the next attempt, after a back-off that doubles
//! from [`FIRST_RETRY`] up to [`MAX_RETRY`], until `retry_for` after the alert was recorded,
//! when the row is `failed`. Rows still `retrying` when `serve` stops (or is killed) are sent
//! by the next start. A task wakes when ingest records alerts, and otherwise every half a
//! second; destinations added by a reload get a task within that, and a task whose
//! destination was removed ends.
//!
//! Before a row's first attempt its run's stderr tail is read from the run file, here, outside
//! the index's lock (ingest records the row without it, see `index::outbox`), and stored in
//! the row, so the history and later attempts have it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::state::AppState;
use crate::alerts::send;
use crate::config::Alert;
use crate::event::RunId;
use crate::index::{Pending, alert_stderr_tail};

/// The wait before the second attempt; each further one waits twice as long.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);

/// The longest wait between two attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(600);

/// How often a task looks for due alerts when nothing woke it.
const POLL: Duration = Duration::from_millis(500);

/// At most this many alerts are taken from the outbox at once.
const BATCH: usize = 16;

/// Runs a delivery task for every configured destination, until the dashboard stops.
pub async fn run(state: Arc<AppState>) {
    let mut tasks: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        tasks.retain(|_, t| !t.is_finished());
        for dest in &state.workspace().alerts {
            if !tasks.contains_key(&dest.name) {
                let task = tokio::spawn(destination(state.clone(), dest.name.clone()));
                tasks.insert(dest.name.clone(), task);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = state.closed() => break,
        }
    }
    // Each task ends after the delivery it is in (if any) is recorded: aborted between a
    // receiver's answer and the row being marked, the alert would go out again at the next
    // start. `serve` waits for this a short while, then stops regardless.
    for t in tasks.into_values() {
        let _ = t.await;
    }
}

/// Sends the alerts of destination `name` as they fall due, while it is configured.
async fn destination(state: Arc<AppState>, name: String) {
    let mut closing = state.closing.clone();
    loop {
        if *closing.borrow() {
            return;
        }
        // Read each time: a reload may change the destination or remove it.
        let Some(dest) = state
            .workspace()
            .alerts
            .iter()
            .find(|a| a.name == name)
            .cloned()
        else {
            return;
        };
        let woken = state.alerts_recorded.notified();
        let due = {
            let name = name.clone();
            let now = Utc::now();
            state
                .with_index(move |idx| idx.due_alerts(&name, now, BATCH))
                .await
        };
        match due {
            Ok(due) if !due.is_empty() => {
                for p in due {
                    deliver(&state, &dest, p).await;
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::error!(destination = %name, "cannot read the alerts to send: {e}"),
        }
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = super::state::closed(&mut closing) => return,
        }
    }
}

/// One attempt at sending `p` to `dest`, and its outcome recorded.
async fn deliver(state: &Arc<AppState>, dest: &Alert, p: Pending) {
    let p = with_stderr_tail(state, p).await;
    let result = {
        let dest = dest.clone();
        let body = p.body.clone();
        tokio::task::spawn_blocking(move || send::send(&dest, &body))
            .await
            .unwrap_or_else(|e| Err(format!("the delivery task failed: {e}")))
    };
    let now = Utc::now();
    let retry_at = match &result {
        Ok(()) => None,
        Err(_) => next_attempt(p.at, p.attempts + 1, dest.retry_for, now),
    };
    let status = match (&result, retry_at) {
        (Ok(()), _) => "sent",
        (Err(_), Some(_)) => "retrying",
        (Err(_), None) => "failed",
    };
    match &result {
        Ok(()) => {
            tracing::info!(destination = %dest.name, id = %p.id, kind = %p.body.kind, run_id = %p.body.run_id, "alert sent")
        }
        Err(e) => {
            tracing::warn!(destination = %dest.name, id = %p.id, attempts = p.attempts + 1, "alert not delivered ({status}): {e}")
        }
    }
    state.count_alert(&dest.name, status);
    let id = p.id.clone();
    let recorded = state
        .with_index(move |idx| {
            idx.alert_attempted(
                &id,
                result.as_ref().map(|_| ()).map_err(String::as_str),
                retry_at,
            )
        })
        .await;
    if let Err(e) = recorded {
        // The row stays due: it is sent again, which the Idempotency-Key lets a receiver see.
        tracing::error!(destination = %dest.name, id = %p.id, "cannot record an alert's delivery: {e}");
    }
}

/// `p` with its run's stderr tail, read before its first attempt from the run file on a
/// blocking thread (the index is not locked meanwhile) and stored back into its row.
async fn with_stderr_tail(state: &Arc<AppState>, mut p: Pending) -> Pending {
    let body = &p.body;
    if p.attempts > 0 || !body.stderr_tail.is_empty() || body.failed_stages.is_empty() {
        return p;
    }
    let Ok(run_id) = RunId::parse(&body.run_id) else {
        return p;
    };
    let events_dir = state.events_dir.clone();
    let stages = body.failed_stages.clone();
    let tail =
        tokio::task::spawn_blocking(move || alert_stderr_tail(&events_dir, &run_id, &stages))
            .await
            .unwrap_or_default();
    if tail.is_empty() {
        return p;
    }
    p.body.stderr_tail = tail;
    let (id, body) = (p.id.clone(), p.body.clone());
    if let Err(e) = state
        .with_index(move |idx| idx.fill_alert_tail(&id, &body))
        .await
    {
        // Sent with the tail all the same; the history's copy lacks it.
        tracing::warn!(id = %p.id, "cannot store an alert's stderr tail: {e}");
    }
    p
}

/// When to try again after the `attempts`th failed attempt at an alert recorded at `at`, or
/// `None` when `retry_for` has run out: the back-off doubles from [`FIRST_RETRY`] up to
/// [`MAX_RETRY`], and the last attempt is at `at + retry_for` at the latest.
pub fn next_attempt(
    at: DateTime<Utc>,
    attempts: u64,
    retry_for: Duration,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let deadline = at + chrono::Duration::from_std(retry_for).ok()?;
    if now >= deadline {
        return None;
    }
    let exponent = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(20);
    let wait = FIRST_RETRY.saturating_mul(1 << exponent).min(MAX_RETRY);
    let next = now + chrono::Duration::from_std(wait).ok()?;
    Some(next.min(deadline))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_its_cap_and_ends_with_retry_for() {
        let t0 = DateTime::<Utc>::UNIX_EPOCH;
        let day = Duration::from_secs(86_400);
        let after = |attempts, now: DateTime<Utc>| {
            next_attempt(t0, attempts, day, now).map(|n| (n - now).num_seconds())
        };
        assert_eq!(after(1, t0), Some(1));
        assert_eq!(after(2, t0), Some(2));
        assert_eq!(after(4, t0), Some(8));
        assert_eq!(after(40, t0), Some(600));
        let late = t0 + chrono::Duration::seconds(86_400 - 5);
        assert_eq!(after(40, late), Some(5));
        assert_eq!(after(1, t0 + chrono::Duration::days(1)), None);
        assert_eq!(next_attempt(t0, 1, Duration::ZERO, t0), None);
    }
}
