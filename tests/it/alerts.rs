//! Alerts end to end (`docs/alerts.md`): real runs, the real `serve`, and receivers started
//! by the tests (an HTTP sink recording every request, a command writing what it read).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::support::{Project, Server, doctor_check, json_out, stderr, wait_until};

const LONG: Duration = Duration::from_secs(30);

/// One request the sink received, and the status it answered.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) path: String,
    headers: Vec<(String, String)>,
    pub(crate) body: Value,
    pub(crate) answered: u16,
}

impl Received {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one HTTP request (its line, headers and a `Content-Length` body) from `reader`;
/// `None` if the connection ends first. `answered` is left 0 for the caller to set.
pub(crate) fn read_request(reader: &mut impl BufRead) -> Option<Received> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim().split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        answered: 0,
    })
}

/// An HTTP receiver on a loopback port: records every request, answers the queued statuses
/// first, then `otherwise`. The summary and browser tests use it too.
#[derive(Clone)]
pub(crate) struct Sink {
    pub(crate) port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    queued: Arc<Mutex<VecDeque<u16>>>,
    otherwise: Arc<Mutex<u16>>,
}

impl Sink {
    pub(crate) fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sink = Sink {
            port: listener.local_addr().unwrap().port(),
            got: Arc::default(),
            queued: Arc::default(),
            otherwise: Arc::new(Mutex::new(200)),
        };
        let s = sink.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let s = s.clone();
                std::thread::spawn(move || s.serve(conn));
            }
        });
        sink
    }

    fn serve(&self, conn: std::net::TcpStream) {
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let Some(mut request) = read_request(&mut reader) else {
            return;
        };
        let answered = self
            .queued
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(*self.otherwise.lock().unwrap());
        request.answered = answered;
        self.got.lock().unwrap().push(request);
        let mut conn = conn;
        let _ = write!(
            conn,
            "HTTP/1.1 {answered} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The requests it answered 200.
    fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.answered == 200)
            .collect()
    }

    pub(crate) fn wait_for(&self, n: usize, what: &str) -> Vec<Received> {
        wait_until(LONG, what, || self.received().len() >= n);
        self.received()
    }
}

/// A pipeline `p` whose one stage writes to stderr and fails while the file `fail` exists,
/// with `alerts` appended to its configuration.
pub(crate) fn project(alerts: &str) -> Project {
    Project::with_config(&format!(
        "[[stages]]\nname = \"a\"\nrun = [\"sh\", \"-c\", \"echo boom-$$ >&2; test ! -e fail\"]\n{alerts}"
    ))
}

fn webhook(sink: &Sink, extra: &str) -> String {
    format!(
        "[[alerts]]\nname = \"ops\"\nwebhook = \"{}\"\n{extra}",
        sink.url()
    )
}

/// Runs the pipeline (failing or not) and waits until the dashboard has its final status;
/// returns the run's id.
pub(crate) fn run_once(p: &Project, s: &Server, fail: bool) -> String {
    let flag = p.path().join("fail");
    if fail {
        std::fs::write(&flag, "").unwrap();
    } else {
        let _ = std::fs::remove_file(&flag);
    }
    let before: Vec<String> = s.runs().iter().map(|r| r["run_id"].to_string()).collect();
    let out = p.run(&["run"]);
    assert_eq!(
        out.status.code(),
        Some(if fail { 1 } else { 0 }),
        "{}",
        stderr(&out)
    );
    let want = if fail { "failure" } else { "success" };
    let mut id = String::new();
    wait_until(LONG, "the run in the dashboard", || {
        let runs = s.runs();
        match runs
            .iter()
            .find(|r| !before.contains(&r["run_id"].to_string()) && r["status"] == want)
        {
            Some(r) => {
                id = r["run_id"].as_str().unwrap().to_string();
                true
            }
            None => false,
        }
    });
    id
}

pub(crate) fn alerts_api(s: &Server) -> Vec<Value> {
    s.json("/api/alerts").as_array().unwrap().clone()
}

