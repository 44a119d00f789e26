//! Terminal output shared by the commands people read in a terminal (`runs`, `tail`,
//! `doctor`, `prune`): whether to colour, how to paint, how times and durations read.
//!
//! Colour is decided once per stream by the caller ([`colour_for`]) and passed down as a
//! [`Paint`]: only on a terminal, never with `NO_COLOR` set (<https://no-color.org>), so
//! piped output and files stay plain text. Nothing here writes anything itself.

use std::time::Duration;

use chrono::Local;

/// Whether output to a stream that `is_terminal` should be coloured.
pub fn colour_for(is_terminal: bool) -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && is_terminal
}

/// ANSI styles, or none at all.
#[derive(Debug, Clone, Copy)]
pub struct Paint {
    pub on: bool,
}

impl Paint {
    pub fn new(on: bool) -> Paint {
        Paint { on }
    }

    fn wrap(self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    pub fn red(self, s: &str) -> String {
        self.wrap("31", s)
    }
    pub fn bold_red(self, s: &str) -> String {
        self.wrap("1;31", s)
    }
    pub fn green(self, s: &str) -> String {
        self.wrap("32", s)
    }
    pub fn yellow(self, s: &str) -> String {
        self.wrap("33", s)
    }
    pub fn cyan(self, s: &str) -> String {
        self.wrap("36", s)
    }
    pub fn dim(self, s: &str) -> String {
        self.wrap("2", s)
    }
    pub fn bold(self, s: &str) -> String {
        self.wrap("1", s)
    }

    /// A closing line: green when things went well, red when not.
    pub fn status_line(self, s: &str, good: bool) -> String {
        if good {
            self.green(s)
        } else {
            self.bold_red(s)
        }
    }

    /// A run or stage status in its colour: green done, red failed, yellow going or stopped,
    /// dim for what never ran.
    pub fn status(self, status: &str) -> String {
        match status {
            "success" => self.green(status),
            "failure" | "abandoned" => self.bold_red(status),
            "running" | "cancelled" => self.yellow(status),
            "skipped" | "missed" => self.dim(status),
            other => other.to_string(),
        }
    }
}

/// Pads `s` (which may hold ANSI codes) to `width` visible characters.
pub fn pad(s: &str, visible: &str, width: usize) -> String {
    let n = visible.chars().count();
    format!("{s}{}", " ".repeat(width.saturating_sub(n)))
}

/// A timestamp in local time, `2026-11-29 09:15:00`; the text as is if it does not parse.
pub fn local_datetime(s: &str) -> String {
    match crate::event::parse_timestamp(s) {
        Some(t) => t
            .with_timezone(&Local)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        None => s.to_string(),
    }
}

/// A timestamp's local time of day with milliseconds, `09:15:00.123`.
pub fn local_time(s: &str) -> String {
    match crate::event::parse_timestamp(s) {
        Some(t) => t.with_timezone(&Local).format("%H:%M:%S%.3f").to_string(),
        None => s.to_string(),
    }
}

/// A duration the way people say it: `850ms`, `12.3s`, `4m 05s`, `2h 10m`, `3d 4h`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if s < 3600 {
        two(s / 60, "m", s % 60, "s")
    } else if s < 86_400 {
        two(s / 3600, "h", (s % 3600) / 60, "m")
    } else {
        two(s / 86_400, "d", (s % 86_400) / 3600, "h")
    }
}

/// `4m 05s`, or `15m` when the second part is zero.
fn two(a: u64, a_unit: &str, b: u64, b_unit: &str) -> String {
    if b == 0 {
        format!("{a}{a_unit}")
    } else {
        format!("{a}{a_unit} {b:02}{b_unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(Duration::from_millis(850)), "850ms");
        assert_eq!(duration(Duration::from_millis(12_300)), "12.3s");
        assert_eq!(duration(Duration::from_secs(245)), "4m 05s");
        assert_eq!(duration(Duration::from_secs(7800)), "2h 10m");
        assert_eq!(
            duration(Duration::from_secs(3 * 86_400 + 4 * 3600)),
            "3d 04h"
        );
        assert_eq!(duration(Duration::from_secs(900)), "15m");
    }

    #[test]
    fn no_colour_means_plain_text() {
        assert_eq!(Paint::new(false).status("failure"), "failure");
        assert!(Paint::new(true).status("failure").contains("\x1b["));
        assert!(crate::event::parse_timestamp("2025-12-08T21:45:00").is_some());
        assert!(crate::event::parse_timestamp("2026-11-29T08:15:00.123Z").is_some());
    }
}
