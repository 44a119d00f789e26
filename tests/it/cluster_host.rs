//! Every run knows the host it ran on (`docs/scale-out.md`): the top-level `host` of its
//! events, as `[cluster]` forwarding publishes them, else the `data.host` of its `start`. The
//! API, its filter, `/metrics`, `pipewatch runs` and `runs show` say it. No NATS needed: the
//! run files are written here as the forwarder's events would land in them.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::support::{Project, QUICK, Server, append, json_out, run_path, stderr};

/// A finished run of pipeline `p`, its one stage `work`, written as its file would hold it:
/// `host` at the top of every event (forwarded through `[cluster]`) when given, and
/// `data_host` in its start's `data` (where `pipewatch run` names its machine) when given.
pub fn hosted_run(
    events_dir: &Path,
    id: &str,
    start: DateTime<Utc>,
    status: &str,
    host: Option<&str>,
    data_host: Option<&str>,
) {
    let end = start + chrono::Duration::seconds(3);
    let stamp = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let level = if status == "success" { "info" } else { "error" };
    let mut start_data = json!({ "stages": ["work"] });
    if let Some(h) = data_host {
        start_data["host"] = json!(h);
    }
    let events = [
        (start, "pipeline", "start", "info", start_data),
        (start, "work", "start", "info", json!({ "attempt": 1 })),
        (
            end,
            "work",
            status,
            level,
            json!({ "attempt": 1, "exit_code": 0 }),
        ),
        (
            end,
            "pipeline",
            status,
            level,
            json!({ "duration_ms": 3000 }),
        ),
    ];
    let mut text = String::new();
    for (seq, (t, stage, event, level, data)) in events.into_iter().enumerate() {
        let mut v = json!({
            "seq": seq, "run_id": id, "pipeline": "p", "stage": stage, "event": event,
            "level": level, "timestamp": stamp(t), "source": "scheduler",
            "msg": format!("{stage} {event}"), "data": data,
        });
        if let Some(h) = host {
            v["host"] = json!(h);
        }
        text.push_str(&v.to_string());
        text.push('\n');
    }
    append(&events_dir.join(format!("pipeline_{id}.jsonl")), &text);
}

fn hosts_of(runs: &Value) -> Vec<(String, Value)> {
    runs.as_array()
        .expect("a list of runs")
        .iter()
        .map(|r| {
            (
                r["run_id"].as_str().expect("run id").to_string(),
                r["host"].clone(),
            )
        })
        .collect()
}

