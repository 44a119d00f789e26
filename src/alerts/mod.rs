//! Alerts: telling people that a run failed, was missed or abandoned, or that a pipeline
//! recovered, as `docs/alerts.md` describes.
//!
//! # Layout
//!
//! | file | owns |
//! |---|---|
//! | this module | [`AlertObject`], what every destination is sent, and its stable id |
//! | [`rules`] | which run endings become alerts, storm suppression and recovery (pure) |
//! | [`overdue`] | the `late` and `long` rules: overdue occurrences, long runs (pure) |
//! | [`send`] | delivering one alert to one destination: a webhook POST, a command or an e-mail |
//! | [`email`] | an alert as an e-mail message, and sending it through `[smtp]` |
//! | [`summary`] | the one alert that stands for the alerts held while `serve` caught up (pure) |
//!
//! The alerts of a batch are recorded in the index's outbox in the same transaction as the
//! batch (`index::outbox`), and only then sent (`server::alerting`): an alert is never lost
//! between the commit and the send, and one marked sent is never sent again.

pub mod email;
pub mod overdue;
pub mod rules;
pub mod send;
pub mod summary;

use serde::{Deserialize, Serialize};

use crate::config::AlertKind;

pub use summary::{NewestRun, PipelineSummary, SUMMARY, Summary, summary_id};

/// At most this many stderr lines per failed stage go into an alert.
pub const STDERR_LINES: usize = 20;

/// At most this many bytes of stderr go into an alert: the end is kept.
pub const STDERR_BYTES: usize = 4096;

/// What a destination is sent about a run (`docs/alerts.md`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertObject {
    /// Stable: the same destination, kind and run always give the same id (the webhook's
    /// `Idempotency-Key`).
    pub id: String,
    /// `failure`, `recovery`, `missed`, `abandoned`, `late`, `long`, `summary` or `test`.
    pub kind: String,
    pub pipeline: String,
    /// Empty for `late` (no run started) and `summary`.
    pub run_id: String,
    /// The run's status.
    pub status: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub failed_stages: Vec<String>,
    /// The last lines of the failed stages' stderr (each prefixed with `[stage]`), at most
    /// 4 KiB.
    pub stderr_tail: String,
    /// The run's page on the dashboard.
    pub url: String,
    /// When the alert was made.
    pub at: String,
    /// For `failure`: how many runs failed since the destination's last alert about the
    /// pipeline, this one included (more than 1 when alerts were held back by
    /// `repeat_every`). 0 for `recovery`, `missed`, `abandoned` and `test`; for `summary`,
    /// the failed runs of every pipeline it covers.
    pub failed_runs: u64,
    /// For `summary` only: what the alerts it stands for were about ([`Summary`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// For `late`: the scheduled occurrence no run started for (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
    /// For `long`: the running time the run passed, in milliseconds:
    /// `max(long_min, long_factor × median_ms)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_ms: Option<i64>,
    /// For `long`: the median duration of the pipeline's last 20 successful runs, in
    /// milliseconds; absent when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median_ms: Option<i64>,
}

/// The id of the alert of `kind` about `run_id` for `destination`: 16 hex digits of FNV-1a,
/// so the same alert keeps its id across restarts and rebuilds.
pub fn alert_id(destination: &str, kind: AlertKind, run_id: &str) -> String {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    for part in [destination, kind.as_str(), run_id] {
        h.write(part.as_bytes());
        h.write_u8(0);
    }
    format!("{:016x}", h.finish())
}

/// The end of `text`, at most [`STDERR_BYTES`], cut at a character boundary.
pub fn bounded_tail(text: &str) -> String {
    if text.len() <= STDERR_BYTES {
        return text.to_string();
    }
    let mut start = text.len() - STDERR_BYTES;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

/// A test alert for destination `name` (`pipewatch alerts test`, `POST
/// /api/alerts/{name}/test`): kind `test`, about no real run, linking to the dashboard.
pub fn test_alert(name: &str, base_url: &str, now: chrono::DateTime<chrono::Utc>) -> AlertObject {
    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    AlertObject {
        id: alert_id(name, AlertKind::Test, &at),
        kind: AlertKind::Test.as_str().to_string(),
        url: format!("{base_url}/"),
        at,
        ..AlertObject::default()
    }
}

/// How [`AlertObject::text`] marks up the stderr tail and the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Markup {
    /// Slack's (and Mattermost's) mrkdwn: the stderr tail in a code block, the link in `<>`.
    Slack,
    /// Plain text, as in an e-mail: the stderr tail indented, the link bare.
    Plain,
}

