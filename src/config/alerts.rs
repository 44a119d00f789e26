//! `[[alerts]]`: where `serve` tells people that a run failed, was missed or abandoned, that
//! a pipeline recovered, or that a run is late or long (`docs/alerts.md`).
//!
//! Owns the destinations as written (`RawAlert`) and validated ([`Alert`]). In a workspace
//! the destinations are shared, like `[server]`: they are read from the workspace file only
//! (a pipeline file with `[[alerts]]` is refused in `validate::member`). Every error names
//! the file, the line and the key. An `email` destination carries a copy of the same file's
//! `[smtp]` ([`super::smtp`]). Called by [`super::Workspace::parse`].

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::file::Dur;
use super::smtp::{RawSmtp, Smtp};
use super::validate::error_at;

/// What a destination is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertKind {
    /// A run ended `failure`.
    Failure,
    /// The first `success` of a pipeline after one or more failures.
    Recovery,
    /// A scheduled occurrence was recorded `missed`.
    Missed,
    /// A run's runner died without a final event.
    Abandoned,
    /// No run has started `late_after` after a scheduled occurrence.
    Late,
    /// A run is still running past its usual duration.
    Long,
    /// Sent on request (`pipewatch alerts test`, `POST /api/alerts/{name}/test`).
    Test,
}

impl AlertKind {
    /// The name used in the file, in the alert object and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Failure => "failure",
            AlertKind::Recovery => "recovery",
            AlertKind::Missed => "missed",
            AlertKind::Abandoned => "abandoned",
            AlertKind::Late => "late",
            AlertKind::Long => "long",
            AlertKind::Test => "test",
        }
    }
}

/// The kinds a destination gets when its `on` is left out.
pub const DEFAULT_ON: [AlertKind; 4] = [
    AlertKind::Failure,
    AlertKind::Recovery,
    AlertKind::Missed,
    AlertKind::Abandoned,
];

/// Where an alert goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// POSTed to this `http://` or `https://` URL.
    Webhook(String),
    /// This program started with these arguments (no shell), the alert on its stdin.
    Command(Vec<String>),
    /// A message to these addresses, sent through `[smtp]` (each e-mail destination holds
    /// a copy, so sending one needs nothing but the destination).
    Email {
        to: Vec<lettre::message::Mailbox>,
        smtp: Smtp,
    },
}

/// How a webhook's body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The alert object itself.
    Json,
    /// `{"text": "..."}`, which Slack's (and Mattermost's) incoming webhooks show.
    Slack,
}

/// One `[[alerts]]` destination, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Unique among the destinations; names the destination in the API and the CLI.
    pub name: String,
    pub on: Vec<AlertKind>,
    /// Pipeline names or glob patterns; a pipeline matching any of them is watched.
    pub pipelines: Vec<String>,
    pub destination: Destination,
    pub format: Format,
    /// A pipeline that keeps failing is alerted about at most once per this.
    pub repeat_every: Duration,
    /// A delivery still failing this long after the alert was recorded is given up.
    pub retry_for: Duration,
    /// When the `late` and `long` rules fire.
    pub overdue: Overdue,
}

/// The thresholds of the `late` and `long` rules (`crate::alerts::overdue`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overdue {
    /// An occurrence with no run started this long after it is late.
    pub late_after: Duration,
    /// A run is long once it has run past this, at least.
    pub long_min: Duration,
    /// ... or past this many times the median of its pipeline's recent successful
    /// durations, whichever is longer. Finite and above 0.
    pub long_factor: f64,
}

impl Default for Overdue {
    fn default() -> Overdue {
        Overdue {
            late_after: Duration::from_secs(600),
            long_min: Duration::from_secs(300),
            long_factor: 3.0,
        }
    }
}

impl Alert {
    /// Whether this destination watches `pipeline`.
    pub fn watches(&self, pipeline: &str) -> bool {
        self.pipelines
            .iter()
            .any(|p| p == pipeline || glob::Pattern::new(p).is_ok_and(|g| g.matches(pipeline)))
    }

    /// Whether this destination is told about `kind`.
    pub fn wants(&self, kind: AlertKind) -> bool {
        self.on.contains(&kind)
    }
}

