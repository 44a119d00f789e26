//! Delivering one alert to one destination, blocking (callers run it on a blocking thread):
//! a webhook POST with `Idempotency-Key`, a command started without a shell with the
//! alert on its stdin, or an e-mail ([`super::email`]). The request and the command line are
//! built by pure functions ([`webhook_body`], [`command`]), tested as values; [`send`] is the
//! one place that runs them.
//!
//! `https://` webhooks are spoken with rustls on the ring provider, trusting the system's
//! roots as rustls-native-certs reads them: `SSL_CERT_FILE` / `SSL_CERT_DIR` when set (a
//! corporate CA, a test's own), else the platform's store.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::AlertObject;
use crate::config::{Alert, Destination, Format};

/// A webhook that has not answered within this long has failed (it is tried again).
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// A command still running this long after it was started is killed and has failed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The body a webhook of `format` is sent.
pub fn webhook_body(format: Format, alert: &AlertObject) -> String {
    match format {
        Format::Json => serde_json::to_string(alert).unwrap_or_default(),
        Format::Slack => serde_json::json!({ "text": alert.slack_text() }).to_string(),
    }
}

/// The command for `argv` (no shell): stdin piped for the alert, output discarded.
pub fn command(argv: &[String]) -> Option<Command> {
    let (program, args) = argv.split_first()?;
    let mut c = Command::new(program);
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    Some(c)
}

/// Sends `alert` to `dest`; the error says why it failed, for `last_error`.
pub fn send(dest: &Alert, alert: &AlertObject) -> Result<(), String> {
    match &dest.destination {
        Destination::Webhook(url) => post(url, dest.format, alert),
        Destination::Command(argv) => run(argv, alert),
        Destination::Email { to, smtp } => super::email::send(smtp, to, alert),
    }
}

/// The TLS settings of every webhook request: rustls with the ring provider (ureq is built
/// without a provider of its own) and the system's roots, read once per process.
fn tls_config() -> ureq::tls::TlsConfig {
    static ROOTS: OnceLock<ureq::tls::RootCerts> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!("cannot read a trusted root certificate for https webhooks: {e}");
        }
        found
            .certs
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .into()
    });
    ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .root_certs(roots.clone())
        .build()
}

fn post(url: &str, format: Format, alert: &AlertObject) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(WEBHOOK_TIMEOUT))
        .tls_config(tls_config())
        .build()
        .into();
    agent
        .post(url)
        .content_type("application/json")
        .header("Idempotency-Key", &alert.id)
        .send(&webhook_body(format, alert))
        .map(|_| ())
        .map_err(|e| {
            let shown = shown_url(url);
            match e {
                ureq::Error::StatusCode(code) => format!("{shown} answered HTTP {code}"),
                other => format!("{shown}: {other}"),
            }
        })
}

/// Whether `dest` could be delivered to, without sending anything: a webhook's host accepts
/// a connection within [`REACH_TIMEOUT`]; a command's program exists (a path, or found on
/// `PATH`); an e-mail's server accepts a connection and the login ([`super::email::check`]).
/// `Ok` says what was checked, for `pipewatch doctor`.
pub fn reachable(dest: &Destination) -> Result<String, String> {
    match dest {
        Destination::Webhook(url) => {
            let shown = shown_url(url);
            let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
            let default_port = if scheme.eq_ignore_ascii_case("https") {
                443
            } else {
                80
            };
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host_port = authority.rsplit('@').next().unwrap_or(authority);
            let with_port = if host_port
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
                && !host_port.ends_with(']')
            {
                host_port.to_string()
            } else {
                format!("{host_port}:{default_port}")
            };
            let addrs = std::net::ToSocketAddrs::to_socket_addrs(&with_port)
                .map_err(|e| format!("{shown}: cannot resolve its host: {e}"))?;
            let mut last = format!("{shown}: its host has no address");
            for addr in addrs {
                match std::net::TcpStream::connect_timeout(&addr, REACH_TIMEOUT) {
                    Ok(_) => return Ok(format!("{shown} accepts connections")),
                    Err(e) => last = format!("{shown}: cannot connect to {addr}: {e}"),
                }
            }
            Err(last)
        }
        Destination::Command(argv) => {
            let program = argv
                .first()
                .ok_or_else(|| "the command is empty".to_string())?;
            let path = std::path::Path::new(program);
            let found = if path.components().count() > 1 {
                path.is_file().then(|| path.to_path_buf())
            } else {
                std::env::var_os("PATH").and_then(|paths| {
                    std::env::split_paths(&paths).find_map(|dir| {
                        let candidates = [dir.join(program), dir.join(format!("{program}.exe"))];
                        candidates.into_iter().find(|c| c.is_file())
                    })
                })
            };
            found
                .map(|p| format!("{} is {}", program, p.display()))
                .ok_or_else(|| format!("{program} was not found (as a path, or on PATH)"))
        }
        Destination::Email { smtp, .. } => super::email::check(smtp),
    }
}

