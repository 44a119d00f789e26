//! E-mail alerts and `https://` webhooks end to end (`docs/alerts.md`): real runs, the real
//! `serve`, a real SMTP server (aiosmtpd, run by `tests/fixtures/smtp_server.py`) with
//! STARTTLS or TLS and a login, and an HTTPS receiver, both with certificates of a CA the test
//! makes, which `pipewatch` trusts through `SSL_CERT_FILE`.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;

use crate::alerts::{Received, alerts_api, project, read_request, run_once};
use crate::support::{Options, Project, Server, doctor_check, json_out, stderr, tools, wait_until};

const LONG: Duration = Duration::from_secs(30);
const USER: &str = "pipewatch";
const PASSWORD: &str = "s3cret-Passw0rd";
const PASSWORD_ENV: &str = "PIPEWATCH_SMTP_PASSWORD";

/// A CA made for one test, and a certificate it signed for `127.0.0.1` and `localhost`.
struct Certs {
    dir: tempfile::TempDir,
    /// The CA's certificate (PEM): what `SSL_CERT_FILE` points at.
    ca: PathBuf,
    /// The server's certificate and key (PEM), for the SMTP server.
    cert: PathBuf,
    key: PathBuf,
    /// The same, for the HTTPS receiver.
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Certs {
    fn new() -> Certs {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "pipewatch test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate().unwrap();
        let mut server =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server.use_authority_key_identifier_extension = true;
        let cert = server.signed_by(&key, &issuer).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        Certs {
            ca: write("ca.pem", ca_cert.pem()),
            cert: write("cert.pem", cert.pem()),
            key: write("key.pem", key.serialize_pem()),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
            dir,
        }
    }

    /// The environment `pipewatch` needs to trust this CA (and only it).
    fn trusted(&self) -> (String, OsString) {
        ("SSL_CERT_FILE".into(), self.ca.clone().into())
    }
}

/// The SMTP server of `tests/fixtures/smtp_server.py`; stopped when dropped.
struct Smtpd {
    port: u16,
    out: PathBuf,
    child: Child,
    /// Closing it stops the server.
    stdin: Option<ChildStdin>,
}

impl Smtpd {
    /// Started with `certs`' certificate, STARTTLS (or TLS from the first byte when
    /// `implicit_tls`), the login USER / PASSWORD; `None` (after a loud skip) without aiosmtpd.
    fn start(certs: &Certs, implicit_tls: bool) -> Option<Smtpd> {
        let python = tools::python_with_aiosmtpd()?;
        let out = certs.dir.path().join("received");
        std::fs::create_dir_all(&out).unwrap();
        let log = std::fs::File::create(certs.dir.path().join("smtpd.log")).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smtp_server.py");
        let mut cmd = Command::new(python);
        cmd.arg(script)
            .arg("--cert")
            .arg(&certs.cert)
            .arg("--key")
            .arg(&certs.key)
            .args(["--user", USER, "--password", PASSWORD])
            .arg("--out")
            .arg(&out)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        if implicit_tls {
            cmd.arg("--implicit-tls");
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(port) = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
        else {
            let _ = child.kill();
            let log = std::fs::read_to_string(certs.dir.path().join("smtpd.log"));
            panic!("the SMTP server did not start: {line:?}\n{log:?}");
        };
        Some(Smtpd {
            port,
            out,
            stdin: child.stdin.take(),
            child,
        })
    }

    /// The messages received so far, oldest first.
    fn messages(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    fn wait_for(&self, n: usize, what: &str) -> Vec<Value> {
        wait_until(LONG, what, || self.messages().len() >= n);
        self.messages()
    }

    /// `[[alerts]] mail` to ops@example.com and `[smtp]` pointing at this server.
    fn config(&self, tls: &str) -> String {
        format!(
            "[[alerts]]\nname = \"mail\"\nemail = [\"ops@example.com\"]\n\n\
             [smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"{tls}\"\n\
             from = \"pipewatch@example.com\"\nusername = \"{USER}\"\n",
            self.port
        )
    }
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        // Its stdin closing stops it; one that does not stop soon is killed.
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A received message with its header lines unfolded and quoted-printable soft line breaks
/// joined, so a test can look for a header or a line of the body as written.
fn text_of(message: &Value) -> String {
    message["data"]
        .as_str()
        .unwrap()
        .replace("=\r\n", "")
        .replace("\r\n ", " ")
        .replace("\r\n\t", " ")
        .replace("=3D", "=")
}

/// `pipewatch ARGS` in `p` with exactly `env` for the TLS roots and the SMTP password.
fn run_with(p: &Project, args: &[&str], env: &[(String, OsString)]) -> Output {
    let mut c = p.cmd(args);
    c.env_remove(PASSWORD_ENV).env_remove("SSL_CERT_DIR");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn password(p: &str) -> (String, OsString) {
    (PASSWORD_ENV.into(), p.into())
}

#[test]
fn a_failure_arrives_as_an_email_over_starttls_with_a_login() {
    let certs = Certs::new();
    let Some(smtpd) = Smtpd::start(&certs, false) else {
        return;
    };
    let p = project(&smtpd.config("starttls"));
    let s = Server::start_with(
        p.path(),
        Options {
            env: vec![certs.trusted(), password(PASSWORD)],
            ..Options::default()
        },
    );
    let id = run_once(&p, &s, true);
    let got = smtpd.wait_for(1, "the failure's e-mail");
    let m = &got[0];
    assert_eq!(m["mail_from"], "pipewatch@example.com");
    assert_eq!(m["rcpt_tos"], serde_json::json!(["ops@example.com"]));
    assert_eq!(m["login"], USER);
    let text = text_of(m);
    for part in [
        format!("Subject: pipewatch: p failed (run {id})"),
        "To: ops@example.com".to_string(),
        "From: pipewatch@example.com".to_string(),
        format!("p failed: run {id}"),
        "failed stages: a".to_string(),
        "    [a] boom-".to_string(),
        format!("http://127.0.0.1:{}/#/runs/{id}", s.port),
    ] {
        assert!(text.contains(&part), "{part:?} in\n{text}");
    }
    wait_until(LONG, "the alert marked sent", || {
        alerts_api(&s)
            .first()
            .is_some_and(|r| r["status"] == "sent")
    });
    let row = &alerts_api(&s)[0];
    assert_eq!(row["destination"], "mail");
    // The receiver can tell a second delivery of the same alert by its Message-ID.
    let alert_id = row["id"].as_str().unwrap();
    assert!(
        text.contains(&format!("Message-ID: <{alert_id}.pipewatch@example.com>")),
        "{text}"
    );
    assert_eq!(smtpd.messages().len(), 1);
}

#[test]
fn a_wrong_password_is_retried_and_shown_nowhere_and_doctor_says_what_to_fix() {
    let certs = Certs::new();
    let Some(smtpd) = Smtpd::start(&certs, false) else {
        return;
    };
    let wrong = "wr0ng-Secret-9137";
    let p = project(&smtpd.config("starttls"));
    let s = Server::start_with(
        p.path(),
        Options {
            env: vec![certs.trusted(), password(wrong)],
            ..Options::default()
        },
    );
    run_once(&p, &s, true);
    wait_until(LONG, "a failed attempt recorded", || {
        alerts_api(&s)
            .first()
            .is_some_and(|r| r["status"] == "retrying" && r["last_error"].is_string())
    });
    let row = &alerts_api(&s)[0];
    let e = row["last_error"].as_str().unwrap();
    assert!(e.contains("127.0.0.1") && e.contains("535"), "{row}");
    assert!(!e.contains(wrong), "{row}");
    let listed = String::from_utf8_lossy(&p.run(&["alerts"]).stdout).to_string();
    assert!(
        listed.contains("retrying") && !listed.contains(wrong),
        "{listed}"
    );
    assert!(!s.stderr().contains(wrong), "{}", s.stderr());

    let doctor = |env: &[(String, OsString)]| {
        let out = run_with(&p, &["doctor", "--json"], env);
        doctor_check(&json_out(&out), "alerts (mail)").clone()
    };
    let check = doctor(&[certs.trusted(), password(wrong)]);
    assert_eq!(check["ok"], false, "{check}");
    let detail = check["detail"].as_str().unwrap();
    assert!(detail.contains("535") && !detail.contains(wrong), "{check}");
    assert!(check["fix"].as_str().unwrap().contains("[smtp]"), "{check}");
    let check = doctor(&[certs.trusted()]);
    assert_eq!(check["ok"], false, "{check}");
    assert!(
        check["detail"].as_str().unwrap().contains(PASSWORD_ENV),
        "{check}"
    );
    let check = doctor(&[certs.trusted(), password(PASSWORD)]);
    assert_eq!(check["ok"], true, "{check}");
    // A server whose certificate is not trusted is not logged in to.
    let check = doctor(&[
        ("SSL_CERT_FILE".into(), Certs::new().ca.into()),
        password(PASSWORD),
    ]);
    assert_eq!(check["ok"], false, "{check}");
    assert!(smtpd.messages().is_empty(), "nothing was sent");
}

#[test]
fn a_test_alert_from_the_cli_over_implicit_tls() {
    let certs = Certs::new();
    let Some(smtpd) = Smtpd::start(&certs, true) else {
        return;
    };
    let p = project(&smtpd.config("tls"));
    let out = run_with(
        &p,
        &["alerts", "test", "mail"],
        &[certs.trusted(), password(PASSWORD)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = smtpd.wait_for(1, "the test alert's e-mail");
    let text = text_of(&got[0]);
    assert!(text.contains("Subject: pipewatch: a test alert"), "{text}");
    assert!(text.contains("the dashboard is at http://"), "{text}");

    let out = run_with(&p, &["alerts", "test", "mail"], &[certs.trusted()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains(PASSWORD_ENV), "{}", stderr(&out));
    assert_eq!(smtpd.messages().len(), 1);
}

/// An HTTPS receiver on a loopback port with `certs`' certificate; answers 200 to every
/// request and records it.
fn https_sink(certs: &Certs) -> (u16, Arc<Mutex<Vec<Received>>>) {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![certs.cert_der.clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certs.key_der.clone())),
    )
    .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let recorded = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let (config, recorded) = (config.clone(), recorded.clone());
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(LONG)).unwrap();
                let tls = rustls::ServerConnection::new(config).unwrap();
                // A client that does not trust the certificate ends the handshake: an error
                // here, and nothing recorded.
                if let Some(r) = answer_request(rustls::StreamOwned::new(tls, conn)) {
                    recorded.lock().unwrap().push(r);
                }
            });
        }
    });
    (port, got)
}