/// `[[alerts]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlert {
    name: Option<Spanned<String>>,
    on: Option<Vec<Spanned<String>>>,
    pipelines: Option<Vec<Spanned<String>>>,
    webhook: Option<Spanned<String>>,
    command: Option<Spanned<Vec<String>>>,
    email: Option<Spanned<Vec<Spanned<String>>>>,
    format: Option<Spanned<String>>,
    repeat_every: Option<Dur>,
    retry_for: Option<Dur>,
    late_after: Option<Spanned<Dur>>,
    long_min: Option<Dur>,
    long_factor: Option<Spanned<f64>>,
}

/// Checks every `[[alerts]]` table of `text` (read from `path`), and its `[smtp]`.
pub(super) fn validate(
    raw: Vec<Spanned<RawAlert>>,
    raw_smtp: Option<Spanned<RawSmtp>>,
    text: &str,
    path: &Path,
) -> Result<Vec<Alert>, ConfigError> {
    let err = |at: usize, key: &str, message: String| error_at(path, text, at, key, message);
    let smtp = super::smtp::validate(raw_smtp, text, path)?;
    let mut alerts: Vec<Alert> = Vec::with_capacity(raw.len());
    for table in raw {
        let at = table.span().start;
        let r = table.into_inner();
        let Some(name) = r.name else {
            return Err(err(
                at,
                "alerts",
                "missing `name`: every destination needs one".into(),
            ));
        };
        let name_at = name.span().start;
        let name = name.into_inner();
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        {
            return Err(err(
                name_at,
                "alerts.name",
                format!("invalid name {name:?}: use 1 to 64 letters, digits, `_` or `-`"),
            ));
        }
        if alerts.iter().any(|a| a.name == name) {
            return Err(err(
                name_at,
                "alerts.name",
                format!("duplicate alert name {name:?}: names are unique"),
            ));
        }
        let on = match r.on {
            None => DEFAULT_ON.to_vec(),
            Some(kinds) => {
                let mut on = Vec::new();
                for k in kinds {
                    let kind =
                        kind(k.get_ref()).map_err(|m| err(k.span().start, "alerts.on", m))?;
                    if !on.contains(&kind) {
                        on.push(kind);
                    }
                }
                on
            }
        };
        let pipelines = match r.pipelines {
            None => vec!["*".to_string()],
            Some(ps) => {
                let mut out = Vec::new();
                for p in ps {
                    if let Err(e) = glob::Pattern::new(p.get_ref()) {
                        return Err(err(
                            p.span().start,
                            "alerts.pipelines",
                            format!("invalid pattern {:?}: {}", p.get_ref(), e.msg),
                        ));
                    }
                    out.push(p.into_inner());
                }
                out
            }
        };
        let destination = match (r.webhook, r.email, r.command) {
            (Some(w), None, None) => {
                let url = w.get_ref().trim();
                if let Some(m) = webhook_problem(url) {
                    return Err(err(w.span().start, "alerts.webhook", m));
                }
                Destination::Webhook(url.to_string())
            }
            (None, Some(e), None) => email(e, smtp.as_ref(), &err)?,
            (None, None, Some(c)) => {
                if c.get_ref().first().is_none_or(|p| p.is_empty()) {
                    return Err(err(
                        c.span().start,
                        "alerts.command",
                        "the argument list is empty or names no program".into(),
                    ));
                }
                Destination::Command(c.into_inner())
            }
            (None, None, None) => {
                return Err(err(
                    at,
                    "alerts",
                    format!("{name:?} has no destination: set `webhook`, `email` or `command`"),
                ));
            }
            (w, e, c) => {
                // Several: the one written last is refused.
                let (at, key) = [
                    w.map(|w| (w.span().start, "webhook")),
                    e.map(|e| (e.span().start, "email")),
                    c.map(|c| (c.span().start, "command")),
                ]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or((at, "alerts"));
                return Err(err(
                    at,
                    &format!("alerts.{key}"),
                    "set exactly one of `webhook`, `email` or `command`, not several".into(),
                ));
            }
        };
        let format = match r.format {
            None => Format::Json,
            Some(f) => match f.get_ref().as_str() {
                "json" => Format::Json,
                "slack" => Format::Slack,
                other => {
                    return Err(err(
                        f.span().start,
                        "alerts.format",
                        format!("unknown format {other:?}: one of json, slack"),
                    ));
                }
            },
        };
        let defaults = Overdue::default();
        let late_after = match r.late_after {
            None => defaults.late_after,
            Some(d) if d.get_ref().0.is_zero() => {
                return Err(err(
                    d.span().start,
                    "alerts.late_after",
                    "must be more than 0: a run needs some time to start".into(),
                ));
            }
            Some(d) => d.into_inner().0,
        };
        let long_factor = match r.long_factor {
            None => defaults.long_factor,
            Some(f) if !(f.get_ref().is_finite() && *f.get_ref() > 0.0) => {
                return Err(err(
                    f.span().start,
                    "alerts.long_factor",
                    format!("{} is not a number above 0, like 3 or 1.5", f.get_ref()),
                ));
            }
            Some(f) => f.into_inner(),
        };
        alerts.push(Alert {
            name,
            on,
            pipelines,
            destination,
            format,
            repeat_every: r.repeat_every.map_or(Duration::from_secs(3600), |d| d.0),
            retry_for: r.retry_for.map_or(Duration::from_secs(24 * 3600), |d| d.0),
            overdue: Overdue {
                late_after,
                long_min: r.long_min.map_or(defaults.long_min, |d| d.0),
                long_factor,
            },
        });
    }
    Ok(alerts)
}

