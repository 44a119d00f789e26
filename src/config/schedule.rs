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

/// Two schedules are the same when they are written the same.
impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        self.expression == other.expression
    }
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

    /// The latest occurrence at or before `t`, if the expression has one.
    pub fn latest_at_or_before<Tz: TimeZone>(&self, t: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        self.cron.find_previous_occurrence(t, true).ok()
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

/// The nicknames the dialect accepts, each a 5-field expression for croner.
pub const NICKNAMES: [&str; 6] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@hourly",
];

/// The 5 fields, in order, with the values each allows (weekday 7 is Sunday, as 0).
const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("weekday", 0, 7),
];

/// The leading field of the 6-field form.
const SECONDS: (&str, u32, u32) = ("second", 0, 59);

/// What a schedule may be, for the messages that refuse one.
fn forms() -> String {
    format!(
        "5 fields (minute hour day-of-month month weekday), 6 with a leading seconds field, or one of {}",
        NICKNAMES.join(", ")
    )
}

fn parser() -> CronParser {
    CronParser::builder().seconds(Seconds::Optional).build()
}

/// Why `expression` is not a schedule, in the dialect's own words: the field, the value and
/// the values it allows. croner's messages name neither the field nor the range, so the
/// common mistakes are found here first; whatever croner still refuses is pinned to its
/// field by parsing that field alone.
fn refuse(expression: &str) -> Option<String> {
    let at = |why: String| Some(format!("schedule {expression:?}: {why}"));
    if expression.starts_with('@') {
        if NICKNAMES.iter().any(|n| n.eq_ignore_ascii_case(expression)) {
            return None;
        }
        return at(format!("{expression} is not supported; use {}", forms()));
    }
    let parts: Vec<&str> = expression.split_whitespace().collect();
    let named: Vec<(&str, u32, u32)> = match parts.len() {
        5 => FIELDS.to_vec(),
        6 => std::iter::once(SECONDS).chain(FIELDS).collect(),
        n => return at(format!("expected {}; found {n} fields", forms())),
    };
    for (text, &(name, min, max)) in parts.iter().zip(&named) {
        for item in text.split(',') {
            let base = item.split_once('/').map_or(item, |(b, _)| b);
            let ends = base.split_once('-').map_or([base, base], |(a, b)| [a, b]);
            for v in ends {
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let out = v.parse::<u32>().map_or(true, |n| n < min || n > max);
                if out {
                    return at(format!("{name} {v} is out of range {min}–{max}"));
                }
            }
        }
    }
    // Each field alone, the others `*`: the first croner refuses is the one at fault.
    for (i, (text, (name, _, _))) in parts.iter().zip(&named).enumerate() {
        let alone: Vec<&str> = (0..parts.len())
            .map(|j| if j == i { *text } else { "*" })
            .collect();
        if let Err(e) = parser().parse(&alone.join(" ")) {
            return at(format!("{name} {text:?} is not valid ({e})"));
        }
    }
    None
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let expression = s.trim().to_string();
        if let Some(why) = refuse(&expression) {
            return Err(why);
        }
        let cron = parser()
            .parse(&expression)
            .map_err(|e| format!("schedule {expression:?}: {e}"))?;
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
    fn refusals_name_the_field_the_value_and_the_range() {
        let why = |s: &str| s.parse::<Schedule>().err().unwrap_or_default();
        assert_eq!(
            why("0 25 * * *"),
            "schedule \"0 25 * * *\": hour 25 is out of range 0–23"
        );
        assert_eq!(
            why("61 * * * *"),
            "schedule \"61 * * * *\": minute 61 is out of range 0–59"
        );
        assert_eq!(
            why("0 0 0 * *"),
            "schedule \"0 0 0 * *\": day of month 0 is out of range 1–31"
        );
        assert_eq!(
            why("0 0 * 1-13 *"),
            "schedule \"0 0 * 1-13 *\": month 13 is out of range 1–12"
        );
        assert_eq!(
            why("0 0 * * 1,8"),
            "schedule \"0 0 * * 1,8\": weekday 8 is out of range 0–7"
        );
        assert_eq!(
            why("60 0 0 * * *"),
            "schedule \"60 0 0 * * *\": second 60 is out of range 0–59"
        );
        let reboot = why("@reboot");
        assert!(
            reboot.starts_with("schedule \"@reboot\": @reboot is not supported; use 5 fields")
                && reboot.contains("@daily")
                && !reboot.contains("between 5 and 7"),
            "{reboot}"
        );
        let four = why("* * * *");
        assert!(four.contains("found 4 fields"), "{four}");
        let word = why("0 noon * * *");
        assert!(
            word.starts_with("schedule \"0 noon * * *\": hour \"noon\" is not valid"),
            "{word}"
        );
    }

    #[test]
    fn what_the_dialect_accepts_is_still_accepted() {
        for ok in [
            "@HOURLY",
            "@annually",
            "*/5 0-23/2 1,15 jan-dec mon-fri",
            "0 0 * * 7",
            "0 0 L * *",
            "0 0 * * 5#2",
            "0 0 ? * *",
        ] {
            assert!(ok.parse::<Schedule>().is_ok(), "{ok:?} should be accepted");
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
