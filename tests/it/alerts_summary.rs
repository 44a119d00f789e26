//! After an outage (`docs/alerts.md`, "After an outage"): runs that ended while `serve` was
//! down — stopped, or killed with `kill -9` — reach each destination as one summary, not an
//! alert per run; afterwards alerts are live again. Real runs, the real `serve`, the HTTP sink
//! of the alerts tests.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::alerts::{Received, Sink};
use crate::support::{Project, QUICK, Server, append, line, run_path, stderr, wait_until};

const LONG: Duration = Duration::from_secs(60);

/// A workspace of `etl` (always fails), `report` (fails while the file `fail-report` exists)
/// and `slow` (sleeps), with two destinations on the sink: `ops` (JSON, at `/hook`) and `dev`
/// (Slack text, at `/dev`).
fn workspace(sink: &Sink) -> Project {
    let p = Project::new();
    p.write_config(&format!(
        "[workspace]\npipelines = [\"pipelines/*.toml\"]\n\n\
         [[alerts]]\nname = \"ops\"\nwebhook = \"{}\"\n\n\
         [[alerts]]\nname = \"dev\"\nwebhook = \"http://127.0.0.1:{}/dev\"\nformat = \"slack\"\n",
        sink.url(),
        sink.port
    ));
    let dir = p.path().join("pipelines");
    std::fs::create_dir_all(&dir).unwrap();
    let flag = p.path().join("fail-report");
    let report = format!(
        "[\"sh\", \"-c\", \"echo report-broke >&2; test ! -e '{}'\"]",
        flag.display()
    );
    for (name, run) in [
        ("etl", "[\"sh\", \"-c\", \"echo etl-broke >&2; exit 1\"]"),
        ("report", report.as_str()),
        ("slow", "[\"sleep\", \"30\"]"),
    ] {
        std::fs::write(
            dir.join(format!("{name}.toml")),
            format!("[pipeline]\nname = \"{name}\"\n\n[[stages]]\nname = \"a\"\nrun = {run}\n"),
        )
        .unwrap();
    }
    p
}

/// Runs `pipeline` to its end, with the dashboard away (nothing to notify).
fn run(p: &Project, pipeline: &str, fail: bool) {
    let flag = p.path().join("fail-report");
    if fail {
        std::fs::write(&flag, "").unwrap();
    } else {
        let _ = std::fs::remove_file(&flag);
    }
    let out = p.run(&["run", pipeline, "--no-notify", "--quiet"]);
    let want = if fail || pipeline == "etl" { 1 } else { 0 };
    assert_eq!(out.status.code(), Some(want), "{}", stderr(&out));
}

/// A run of `slow` whose runner dies mid-run (`kill -9`): abandoned, without a final event.
fn abandoned_run(p: &Project) {
    let before = run_files(&p.events_dir());
    let mut runner = p.spawn(&["run", "slow", "--no-notify", "--quiet"]);
    wait_until(LONG, "slow's stage started", || {
        run_files(&p.events_dir())
            .iter()
            .filter(|f| !before.contains(f))
            .any(|f| {
                std::fs::read_to_string(f)
                    .is_ok_and(|t| t.lines().filter(|l| l.contains("\"start\"")).count() >= 2)
            })
    });
    runner.kill().unwrap();
    let _ = runner.wait();
}

fn run_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn alerts_api(s: &Server) -> Vec<Value> {
    s.json("/api/alerts?limit=1000").as_array().unwrap().clone()
}

/// What the sink got at `path`.
fn at(sink: &Sink, path: &str) -> Vec<Received> {
    sink.received()
        .into_iter()
        .filter(|r| r.path == path)
        .collect()
}

/// The outage itself: 30 failures of etl, a failure and a recovery of report, an abandoned
/// run of slow.
fn while_down(p: &Project) {
    for _ in 0..30 {
        run(p, "etl", true);
    }
    run(p, "report", true);
    run(p, "report", false);
    abandoned_run(p);
}

/// Waits for one summary per destination, and checks that nothing else came.
fn one_summary_each(s: &Server, sink: &Sink) -> (Received, Received) {
    sink.wait_for(2, "one summary per destination");
    wait_until(LONG, "the summaries marked sent", || {
        let rows = alerts_api(s);
        rows.iter().filter(|r| r["kind"] == "summary").count() == 2
            && rows
                .iter()
                .filter(|r| r["kind"] == "summary")
                .all(|r| r["status"] == "sent")
    });
    // Nothing else from the outage follows (a delivery task polls every half second).
    std::thread::sleep(Duration::from_millis(1500));
    let got = sink.received();
    assert_eq!(got.len(), 2, "{got:#?}\n{}", s.stderr());
    let ops = at(sink, "/hook");
    let dev = at(sink, "/dev");
    assert_eq!((ops.len(), dev.len()), (1, 1), "{got:#?}");
    (ops[0].clone(), dev[0].clone())
}

