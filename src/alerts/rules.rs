//! Which run endings become alerts, for one destination and one pipeline: pure, so storm
//! suppression and recovery are tested without processes or clocks.
//!
//! A destination remembers, per pipeline, a [`Memory`] (kept in the index next to the
//! outbox, so it survives restarts). A failure alerts when the pipeline was not failing, or
//! when `repeat_every` has passed since the last failure alert; the failures in between are
//! counted and reported with the next one. The first success after failures is a
//! `recovery`, and forgets the failures. `missed` and `abandoned` alert every time.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::AlertKind;

/// What a destination remembers about one pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// The pipeline's last run that counted ended `failure`.
    pub failing: bool,
    /// When the last `failure` alert was made, while failing.
    pub last_alert_at: Option<DateTime<Utc>>,
    /// Failures since that alert that were held back.
    pub held_back: u64,
}

/// How a run ended, as far as alerts are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Success,
    Failure,
    Missed,
    Abandoned,
}

impl Ending {
    /// The ending of a run whose final status is `status`; `None` for one no rule is about
    /// (`cancelled`, `skipped`, `running`).
    pub fn of_status(status: &str) -> Option<Ending> {
        match status {
            "success" => Some(Ending::Success),
            "failure" => Some(Ending::Failure),
            "missed" => Some(Ending::Missed),
            "abandoned" => Some(Ending::Abandoned),
            _ => None,
        }
    }
}

/// An alert to make: its kind, and how many failed runs it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub kind: AlertKind,
    pub failed_runs: u64,
}

/// Updates `memory` for a run that ended `ending` at `now`, and says which alert, if any,
/// a destination told about `on` makes of it.
pub fn decide(
    memory: &mut Memory,
    ending: Ending,
    on: &[AlertKind],
    repeat_every: Duration,
    now: DateTime<Utc>,
) -> Option<Decision> {
    let wants = |k: AlertKind| on.contains(&k).then_some(k);
    match ending {
        Ending::Failure => {
            let due = !memory.failing
                || memory.last_alert_at.is_none_or(|last| {
                    (now - last).to_std().unwrap_or(Duration::ZERO) >= repeat_every
                });
            memory.failing = true;
            let kind = wants(AlertKind::Failure)?;
            if !due {
                memory.held_back += 1;
                return None;
            }
            let failed_runs = memory.held_back + 1;
            memory.held_back = 0;
            memory.last_alert_at = Some(now);
            Some(Decision { kind, failed_runs })
        }
        Ending::Success => {
            let was_failing = memory.failing;
            *memory = Memory::default();
            was_failing
                .then(|| wants(AlertKind::Recovery))
                .flatten()
                .map(|kind| Decision {
                    kind,
                    failed_runs: 0,
                })
        }
        Ending::Missed => wants(AlertKind::Missed).map(|kind| Decision {
            kind,
            failed_runs: 0,
        }),
        Ending::Abandoned => wants(AlertKind::Abandoned).map(|kind| Decision {
            kind,
            failed_runs: 0,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::alerts::DEFAULT_ON;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::minutes(minutes)
    }

    #[test]
    fn a_failing_pipeline_alerts_once_then_once_per_repeat_with_the_count() {
        let mut m = Memory::default();
        let first = decide(&mut m, Ending::Failure, &DEFAULT_ON, HOUR, at(0));
        assert_eq!(
            first,
            Some(Decision {
                kind: AlertKind::Failure,
                failed_runs: 1
            })
        );
        for t in [15, 30, 45] {
            assert_eq!(
                decide(&mut m, Ending::Failure, &DEFAULT_ON, HOUR, at(t)),
                None
            );
        }
        let again = decide(&mut m, Ending::Failure, &DEFAULT_ON, HOUR, at(60));
        assert_eq!(again.map(|d| d.failed_runs), Some(4));
        assert_eq!(
            decide(&mut m, Ending::Failure, &DEFAULT_ON, HOUR, at(75)),
            None
        );
    }

    #[test]
    fn the_first_success_after_failures_is_a_recovery_and_forgets_them() {
        let mut m = Memory::default();
        assert_eq!(
            decide(&mut m, Ending::Success, &DEFAULT_ON, HOUR, at(0)),
            None
        );
        decide(&mut m, Ending::Failure, &DEFAULT_ON, HOUR, at(1));
        let r = decide(&mut m, Ending::Success, &DEFAULT_ON, HOUR, at(2));
        assert_eq!(r.map(|d| d.kind), Some(AlertKind::Recovery));
        assert_eq!(m, Memory::default());
        assert_eq!(
            decide(&mut m, Ending::Success, &DEFAULT_ON, HOUR, at(3)),
            None
        );
        // A new failure after the recovery alerts at once, whatever repeat_every says.
        let f = decide(&mut m, Ending::Failure, &DEFAULT_ON, HOUR, at(4));
        assert_eq!(f.map(|d| d.failed_runs), Some(1));
    }

    #[test]
    fn kinds_not_asked_for_are_not_made_but_still_remembered() {
        let only_recovery = [AlertKind::Recovery];
        let mut m = Memory::default();
        assert_eq!(
            decide(&mut m, Ending::Failure, &only_recovery, HOUR, at(0)),
            None
        );
        assert!(m.failing);
        let r = decide(&mut m, Ending::Success, &only_recovery, HOUR, at(1));
        assert_eq!(r.map(|d| d.kind), Some(AlertKind::Recovery));
        assert_eq!(
            decide(&mut m, Ending::Missed, &only_recovery, HOUR, at(2)),
            None
        );
    }

    #[test]
    fn missed_and_abandoned_alert_every_time() {
        let mut m = Memory::default();
        for t in 0..3 {
            let d = decide(&mut m, Ending::Missed, &DEFAULT_ON, HOUR, at(t));
            assert_eq!(d.map(|d| d.kind), Some(AlertKind::Missed));
            let d = decide(&mut m, Ending::Abandoned, &DEFAULT_ON, HOUR, at(t));
            assert_eq!(d.map(|d| d.kind), Some(AlertKind::Abandoned));
        }
        assert!(!m.failing);
    }
}
