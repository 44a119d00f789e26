//! The `late` and `long` rules (`docs/alerts.md`): pure, so which occurrence is late and when
//! a run is long are tested without processes or clocks. `server::overdue` asks them every
//! few seconds with what the index and the scheduler say, and records what they make.
//!
//! - `late`: at `now`, the occurrence looked at is the newest one due at least `late_after`
//!   ago ([`overdue_occurrence`]), and only if it is not older than when the schedule came
//!   on (`since`): the ones before it are either answered or were alerted in their own time,
//!   and a dashboard that comes back after a long stop says once that the pipeline is late,
//!   not once per occurrence it slept through. It is late when no run of the pipeline has
//!   started since it, give or take [`START_SLACK`] ([`late_occurrence`]). Its alert's id
//!   is made from the destination, the pipeline and the occurrence ([`late_alert`]), so each
//!   occurrence is alerted at most once per destination, across restarts too.
//! - `long`: a running run is long once it has run past
//!   `max(long_min, long_factor × median)` ([`threshold`]), the median of the pipeline's last
//!   [`HISTORY`] successful durations ([`median`]); its alert's id is made from the run.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use super::{AlertObject, Markup, alert_id};
use crate::config::schedule::Schedule;
use crate::config::{AlertKind, Overdue};

/// A run that started up to this long before an occurrence still answers it (a runner whose
/// clock is a little ahead), as the occurrence auditor allows (`scheduler::audit`).
pub const START_SLACK: Duration = Duration::from_secs(1);

/// How many of a pipeline's latest successful runs its median duration is taken over.
pub const HISTORY: usize = 20;

/// The first window [`overdue_occurrence`] looks back over; each next one is four times as
/// long, so a schedule of seconds and a yearly one both take a few steps.
const FIRST_LOOK_BACK: Duration = Duration::from_secs(60);

/// The newest occurrence of `schedule` due at least `late_after` before `now`, if it is not
/// before `since` (inclusive).
pub fn overdue_occurrence(
    schedule: &Schedule,
    late_after: Duration,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let until = now.checked_sub_signed(chrono::Duration::from_std(late_after).ok()?)?;
    if until < since {
        return None;
    }
    // `occurrences` lists those strictly after its start: one millisecond before `since`
    // keeps an occurrence at `since` itself.
    let floor = since
        .checked_sub_signed(chrono::Duration::milliseconds(1))
        .unwrap_or(since);
    let mut back = chrono::Duration::from_std(FIRST_LOOK_BACK).ok()?;
    loop {
        let from = until
            .checked_sub_signed(back)
            .map_or(floor, |f| f.max(floor));
        if let Some(&t) = schedule.occurrences(from, until).last() {
            return Some(t);
        }
        if from <= floor {
            return None;
        }
        back = back.checked_mul(4)?;
    }
}

/// The occurrence that is late at `now`, if one is: the [`overdue_occurrence`], when the
/// newest run of the pipeline (`newest_start`, recorded misses left out) did not start at
/// or after it (less [`START_SLACK`]).
pub fn late_occurrence(
    schedule: &Schedule,
    late_after: Duration,
    since: DateTime<Utc>,
    newest_start: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let t = overdue_occurrence(schedule, late_after, since, now)?;
    let slack = chrono::Duration::from_std(START_SLACK).ok()?;
    let answered = newest_start.is_some_and(|s| s >= t.checked_sub_signed(slack).unwrap_or(t));
    (!answered).then_some(t)
}

/// The middle value of `durations` (the mean of the two middle ones for an even count);
/// `None` for none.
pub fn median(durations: &[u64]) -> Option<u64> {
    let mut sorted = durations.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    if n % 2 == 1 {
        return Some(sorted[n / 2]);
    }
    let sum = u128::from(sorted[n / 2 - 1]) + u128::from(sorted[n / 2]);
    u64::try_from(sum / 2).ok()
}

/// How long a run may run before it is long: `max(long_min, long_factor × median_ms)`, just
/// `long_min` without a median.
pub fn threshold(o: &Overdue, median_ms: Option<u64>) -> Duration {
    let usual = median_ms.map_or(Duration::ZERO, |m| {
        // Bounded before converting: a factor of 1e300 is a threshold of forever, not a panic.
        let ms = (m as f64 * o.long_factor).min(u64::MAX as f64 / 2.0);
        Duration::from_millis(ms.max(0.0) as u64)
    });
    o.long_min.max(usual)
}