/// The kind named `k` in `on`, or why it cannot be used.
fn kind(k: &str) -> Result<AlertKind, String> {
    match k {
        "failure" => Ok(AlertKind::Failure),
        "recovery" => Ok(AlertKind::Recovery),
        "missed" => Ok(AlertKind::Missed),
        "abandoned" => Ok(AlertKind::Abandoned),
        "late" => Ok(AlertKind::Late),
        "long" => Ok(AlertKind::Long),
        other => Err(format!(
            "unknown alert kind {other:?}: one of failure, recovery, missed, abandoned, late, long"
        )),
    }
}

/// An `email` destination: the addresses of `list`, sent through `smtp` (the file's
/// `[smtp]`, which it needs).
fn email(
    list: Spanned<Vec<Spanned<String>>>,
    smtp: Option<&Smtp>,
    err: &impl Fn(usize, &str, String) -> ConfigError,
) -> Result<Destination, ConfigError> {
    let at = list.span().start;
    let Some(smtp) = smtp else {
        return Err(err(
            at,
            "alerts.email",
            "e-mail needs an [smtp] table in this file (host, from, ...) to send through".into(),
        ));
    };
    let list = list.into_inner();
    if list.is_empty() {
        return Err(err(
            at,
            "alerts.email",
            "no address: list one or more, like [\"ops@example.com\"]".into(),
        ));
    }
    let mut to = Vec::with_capacity(list.len());
    for a in list {
        let mailbox = super::smtp::address(a.get_ref())
            .map_err(|m| err(a.span().start, "alerts.email", m))?;
        to.push(mailbox);
    }
    Ok(Destination::Email {
        to,
        smtp: smtp.clone(),
    })
}

