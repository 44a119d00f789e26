//! The cron expression as sets of values, for the OS translations.
//!
//! [`crate::config::schedule::Schedule`] (croner) decides *when* the schedule fires; the OS backends
//! need the expression's *structure* to rewrite it for another scheduler. This module parses
//! the portable subset of the dialect — numbers, `*`, `a-b`, `*/s`, `a-b/s`, lists, month and
//! weekday names, `7` for Sunday, `?` as `*` in the day fields, and the `@` nicknames — into
//! one set of values per field. Anything else croner accepts (`L`, `W`, `#`, a `+` before the
//! weekdays) is refused here, because no OS scheduler pipewatch targets can express it.
//!
//! Invariants: every set is non-empty and inside its field's range; weekdays are 0..=6 with
//! 0 = Sunday; `days_star` / `weekdays_star` are true exactly when croner treats the field as
//! unrestricted (the field was `*` or `?`), because that decides croner's day rule: when both
//! day fields are restricted a day matches if *either* does (Vixie cron's OR), otherwise only
//! the restricted one counts.
//!
//! Callers: the `cron`, `systemd` and `windows` backends; the error is a plain message that
//! each backend wraps with its own name.

use std::collections::BTreeSet;

/// A parsed expression. `seconds` is `Some` only for the 6-field form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    pub seconds: Option<BTreeSet<u8>>,
    pub minutes: BTreeSet<u8>,
    pub hours: BTreeSet<u8>,
    pub days: BTreeSet<u8>,
    pub months: BTreeSet<u8>,
    pub weekdays: BTreeSet<u8>,
    pub days_star: bool,
    pub weekdays_star: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// The 5-field form of a nickname, as croner reads it.
pub fn nickname(expression: &str) -> Option<&'static str> {
    match expression.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => Some("0 0 1 1 *"),
        "@monthly" => Some("0 0 1 * *"),
        "@weekly" => Some("0 0 * * 0"),
        "@daily" => Some("0 0 * * *"),
        "@hourly" => Some("0 * * * *"),
        _ => None,
    }
}

/// Parses `expression` (5 fields, 6 with leading seconds, or a nickname).
pub fn parse(expression: &str) -> Result<Fields, String> {
    let text = expression.trim();
    let text = if text.starts_with('@') {
        nickname(text).ok_or_else(|| format!("unknown nickname {text:?}"))?
    } else {
        text
    };
    let parts: Vec<&str> = text.split_whitespace().collect();
    let (seconds, rest) = match parts.len() {
        5 => (None, &parts[..]),
        6 => (Some(field(parts[0], 0, 59, None)?), &parts[1..]),
        n => return Err(format!("expected 5 fields (or 6 with seconds), found {n}")),
    };
    fn day_field(s: &str) -> &str {
        if s == "?" { "*" } else { s }
    }
    let dom = day_field(rest[2]);
    let dow = day_field(rest[4]);
    let mut weekdays = field(dow, 0, 7, Some(&WEEKDAYS))?;
    if weekdays.remove(&7) {
        weekdays.insert(0);
    }
    let f = Fields {
        seconds,
        minutes: field(rest[0], 0, 59, None)?,
        hours: field(rest[1], 0, 23, None)?,
        days: field(dom, 1, 31, None)?,
        months: field(rest[3], 1, 12, Some(&MONTHS))?,
        weekdays,
        days_star: dom == "*",
        weekdays_star: dow == "*",
    };
    if f.weekdays_star
        && !f.days_star
        && !f
            .months
            .iter()
            .any(|m| f.days.iter().any(|d| *d <= month_len(*m)))
    {
        return Err("it never fires: no chosen day exists in the chosen months".to_string());
    }
    Ok(f)
}

