//! E-mail destinations: an alert as a plain-text message ([`message`], pure, tested as a
//! value), and sending it through `[smtp]` with lettre's blocking SMTP client ([`send`];
//! callers run it on a blocking thread, like every delivery). [`check`] connects and logs in
//! without sending, for `pipewatch doctor`.
//!
//! The connection is secured as `[smtp] tls` says (STARTTLS required, TLS from the first
//! byte, or none), by rustls on the ring provider, trusting the system's roots
//! (`SSL_CERT_FILE` / `SSL_CERT_DIR` when set). The password is read from
//! `PIPEWATCH_SMTP_PASSWORD` for each connection and goes nowhere but the server: errors
//! name the server and its answer, never the password.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::SmtpTransport;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};

use super::{AlertObject, Markup};
use crate::config::smtp::PASSWORD_ENV;
use crate::config::{Smtp, SmtpTls};

/// A mail server that has not answered a step of the conversation within this long has
/// failed (the alert is tried again), as a webhook that has not answered.
pub const SMTP_TIMEOUT: Duration = super::send::WEBHOOK_TIMEOUT;

/// The message telling `to` about `alert`, from `from`: the alert's headline as its
/// subject, its plain text as the body, and a `Message-ID` made of the alert's id, so a
/// receiver (or a mail filter) sees a retried delivery of one alert as the same message.
pub fn message(alert: &AlertObject, from: &Mailbox, to: &[Mailbox]) -> Result<Message, String> {
    let mut builder = Message::builder()
        .from(from.clone())
        .subject(alert.headline())
        .message_id(Some(message_id(alert, from)));
    for mailbox in to {
        builder = builder.to(mailbox.clone());
    }
    builder
        .header(ContentType::TEXT_PLAIN)
        .body(alert.text(Markup::Plain))
        .map_err(|e| format!("cannot build the message: {e}"))
}

/// `<ID@DOMAIN>`: the alert's id, at the sender's domain.
fn message_id(alert: &AlertObject, from: &Mailbox) -> String {
    format!("<{}.pipewatch@{}>", alert.id, from.email.domain())
}

/// Sends `alert` to `to` through `smtp`; the error names the server and what it answered.
pub fn send(smtp: &Smtp, to: &[Mailbox], alert: &AlertObject) -> Result<(), String> {
    let message = message(alert, &smtp.from, to)?;
    let transport = transport(smtp)?;
    lettre::Transport::send(&transport, &message)
        .map(|_| ())
        .map_err(|e| failure(smtp, &e))
}

/// Connects to the server of `smtp` and logs in (when `username` is set), sending nothing.
/// `Ok` says what was checked, for `pipewatch doctor`.
pub fn check(smtp: &Smtp) -> Result<String, String> {
    let transport = transport(smtp)?;
    match transport.test_connection() {
        Ok(true) if smtp.username.is_empty() => Ok(format!("{} accepts connections", shown(smtp))),
        Ok(true) => Ok(format!(
            "{} accepts connections and the login of {}",
            shown(smtp),
            smtp.username
        )),
        Ok(false) => Err(format!(
            "{}: the connection closed right after it opened",
            shown(smtp)
        )),
        Err(e) => Err(failure(smtp, &e)),
    }
}

/// Why talking to the server of `smtp` failed: its answer (`permanent error (535): ...`), or
/// the connection's error, or that it did not answer in time.
fn failure(smtp: &Smtp, e: &lettre::transport::smtp::Error) -> String {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            )
        {
            return format!(
                "{}: no answer within {} s",
                shown(smtp),
                SMTP_TIMEOUT.as_secs()
            );
        }
        source = err.source();
    }
    format!("{}: {e}", shown(smtp))
}

/// The server as errors and the doctor show it.
fn shown(smtp: &Smtp) -> String {
    let scheme = match smtp.tls {
        SmtpTls::StartTls => "smtp+starttls",
        SmtpTls::Tls => "smtps",
        SmtpTls::None => "smtp",
    };
    format!("{scheme}://{}:{}", smtp.host, smtp.port)
}

/// The SMTP client for `smtp`: its security, port, timeout and, with a `username`, the
/// login (the password from [`PASSWORD_ENV`], which must then be set).
fn transport(smtp: &Smtp) -> Result<SmtpTransport, String> {
    let login = login(smtp, std::env::var(PASSWORD_ENV).ok())?;
    let tls = match smtp.tls {
        SmtpTls::None => Tls::None,
        SmtpTls::StartTls => Tls::Required(tls_parameters(smtp)?),
        SmtpTls::Tls => Tls::Wrapper(tls_parameters(smtp)?),
    };
    let mut builder = SmtpTransport::builder_dangerous(smtp.host.as_str())
        .port(smtp.port)
        .tls(tls)
        .timeout(Some(SMTP_TIMEOUT));
    if let Some(credentials) = login {
        builder = builder.credentials(credentials);
    }
    Ok(builder.build())
}

