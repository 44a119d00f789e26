//! `[smtp]`: the mail server `email` alert destinations are sent through (`docs/alerts.md`).
//!
//! Owns the table as written (`RawSmtp`) and validated ([`Smtp`]). Like `[[alerts]]`, it is
//! read from the workspace file only (a pipeline file with `[smtp]` is refused in
//! `validate::member`). Every error names the file, the line and the key; addresses are
//! parsed here, once, so sending never meets an invalid one. The password is not part of
//! the file nor of [`Smtp`]: it is read from `PIPEWATCH_SMTP_PASSWORD` when a message is sent,
//! so it is never in the configuration, its errors, the log or the API. Called by
//! `alerts::validate`.

use std::path::Path;

use lettre::message::Mailbox;
use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::validate::error_at;

/// The environment variable the SMTP password is read from.
pub const PASSWORD_ENV: &str = "PIPEWATCH_SMTP_PASSWORD";

/// How the connection to the mail server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with `STARTTLS`, required (port 587 by default).
    StartTls,
    /// TLS from the first byte, "SMTPS" (port 465 by default).
    Tls,
    /// No encryption at all (port 25 by default): for a relay on the same host.
    None,
}

impl SmtpTls {
    /// The port used when `[smtp]` sets none.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::StartTls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }
}

/// `[smtp]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// The sender of every alert message.
    pub from: Mailbox,
    /// Log in as this user (with the password from [`PASSWORD_ENV`]); empty: no login.
    pub username: String,
}

/// `[smtp]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmtp {
    host: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    tls: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    username: Option<String>,
}

/// Checks `[smtp]` of `text` (read from `path`); `None` when the file has none.
pub(super) fn validate(
    raw: Option<Spanned<RawSmtp>>,
    text: &str,
    path: &Path,
) -> Result<Option<Smtp>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let err = |at: usize, key: &str, message: String| error_at(path, text, at, key, message);
    let at = raw.span().start;
    let r = raw.into_inner();
    let Some(host) = r.host else {
        return Err(err(
            at,
            "smtp",
            "missing `host`: the mail server to send through".into(),
        ));
    };
    let host_at = host.span().start;
    let host = host.into_inner().trim().to_string();
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(
            host_at,
            "smtp.host",
            format!("invalid host {host:?}: a host name or IP address"),
        ));
    }
    let tls = match r.tls {
        None => SmtpTls::StartTls,
        Some(t) => match t.get_ref().as_str() {
            "starttls" => SmtpTls::StartTls,
            "tls" => SmtpTls::Tls,
            "none" => SmtpTls::None,
            other => {
                return Err(err(
                    t.span().start,
                    "smtp.tls",
                    format!("unknown value {other:?}: one of starttls, tls, none"),
                ));
            }
        },
    };
    let port = match r.port {
        None => tls.default_port(),
        Some(p) => match u16::try_from(*p.get_ref()) {
            Ok(port) if port > 0 => port,
            _ => {
                return Err(err(
                    p.span().start,
                    "smtp.port",
                    format!("invalid port {}: 1 to 65535", p.get_ref()),
                ));
            }
        },
    };
    let Some(from) = r.from else {
        return Err(err(
            at,
            "smtp",
            "missing `from`: the sender address of the alert messages".into(),
        ));
    };
    let from = address(from.get_ref()).map_err(|m| err(from.span().start, "smtp.from", m))?;
    Ok(Some(Smtp {
        host,
        port,
        tls,
        from,
        username: r.username.unwrap_or_default().trim().to_string(),
    }))
}

