//! The `late` and `long` alerts end to end (`docs/alerts.md`): the real `serve`, an OS
//! scheduler that says its timer is on but never starts a run (a stand-in `systemctl`), the
//! built-in scheduler starting runs on time, and a run that takes longer than its history.
//! The receiver is the alerts tests' HTTP sink.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use crate::alerts::{Received, Sink};
use crate::support::{Options, Project, Server, stderr, tools, wait_until};

/// Generous: the dashboard asks the rules every 5 seconds, and the machine may be busy.
const LONG: Duration = Duration::from_secs(90);

/// A `systemctl` that reports an installed, enabled timer (which never starts anything).
const ENABLED_SYSTEMCTL: &str = r#"#!/bin/sh
case "$*" in
  *"show "*.timer*) printf 'LoadState=loaded\nUnitFileState=enabled\nActiveState=active\nNextElapseUSecRealtime=\nLastTriggerUSec=\n' ;;
  *"show "*.service*) printf 'ActiveState=inactive\nResult=success\nExecMainStatus=0\n' ;;
esac
exit 0
"#;

/// The requests the sink got on `path`.
fn on_path(sink: &Sink, path: &str) -> Vec<Received> {
    sink.received()
        .into_iter()
        .filter(|r| r.path == path)
        .collect()
}

fn kinds(s: &Server, kind: &str) -> Vec<Value> {
    s.json("/api/alerts")
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == kind)
        .cloned()
        .collect()
}

/// Each request's `Idempotency-Key` is there once: no alert was sent twice.
fn assert_each_once(got: &[Received]) {
    let keys: Vec<&str> = got
        .iter()
        .map(|r| r.header("idempotency-key").unwrap())
        .collect();
    let unique: HashSet<&&str> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "an alert sent twice: {keys:?}");
}

#[test]
fn an_occurrence_without_a_run_is_late_once_per_destination_across_a_restart() {
    let sink = Sink::start();
    // Every 5 seconds, late 2 seconds after; systemd says the timer is on, and nothing runs.
    let p = Project::with_config(&format!(
        "schedule = \"*/5 * * * * *\"\n\
         [[stages]]\nname = \"a\"\nrun = \"true\"\n\
         [scheduler]\nbackend = \"systemd\"\ngrace = \"1s\"\n\
         [[alerts]]\nname = \"ops\"\non = [\"late\"]\nlate_after = \"2s\"\n\
         webhook = \"http://127.0.0.1:{port}/ops\"\n\
         [[alerts]]\nname = \"chat\"\non = [\"late\"]\nlate_after = \"2s\"\nformat = \"slack\"\n\
         webhook = \"http://127.0.0.1:{port}/chat\"\n",
        port = sink.port
    ));
    let path = tools::stand_in(p.path(), "systemctl", ENABLED_SYSTEMCTL);
    let mut s = Server::start_with(
        &p,
        Options {
            env: vec![("PATH".into(), path)],
            ..Options::default()
        },
    );
    wait_until(LONG, "late alerts at both destinations", || {
        on_path(&sink, "/ops").len() >= 2 && !on_path(&sink, "/chat").is_empty()
    });

    let ops = on_path(&sink, "/ops");
    let a = &ops[0].body;
    assert_eq!(a["kind"], "late", "{a}");
    assert_eq!(a["pipeline"], "p");
    assert_eq!(a["run_id"], "");
    assert_eq!(ops[0].header("idempotency-key"), a["id"].as_str());
    assert!(
        a["url"].as_str().unwrap().ends_with("/#/pipelines/p"),
        "{a}"
    );
    // It names an occurrence of the schedule, at least `late_after` before it was made.
    let due = chrono::DateTime::parse_from_rfc3339(a["scheduled_at"].as_str().unwrap()).unwrap();
    let made = chrono::DateTime::parse_from_rfc3339(a["at"].as_str().unwrap()).unwrap();
    assert_eq!(due.timestamp() % 5, 0, "{a}");
    assert_eq!(due.timestamp_subsec_millis(), 0, "{a}");
    assert!(made - due >= chrono::Duration::seconds(2), "{a}");
    let chat = on_path(&sink, "/chat");
    let text = chat[0].body["text"].as_str().unwrap();
    assert!(
        text.starts_with("pipewatch: p is late: no run started for the ")
            && text.contains("UTC occurrence"),
        "{text}"
    );

    // The history lists them, with no run.
    let rows = kinds(&s, "late");
    assert!(rows.len() >= 3, "{rows:?}");
    assert!(rows.iter().all(|r| r["run_id"] == ""), "{rows:?}");
    let destinations: HashSet<&str> = rows
        .iter()
        .map(|r| r["destination"].as_str().unwrap())
        .collect();
    assert_eq!(destinations, HashSet::from(["ops", "chat"]));

    // A restart alerts again about what is late now, never again about an occurrence it
    // already alerted.
    let before = ops.len();
    s.stop();
    s.spawn();
    wait_until(LONG, "a late alert after the restart", || {
        on_path(&sink, "/ops").len() > before
    });
    s.stop();
    for dest in ["/ops", "/chat"] {
        assert_each_once(&on_path(&sink, dest));
    }
    let ops = on_path(&sink, "/ops");
    let occurrences: Vec<&str> = ops
        .iter()
        .map(|r| r.body["scheduled_at"].as_str().unwrap())
        .collect();
    let unique: HashSet<&&str> = occurrences.iter().collect();
    assert_eq!(unique.len(), occurrences.len(), "{occurrences:?}");
    assert!(ops.iter().all(|r| r.body["kind"] == "late"));
}