/// The longest a month can be (February: 29, leap years included).
pub fn month_len(month: u8) -> u8 {
    match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn field(text: &str, min: u8, max: u8, names: Option<&[&str]>) -> Result<BTreeSet<u8>, String> {
    if let Some(c) = text
        .chars()
        .find(|c| matches!(c, 'L' | 'l' | 'W' | 'w' | '#' | '+' | '?'))
    {
        // `w` and `l` can also be letters of a name (`wed`, `jul`): only refuse them when the
        // field has no name in it.
        let named = names.is_some_and(|n| n.iter().any(|n| text.to_ascii_lowercase().contains(n)));
        if !(named && matches!(c, 'L' | 'l' | 'W' | 'w')) {
            return Err(format!(
                "{text:?} uses `{c}`, a croner extension that OS schedulers cannot express"
            ));
        }
    }
    let mut set = BTreeSet::new();
    for item in text.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((b, s)) => {
                let step: u8 = s
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("bad step in {item:?}"))?;
                (b, Some(step))
            }
            None => (item, None),
        };
        let (lo, hi) = if base == "*" {
            (min, max)
        } else if let Some((a, b)) = base.split_once('-') {
            (value(a, min, max, names)?, value(b, min, max, names)?)
        } else {
            let v = value(base, min, max, names)?;
            if step.is_some() {
                return Err(format!(
                    "{item:?}: a step needs `*` or a range before it (write `*/s` or `a-b/s`)"
                ));
            }
            (v, v)
        };
        if lo > hi {
            return Err(format!("{item:?}: the range runs backwards"));
        }
        let step = step.unwrap_or(1);
        let mut v = lo;
        while v <= hi {
            set.insert(v);
            match v.checked_add(step) {
                Some(n) => v = n,
                None => break,
            }
        }
    }
    Ok(set)
}

fn value(text: &str, min: u8, max: u8, names: Option<&[&str]>) -> Result<u8, String> {
    let lower = text.to_ascii_lowercase();
    let v = match names.and_then(|n| n.iter().position(|n| *n == lower)) {
        // Month names count from 1, weekday names from 0 (Sunday).
        Some(i) => i as u8 + min,
        None => text
            .parse::<u8>()
            .map_err(|_| format!("{text:?} is not a number or a name"))?,
    };
    if v < min || v > max {
        return Err(format!("{v} is outside {min}..={max}"));
    }
    Ok(v)
}

/// Whether `set` holds every value of `min..=max`.
pub fn is_full(set: &BTreeSet<u8>, min: u8, max: u8) -> bool {
    set.len() == usize::from(max - min) + 1
}

/// The common difference when `set` (sorted) is an arithmetic progression of at least two
/// values.
pub fn step_of(set: &BTreeSet<u8>) -> Option<u8> {
    let v: Vec<u8> = set.iter().copied().collect();
    if v.len() < 2 {
        return None;
    }
    let d = v[1] - v[0];
    v.windows(2).all(|w| w[1] - w[0] == d).then_some(d)
}

/// Maximal runs of consecutive values, as `(first, last)`.
pub fn runs(set: &BTreeSet<u8>) -> Vec<(u8, u8)> {
    let mut out: Vec<(u8, u8)> = Vec::new();
    for &v in set {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == v => *last = v,
            _ => out.push((v, v)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[u8]) -> BTreeSet<u8> {
        v.iter().copied().collect()
    }

    #[test]
    fn parses_the_portable_subset() {
        let f = parse("*/15 9-17 * * mon-fri").unwrap();
        assert_eq!(f.minutes, set(&[0, 15, 30, 45]));
        assert_eq!(f.hours, (9..=17).collect());
        assert!(f.days_star && !f.weekdays_star);
        assert_eq!(f.weekdays, set(&[1, 2, 3, 4, 5]));
        let f = parse("0 0 1,15 jan-mar/2 5-7").unwrap();
        assert_eq!(f.months, set(&[1, 3]));
        assert_eq!(f.weekdays, set(&[0, 5, 6]));
        assert_eq!(parse("@weekly").unwrap().weekdays, set(&[0]));
        assert_eq!(
            parse("*/20 * * * * *").unwrap().seconds,
            Some(set(&[0, 20, 40]))
        );
        assert!(parse("0 0 ? * WED").unwrap().days_star);
        assert_eq!(parse("0 0 * JUL *").unwrap().months, set(&[7]));
    }

    #[test]
    fn refuses_extensions_and_nonsense() {
        for bad in [
            "0 0 L * *",
            "0 0 15W * *",
            "0 0 * * 5#3",
            "0 0 * * 5L",
            "0 0 * * +1",
            "5/15 * * * *",
            "30-10 * * * *",
            "0 0 31 2 *",
            "0 0 30 feb *",
            "@reboot",
            "* * * *",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn progressions_and_runs() {
        assert_eq!(step_of(&set(&[0, 15, 30, 45])), Some(15));
        assert_eq!(step_of(&set(&[0, 7, 15])), None);
        assert_eq!(step_of(&set(&[3])), None);
        assert_eq!(
            runs(&set(&[1, 2, 3, 5, 7, 8])),
            vec![(1, 3), (5, 5), (7, 8)]
        );
    }
}