/// A run that is running now, as the index has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub run_id: String,
    pub pipeline: String,
    /// The run's `started_at`, as written.
    pub started_at: String,
    pub started: DateTime<Utc>,
}

/// The `late` alert for `destination` about `pipeline`'s `occurrence`, made at `now`.
pub fn late_alert(
    destination: &str,
    pipeline: &str,
    occurrence: DateTime<Utc>,
    base_url: &str,
    now: DateTime<Utc>,
) -> AlertObject {
    let scheduled_at = occurrence.to_rfc3339_opts(SecondsFormat::Millis, true);
    AlertObject {
        id: alert_id(
            destination,
            AlertKind::Late,
            &format!("{pipeline}@{scheduled_at}"),
        ),
        kind: AlertKind::Late.as_str().to_string(),
        pipeline: pipeline.to_string(),
        url: format!("{base_url}/#/pipelines/{pipeline}"),
        at: now.to_rfc3339_opts(SecondsFormat::Millis, true),
        scheduled_at: Some(scheduled_at),
        ..AlertObject::default()
    }
}

/// The `long` alert for `destination` about `run`, if it has run past `limit` at `now`.
pub fn long_alert(
    destination: &str,
    run: &Running,
    limit: Duration,
    median_ms: Option<u64>,
    base_url: &str,
    now: DateTime<Utc>,
) -> Option<AlertObject> {
    let elapsed = (now - run.started).to_std().ok()?;
    if elapsed <= limit {
        return None;
    }
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    Some(AlertObject {
        id: alert_id(destination, AlertKind::Long, &run.run_id),
        kind: AlertKind::Long.as_str().to_string(),
        pipeline: run.pipeline.clone(),
        run_id: run.run_id.clone(),
        status: "running".to_string(),
        started_at: Some(run.started_at.clone()),
        duration_ms: Some(ms(elapsed)),
        url: format!("{base_url}/#/runs/{}", run.run_id),
        at: now.to_rfc3339_opts(SecondsFormat::Millis, true),
        threshold_ms: Some(ms(limit)),
        median_ms: median_ms.map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
        ..AlertObject::default()
    })
}

/// The words of a `late` or `long` alert, marked up for its destination.
pub(super) fn text(a: &AlertObject, markup: Markup) -> String {
    let parse = |t: &Option<String>| t.as_deref().and_then(crate::event::parse_timestamp);
    let what = match a.kind.as_str() {
        "late" => {
            let due = parse(&a.scheduled_at);
            let at = crate::event::parse_timestamp(&a.at);
            match (due, at) {
                (Some(due), Some(at)) => {
                    let clock = if due.timestamp() % 60 == 0 {
                        due.format("%H:%M")
                    } else {
                        due.format("%H:%M:%S")
                    };
                    let late = (at - due).num_milliseconds().max(0);
                    format!(
                        "no run started for the {clock} UTC occurrence, {} late",
                        spoken(late as u64)
                    )
                }
                _ => "no run started for a scheduled occurrence".to_string(),
            }
        }
        _ => {
            let running = a.duration_ms.unwrap_or(0).max(0) as u64;
            let mut what = format!("run {} running for {}", a.run_id, short(running));
            match (a.median_ms, a.threshold_ms) {
                (Some(m), _) => what.push_str(&format!(", usually ~{}", short(m.max(0) as u64))),
                (None, Some(t)) => {
                    what.push_str(&format!(", past its {} limit", short(t.max(0) as u64)))
                }
                (None, None) => {}
            }
            what
        }
    };
    format!(
        "pipewatch: {} is {}: {what}\n{}",
        a.pipeline,
        a.kind,
        markup.link(&a.url)
    )
}

