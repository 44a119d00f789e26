//! The pipeline's schedule: a cron expression, parsed once and evaluated in local time.
//!
//! The dialect is the 5-field one users know from cron (`minute hour day month weekday`,
//! lists, ranges, steps, names) plus `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`;
//! a sixth leading field for seconds is accepted for the built-in scheduler. Parsing and
//! evaluation are `croner`'s; this module keeps the original text for display and for the
//! OS scheduler translations.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::de::{self, Deserialize, Deserializer};

/// The default schedule: every 15 minutes.
pub const DEFAULT: &str = "*/15 * * * *";

/// Never list more than this many occurrences at once (a per-second schedule after a week
/// off must not allocate millions of entries).
pub const MAX_OCCURRENCES: usize = 10_000;

/// A parsed cron schedule.
#[derive(Clone)]
pub struct Schedule {
    expression: String,
    cron: Cron,
}

impl Schedule {
    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first occurrence strictly after `t`, if the expression has one.
    pub fn next_after<Tz: TimeZone>(&self, t: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        self.cron.find_next_occurrence(t, false).ok()
    }

    /// The occurrences strictly after `after` and at or before `until`, at most
    /// [`MAX_OCCURRENCES`] of the newest.
    pub fn occurrences<Tz: TimeZone>(
        &self,
        after: DateTime<Tz>,
        until: DateTime<Tz>,
    ) -> Vec<DateTime<Tz>> {
        let mut out = std::collections::VecDeque::new();
        let mut t = after;
        while let Some(next) = self.next_after(&t) {
            if next > until {
                break;
            }
            if out.len() == MAX_OCCURRENCES {
                out.pop_front();
            }
            out.push_back(next.clone());
            t = next;
        }
        out.into()
    }
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let expression = s.trim().to_string();
        let fields = expression.split_whitespace().count();
        if !expression.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "invalid cron expression {s:?}: expected 5 fields (minute hour day month weekday), or 6 with a leading seconds field, found {fields}"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(&expression)
            .map_err(|e| format!("invalid cron expression {s:?}: {e}"))?;
        Ok(Schedule { expression, cron })
    }
}

impl Default for Schedule {
    fn default() -> Self {
        DEFAULT
            .parse()
            .expect("the default schedule is a valid cron expression")
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.expression).finish()
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn every_fifteen_minutes() {
        let s: Schedule = DEFAULT.parse().unwrap();
        let t = Utc.with_ymd_and_hms(2026, 11, 29, 8, 7, 0).unwrap();
        let n = s.next_after(&t).unwrap();
        assert_eq!(n, Utc.with_ymd_and_hms(2026, 11, 29, 8, 15, 0).unwrap());
        let n2 = s.next_after(&n).unwrap();
        assert_eq!(n2, Utc.with_ymd_and_hms(2026, 11, 29, 8, 30, 0).unwrap());
    }

    #[test]
    fn nicknames_and_refusals() {
        assert!("@hourly".parse::<Schedule>().is_ok());
        assert!("@daily".parse::<Schedule>().is_ok());
        assert!("*/5 * * * * *".parse::<Schedule>().is_ok());
        for bad in ["", "* * * *", "61 * * * *", "* * * * * * * *", "every day"] {
            assert!(
                bad.parse::<Schedule>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn a_long_outage_is_bounded() {
        let s: Schedule = "* * * * * *".parse().unwrap();
        let start = Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 0).unwrap();
        let now = start + chrono::Duration::days(2);
        let occ = s.occurrences(start, now);
        assert_eq!(occ.len(), MAX_OCCURRENCES);
        assert_eq!(occ.last(), Some(&now));
    }
}