fn check_summary(ops: &Received, dev: &Received, s: &Server) {
    let body = &ops.body;
    assert_eq!(body["kind"], "summary", "{body:#}");
    assert_eq!(ops.header("idempotency-key"), body["id"].as_str());
    assert_eq!(body["failed_runs"], 31, "{body:#}");
    let summary = &body["summary"];
    assert_eq!(summary["alerts"], 4, "{body:#}");
    assert!(summary["first_at"].is_string() && summary["last_at"].is_string());
    let pipelines = summary["pipelines"].as_array().unwrap();
    let of = |name: &str| {
        pipelines
            .iter()
            .find(|p| p["pipeline"] == name)
            .unwrap_or_else(|| panic!("{name} in {body:#}"))
            .clone()
    };
    let etl = of("etl");
    assert_eq!(etl["alerts"], json!({"failure": 1}), "{etl:#}");
    assert_eq!(
        etl["failed_runs"], 30,
        "the first alert and the 29 held back: {etl:#}"
    );
    let newest = &etl["newest_run"];
    assert_eq!(newest["status"], "failure");
    assert_eq!(newest["failed_stages"], json!(["a"]));
    let newest_id = newest["run_id"].as_str().unwrap();
    assert_eq!(
        newest["url"],
        format!("http://127.0.0.1:{}/#/runs/{newest_id}", s.port)
    );
    let report = of("report");
    assert_eq!(report["alerts"], json!({"failure": 1, "recovery": 1}));
    assert_eq!(report["newest_run"]["status"], "success");
    assert_eq!(of("slow")["alerts"], json!({"abandoned": 1}));
    assert_eq!(pipelines.len(), 3);

    let text = dev.body["text"].as_str().unwrap();
    for part in [
        "4 alerts",
        "etl: 1 failure; 30 failed runs",
        "report: 1 failure, 1 recovery",
        "slow: 1 abandoned",
        newest_id,
        "/#/alerts",
    ] {
        assert!(text.contains(part), "{part:?} in {text}");
    }

    // The history keeps what the summaries stand for, summarized and never sent.
    let rows = alerts_api(s);
    let summarized: Vec<&Value> = rows
        .iter()
        .filter(|r| r["status"] == "summarized")
        .collect();
    assert_eq!(summarized.len(), 8, "{rows:#?}");
    assert!(summarized.iter().all(|r| r["attempts"] == 0));
    assert_eq!(rows.len(), 10, "{rows:#?}");
}

/// After the summary, a live failure alerts at once, as itself, with its stderr tail.
fn live_again(p: &Project, s: &Server, sink: &Sink) {
    run(p, "report", true);
    let got = sink.wait_for(4, "the live failure's alerts");
    let live: Vec<&Received> = got[2..].iter().collect();
    for r in &live {
        if r.path == "/hook" {
            assert_eq!(r.body["kind"], "failure", "{:#}", r.body);
            assert_eq!(r.body["pipeline"], "report");
            assert_eq!(r.body["failed_runs"], 1);
            assert!(
                r.body["stderr_tail"]
                    .as_str()
                    .unwrap()
                    .contains("[a] report-broke"),
                "{:#}",
                r.body
            );
        } else {
            let text = r.body["text"].as_str().unwrap();
            assert!(text.contains("report failed"), "{text}");
        }
    }
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(sink.received().len(), 4, "{:#?}", sink.received());
    let _ = s;
}

fn outage(kill: bool) {
    let sink = Sink::start();
    let p = workspace(&sink);
    let mut s = Server::start(p.path());
    if kill {
        s.kill9();
    } else {
        s.stop();
    }
    while_down(&p);
    s.spawn();
    let (ops, dev) = one_summary_each(&s, &sink);
    check_summary(&ops, &dev, &s);
    live_again(&p, &s, &sink);
}

#[test]
fn an_outage_reaches_each_destination_as_one_summary() {
    outage(false);
}

#[test]
fn an_outage_after_kill_9_reaches_each_destination_as_one_summary() {
    outage(true);
}