/// Why `url` cannot be a webhook, if it cannot.
fn webhook_problem(url: &str) -> Option<String> {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return Some(format!("{url:?} is not an http:// or https:// URL"));
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!("{url:?} names no host"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::Workspace;
    use super::super::tests::MINIMAL;
    use super::*;

    fn parse(extra: &str) -> Result<Vec<Alert>, ConfigError> {
        Workspace::parse(&format!("{MINIMAL}{extra}"), Path::new("/p/pipewatch.toml"))
            .map(|w| w.alerts)
    }

    fn refused(extra: &str) -> (usize, String, String) {
        match parse(extra) {
            Err(ConfigError::Invalid {
                line, key, message, ..
            }) => (line, key, message),
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    #[test]
    fn defaults_and_every_key() {
        let a = parse("[[alerts]]\nname = \"ops\"\nwebhook = \"http://127.0.0.1:9/h\"\n").unwrap();
        assert_eq!(a[0].on, DEFAULT_ON.to_vec());
        assert_eq!(a[0].pipelines, vec!["*"]);
        assert_eq!(a[0].format, Format::Json);
        assert_eq!(a[0].repeat_every, Duration::from_secs(3600));
        assert_eq!(a[0].retry_for, Duration::from_secs(86_400));
        assert_eq!(a[0].overdue, Overdue::default());
        assert_eq!(a[0].overdue.late_after, Duration::from_secs(600));
        assert_eq!(a[0].overdue.long_min, Duration::from_secs(300));
        assert_eq!(a[0].overdue.long_factor, 3.0);
        assert!(a[0].watches("anything"));
        let a = parse(
            "[[alerts]]\nname = \"c\"\non = [\"failure\"]\npipelines = [\"etl-*\"]\n\
             command = [\"notify\", \"x\"]\nformat = \"slack\"\nrepeat_every = \"5m\"\n\
             retry_for = \"1h\"\n",
        )
        .unwrap();
        assert_eq!(a[0].on, vec![AlertKind::Failure]);
        assert_eq!(
            a[0].destination,
            Destination::Command(vec!["notify".into(), "x".into()])
        );
        assert!(a[0].watches("etl-nightly") && !a[0].watches("web"));
        assert_eq!(a[0].repeat_every, Duration::from_secs(300));
        let a = parse(
            "[[alerts]]\nname = \"o\"\non = [\"late\", \"long\"]\ncommand = [\"x\"]\n\
             late_after = \"2s\"\nlong_min = \"1s\"\nlong_factor = 1.5\n",
        )
        .unwrap();
        assert_eq!(a[0].on, vec![AlertKind::Late, AlertKind::Long]);
        assert_eq!(
            a[0].overdue,
            Overdue {
                late_after: Duration::from_secs(2),
                long_min: Duration::from_secs(1),
                long_factor: 1.5
            }
        );
        let a = parse("[[alerts]]\nname = \"o\"\ncommand = [\"x\"]\nlong_factor = 2\n").unwrap();
        assert_eq!(a[0].overdue.long_factor, 2.0);
    }

    #[test]
    fn late_and_long_keys_are_checked() {
        let base = "[[alerts]]\nname = \"a\"\ncommand = [\"x\"]\n";
        for (extra, key) in [
            ("long_factor = 0\n", "alerts.long_factor"),
            ("long_factor = -1.5\n", "alerts.long_factor"),
            ("long_factor = nan\n", "alerts.long_factor"),
            ("late_after = \"0\"\n", "alerts.late_after"),
        ] {
            let (line, k, m) = refused(&format!("{base}{extra}"));
            assert_eq!((line, k.as_str()), (10, key), "{extra}: {m}");
        }
        for extra in [
            "late_after = \"soon\"\n",
            "long_min = 5\n",
            "long_factor = \"3\"\n",
        ] {
            let (line, k, m) = refused(&format!("{base}{extra}"));
            let key = extra.split(' ').next().unwrap();
            assert_eq!(line, 10, "{extra}: {m}");
            assert!(k.ends_with(key), "{extra}: {k} {m}");
        }
        let (_, key, m) = refused("[[alerts]]\nname = \"a\"\non = [\"slow\"]\ncommand = [\"x\"]\n");
        assert_eq!(key, "alerts.on");
        assert!(m.contains("late, long"), "{m}");
    }

    #[test]
    fn refusals_name_line_and_key() {
        let (line, key, m) = refused("[[alerts]]\nname = \"a\"\nemail = [\"o@x\"]\n");
        assert_eq!((line, key.as_str()), (9, "alerts.email"));
        assert!(m.contains("[smtp]"), "{m}");
        let (_, key, m) =
            refused("[[alerts]]\nname = \"a\"\nwebhook = \"http://h/\"\ncommand = [\"x\"]\n");
        assert_eq!(key, "alerts.command");
        assert!(m.contains("exactly one"), "{m}");
        let (_, key, m) = refused("[[alerts]]\nname = \"a\"\n");
        assert_eq!(key, "alerts");
        assert!(m.contains("no destination"), "{m}");
        let (_, key, _) = refused("[[alerts]]\nname = \"a\"\ncommand = []\n");
        assert_eq!(key, "alerts.command");
        let (_, key, _) = refused("[[alerts]]\nname = \"a\"\nwebhook = \"ftp://h\"\n");
        assert_eq!(key, "alerts.webhook");
        let (_, key, _) =
            refused("[[alerts]]\nname = \"a\"\ncommand = [\"x\"]\nformat = \"xml\"\n");
        assert_eq!(key, "alerts.format");
        let (line, key, m) = refused(
            "[[alerts]]\nname = \"a\"\ncommand = [\"x\"]\n[[alerts]]\nname = \"a\"\ncommand = [\"y\"]\n",
        );
        assert_eq!((line, key.as_str()), (11, "alerts.name"));
        assert!(m.contains("duplicate"), "{m}");
    }
}