impl Markup {
    /// A link to `url`, as this markup writes one.
    pub fn link(self, url: &str) -> String {
        match self {
            Markup::Slack => format!("<{url}>"),
            Markup::Plain => url.to_string(),
        }
    }
}

impl AlertObject {
    /// What happened to a run, as the words after the pipeline's name ("failed",
    /// "recovered", ...); `None` for the kinds with words of their own: `test` (about no
    /// run), `late`, `long` and `summary`.
    pub fn what(&self) -> Option<String> {
        Some(match self.kind.as_str() {
            "failure" if self.failed_runs > 1 => {
                format!("failed ({} runs since the last alert)", self.failed_runs)
            }
            "failure" => "failed".to_string(),
            "recovery" => "recovered".to_string(),
            "missed" => "missed a scheduled run".to_string(),
            "abandoned" => "run abandoned (its runner died)".to_string(),
            "test" | "late" | "long" | SUMMARY => return None,
            other => format!("{other} alert"),
        })
    }

    /// One line saying what happened: `pipewatch: nightly-etl failed (run ID)` (an e-mail's
    /// subject).
    pub fn headline(&self) -> String {
        match self.kind.as_str() {
            "late" => format!("pipewatch: {} is late (no run started)", self.pipeline),
            "long" => format!(
                "pipewatch: {} is running long (run {})",
                self.pipeline, self.run_id
            ),
            SUMMARY => summary::headline(self),
            _ => match self.what() {
                Some(what) => format!("pipewatch: {} {what} (run {})", self.pipeline, self.run_id),
                None => "pipewatch: a test alert".to_string(),
            },
        }
    }

    /// The alert in words, for a person: what happened to which pipeline and run, the
    /// failed stages, the stderr tail and the link to the run's page. One text for every
    /// destination that shows words (Slack's `text`, an e-mail's body), marked up for it.
    pub fn text(&self, markup: Markup) -> String {
        match self.kind.as_str() {
            "late" | "long" => return overdue::text(self, markup),
            SUMMARY => return summary::text(self, markup),
            _ => {}
        }
        let link = markup.link(&self.url);
        let Some(what) = self.what() else {
            return format!("pipewatch: a test alert; the dashboard is at {link}");
        };
        let mut text = format!("pipewatch: {} {what}: run {}", self.pipeline, self.run_id);
        if !self.failed_stages.is_empty() {
            text.push_str(&format!(
                "\nfailed stages: {}",
                self.failed_stages.join(", ")
            ));
        }
        if !self.stderr_tail.is_empty() {
            match markup {
                Markup::Slack => text.push_str(&format!("\n```\n{}\n```", self.stderr_tail)),
                Markup::Plain => {
                    text.push_str("\n\nstderr (the last lines):\n");
                    for line in self.stderr_tail.lines() {
                        text.push_str(&format!("    {line}\n"));
                    }
                }
            }
        }
        text.push_str(&format!("\n{link}"));
        text
    }

    /// The text of a Slack-format message ([`AlertObject::text`] in Slack's markup).
    pub fn slack_text(&self) -> String {
        self.text(Markup::Slack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = alert_id("ops", AlertKind::Failure, "r1");
        assert_eq!(a, alert_id("ops", AlertKind::Failure, "r1"));
        assert_eq!(a.len(), 16);
        assert_ne!(a, alert_id("ops", AlertKind::Recovery, "r1"));
        assert_ne!(a, alert_id("dev", AlertKind::Failure, "r1"));
    }

    #[test]
    fn tails_keep_the_end_on_a_boundary() {
        let long = "é".repeat(STDERR_BYTES);
        let t = bounded_tail(&long);
        assert!(t.len() <= STDERR_BYTES && t.chars().all(|c| c == 'é'));
        assert_eq!(bounded_tail("short"), "short");
    }
}