/// `ms` in words, to the unit a reader wants: "45 seconds", "12 minutes", "3 hours", "2 days".
fn spoken(ms: u64) -> String {
    let s = ms / 1000;
    let (n, unit) = match s {
        0..120 => (s, "second"),
        120..7200 => (s / 60, "minute"),
        7200..172_800 => (s / 3600, "hour"),
        _ => (s / 86_400, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// `ms` in short: "45s", "17m", "2h5m".
fn short(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        _ if s % 3600 / 60 == 0 => format!("{}h", s / 3600),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, h, m, s).unwrap()
    }

    fn schedule(expr: &str) -> Schedule {
        expr.parse().unwrap()
    }

    const TEN_MIN: Duration = Duration::from_secs(600);

    #[test]
    fn the_overdue_occurrence_is_the_newest_due_late_after_ago() {
        let every_15 = schedule("*/15 * * * *");
        let since = t(0, 0, 0);
        // 09:24: 09:15 is due at 09:25, so 09:00 is the one looked at.
        assert_eq!(
            overdue_occurrence(&every_15, TEN_MIN, since, t(9, 24, 59)),
            Some(t(9, 0, 0))
        );
        assert_eq!(
            overdue_occurrence(&every_15, TEN_MIN, since, t(9, 25, 0)),
            Some(t(9, 15, 0))
        );
        // A schedule of seconds and a yearly one are found the same way.
        assert_eq!(
            overdue_occurrence(
                &schedule("*/5 * * * * *"),
                Duration::from_secs(2),
                since,
                t(9, 0, 8)
            ),
            Some(t(9, 0, 5))
        );
        assert_eq!(
            overdue_occurrence(
                &schedule("@yearly"),
                TEN_MIN,
                DateTime::<Utc>::UNIX_EPOCH,
                t(9, 0, 0)
            ),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap())
        );
        // No lower bound at all: still found, and no overflow on the way.
        assert_eq!(
            overdue_occurrence(&every_15, TEN_MIN, DateTime::<Utc>::MIN_UTC, t(9, 25, 0)),
            Some(t(9, 15, 0))
        );
        assert_eq!(
            overdue_occurrence(&every_15, TEN_MIN, since, DateTime::<Utc>::MIN_UTC),
            None
        );
    }

    #[test]
    fn nothing_before_the_schedule_came_on_is_overdue() {
        let daily = schedule("0 9 * * *");
        // Turned on at 12:00: today's 09:00 was not expected, tomorrow's is.
        let on = t(12, 0, 0);
        assert_eq!(overdue_occurrence(&daily, TEN_MIN, on, t(15, 0, 0)), None);
        assert_eq!(overdue_occurrence(&daily, TEN_MIN, on, on), None);
        let tomorrow = t(9, 0, 0) + chrono::Duration::days(1);
        assert_eq!(
            overdue_occurrence(
                &daily,
                TEN_MIN,
                on,
                tomorrow + chrono::Duration::minutes(10)
            ),
            Some(tomorrow)
        );
        // `since` is inclusive: an occurrence at it is expected.
        assert_eq!(
            overdue_occurrence(&daily, TEN_MIN, t(9, 0, 0), t(9, 10, 0)),
            Some(t(9, 0, 0))
        );
    }

    #[test]
    fn an_occurrence_is_late_until_a_run_starts_after_it() {
        let every_15 = schedule("*/15 * * * *");
        let since = t(0, 0, 0);
        let now = t(9, 27, 0);
        // The newest run started before 09:15: late. After it (or a moment before): not.
        for (start, late) in [
            (None, true),
            (Some(t(9, 0, 3)), true),
            (Some(t(9, 14, 58)), true),
            (Some(t(9, 14, 59)), false),
            (Some(t(9, 15, 2)), false),
            (Some(t(9, 26, 0)), false),
        ] {
            assert_eq!(
                late_occurrence(&every_15, TEN_MIN, since, start, now),
                late.then_some(t(9, 15, 0)),
                "{start:?}"
            );
        }
        // After a long stop, only the newest occurrence is late: one alert, not one per
        // occurrence slept through.
        let after_a_day = t(9, 27, 0) + chrono::Duration::days(1);
        assert_eq!(
            late_occurrence(&every_15, TEN_MIN, since, Some(t(9, 15, 0)), after_a_day),
            Some(t(9, 15, 0) + chrono::Duration::days(1))
        );
    }

    #[test]
    fn medians_and_thresholds() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[7]), Some(7));
        assert_eq!(median(&[9, 1, 5]), Some(5));
        assert_eq!(median(&[4, 1, 3, 2]), Some(2));
        assert_eq!(median(&[1, 2]), Some(1));
        assert_eq!(median(&[3, 4]), Some(3));
        assert_eq!(median(&[u64::MAX, u64::MAX]), Some(u64::MAX));
        let o = Overdue::default();
        assert_eq!(threshold(&o, None), Duration::from_secs(300));
        // 3 × 1 minute is under the 5 minutes: the minimum holds.
        assert_eq!(threshold(&o, Some(60_000)), Duration::from_secs(300));
        assert_eq!(threshold(&o, Some(240_000)), Duration::from_secs(720));
        let o = Overdue {
            long_factor: 1.5,
            long_min: Duration::from_secs(1),
            ..o
        };
        assert_eq!(threshold(&o, Some(10_000)), Duration::from_secs(15));
        let huge = Overdue {
            long_factor: 1e300,
            ..o
        };
        assert!(threshold(&huge, Some(1)) > Duration::from_secs(1 << 40));
    }

    #[test]
    fn a_run_is_long_once_past_its_threshold() {
        let run = Running {
            run_id: "r1".into(),
            pipeline: "p".into(),
            started_at: "2026-12-03T09:00:00Z".into(),
            started: t(9, 0, 0),
        };
        let limit = Duration::from_secs(720);
        let base = "http://127.0.0.1:8001";
        assert_eq!(
            long_alert("ops", &run, limit, Some(240_000), base, t(9, 12, 0)),
            None
        );
        let a = long_alert("ops", &run, limit, Some(240_000), base, t(9, 17, 0)).unwrap();
        assert_eq!(a.kind, "long");
        assert_eq!(a.id, alert_id("ops", AlertKind::Long, "r1"));
        assert_eq!(a.duration_ms, Some(17 * 60_000));
        assert_eq!(a.threshold_ms, Some(720_000));
        assert_eq!(a.url, "http://127.0.0.1:8001/#/runs/r1");
        assert_eq!(
            a.slack_text(),
            "pipewatch: p is long: run r1 running for 17m, usually ~4m\n<http://127.0.0.1:8001/#/runs/r1>"
        );
        // The same run later: the same alert id, so it is recorded once.
        let again = long_alert("ops", &run, limit, None, base, t(10, 0, 0)).unwrap();
        assert_eq!(again.id, a.id);
        assert!(
            again
                .slack_text()
                .contains("running for 1h, past its 12m limit")
        );
    }

    #[test]
    fn late_alerts_name_the_occurrence_and_have_one_id_per_occurrence() {
        let base = "http://127.0.0.1:8001";
        let a = late_alert("ops", "etl", t(9, 15, 0), base, t(9, 27, 0));
        assert_eq!(a.kind, "late");
        assert_eq!(a.run_id, "");
        assert_eq!(a.scheduled_at.as_deref(), Some("2026-12-03T09:15:00.000Z"));
        assert_eq!(a.url, "http://127.0.0.1:8001/#/pipelines/etl");
        assert_eq!(
            a.slack_text(),
            "pipewatch: etl is late: no run started for the 09:15 UTC occurrence, 12 minutes \
             late\n<http://127.0.0.1:8001/#/pipelines/etl>"
        );
        assert_eq!(
            a.id,
            late_alert("ops", "etl", t(9, 15, 0), base, t(9, 40, 0)).id
        );
        assert_ne!(
            a.id,
            late_alert("ops", "etl", t(9, 30, 0), base, t(9, 40, 0)).id
        );
        assert_ne!(
            a.id,
            late_alert("dev", "etl", t(9, 15, 0), base, t(9, 40, 0)).id
        );
        assert_ne!(
            a.id,
            late_alert("ops", "web", t(9, 15, 0), base, t(9, 40, 0)).id
        );
        let s = late_alert("ops", "etl", t(9, 15, 5), base, t(9, 15, 7));
        assert!(
            s.slack_text()
                .contains("the 09:15:05 UTC occurrence, 2 seconds late")
        );
        // Fields the other kinds do not have stay out of their JSON.
        let json = serde_json::to_value(&a).unwrap();
        assert!(json.get("threshold_ms").is_none() && json.get("median_ms").is_none());
        let back: AlertObject = serde_json::from_value(json).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn durations_in_words() {
        assert_eq!(spoken(1_000), "1 second");
        assert_eq!(spoken(119_999), "119 seconds");
        assert_eq!(spoken(12 * 60_000), "12 minutes");
        assert_eq!(spoken(3 * 3_600_000), "3 hours");
        assert_eq!(spoken(3 * 86_400_000), "3 days");
        assert_eq!(short(45_000), "45s");
        assert_eq!(short(17 * 60_000 + 5_000), "17m");
        assert_eq!(short(2 * 3_600_000 + 5 * 60_000), "2h5m");
        assert_eq!(short(2 * 3_600_000), "2h");
    }
}
