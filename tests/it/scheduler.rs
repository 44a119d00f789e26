//! The built-in scheduler through the real `pipewatch serve`: firing on a schedule of seconds,
//! enabled/disabled surviving restarts, each catch-up policy, and missed occurrences.
#![cfg(unix)]

use std::time::Duration;

use chrono::Utc;
use serde_json::Value;

use crate::support::*;

const LONG: Duration = Duration::from_secs(60);

fn project(pipeline: &str, scheduler: &str) -> Project {
    let p = Project::new();
    p.write_config(&format!(
        "[pipeline]\nname = \"p\"\n{pipeline}\n[[stages]]\nname = \"a\"\nrun = \"echo hi\"\n[scheduler]\n{scheduler}\n"
    ));
    p
}

fn by_source<'a>(runs: &'a [Value], source: &str) -> Vec<&'a Value> {
    runs.iter().filter(|r| r["source"] == source).collect()
}

fn with_status<'a>(runs: &'a [Value], status: &str) -> Vec<&'a Value> {
    runs.iter().filter(|r| r["status"] == status).collect()
}

#[test]
fn fires_on_schedule_and_the_switch_survives_a_restart() {
    let p = project("schedule = \"*/1 * * * * *\"", "grace = \"30s\"");
    let mut d = Dashboard::start(&p);
    wait_until(LONG, "two scheduled runs to succeed", || {
        let runs = d.runs();
        by_source(&runs, "scheduler")
            .iter()
            .filter(|r| r["status"] == "success")
            .count()
            >= 2
    });
    let (code, status) = d.get("/api/scheduler/status");
    assert_eq!(code, 200);
    assert_eq!(status["backend"], "builtin");
    assert_eq!(status["enabled"], true);
    assert_eq!(status["exists"], true);
    assert_eq!(status["schedule"], "*/1 * * * * *");
    assert!(status["next_run"].is_string(), "{status}");
    assert!(status["last_run"].is_string(), "{status}");

    let (code, status) = d.post("/api/scheduler/disable", "{}");
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["enabled"], false);
    assert_eq!(status["state"], "disabled");
    d.stop();

    let d = Dashboard::start(&p);
    let (_, status) = d.get("/api/scheduler/status");
    assert_eq!(status["enabled"], false, "disabled survives a restart");
    assert!(status["next_run"].is_null());
    // Disabled: no new scheduled run for a few occurrences.
    let before = by_source(&d.runs(), "scheduler").len();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(by_source(&d.runs(), "scheduler").len(), before);

    let (_, status) = d.post("/api/scheduler/enable", "{}");
    assert_eq!(status["enabled"], true);
    wait_until(LONG, "scheduled runs again", || {
        by_source(&d.runs(), "scheduler").len() > before
    });
}

/// Starts the dashboard as if it had been down for the last few minutes, with a schedule
/// whose four occurrences fell 5, 4, 3 and 2 minutes ago (the newest too long ago to count as
/// on time): all four were missed.
fn after_downtime(catchup: &str, window: &str) -> (Project, Dashboard) {
    use chrono::{DurationRound, Timelike};
    let minute = Utc::now().duration_trunc(chrono::Duration::minutes(1)).unwrap();
    let minutes: Vec<String> = (2..=5)
        .rev()
        .map(|k| (minute - chrono::Duration::minutes(k)).minute().to_string())
        .collect();
    let p = project(
        &format!(
            "schedule = \"{} * * * *\"\ncatchup = \"{catchup}\"\ncatchup_window = \"{window}\"",
            minutes.join(",")
        ),
        "grace = \"10m\"",
    );
    let last = minute - chrono::Duration::minutes(6);
    std::fs::create_dir_all(p.state_dir()).unwrap();
    std::fs::write(
        p.state_dir().join("scheduler.json"),
        serde_json::json!({ "enabled": true, "last_occurrence": last }).to_string(),
    )
    .unwrap();
    let d = Dashboard::start(&p);
    (p, d)
}

#[test]
fn catchup_none_records_every_miss() {
    let (_p, d) = after_downtime("none", "1h");
    wait_until(LONG, "4 missed runs", || with_status(&d.runs(), "missed").len() >= 4);
    let runs = d.runs();
    assert!(by_source(&runs, "catchup").is_empty(), "{runs:?}");
    let missed = with_status(&runs, "missed");
    assert_eq!(missed.len(), 4, "{missed:?}");
    for m in missed {
        assert!(m["scheduled_for"].is_string(), "{m}");
        assert!(m["run_id"].as_str().unwrap().ends_with("-missed"));
    }
}

#[test]
fn catchup_last_runs_the_newest_and_records_the_rest() {
    let (_p, d) = after_downtime("last", "1h");
    wait_until(LONG, "one catch-up run and 3 missed", || {
        let runs = d.runs();
        by_source(&runs, "catchup").iter().any(|r| r["status"] == "success")
            && with_status(&runs, "missed").len() >= 3
    });
    let runs = d.runs();
    assert_eq!(by_source(&runs, "catchup").len(), 1, "{runs:?}");
    assert_eq!(with_status(&runs, "missed").len(), 3, "{runs:?}");
}

#[test]
fn catchup_all_runs_each_within_the_window() {
    // Within 4 minutes: the occurrences 3 and 2 minutes ago (and some seconds) run, one
    // after the other; the 2 older ones are recorded as missed.
    let (_p, d) = after_downtime("all", "4m");
    wait_until(LONG, "catch-up runs and missed runs", || {
        let runs = d.runs();
        by_source(&runs, "catchup")
            .iter()
            .filter(|r| r["status"] == "success")
            .count()
            >= 2
            && with_status(&runs, "missed").len() >= 2
    });
    let runs = d.runs();
    assert_eq!(
        by_source(&runs, "catchup").len() + with_status(&runs, "missed").len(),
        4,
        "{runs:?}"
    );
}

#[test]
fn an_occurrence_without_a_run_becomes_a_missed_run() {
    let p = project("schedule = \"*/1 * * * * *\"", "grace = \"1s\"");
    let d = Dashboard::start(&p);
    wait_until(LONG, "a scheduled run", || {
        !by_source(&d.runs(), "scheduler").is_empty()
    });
    // From now on every run the scheduler starts fails before writing anything: its
    // configuration is broken.
    let config = std::fs::read_to_string(p.path().join("pipewatch.toml")).unwrap();
    std::fs::write(
        p.path().join("pipewatch.toml"),
        format!("{config}\nbroken = ["),
    )
    .unwrap();
    wait_until(LONG, "a missed run", || {
        !with_status(&d.runs(), "missed").is_empty()
    });
    let runs = d.runs();
    let missed = with_status(&runs, "missed")[0];
    assert_eq!(missed["source"], "scheduler");
    let (_, detail) = d.get(&format!(
        "/api/runs/{}/events",
        missed["run_id"].as_str().unwrap()
    ));
    assert_eq!(detail[0]["event"], "missed");
    assert!(detail[0]["data"]["scheduled_for"].is_string(), "{detail}");
}