/// A `serve` killed after committing the alerts it held but before folding them leaves
/// exactly what is made here: the runs read, their checkpoints, and `held` rows, written by
/// the same functions its ingest uses. The next start folds them into one summary each, with
/// the id the fold of those rows always has.
#[test]
fn held_alerts_left_by_a_crash_are_folded_by_the_next_start() {
    use pipewatch::index::{AlertContext, Index};
    use pipewatch::tail::Replay;

    let sink = Sink::start();
    let p = workspace(&sink);
    let mut s = Server::start(p.path());
    s.kill9();
    for _ in 0..3 {
        run(&p, "etl", true);
    }
    run(&p, "report", true);

    let workspace = pipewatch::config::Workspace::load(&p.path().join("pipewatch.toml")).unwrap();
    let mut idx = Index::open(&pipewatch::index::path(&p.state_dir())).unwrap();
    let mut batches = Vec::new();
    let mut files = run_files(&p.events_dir());
    files.sort();
    for f in files {
        let name = f.file_name().unwrap().to_str().unwrap();
        let Some(id) = pipewatch::journal::files::run_id_of(name) else {
            continue;
        };
        let mut replay = Replay::new(f.clone(), id, None);
        while let Some(b) = replay.next_read().unwrap() {
            batches.push(Arc::new(b));
        }
    }
    let ctx = AlertContext {
        alerts: workspace.alerts.clone(),
        base_url: "http://127.0.0.1:8001".into(),
        events_dir: p.events_dir(),
        now: chrono::Utc::now(),
        catching_up: true,
    };
    let held = idx.apply_alerting(&batches, &[], Some(&ctx)).unwrap();
    assert_eq!(
        held, 4,
        "etl's and report's first failures, per destination"
    );
    let rows = idx.list_alerts(100).unwrap();
    assert!(rows.iter().all(|r| r.status == "held"), "{rows:?}");
    let expected = |dest: &str| {
        let mut ids: Vec<(String, String)> = rows
            .iter()
            .filter(|r| r.destination == dest)
            .map(|r| (r.at.clone(), r.id.clone()))
            .collect();
        // Oldest first, as recorded (the API lists newest first).
        ids.reverse();
        pipewatch::alerts::summary_id(dest, &ids.into_iter().map(|(_, id)| id).collect::<Vec<_>>())
    };
    let (ops_id, dev_id) = (expected("ops"), expected("dev"));
    drop(idx);

    s.spawn();
    let (ops, dev) = one_summary_each(&s, &sink);
    assert_eq!(ops.body["id"], ops_id.as_str(), "{:#}", ops.body);
    assert_eq!(ops.body["summary"]["alerts"], 2);
    assert_eq!(ops.body["failed_runs"], 4, "{:#}", ops.body);
    assert!(dev.body["text"].as_str().unwrap().contains("2 alerts"));
    let rows = alerts_api(&s);
    let dev_row = rows
        .iter()
        .find(|r| r["kind"] == "summary" && r["destination"] == "dev")
        .unwrap();
    assert_eq!(dev_row["id"], dev_id.as_str());
}

/// The catch-up ends as soon as the run files are read: the watchdog's pass that ends it runs
/// at once, also when the files were read while its pass before was running. It used to wait
/// for the watchdog's next tick, 2 s later, in about one start in three over a few hundred
/// runs, and the alerts of runs that ended meanwhile waited with it (a delivery's `retry_for`
/// counts from when the alert was recorded).
#[test]
fn the_catch_up_ends_as_soon_as_the_run_files_are_read() {
    const STARTS: usize = 6;
    let mut took = Vec::new();
    for _ in 0..STARTS {
        let p = Project::with_config(QUICK);
        for r in 0..300 {
            let id = format!("r{r:04}");
            let mut text: String = (0..40)
                .map(|l| line(&id, "a", "log", "2025-12-08T21:45:00", &format!("line {l}")))
                .collect();
            text.push_str(&line(
                &id,
                "pipeline",
                "success",
                "2025-12-08T21:45:01",
                "done",
            ));
            append(&run_path(&p, &id), &text);
        }
        let s = Server::start(p.path());
        wait_until(LONG, "the catch-up's end", || {
            s.stderr().contains("caught up on the run files")
        });
        took.push(catch_up_time(&s.stderr()));
    }
    // The watchdog ticks every 2 s: a catch-up left to its next tick takes at least that.
    assert!(
        took.iter().all(|t| *t < Duration::from_millis(1500)),
        "from listening to caught up, per start: {took:?}"
    );
}

/// From the log line that says the dashboard listens to the one that says it caught up.
fn catch_up_time(log: &str) -> Duration {
    let at = |what: &str| {
        let l = log
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} in the log:\n{log}"));
        let stamp = l
            .split_whitespace()
            .find_map(|w| chrono::DateTime::parse_from_rfc3339(w).ok())
            .unwrap_or_else(|| panic!("no time in {l:?}"));
        stamp.with_timezone(&chrono::Utc)
    };
    (at("caught up on the run files") - at("dashboard listening"))
        .to_std()
        .unwrap_or_default()
}
