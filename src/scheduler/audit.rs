//! The occurrence auditor (every backend): accounts for every expected occurrence of the
//! schedule. One that has no run started by a scheduler within the grace period is recorded
//! as a `missed` run ([`record_missed`]) — a run file of its own whose only event is `missed`
//! (`data.scheduled_for`), so history shows it like any run. Its run id is derived from the
//! occurrence, so it is written at most once, whoever records it (the auditor, or the
//! built-in timer's catch-up).
//!
//! The auditor reads the time only from its [`Clock`] and the runs only through its
//! [`Runs`]: `serve` passes the wall clock and the run index; tests pass a manual clock.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::clock::Clock;
use crate::config::schedule::Schedule;
use crate::journal::missed::record_missed;

/// What the auditor needs to know about runs and the schedule.
pub trait Runs: Send + Sync + 'static {
    /// How many runs started by a scheduler (`scheduler` or `catchup`) between `from` and
    /// `to`, counting `missed` records: an occurrence recorded already is accounted for.
    fn scheduled_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, String>> + Send;
    /// Whether the schedule is on now (a disabled schedule misses nothing).
    fn enabled(&self) -> impl Future<Output = bool> + Send;
}

/// The auditor's loop: every `grace / 4` (between 250 ms and 30 s), records the occurrences
/// that got no run within `grace` (`[scheduler] grace`, default 2 minutes). Occurrences before
/// it started are not its business (the built-in scheduler's catch-up handles its own
/// downtime).
pub async fn audit(
    schedule: Schedule,
    grace: Duration,
    events_dir: &Path,
    pipeline: &str,
    clock: impl Clock,
    runs: impl Runs,
    shutdown: impl Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    let mut audited = clock.now();
    let every = (grace / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
    let grace_c = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => return,
            _ = clock.sleep(every) => {}
        }
        let until = clock.now() - grace_c;
        if until <= audited {
            continue;
        }
        let due = schedule.occurrences(audited, until);
        audited = until;
        if due.is_empty() || !runs.enabled().await {
            continue;
        }
        for at in due {
            let from = at - chrono::Duration::seconds(1);
            match runs.scheduled_between(from, at + grace_c).await {
                Ok(0) => record_missed(
                    events_dir,
                    pipeline,
                    at,
                    "no run started within the grace period",
                ),
                Ok(_) => {}
                Err(e) => tracing::error!("cannot audit occurrence {at}: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use chrono::TimeZone;

    use super::*;
    use crate::scheduler::clock::manual::ManualClock;

    /// Runs that started at the given times; enabled or not.
    struct Started {
        at: Vec<DateTime<Utc>>,
        enabled: bool,
        asked: Mutex<usize>,
    }

    impl Runs for std::sync::Arc<Started> {
        async fn scheduled_between(
            &self,
            from: DateTime<Utc>,
            to: DateTime<Utc>,
        ) -> Result<u64, String> {
            *self.asked.lock().unwrap() += 1;
            Ok(self.at.iter().filter(|t| **t >= from && **t <= to).count() as u64)
        }

        async fn enabled(&self) -> bool {
            self.enabled
        }
    }

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, h, m, 0).unwrap()
    }

    async fn audit_hour(runs: Started) -> (Vec<String>, Started) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(t(9, 1));
        let runs = std::sync::Arc::new(runs);
        audit(
            "*/15 * * * *".parse().unwrap(),
            Duration::from_secs(120),
            dir.path(),
            "p",
            clock.clone(),
            runs.clone(),
            clock.reached(t(10, 5)),
        )
        .await;
        let mut files: Vec<String> = std::fs::read_dir(dir.path())
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        let runs = std::sync::Arc::try_unwrap(runs).ok().unwrap();
        (files, runs)
    }

    #[tokio::test]
    async fn an_occurrence_without_a_run_is_recorded_missed_once() {
        // Runs started for 09:15 (10 s late) and 09:45, none for 09:30 and 10:00.
        let started = vec![t(9, 15) + chrono::Duration::seconds(10), t(9, 45)];
        let (files, _) = audit_hour(Started {
            at: started,
            enabled: true,
            asked: Mutex::new(0),
        })
        .await;
        let want: Vec<String> = [t(9, 30), t(10, 0)]
            .iter()
            .map(|at| crate::journal::missed::missed_run_id(*at).file_name())
            .collect();
        assert_eq!(files, want);
    }

    #[tokio::test]
    async fn a_disabled_schedule_misses_nothing() {
        let (files, runs) = audit_hour(Started {
            at: Vec::new(),
            enabled: false,
            asked: Mutex::new(0),
        })
        .await;
        assert!(files.is_empty(), "{files:?}");
        assert_eq!(*runs.asked.lock().unwrap(), 0);
    }
}