/// `text` as an e-mail address (`ops@example.com`, or `Ops <ops@example.com>`), or why it is
/// not one.
pub(super) fn address(text: &str) -> Result<Mailbox, String> {
    text.trim()
        .parse::<Mailbox>()
        .map_err(|e| format!("invalid address {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::super::tests::MINIMAL;
    use super::super::{Destination, Workspace};
    use super::*;

    /// MINIMAL is 6 lines: what follows starts on line 7.
    fn parse(extra: &str) -> Result<Workspace, ConfigError> {
        Workspace::parse(&format!("{MINIMAL}{extra}"), Path::new("/p/pipewatch.toml"))
    }

    fn refused(extra: &str) -> (usize, String, String) {
        match parse(extra) {
            Err(ConfigError::Invalid {
                line, key, message, ..
            }) => (line, key, message),
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    const MAIL: &str =
        "[[alerts]]\nname = \"mail\"\nemail = [\"ops@example.com\", \"Dev <dev@example.org>\"]\n";

    #[test]
    fn an_email_destination_carries_the_smtp_table_with_its_defaults() {
        let ws = parse(&format!(
            "{MAIL}[smtp]\nhost = \"smtp.example.com\"\nfrom = \"pipewatch@example.com\"\n"
        ))
        .unwrap();
        let Destination::Email { to, smtp } = &ws.alerts[0].destination else {
            panic!("{:?}", ws.alerts[0].destination);
        };
        assert_eq!(to.len(), 2);
        assert_eq!(to[1].email.to_string(), "dev@example.org");
        assert_eq!(smtp.host, "smtp.example.com");
        assert_eq!((smtp.tls, smtp.port), (SmtpTls::StartTls, 587));
        assert_eq!(smtp.from.email.to_string(), "pipewatch@example.com");
        assert_eq!(smtp.username, "");
        for (tls, port) in [("tls", 465), ("none", 25), ("starttls", 587)] {
            let ws = parse(&format!(
                "{MAIL}[smtp]\nhost = \"h\"\ntls = \"{tls}\"\nfrom = \"p@example.com\"\nusername = \"u\"\n"
            ))
            .unwrap();
            let Destination::Email { smtp, .. } = &ws.alerts[0].destination else {
                panic!();
            };
            assert_eq!(smtp.port, port, "{tls}");
            assert_eq!(smtp.username, "u");
        }
        let ws = parse(&format!(
            "{MAIL}[smtp]\nhost = \"h\"\nport = 2525\nfrom = \"p@example.com\"\n"
        ))
        .unwrap();
        let Destination::Email { smtp, .. } = &ws.alerts[0].destination else {
            panic!();
        };
        assert_eq!(smtp.port, 2525);
    }

    #[test]
    fn errors_name_the_line_the_key_and_the_value() {
        let smtp = "[smtp]\nhost = \"h\"\nfrom = \"p@example.com\"\n";
        // Line 7 is [[alerts]], 9 its email; [smtp] follows on 10.
        let (line, key, m) = refused(MAIL);
        assert_eq!((line, key.as_str()), (9, "alerts.email"));
        assert!(m.contains("[smtp]"), "{m}");
        let (line, key, m) = refused(&format!(
            "[[alerts]]\nname = \"mail\"\nemail = [\n  \"ops@example.com\",\n  \"not an address\",\n]\n{smtp}"
        ));
        assert_eq!((line, key.as_str()), (11, "alerts.email"));
        assert!(m.contains("\"not an address\""), "{m}");
        let (_, key, m) = refused(&format!("[[alerts]]\nname = \"mail\"\nemail = []\n{smtp}"));
        assert_eq!(key, "alerts.email");
        assert!(m.contains("no address"), "{m}");
        let (line, key, m) = refused(&format!(
            "[[alerts]]\nname = \"m\"\nemail = [\"o@example.com\"]\ncommand = [\"x\"]\n{smtp}"
        ));
        assert_eq!((line, key.as_str()), (10, "alerts.command"));
        assert!(m.contains("exactly one"), "{m}");

        let (line, key, m) = refused(&format!("{MAIL}[smtp]\nfrom = \"p@example.com\"\n"));
        assert_eq!((line, key.as_str()), (10, "smtp"));
        assert!(m.contains("`host`"), "{m}");
        let (line, key, m) = refused(&format!("{MAIL}[smtp]\nhost = \"h\"\n"));
        assert_eq!((line, key.as_str()), (10, "smtp"));
        assert!(m.contains("`from`"), "{m}");
        let (line, key, m) = refused(&format!("{MAIL}{smtp}tls = \"ssl\"\n"));
        assert_eq!((line, key.as_str()), (13, "smtp.tls"));
        assert!(m.contains("starttls, tls, none"), "{m}");
        let (line, key, m) = refused(&format!("{MAIL}{smtp}port = 70000\n"));
        assert_eq!((line, key.as_str()), (13, "smtp.port"));
        assert!(m.contains("70000"), "{m}");
        let (line, key, m) = refused(&format!("{MAIL}[smtp]\nhost = \"h\"\nfrom = \"nobody\"\n"));
        assert_eq!((line, key.as_str()), (12, "smtp.from"));
        assert!(m.contains("\"nobody\""), "{m}");
        let (line, key, m) = refused(&format!("{MAIL}{smtp}password = \"secret\"\n"));
        assert_eq!((line, key.as_str()), (13, "smtp.password"));
        assert!(m.contains("unknown field"), "{m}");
        let (line, key, _) = refused(&format!(
            "{MAIL}[smtp]\nhost = \"a b\"\nfrom = \"p@example.com\"\n"
        ));
        assert_eq!((line, key.as_str()), (11, "smtp.host"));
    }

    #[test]
    fn https_webhooks_are_taken() {
        let ws = parse("[[alerts]]\nname = \"s\"\nwebhook = \"https://hooks.slack.com/services/T/B/x\"\nformat = \"slack\"\n").unwrap();
        assert_eq!(
            ws.alerts[0].destination,
            Destination::Webhook("https://hooks.slack.com/services/T/B/x".into())
        );
        let (_, key, m) = refused("[[alerts]]\nname = \"s\"\nwebhook = \"https:///x\"\n");
        assert_eq!(key, "alerts.webhook");
        assert!(m.contains("names no host"), "{m}");
    }

    #[test]
    fn a_pipeline_file_of_a_workspace_cannot_set_smtp() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("p")).unwrap();
        std::fs::write(
            dir.path().join("pipewatch.toml"),
            "[workspace]\npipelines = [\"p/*.toml\"]\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("p/a.toml"),
            format!("{MINIMAL}[smtp]\nhost = \"h\"\nfrom = \"p@example.com\"\n"),
        )
        .unwrap();
        match Workspace::load(&dir.path().join("pipewatch.toml")) {
            Err(ConfigError::Invalid {
                path,
                line,
                key,
                message,
            }) => {
                assert!(path.ends_with("a.toml"), "{path:?}");
                assert_eq!((line, key.as_str()), (7, "smtp"));
                assert!(message.contains("pipewatch.toml"), "{message}");
                assert!(message.contains("cannot set [smtp]"), "{message}");
            }
            other => panic!("expected an invalid workspace, got {other:?}"),
        }
    }
}