/// The login for `smtp` with `password` (the value of [`PASSWORD_ENV`], if set): none
/// without a `username`; an error naming the variable when a `username` has no password.
fn login(smtp: &Smtp, password: Option<String>) -> Result<Option<Credentials>, String> {
    if smtp.username.is_empty() {
        return Ok(None);
    }
    let password = password.filter(|p| !p.is_empty()).ok_or_else(|| {
        format!(
            "{}: {PASSWORD_ENV} is not set: [smtp] username {:?} needs its password in that \
             environment variable",
            shown(smtp),
            smtp.username
        )
    })?;
    Ok(Some(Credentials::new(smtp.username.clone(), password)))
}

fn tls_parameters(smtp: &Smtp) -> Result<TlsParameters, String> {
    TlsParameters::new(smtp.host.clone())
        .map_err(|e| format!("{}: cannot set up TLS: {e}", shown(smtp)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(kind: &str) -> AlertObject {
        AlertObject {
            id: "0123456789abcdef".into(),
            kind: kind.into(),
            pipeline: "nightly-etl".into(),
            run_id: "20261203T021500Z-a1b2c3".into(),
            status: "failure".into(),
            started_at: None,
            finished_at: None,
            duration_ms: Some(5),
            failed_stages: vec!["load".into()],
            stderr_tail: "[load] psql: error: connection refused\n[load] giving up".into(),
            url: "http://127.0.0.1:8001/#/runs/20261203T021500Z-a1b2c3".into(),
            at: "2026-12-03T02:16:42.004Z".into(),
            failed_runs: 1,
            ..AlertObject::default()
        }
    }

    fn mailbox(s: &str) -> Mailbox {
        s.parse().unwrap()
    }

    #[test]
    fn a_failure_is_a_plain_text_message_with_a_stable_id() {
        let from = mailbox("pipewatch <pipewatch@example.com>");
        let to = [mailbox("ops@example.com"), mailbox("Dev <dev@example.org>")];
        let m = message(&alert("failure"), &from, &to).unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(
                "Subject: pipewatch: nightly-etl failed (run 20261203T021500Z-a1b2c3)\r\n"
            ),
            "{head}"
        );
        assert!(
            head.contains("From: pipewatch <pipewatch@example.com>\r\n"),
            "{head}"
        );
        assert!(
            head.contains("To: ops@example.com, Dev <dev@example.org>\r\n"),
            "{head}"
        );
        assert!(
            head.contains("Message-ID: <0123456789abcdef.pipewatch@example.com>\r\n"),
            "{head}"
        );
        assert!(
            head.contains("Content-Type: text/plain; charset=utf-8"),
            "{head}"
        );
        let envelope = m.envelope();
        assert_eq!(envelope.to().len(), 2);
        assert_eq!(
            envelope.from().map(|a| a.to_string()).as_deref(),
            Some("pipewatch@example.com")
        );
        for part in [
            "nightly-etl failed: run 20261203T021500Z-a1b2c3",
            "failed stages: load",
            "    [load] psql: error: connection refused",
            "    [load] giving up",
            "http://127.0.0.1:8001/#/runs/20261203T021500Z-a1b2c3",
        ] {
            assert!(body.contains(part), "{part:?} in {body}");
        }
        assert!(
            !body.contains("```"),
            "no Slack markup in an e-mail: {body}"
        );
        // The same alert, sent again, is the same message to a receiver.
        let again = message(&alert("failure"), &from, &to).unwrap();
        assert_eq!(
            again.headers().get_raw("Message-ID"),
            m.headers().get_raw("Message-ID")
        );
    }

    #[test]
    fn subjects_say_what_happened() {
        let from = mailbox("p@example.com");
        let to = [mailbox("o@example.com")];
        let subject = |a: &AlertObject| {
            message(a, &from, &to)
                .unwrap()
                .headers()
                .get_raw("Subject")
                .unwrap()
                .to_string()
        };
        assert_eq!(
            subject(&alert("recovery")),
            "pipewatch: nightly-etl recovered (run 20261203T021500Z-a1b2c3)"
        );
        let mut storm = alert("failure");
        storm.failed_runs = 3;
        assert!(subject(&storm).contains("failed (3 runs since the last alert)"));
        let test = crate::alerts::test_alert("mail", "http://127.0.0.1:8001", chrono::Utc::now());
        assert_eq!(subject(&test), "pipewatch: a test alert");
        let body = String::from_utf8(message(&test, &from, &to).unwrap().formatted()).unwrap();
        assert!(
            body.contains("the dashboard is at http://127.0.0.1:8001/"),
            "{body}"
        );
    }

    #[test]
    fn a_login_without_the_password_says_which_variable_to_set() {
        let mut smtp = Smtp {
            host: "127.0.0.1".into(),
            port: 1,
            tls: SmtpTls::None,
            from: mailbox("p@example.com"),
            username: "pipewatch".into(),
        };
        for unset in [None, Some(String::new())] {
            let e = login(&smtp, unset).err().unwrap();
            assert!(
                e.contains(PASSWORD_ENV) && e.contains("smtp://127.0.0.1:1"),
                "{e}"
            );
        }
        assert!(login(&smtp, Some("pw".into())).unwrap().is_some());
        smtp.username.clear();
        assert!(login(&smtp, Some("pw".into())).unwrap().is_none());
    }
}