#[test]
fn a_failure_alerts_once_until_the_recovery() {
    let sink = Sink::start();
    let p = project(&webhook(&sink, ""));
    let s = Server::start(p.path());

    let first = run_once(&p, &s, true);
    let got = sink.wait_for(1, "the failure alert");
    let a = &got[0];
    assert_eq!(a.path, "/hook");
    assert_eq!(a.header("content-type"), Some("application/json"));
    let body = &a.body;
    assert_eq!(a.header("idempotency-key"), body["id"].as_str(), "{body}");
    assert_eq!(body["kind"], "failure");
    assert_eq!(body["pipeline"], "p");
    assert_eq!(body["run_id"], first.as_str());
    assert_eq!(body["status"], "failure");
    assert_eq!(body["failed_stages"], serde_json::json!(["a"]));
    assert_eq!(body["failed_runs"], 1);
    assert!(
        body["stderr_tail"].as_str().unwrap().contains("[a] boom-"),
        "{body}"
    );
    assert!(body["duration_ms"].is_i64(), "{body}");
    assert!(
        body["started_at"].is_string() && body["finished_at"].is_string(),
        "{body}"
    );
    assert!(body["at"].is_string(), "{body}");
    assert_eq!(
        body["url"],
        format!("http://127.0.0.1:{}/#/runs/{first}", s.port),
        "{body}"
    );

    // Failing again within repeat_every: recorded with the batch, so no row means no POST.
    run_once(&p, &s, true);
    assert_eq!(alerts_api(&s).len(), 1);

    let ok = run_once(&p, &s, false);
    let got = sink.wait_for(2, "the recovery alert");
    assert_eq!(got[1].body["kind"], "recovery");
    assert_eq!(got[1].body["run_id"], ok.as_str());
    assert_eq!(got[1].body["failed_stages"], serde_json::json!([]));
    wait_until(LONG, "both alerts marked sent", || {
        alerts_api(&s).iter().all(|r| r["status"] == "sent") && alerts_api(&s).len() == 2
    });
    let rows = alerts_api(&s);
    assert_eq!(rows[0]["kind"], "recovery", "newest first: {rows:?}");
    assert_eq!(rows[1]["kind"], "failure");
    assert_eq!(rows[1]["destination"], "ops");
    assert_eq!(rows[1]["attempts"], 1);
    assert_eq!(rows[1]["id"], got[0].body["id"]);
    assert_eq!(s.json("/api/alerts?limit=1").as_array().unwrap().len(), 1);

    // The CLI reads the same rows from the index.
    let out = p.run(&["alerts", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let cli = json_out(&out);
    assert_eq!(cli.as_array().unwrap().len(), 2, "{cli}");
    assert_eq!(cli[0]["kind"], "recovery");
    let out = p.run(&["alerts"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("recovery") && text.contains("sent"), "{text}");
    assert_eq!(sink.received().len(), 2);
}

#[test]
fn a_receiver_answering_500_gets_it_again_and_once_it_takes_it_never_again() {
    let sink = Sink::start();
    sink.queued.lock().unwrap().push_back(500);
    let p = project(&webhook(&sink, ""));
    let s = Server::start(p.path());
    run_once(&p, &s, true);
    let got = sink.wait_for(2, "the retry");
    assert_eq!(got[0].answered, 500);
    assert_eq!(got[1].answered, 200);
    assert_eq!(
        got[0].header("idempotency-key"),
        got[1].header("idempotency-key")
    );
    wait_until(LONG, "the alert marked sent", || {
        alerts_api(&s)
            .first()
            .is_some_and(|r| r["status"] == "sent")
    });
    let row = &alerts_api(&s)[0];
    assert_eq!(row["attempts"], 2, "{row}");
    assert!(row["last_error"].as_str().unwrap().contains("500"), "{row}");
    let metrics = s.get("/metrics").body;
    assert!(
        metrics.contains("pipewatch_alerts_total{destination=\"ops\",status=\"sent\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pipewatch_alerts_total{destination=\"ops\",status=\"retrying\"} 1"),
        "{metrics}"
    );
    assert_eq!(sink.delivered().len(), 1);
}

#[test]
fn an_alert_pending_at_kill_9_is_delivered_after_the_restart_exactly_once() {
    let sink = Sink::start();
    *sink.otherwise.lock().unwrap() = 503;
    let p = project(&webhook(&sink, ""));
    let mut s = Server::start(p.path());
    run_once(&p, &s, true);
    sink.wait_for(1, "a first, refused attempt");
    s.kill9();

    *sink.otherwise.lock().unwrap() = 200;
    s.spawn();
    wait_until(LONG, "the delivery after the restart", || {
        sink.delivered().len() == 1
    });
    wait_until(LONG, "the alert marked sent", || {
        alerts_api(&s)
            .first()
            .is_some_and(|r| r["status"] == "sent")
    });
    // Sent rows are never sent again, even after another kill -9.
    s.kill9();
    s.spawn();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sink.delivered().len(), 1, "{:?}", sink.received());
    assert_eq!(alerts_api(&s).len(), 1);
}

#[cfg(unix)]
#[test]
fn a_command_gets_the_alert_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("alert.json");
    let p = project(&format!(
        "[[alerts]]\nname = \"cmd\"\non = [\"failure\"]\ncommand = [\"sh\", \"-c\", \"cat > '{}'\"]\n",
        out.display()
    ));
    let s = Server::start(p.path());
    let id = run_once(&p, &s, true);
    wait_until(LONG, "the command's file", || {
        std::fs::read(&out).is_ok_and(|b| serde_json::from_slice::<Value>(&b).is_ok())
    });
    let got: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(got["kind"], "failure");
    assert_eq!(got["run_id"], id.as_str());
    assert_eq!(got["failed_stages"], serde_json::json!(["a"]));
}

#[test]
fn test_alerts_from_the_cli_and_the_api() {
    let sink = Sink::start();
    let closed = crate::support::free_port();
    let p = project(&format!(
        "{}[[alerts]]\nname = \"down\"\nwebhook = \"http://127.0.0.1:{closed}/\"\n",
        webhook(&sink, "format = \"slack\"\n")
    ));
    let out = p.run(&["alerts", "test", "ops"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = sink.wait_for(1, "the CLI's test alert");
    let text = got[0].body["text"].as_str().unwrap();
    assert!(text.contains("test alert"), "{text}");

    let out = p.run(&["alerts", "test", "down"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("was not delivered"),
        "{}",
        stderr(&out)
    );
    let out = p.run(&["alerts", "test", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("ops, down"), "{}", stderr(&out));

    let s = Server::start(p.path());
    let r = s.post_json("/api/alerts/ops/test", "");
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["status"], "sent");
    sink.wait_for(2, "the API's test alert");
    assert_eq!(s.post_json("/api/alerts/down/test", "").status, 502);
    assert_eq!(s.post_json("/api/alerts/nope/test", "").status, 404);
    // Test alerts are not history.
    assert!(alerts_api(&s).is_empty());
    let out = p.run(&["alerts"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no alerts"));
}

#[test]
fn configuration_errors_name_file_line_and_key() {
    let p = project("[[alerts]]\nname = \"a\"\non = [\"failure\", \"slow\"]\ncommand = [\"x\"]\n");
    let out = p.run(&["alerts"]);
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(e.contains("pipewatch.toml:8: alerts.on:"), "{e}");
    assert!(e.contains("unknown alert kind"), "{e}");

    let p =
        project("[[alerts]]\nname = \"a\"\non = [\"long\"]\ncommand = [\"x\"]\nlong_factor = 0\n");
    let e = stderr(&p.run(&["alerts"]));
    assert!(e.contains("pipewatch.toml:10: alerts.long_factor:"), "{e}");

    let p = project("[[alerts]]\nname = \"a\"\nemail = [\"ops@example.com\"]\n");
    let e = stderr(&p.run(&["alerts"]));
    assert!(e.contains("alerts.email") && e.contains("[smtp]"), "{e}");

    // In a workspace, [[alerts]] belongs to the workspace file.
    let w = Project::new();
    std::fs::create_dir_all(w.path().join("pipelines")).unwrap();
    std::fs::write(
        w.path().join("pipelines/a.toml"),
        "[pipeline]\nname = \"a\"\n[[stages]]\nname = \"s\"\nrun = \"true\"\n[[alerts]]\nname = \"x\"\ncommand = [\"x\"]\n",
    )
    .unwrap();
    w.write_config("[workspace]\npipelines = [\"pipelines/*.toml\"]\n");
    let e = stderr(&w.run(&["alerts"]));
    assert!(e.contains("a.toml:6: alerts:"), "{e}");
    assert!(e.contains("pipewatch.toml"), "{e}");
    w.write_config(
        "[workspace]\npipelines = [\"pipelines/a.toml\"]\n[[alerts]]\nname = \"x\"\ncommand = [\"x\"]\n",
    );
    std::fs::write(
        w.path().join("pipelines/a.toml"),
        "[pipeline]\nname = \"a\"\n[[stages]]\nname = \"s\"\nrun = \"true\"\n",
    )
    .unwrap();
    let out = w.run(&["alerts", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn history_read_at_start_makes_no_alert_but_a_live_failure_does() {
    let sink = Sink::start();
    let p = project(&webhook(&sink, ""));
    std::fs::write(p.path().join("fail"), "").unwrap();
    assert_eq!(p.run(&["run"]).status.code(), Some(1));
    let s = Server::start(p.path());
    wait_until(LONG, "the old run indexed", || s.runs().len() == 1);
    let id = run_once(&p, &s, true);
    let got = sink.wait_for(1, "the live failure's alert");
    assert_eq!(got[0].body["run_id"], id.as_str());
    assert_eq!(alerts_api(&s).len(), 1);
}

#[test]
fn a_delivery_still_failing_after_retry_for_is_given_up() {
    let sink = Sink::start();
    *sink.otherwise.lock().unwrap() = 500;
    let p = project(&webhook(&sink, "retry_for = \"2s\"\n"));
    let s = Server::start(p.path());
    run_once(&p, &s, true);
    wait_until(LONG, "the alert given up", || {
        alerts_api(&s)
            .first()
            .is_some_and(|r| r["status"] == "failed")
    });
    let row = &alerts_api(&s)[0];
    assert!(row["attempts"].as_u64().unwrap() >= 2, "{row}");
    assert!(
        row["last_error"].as_str().unwrap().contains("HTTP 500"),
        "{row}"
    );
    let n = sink.received().len();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sink.received().len(), n, "no attempt after giving up");
}

#[test]
fn a_slow_destination_does_not_hold_up_another() {
    let sink = Sink::start();
    let p = project(&format!(
        "[[alerts]]\nname = \"slow\"\ncommand = [\"sleep\", \"25\"]\n{}",
        webhook(&sink, "")
    ));
    let s = Server::start(p.path());
    run_once(&p, &s, true);
    let started = std::time::Instant::now();
    sink.wait_for(1, "the webhook's alert while the command still runs");
    assert!(started.elapsed() < Duration::from_secs(20));
    let rows = alerts_api(&s);
    let slow = rows.iter().find(|r| r["destination"] == "slow").unwrap();
    assert_eq!(slow["status"], "retrying", "{rows:?}");
    // Nor does it hold up stopping the dashboard.
    let stopping = std::time::Instant::now();
    let mut s = s;
    s.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "{:?}",
        stopping.elapsed()
    );
}

#[test]
fn a_runner_killed_mid_run_is_alerted_as_abandoned() {
    let sink = Sink::start();
    let p = Project::with_config(&format!(
        "[[stages]]\nname = \"a\"\nrun = [\"sleep\", \"30\"]\n{}",
        webhook(&sink, "")
    ));
    let s = Server::start(p.path());
    let mut runner = p.spawn(&["run", "--no-notify", "--quiet"]);
    wait_until(LONG, "the run running in the dashboard", || {
        s.runs().iter().any(|r| r["status"] == "running")
    });
    runner.kill().unwrap();
    let _ = runner.wait();
    let got = sink.wait_for(1, "the abandoned alert");
    assert_eq!(got[0].body["kind"], "abandoned");
    assert_eq!(got[0].body["status"], "abandoned");
    assert_eq!(got[0].body["failed_stages"], serde_json::json!(["a"]));
}

#[test]
fn alerts_over_an_index_of_another_version_lists_none() {
    let p = project("");
    std::fs::create_dir_all(p.state_dir()).unwrap();
    let db = rusqlite::Connection::open(p.state_dir().join("index.db")).unwrap();
    db.execute_batch("CREATE TABLE runs (run_id TEXT); PRAGMA user_version = 4;")
        .unwrap();
    drop(db);
    let out = p.run(&["alerts", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_out(&out), serde_json::json!([]));
    assert!(
        stderr(&out).contains("no alerts recorded"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_destination_added_by_a_reload_gets_alerts() {
    let sink = Sink::start();
    let p = project("");
    let s = Server::start(p.path());
    run_once(&p, &s, true);
    assert!(alerts_api(&s).is_empty());
    let text = std::fs::read_to_string(p.path().join("pipewatch.toml")).unwrap();
    p.write_config(&format!("{text}{}", webhook(&sink, "")));
    let r = s.post_json("/api/reload", "");
    assert_eq!(r.status, 200, "{}", r.body);
    let id = run_once(&p, &s, true);
    let got = sink.wait_for(1, "the alert to the new destination");
    assert_eq!(got[0].body["run_id"], id.as_str());
    assert_eq!(got[0].body["failed_runs"], 1);
}

#[test]
fn doctor_checks_each_destination_without_sending_anything() {
    let sink = Sink::start();
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let p = project(&format!(
        "{}\n[[alerts]]\nname = \"down\"\nwebhook = \"http://127.0.0.1:{closed}/hook\"\n\n\
         [[alerts]]\nname = \"nowhere\"\ncommand = [\"pipewatch-no-such-program\"]\n",
        webhook(&sink, "")
    ));
    let out = p.run(&["doctor", "--json"]);
    let checks = json_out(&out);
    let check = |name: &str| doctor_check(&checks, name).clone();
    assert_eq!(check("alerts (ops)")["ok"], true, "{checks}");
    let down = check("alerts (down)");
    assert_eq!(down["ok"], false);
    assert!(
        down["detail"].as_str().unwrap().contains("cannot connect"),
        "{down}"
    );
    assert!(
        down["fix"]
            .as_str()
            .unwrap()
            .contains("pipewatch alerts test down"),
        "{down}"
    );
    let nowhere = check("alerts (nowhere)");
    assert!(
        nowhere["detail"].as_str().unwrap().contains("not found"),
        "{nowhere}"
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(sink.got.lock().unwrap().is_empty(), "doctor sent something");
}