/// How long [`reachable`] waits for a webhook's host.
pub const REACH_TIMEOUT: Duration = Duration::from_secs(3);

/// A webhook's URL as errors show it: the scheme and host only, since a webhook's path often
/// holds its secret (Slack's do), and errors are logged and served by the API.
pub fn shown_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    format!("{scheme}://{host}/…")
}

fn run(argv: &[String], alert: &AlertObject) -> Result<(), String> {
    let shown = argv.join(" ");
    let mut child = command(argv)
        .ok_or_else(|| "the command is empty".to_string())?
        .spawn()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    let body = serde_json::to_vec(alert).unwrap_or_default();
    if let Some(mut stdin) = child.stdin.take() {
        // A command that exits without reading its input is judged by its exit status.
        let _ = stdin.write_all(&body);
    }
    // Its stderr is read on its own thread, so a chatty command cannot fill the pipe and stall.
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
            s
        })
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= COMMAND_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{shown}: still running after {COMMAND_TIMEOUT:?}; killed"
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("{shown}: {e}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    let err = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    let tail = super::bounded_tail(err.trim());
    let tail: String = tail
        .chars()
        .rev()
        .take(300)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(if tail.is_empty() {
        format!("{shown} exited with {status}")
    } else {
        format!("{shown} exited with {status}: {tail}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reachable_connects_or_finds_the_program_and_sends_nothing() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Destination::Webhook(format!("http://127.0.0.1:{port}/hooks/secret"));
        let ok = reachable(&up).unwrap();
        assert!(
            ok.contains("accepts connections") && !ok.contains("secret"),
            "{ok}"
        );
        drop(listener);
        let down = reachable(&up).unwrap_err();
        assert!(
            down.contains("cannot connect") && !down.contains("secret"),
            "{down}"
        );

        let exe = std::env::current_exe().unwrap();
        let path = Destination::Command(vec![exe.display().to_string(), "-x".into()]);
        assert!(reachable(&path).is_ok());
        let missing = Destination::Command(vec!["pipewatch-no-such-program".into()]);
        assert!(reachable(&missing).unwrap_err().contains("not found"));
    }

    #[test]
    fn an_https_webhook_without_a_port_is_checked_on_443() {
        let dest = Destination::Webhook("https://127.0.0.1/hooks/secret".into());
        // Whatever listens on this machine's port 443, the check is made there.
        match reachable(&dest) {
            Ok(ok) => assert!(ok.contains("https://127.0.0.1/"), "{ok}"),
            Err(e) => assert!(e.contains("127.0.0.1:443") && !e.contains("secret"), "{e}"),
        }
    }

    fn alert() -> AlertObject {
        AlertObject {
            id: "0123456789abcdef".into(),
            kind: "failure".into(),
            pipeline: "etl".into(),
            run_id: "r1".into(),
            status: "failure".into(),
            started_at: None,
            finished_at: None,
            duration_ms: Some(5),
            failed_stages: vec!["load".into()],
            stderr_tail: "[load] boom".into(),
            url: "http://127.0.0.1:8001/#/runs/r1".into(),
            at: "2026-12-03T00:00:00Z".into(),
            failed_runs: 1,
            ..AlertObject::default()
        }
    }

    #[test]
    fn errors_show_no_secret_of_the_url() {
        assert_eq!(
            shown_url("http://u:p@hooks.example:8080/services/T0/B0/secret?x=1"),
            "http://hooks.example:8080/…"
        );
    }

    #[test]
    fn bodies() {
        let json: serde_json::Value =
            serde_json::from_str(&webhook_body(Format::Json, &alert())).unwrap();
        assert_eq!(json["id"], "0123456789abcdef");
        let slack: serde_json::Value =
            serde_json::from_str(&webhook_body(Format::Slack, &alert())).unwrap();
        let text = slack["text"].as_str().unwrap();
        for part in ["etl", "failed", "r1", "load", "boom", "/#/runs/r1"] {
            assert!(text.contains(part), "{part} in {text}");
        }
        assert_eq!(slack.as_object().unwrap().len(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn a_command_gets_the_alert_and_its_exit_status_counts() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("alert.json");
        let ok = Alert {
            name: "c".into(),
            on: vec![],
            pipelines: vec![],
            destination: Destination::Command(vec![
                "sh".into(),
                "-c".into(),
                format!("cat > '{}'", out.display()),
            ]),
            format: Format::Json,
            repeat_every: Duration::ZERO,
            retry_for: Duration::ZERO,
            overdue: Default::default(),
        };
        send(&ok, &alert()).unwrap();
        let got: AlertObject = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(got, alert());
        let bad = Alert {
            destination: Destination::Command(vec![
                "sh".into(),
                "-c".into(),
                "echo nope >&2; exit 3".into(),
            ]),
            ..ok
        };
        let e = send(&bad, &alert()).unwrap_err();
        assert!(e.contains("nope"), "{e}");
    }
}
