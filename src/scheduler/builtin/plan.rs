//! Catch-up, decided: given the occurrences that could not be fired on time, which to run and
//! which to record as `missed`, per `[pipeline] catchup` and `catchup_window`. Pure: no clock,
//! no files; the timer loop acts on the answer.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Catchup;

/// What to do about the occurrences between the last one handled and now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Occurrences to run now, oldest first.
    pub run: Vec<DateTime<Utc>>,
    /// Occurrences to record as `missed` (no run), oldest first.
    pub missed: Vec<DateTime<Utc>>,
}

/// Decides what to do with occurrences that could not be fired on time (`late`, oldest
/// first): those older than `window` before `now` are only recorded as missed; of the others,
/// `none` runs none, `last` runs the newest, `all` runs each in order.
pub fn plan_catchup(
    late: Vec<DateTime<Utc>>,
    now: DateTime<Utc>,
    policy: Catchup,
    window: Duration,
) -> Plan {
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let horizon = now
        .checked_sub_signed(window)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let (old, recent): (Vec<_>, Vec<_>) = late.into_iter().partition(|t| *t < horizon);
    let mut plan = Plan {
        run: Vec::new(),
        missed: old,
    };
    match policy {
        Catchup::None => plan.missed.extend(recent),
        Catchup::All => plan.run = recent,
        Catchup::Last => {
            let mut recent = recent;
            if let Some(newest) = recent.pop() {
                plan.missed.extend(recent);
                plan.run.push(newest);
            }
        }
    }
    plan.missed.sort();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schedule::Schedule;
    use chrono::TimeZone;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, h, m, 0).unwrap()
    }

    fn every_15() -> Schedule {
        "*/15 * * * *".parse().unwrap()
    }

    #[test]
    fn catchup_policies() {
        let s = every_15();
        let six_h = Duration::from_secs(6 * 3600);
        // Off from 08:00 to 09:05: 08:15, 08:30, 08:45, 09:00 were missed.
        let late = || s.occurrences(t(8, 0), t(9, 5));
        let none = plan_catchup(late(), t(9, 5), Catchup::None, six_h);
        assert!(none.run.is_empty());
        assert_eq!(none.missed, vec![t(8, 15), t(8, 30), t(8, 45), t(9, 0)]);
        let last = plan_catchup(late(), t(9, 5), Catchup::Last, six_h);
        assert_eq!(last.run, vec![t(9, 0)]);
        assert_eq!(last.missed, vec![t(8, 15), t(8, 30), t(8, 45)]);
        let all = plan_catchup(late(), t(9, 5), Catchup::All, six_h);
        assert_eq!(all.run, vec![t(8, 15), t(8, 30), t(8, 45), t(9, 0)]);
        assert!(all.missed.is_empty());
    }

    #[test]
    fn the_window_bounds_catchup() {
        let s = every_15();
        let late = || s.occurrences(t(8, 0), t(9, 5));
        let plan = plan_catchup(late(), t(9, 5), Catchup::All, Duration::from_secs(1800));
        assert_eq!(plan.run, vec![t(8, 45), t(9, 0)]);
        assert_eq!(plan.missed, vec![t(8, 15), t(8, 30)]);
        let plan = plan_catchup(late(), t(9, 5), Catchup::Last, Duration::from_secs(60));
        assert!(plan.run.is_empty(), "nothing recent enough to run");
        assert_eq!(plan.missed.len(), 4);
    }

    #[test]
    fn nothing_missed_nothing_planned() {
        let late = every_15().occurrences(t(9, 0), t(9, 5));
        let plan = plan_catchup(late, t(9, 5), Catchup::All, Duration::from_secs(60));
        assert_eq!(plan, Plan::default());
    }
}