#[test]
fn occurrences_whose_runs_start_on_time_are_not_late() {
    // The built-in scheduler starts a run every 2 seconds; late would be 5 seconds after.
    let p = Project::with_config(
        "schedule = \"*/2 * * * * *\"\n\
         [[stages]]\nname = \"a\"\nrun = \"true\"\n\
         [[alerts]]\nname = \"ops\"\non = [\"late\"]\nlate_after = \"5s\"\n\
         command = [\"true\"]\n",
    );
    let s = Server::start(&p);
    wait_until(LONG, "scheduled runs", || {
        s.runs()
            .iter()
            .filter(|r| r["source"] == "scheduler" && r["status"] == "success")
            .count()
            >= 6
    });
    // Twelve seconds of scheduled runs: at least two rounds of the rules looked at them.
    assert_eq!(kinds(&s, "late"), Vec::<Value>::new());
}

#[test]
fn a_run_past_its_usual_duration_alerts_once_while_it_runs() {
    let sink = Sink::start();
    // A second a run, usually; 30 while the file `slow` is there. Long after 2 × the median
    // (about 2 seconds): more than `long_min`, so the median rule is the one that fires.
    let p = Project::with_config(&format!(
        "[[stages]]\nname = \"a\"\n\
         run = [\"sh\", \"-c\", \"if [ -e slow ]; then sleep 30; else sleep 1; fi\"]\n\
         [[alerts]]\nname = \"ops\"\non = [\"long\"]\nlong_min = \"1s\"\nlong_factor = 2\n\
         webhook = \"http://127.0.0.1:{}/ops\"\n",
        sink.port
    ));
    let s = Server::start(&p);
    for _ in 0..3 {
        let out = p.run(&["run"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    wait_until(LONG, "three successful runs in the dashboard", || {
        s.runs().iter().filter(|r| r["status"] == "success").count() == 3
    });

    std::fs::write(p.path().join("slow"), "").unwrap();
    let mut child = p.spawn(&["run"]);
    wait_until(LONG, "the long alert", || !sink.received().is_empty());
    assert!(
        child.try_wait().unwrap().is_none(),
        "the alert came only after the run ended"
    );
    let got = sink.received();
    let a = &got[0].body;
    assert_eq!(a["kind"], "long", "{a}");
    assert_eq!(a["pipeline"], "p");
    assert_eq!(a["status"], "running");
    assert!(a["started_at"].is_string(), "{a}");
    let running = s
        .runs()
        .into_iter()
        .find(|r| r["status"] == "running")
        .expect("the long run is running");
    assert_eq!(a["run_id"], running["run_id"]);
    let median = a["median_ms"].as_i64().unwrap();
    let threshold = a["threshold_ms"].as_i64().unwrap();
    assert!((1000..5000).contains(&median), "{a}");
    assert!((threshold - 2 * median).abs() <= 1, "{a}");
    assert!(a["duration_ms"].as_i64().unwrap() > threshold, "{a}");

    let status = crate::support::wait_child(&mut child, LONG);
    assert!(status.success());
    wait_until(LONG, "the long run's end in the dashboard", || {
        s.runs().iter().filter(|r| r["status"] == "success").count() == 4
    });
    // Every round while it ran found it long: still one alert.
    let got = sink.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(kinds(&s, "long").len(), 1);
}