fn answer_request(
    stream: rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream>,
) -> Option<Received> {
    let mut reader = BufReader::new(stream);
    let mut request = read_request(&mut reader)?;
    request.answered = 200;
    let stream = reader.get_mut();
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .ok()?;
    stream.conn.send_close_notify();
    let _ = stream.flush();
    Some(request)
}

#[test]
fn an_https_webhook_gets_the_alert_with_its_idempotency_key() {
    let certs = Certs::new();
    let (port, got) = https_sink(&certs);
    let p = project(&format!(
        "[[alerts]]\nname = \"hooks\"\nwebhook = \"https://127.0.0.1:{port}/services/T0/B0/secret\"\n"
    ));

    // Not trusted: refused before anything is sent, and said so without the URL's path.
    let out = run_with(
        &p,
        &["alerts", "test", "hooks"],
        &[("SSL_CERT_FILE".into(), Certs::new().ca.into())],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains(&format!("https://127.0.0.1:{port}/")), "{e}");
    assert!(
        e.to_lowercase().contains("certificate") && !e.contains("secret"),
        "{e}"
    );
    assert!(got.lock().unwrap().is_empty());

    let s = Server::start_with(
        p.path(),
        Options {
            env: vec![certs.trusted()],
            ..Options::default()
        },
    );
    let id = run_once(&p, &s, true);
    wait_until(LONG, "the alert over https", || {
        !got.lock().unwrap().is_empty()
    });
    let r = got.lock().unwrap()[0].clone();
    assert_eq!(r.path, "/services/T0/B0/secret");
    assert_eq!(r.body["kind"], "failure");
    assert_eq!(r.body["run_id"], id.as_str());
    assert_eq!(r.header("idempotency-key"), r.body["id"].as_str(), "{r:?}");
    wait_until(LONG, "the alert marked sent", || {
        alerts_api(&s)
            .first()
            .is_some_and(|r| r["status"] == "sent")
    });

    let check = doctor_check(
        &json_out(&run_with(&p, &["doctor", "--json"], &[certs.trusted()])),
        "alerts (hooks)",
    )
    .clone();
    assert_eq!(check["ok"], true, "{check}");
}