/// The runs of two forwarding hosts and one of the serving machine itself: each with its
/// host in `/api/runs`, `/api/runs/{id}`, the host filter, `/metrics` (escaped), and in
/// `pipewatch runs` / `runs show`; the description says so.
#[test]
fn runs_of_several_hosts_say_their_host_everywhere() {
    let p = Project::with_config(QUICK);
    let events = p.events_dir();
    let t0 = Utc::now() - chrono::Duration::minutes(30);
    let at = |m: i64| t0 + chrono::Duration::minutes(m);
    // Forwarded: top-level host, over the runner's own data.host.
    hosted_run(
        &events,
        "r1-etl01",
        at(0),
        "success",
        Some("etl-01"),
        Some("etl-01.prod"),
    );
    hosted_run(&events, "r2-etl02", at(1), "failure", Some("etl-02"), None);
    hosted_run(&events, "r3-etl01", at(2), "success", Some("etl-01"), None);
    // This machine's own run: its start names it. And one by a tool naming no host.
    hosted_run(
        &events,
        "r4-local",
        at(3),
        "success",
        None,
        Some("we\"ird\\box"),
    );
    hosted_run(&events, "r5-nohost", at(4), "success", None, None);

    let s = Server::start(&p);
    s.wait_json("/api/runs", "five runs", Duration::from_secs(15), |v| {
        v.as_array().is_some_and(|a| a.len() == 5)
    });
    assert_eq!(
        hosts_of(&s.json("/api/runs")),
        [
            ("r5-nohost".to_string(), Value::Null),
            ("r4-local".to_string(), json!("we\"ird\\box")),
            ("r3-etl01".to_string(), json!("etl-01")),
            ("r2-etl02".to_string(), json!("etl-02")),
            ("r1-etl01".to_string(), json!("etl-01")),
        ]
    );
    assert_eq!(s.json("/api/runs/r1-etl01")["host"], "etl-01");
    assert_eq!(s.json("/api/runs/r4-local")["host"], "we\"ird\\box");
    // A run without a host says so with null, as every unknown value of a run.
    let none = s.json("/api/runs/r5-nohost");
    assert!(
        none.as_object().expect("a run").contains_key("host"),
        "{none}"
    );
    assert_eq!(none["host"], Value::Null);

    // The filter, alone and with the others, and paged.
    let ids = |q: &str| -> Vec<String> {
        hosts_of(&s.json(&format!("/api/runs?{q}")))
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    };
    assert_eq!(ids("host=etl-01"), ["r3-etl01", "r1-etl01"]);
    assert_eq!(ids("host=etl-01&limit=1&before=r3-etl01"), ["r1-etl01"]);
    assert_eq!(ids("host=etl-02&status=failure"), ["r2-etl02"]);
    assert!(ids("host=etl-02&status=success").is_empty());
    assert!(ids("host=etl-09").is_empty());
    let r = s.get(&format!("/api/runs?host={}", "h".repeat(300)));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap_or_default()
            .contains("host"),
        "{}",
        r.body
    );

    // /metrics: a host label on the per-pipeline series, escaped; none for a run naming none.
    let m = s.get("/metrics").body;
    for want in [
        "pipewatch_runs{pipeline=\"p\",host=\"etl-01\",status=\"success\"} 2\n",
        "pipewatch_runs{pipeline=\"p\",host=\"etl-02\",status=\"failure\"} 1\n",
        "pipewatch_runs{pipeline=\"p\",host=\"we\\\"ird\\\\box\",status=\"success\"} 1\n",
        "pipewatch_runs{pipeline=\"p\",status=\"success\"} 1\n",
        "pipewatch_last_success_timestamp_seconds{pipeline=\"p\",host=\"etl-01\"} ",
        "pipewatch_last_success_timestamp_seconds{pipeline=\"p\"} ",
    ] {
        assert!(m.contains(want), "{want:?} in /metrics:\n{m}");
    }
    // etl-02 never succeeded: no last success of its own (another host's does not hide it).
    assert!(
        !m.contains("pipewatch_last_success_timestamp_seconds{pipeline=\"p\",host=\"etl-02\"}"),
        "{m}"
    );
    let last_success = |host: &str| -> f64 {
        let prefix =
            format!("pipewatch_last_success_timestamp_seconds{{pipeline=\"p\",host=\"{host}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
            .unwrap_or_else(|| panic!("{prefix} in {m}"))
    };
    let r3_end = (at(2) + chrono::Duration::seconds(3)).timestamp_millis() as f64 / 1000.0;
    assert!((last_success("etl-01") - r3_end).abs() < 0.001);

    // The description has the field and the filter.
    let doc = s.json("/api/openapi.json");
    let summary = &doc["components"]["schemas"]["RunSummary"];
    assert!(summary["properties"].get("host").is_some(), "{summary}");
    assert!(
        summary["required"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("host"))),
        "{summary}"
    );
    let params = doc["paths"]["/api/runs"]["get"]["parameters"]
        .as_array()
        .expect("parameters");
    assert!(params.iter().any(|q| q["name"] == "host"), "{params:?}");
    drop(s);

    // The terminal: a HOST column with several hosts, the filter, and `runs show`.
    let o = p.run(&["runs"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let head = out.lines().next().unwrap_or_default();
    assert!(head.contains("HOST"), "{out}");
    let row = |id: &str| {
        out.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} in\n{out}"))
            .to_string()
    };
    assert!(row("r2-etl02").contains("etl-02"), "{out}");
    assert!(row("r5-nohost").contains(" - "), "{out}");
    let on = json_out(&p.run(&["runs", "--host", "etl-01", "--json"]));
    assert_eq!(
        hosts_of(&on),
        [
            ("r3-etl01".to_string(), json!("etl-01")),
            ("r1-etl01".to_string(), json!("etl-01"))
        ]
    );
    let o = p.run(&["runs", "show", "r2-etl02"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let shown = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(shown.lines().any(|l| l == "host      etl-02"), "{shown}");
    assert_eq!(
        json_out(&p.run(&["runs", "show", "r2-etl02", "--json"]))["host"],
        "etl-02"
    );
}

/// One machine's runs, which all name the same host: `pipewatch runs` has no HOST column
/// (the table stays as it was), `runs show` names the host.
#[test]
fn runs_of_one_host_keep_their_table() {
    let p = Project::with_config(QUICK);
    let t0 = Utc::now() - chrono::Duration::minutes(10);
    hosted_run(&p.events_dir(), "a1", t0, "success", None, Some("box"));
    hosted_run(
        &p.events_dir(),
        "a2",
        t0 + chrono::Duration::minutes(1),
        "failure",
        None,
        Some("box"),
    );
    assert!(run_path(&p, "a2").exists());
    let o = p.run(&["runs"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(!out.contains("HOST"), "{out}");
    assert!(!out.contains("box"), "{out}");
    assert!(
        out.lines().next().unwrap_or_default().starts_with("RUN"),
        "{out}"
    );
    let shown = String::from_utf8_lossy(&p.run(&["runs", "show", "a1"]).stdout).to_string();
    assert!(shown.lines().any(|l| l == "host      box"), "{shown}");
}

/// An index of the version before `host` (5) is migrated when `serve` opens it, keeping its
/// alerts; the runs already there get their host, as a new index would have it.
#[test]
fn serve_migrates_an_index_without_hosts() {
    let p = Project::with_config(QUICK);
    let t0 = Utc::now() - chrono::Duration::minutes(10);
    hosted_run(&p.events_dir(), "m1", t0, "success", Some("etl-01"), None);
    // An index as version 5 left it: a run without the column, an alert not delivered yet.
    let db = p.state_dir().join("index.db");
    std::fs::create_dir_all(p.state_dir()).expect("state dir");
    let sql = format!(
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY NOT NULL, pipeline TEXT, status TEXT,
             source TEXT, started_at TEXT, finished_at TEXT, duration_ms INTEGER,
             scheduled_for TEXT, reason TEXT, failed_stages TEXT, first_error_seq INTEGER,
             retry_of TEXT, events INTEGER NOT NULL DEFAULT 0, last_seq INTEGER,
             sort_key TEXT NOT NULL DEFAULT '', dev INTEGER NOT NULL DEFAULT 0,
             ino INTEGER NOT NULL DEFAULT 0, offset INTEGER NOT NULL DEFAULT 0,
             lines INTEGER NOT NULL DEFAULT 0, finished INTEGER NOT NULL DEFAULT 0)
             WITHOUT ROWID;
         CREATE TABLE stages (run_id TEXT NOT NULL, name TEXT NOT NULL,
             position INTEGER NOT NULL, status TEXT NOT NULL, started_at TEXT,
             finished_at TEXT, duration_ms INTEGER, attempts INTEGER NOT NULL DEFAULT 0,
             exit_code INTEGER, reason TEXT, signal INTEGER, needs TEXT,
             PRIMARY KEY (run_id, name)) WITHOUT ROWID;
         CREATE TABLE feed (first INTEGER PRIMARY KEY, last INTEGER NOT NULL,
             run_id TEXT NOT NULL, seq_first INTEGER NOT NULL, seq_last INTEGER NOT NULL,
             dev INTEGER NOT NULL, ino INTEGER NOT NULL, offset INTEGER NOT NULL,
             lines INTEGER NOT NULL);
         CREATE TABLE alerts (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
             destination TEXT NOT NULL, kind TEXT NOT NULL, pipeline TEXT NOT NULL,
             run_id TEXT NOT NULL, body TEXT NOT NULL, status TEXT NOT NULL,
             attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, at TEXT NOT NULL,
             next_at TEXT NOT NULL);
         CREATE TABLE alert_memory (destination TEXT NOT NULL, pipeline TEXT NOT NULL,
             failing INTEGER NOT NULL, last_alert_at TEXT, held_back INTEGER NOT NULL,
             PRIMARY KEY (destination, pipeline)) WITHOUT ROWID;
         INSERT INTO runs (run_id, pipeline, status, events, sort_key)
             VALUES ('m1', 'p', 'success', 4, '{}');
         INSERT INTO alert_memory VALUES ('ops', 'p', 1, NULL, 0);
         PRAGMA user_version = 5;",
        t0.format("%Y-%m-%dT%H:%M:%S%.3fZ")
    );
    let conn = rusqlite::Connection::open(&db).expect("open the old index");
    conn.execute_batch(&sql).expect("an index of version 5");
    drop(conn);

    let s = Server::start(&p);
    let run = s.wait_run("m1", Duration::from_secs(15), |r| r["host"] == "etl-01");
    assert_eq!(run["status"], "success");
    assert!(
        !p.state_dir().join("index.db.broken").exists(),
        "moved aside, not migrated"
    );
    drop(s);
    let conn = rusqlite::Connection::open(&db).expect("open the index");
    // Version 6, the alerts' memory kept, and no rebuild left pending.
    let (version, memory, pending): (i64, i64, i64) = conn
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version), \
                    (SELECT count(*) FROM alert_memory), \
                    (SELECT count(*) FROM sqlite_schema WHERE name = 'rebuild_pending')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("read the index");
    assert_eq!((version, memory, pending), (6, 1, 0));
}
