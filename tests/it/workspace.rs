//! Workspaces through the binary (`../shared/contract.md` §7): one `pipewatch.toml` with
//! `[workspace]` naming pipeline files, run by name from the terminal, and one dashboard for
//! all of them — `/api/pipelines`, the per-pipeline routes, the `pipeline` filters, and the
//! history of a pipeline that left the configuration.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// A workspace of two pipelines, `export` and `sync`, each with one stage printing its name.
fn workspace() -> Project {
    let p = Project::new();
    p.write_config("[workspace]\npipelines = [\"pipelines/*.toml\"]\n");
    let dir = p.path().join("pipelines");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["export", "sync"] {
        std::fs::write(
            dir.join(format!("{name}.toml")),
            format!(
                "[pipeline]\nname = \"{name}\"\nschedule = \"@daily\"\n\n\
                 [[stages]]\nname = \"work\"\nrun = \"echo {name}-done\"\n"
            ),
        )
        .unwrap();
    }
    p
}

#[test]
fn each_pipeline_of_a_workspace_runs_by_name_from_the_terminal() {
    let p = workspace();

    let none = p.run(&["run"]);
    assert_eq!(none.status.code(), Some(2), "{}", stderr(&none));
    assert!(
        stderr(&none).contains("2 pipelines (export, sync): name one"),
        "{}",
        stderr(&none)
    );
    let unknown = p.run(&["run", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        stderr(&unknown).contains("no pipeline \"nope\""),
        "{}",
        stderr(&unknown)
    );
    assert!(p.journals().is_empty(), "a refused run wrote a file");

    let ran = p.run(&["run", "sync", "--quiet"]);
    assert!(ran.status.success(), "{}", stderr(&ran));
    let events = p.journal();
    assert!(events.iter().all(|e| e["pipeline"] == "sync"), "{events:?}");
    assert_eq!(logs(&events, "work", "stdout"), ["sync-done"]);

    let list = json_out(&p.run(&["pipelines", "--json"]));
    assert_eq!(pipeline_names(&list), ["export", "sync"]);
    assert_eq!(list[0]["last_run"], Value::Null);
    assert_eq!(list[1]["last_run"]["status"], "success");
    assert_eq!(list[1]["schedule"], "@daily");

    let sync_runs = json_out(&p.run(&["runs", "--pipeline", "sync", "--json"]));
    assert_eq!(sync_runs.as_array().unwrap().len(), 1);
    let export_runs = json_out(&p.run(&["runs", "--pipeline", "export", "--json"]));
    assert_eq!(export_runs, Value::Array(vec![]));

    // Each pipeline has a task of its own, and doctor checks each.
    let status = json_out(&p.run(&["scheduler", "status", "--json"]));
    let tasks: Vec<&str> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["task_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        tasks,
        ["Pipeline Runner - export", "Pipeline Runner - sync"]
    );
    let doctor = json_out(&p.run(&["doctor", "--json"]));
    let checks: Vec<&str> = doctor
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert!(checks.contains(&"scheduler (export)"), "{checks:?}");
    assert!(checks.contains(&"scheduler (sync)"), "{checks:?}");
}

#[test]
fn a_duplicate_pipeline_name_names_both_files() {
    let p = workspace();
    std::fs::write(
        p.path().join("pipelines").join("zz.toml"),
        "[pipeline]\nname = \"sync\"\n[[stages]]\nname = \"a\"\nrun = \"echo x\"\n",
    )
    .unwrap();
    let out = p.run(&["pipelines"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("zz.toml:2: pipeline.name"), "{err}");
    assert!(err.contains("sync.toml already has it"), "{err}");
}

#[test]
fn one_dashboard_serves_every_pipeline_and_keeps_a_removed_ones_history() {
    let p = workspace();
    let mut s = Server::start(&p);
    assert_eq!(
        pipeline_names(&s.json("/api/pipelines")),
        ["export", "sync"]
    );

    // The one-pipeline route needs a name when there are several.
    let refused = s.post_json("/api/pipeline/run", "{}");
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("export, sync"), "{}", refused.body);
    assert_eq!(s.post_json("/api/pipelines/nope/run", "").status, 404);
    assert_eq!(s.get("/api/pipelines/nope").status, 404);

    // Only the export pipeline's events on its filtered stream.
    let mut ws = s.ws("/ws/events?pipeline=export");
    let started = s.post_json("/api/pipelines/export/run", "");
    assert_eq!(started.status, 202, "{}", started.body);
    let export_id = started.json()["run_id"].as_str().unwrap().to_string();
    s.wait_run(&export_id, Duration::from_secs(60), |r| {
        r["status"] == "success"
    });
    let by_query = s.post_json("/api/pipeline/run?pipeline=sync", "");
    assert_eq!(by_query.status, 202, "{}", by_query.body);
    let sync_id = by_query.json()["run_id"].as_str().unwrap().to_string();
    let sync_run = s.wait_run(&sync_id, Duration::from_secs(60), |r| {
        r["status"] == "success"
    });
    assert_eq!(sync_run["pipeline"], "sync");
    let got = read_until(&mut ws, "the export run's end", |got| {
        got.iter()
            .any(|e| e["stage"] == "pipeline" && e["event"] == "success")
    });
    assert!(got.iter().all(|e| e["pipeline"] == "export"), "{got:?}");

    let export_runs = s.json("/api/runs?pipeline=export");
    let ids: Vec<&str> = export_runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [export_id.as_str()]);
    let export = s.json("/api/pipelines/export");
    assert_eq!(export["last_run"]["run_id"], export_id.as_str());
    assert_eq!(export["stats_24h"]["success"], 1);
    assert_eq!(export["removed"], false);
    assert_eq!(
        export["recent"],
        serde_json::json!([{ "run_id": export_id, "status": "success" }])
    );

    // Metrics, one series per pipeline (on this machine, whose name the runs' starts give).
    let metrics = s.get("/metrics").body;
    for (prefix, suffix) in [
        (
            "pipewatch_runs{pipeline=\"export\",",
            "status=\"success\"} 1",
        ),
        ("pipewatch_runs{pipeline=\"sync\",", "status=\"success\"} 1"),
        (
            "pipewatch_last_success_timestamp_seconds{pipeline=\"export\"",
            "",
        ),
        (
            "pipewatch_last_success_timestamp_seconds{pipeline=\"sync\"",
            "",
        ),
    ] {
        let series: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with(prefix) && l.contains(suffix))
            .collect();
        assert_eq!(series.len(), 1, "one {prefix}…{suffix} in:\n{metrics}");
    }

    // One pipeline's schedule off leaves the other's on.
    let off = s.post_json("/api/pipelines/sync/scheduler/disable", "");
    assert_eq!(off.status, 200, "{}", off.body);
    assert_eq!(off.json()["enabled"], false);
    let list = s.json("/api/pipelines");
    assert_eq!(list[0]["enabled"], true);
    assert_eq!(list[1]["enabled"], false);

    // export leaves the configuration: its history stays, shown as removed.
    s.stop();
    std::fs::remove_file(p.path().join("pipelines").join("export.toml")).unwrap();
    s.spawn();
    let list = s.json("/api/pipelines");
    assert_eq!(pipeline_names(&list), ["sync", "export"]);
    assert_eq!(list[1]["removed"], true);
    assert_eq!(list[1]["last_run"]["run_id"], export_id.as_str());
    assert_eq!(s.post_json("/api/pipelines/export/run", "").status, 404);
}

/// Writes the pipeline file `pipelines/NAME.toml` of [`workspace`]'s layout.
fn pipeline_file(p: &Project, name: &str, schedule: &str) {
    std::fs::write(
        p.path().join("pipelines").join(format!("{name}.toml")),
        format!(
            "[pipeline]\nname = \"{name}\"\nschedule = \"{schedule}\"\n\n\
             [[stages]]\nname = \"work\"\nrun = \"echo {name}-done\"\n"
        ),
    )
    .unwrap();
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

#[test]
fn a_reload_applies_new_changed_and_removed_pipelines_without_losing_a_stream() {
    let p = workspace();
    let s = Server::start(&p);
    let mut ws = s.ws("/ws/events");

    // A new pipeline and a changed schedule.
    pipeline_file(&p, "report", "@hourly");
    pipeline_file(&p, "sync", "*/5 * * * *");
    let r = s.post_json("/api/reload", "");
    assert_eq!(r.status, 200, "{}", r.body);
    let changes = r.json();
    assert_eq!(strings(&changes["pipelines"]), ["export", "report", "sync"]);
    assert_eq!(strings(&changes["added"]), ["report"]);
    assert_eq!(strings(&changes["changed"]), ["sync"]);
    assert!(strings(&changes["removed"]).is_empty(), "{changes}");
    assert!(strings(&changes["restart_needed"]).is_empty(), "{changes}");
    let list = s.json("/api/pipelines");
    assert_eq!(pipeline_names(&list), ["export", "report", "sync"]);
    assert_eq!(list[2]["schedule"], "*/5 * * * *");
    assert_eq!(s.health()["pipelines"].as_array().unwrap().len(), 3);

    // The new pipeline runs, and its events come on the stream opened before the reload.
    let started = s.post_json("/api/pipelines/report/run", "");
    assert_eq!(started.status, 202, "{}", started.body);
    let id = started.json()["run_id"].as_str().unwrap().to_string();
    let got = read_until(&mut ws, "the new pipeline's run end", |got| {
        got.iter().any(|e| {
            e["run_id"] == id.as_str() && e["stage"] == "pipeline" && e["event"] == "success"
        })
    });
    assert!(
        got.iter()
            .any(|e| e["pipeline"] == "report" && e["msg"] == "report-done"),
        "{got:?}"
    );

    // A file that does not load changes nothing, and says where it is wrong.
    let broken = p.path().join("pipelines").join("sync.toml");
    std::fs::write(
        &broken,
        "[pipeline]\nname = \"sync\"\nschedule = \"every day\"\n",
    )
    .unwrap();
    let r = s.post_json("/api/reload", "");
    assert_eq!(r.status, 422, "{}", r.body);
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("sync.toml:3"), "{error}");
    assert!(error.contains("unchanged"), "{error}");
    assert_eq!(s.json("/api/pipelines")[2]["schedule"], "*/5 * * * *");

    // A removed pipeline stops being served; a changed [server] waits for a restart.
    pipeline_file(&p, "sync", "*/5 * * * *");
    std::fs::remove_file(p.path().join("pipelines").join("export.toml")).unwrap();
    p.write_config(
        "[workspace]\npipelines = [\"pipelines/*.toml\"]\n\n[server]\npoll_interval = \"1s\"\n",
    );
    let r = s.post_json("/api/reload", "");
    assert_eq!(r.status, 200, "{}", r.body);
    let changes = r.json();
    assert_eq!(strings(&changes["removed"]), ["export"]);
    assert_eq!(
        strings(&changes["restart_needed"]),
        ["[server] poll_interval"]
    );
    assert_eq!(s.post_json("/api/pipelines/export/run", "").status, 404);
    let list = s.json("/api/pipelines");
    assert_eq!(pipeline_names(&list), ["report", "sync"]);
    // Logged before the answer, read from the server's stderr by a thread of the harness.
    wait_until(
        Duration::from_secs(10),
        "the restart-needed warning logged",
        || {
            s.stderr()
                .contains("apply when pipewatch serve is restarted")
        },
    );

    // Nothing was lost or repeated on the stream across the reloads.
    let again = s.post_json("/api/pipelines/sync/run", "");
    assert_eq!(again.status, 202, "{}", again.body);
    let sync_id = again.json()["run_id"].as_str().unwrap().to_string();
    let more = read_until(&mut ws, "the sync run's end", |got| {
        got.iter().any(|e| {
            e["run_id"] == sync_id.as_str() && e["stage"] == "pipeline" && e["event"] == "success"
        })
    });
    let mut seen = std::collections::HashSet::new();
    for e in got.iter().chain(&more) {
        assert!(
            seen.insert((e["run_id"].to_string(), e["seq"].as_u64())),
            "delivered twice: {e}"
        );
    }
    assert_eq!(
        more.iter()
            .filter(|e| e["run_id"] == sync_id.as_str())
            .count(),
        s.all_events(&sync_id).len()
    );
}

#[cfg(unix)]
#[test]
fn sighup_reads_the_configuration_again_and_the_dashboard_keeps_serving() {
    let p = workspace();
    let mut s = Server::start(&p);
    let mut ws = s.ws("/ws/events");
    let pid = s.pid().to_string();
    let hangup = || {
        let hup = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap();
        assert!(hup.success());
    };

    // Added during a stream: served, run, and its events on the stream already open.
    pipeline_file(&p, "report", "@hourly");
    hangup();
    s.wait_json(
        "/api/pipelines",
        "the new pipeline",
        Duration::from_secs(10),
        |list| pipeline_names(list) == ["export", "report", "sync"],
    );
    assert!(s.alive(), "SIGHUP stopped the dashboard:\n{}", s.stderr());
    wait_until(Duration::from_secs(10), "the hang-up logged", || {
        s.stderr().contains("SIGHUP received")
    });
    let started = s.post_json("/api/pipelines/report/run", "");
    assert_eq!(started.status, 202, "{}", started.body);
    let id = started.json()["run_id"].as_str().unwrap().to_string();
    read_until(&mut ws, "the new pipeline's run end", |got| {
        got.iter().any(|e| {
            e["run_id"] == id.as_str() && e["stage"] == "pipeline" && e["event"] == "success"
        })
    });

    // Removed during the same stream: no longer served, the stream goes on.
    std::fs::remove_file(p.path().join("pipelines").join("export.toml")).unwrap();
    hangup();
    s.wait_json(
        "/api/pipelines",
        "the pipeline removed",
        Duration::from_secs(10),
        |list| pipeline_names(list) == ["report", "sync"],
    );
    let started = s.post_json("/api/pipelines/sync/run", "");
    assert_eq!(started.status, 202, "{}", started.body);
    let id = started.json()["run_id"].as_str().unwrap().to_string();
    read_until(&mut ws, "a run after the removal", |got| {
        got.iter().any(|e| {
            e["run_id"] == id.as_str() && e["stage"] == "pipeline" && e["event"] == "success"
        })
    });

    // A bad file on SIGHUP is logged and changes nothing.
    std::fs::write(
        p.path().join("pipelines").join("report.toml"),
        "[pipeline\n",
    )
    .unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_until(Duration::from_secs(10), "the refused reload logged", || {
        s.stderr().contains("reload refused")
    });
    assert!(s.stderr().contains("report.toml:1"), "{}", s.stderr());
    assert!(s.alive());
    assert_eq!(
        pipeline_names(&s.json("/api/pipelines")),
        ["report", "sync"]
    );
}

#[test]
fn a_pipelines_own_retention_counts_its_runs_apart_from_the_others() {
    let p = Project::new();
    p.write_config(
        "[workspace]\npipelines = [\"pipelines/*.toml\"]\n\n[retention]\nmax_runs = 5\n",
    );
    let dir = p.path().join("pipelines");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("fast.toml"),
        "[pipeline]\nname = \"fast\"\n\n[retention]\nmax_runs = 2\n\n\
         [[stages]]\nname = \"a\"\nrun = \"echo fast\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("nightly.toml"),
        "[pipeline]\nname = \"nightly\"\n\n[[stages]]\nname = \"a\"\nrun = \"echo nightly\"\n",
    )
    .unwrap();
    for name in [
        "nightly", "nightly", "nightly", "fast", "fast", "fast", "fast",
    ] {
        let out = p.run(&["run", name, "--quiet"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }

    let dry = p.run(&["prune", "--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let text = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(text.contains("beyond the newest 2 runs"), "{text}");
    assert!(text.contains("would remove 2 runs"), "{text}");

    let done = json_out(&p.run(&["prune", "--json"]));
    let removed = done["removed"].as_array().unwrap();
    assert_eq!(removed.len(), 2, "{done}");
    assert!(removed.iter().all(|r| r["pipeline"] == "fast"), "{done}");
    let count = |name: &str| {
        json_out(&p.run(&["runs", "--pipeline", name, "--json"]))
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count("fast"), 2);
    assert_eq!(
        count("nightly"),
        3,
        "the workspace's max_runs = 5 keeps them all"
    );
}

#[test]
fn doctor_judges_each_pipelines_runs_by_its_own_schedule() {
    let p = Project::new();
    p.write_config("[workspace]\npipelines = [\"pipelines/*.toml\"]\n");
    std::fs::create_dir_all(p.path().join("pipelines")).unwrap();
    for (name, schedule) in [
        ("nightly", "30 2 * * *"),
        ("sync", "*/15 * * * *"),
        ("fresh", "@hourly"),
    ] {
        pipeline_file(&p, name, schedule);
    }
    // sync's newest run started three hours ago: six occurrences missed. nightly ran now.
    let events = p.events_dir();
    std::fs::create_dir_all(&events).unwrap();
    let three_hours_ago = (chrono::Utc::now() - chrono::Duration::hours(3)).to_rfc3339();
    std::fs::write(
        events.join("pipeline_old-sync.jsonl"),
        format!(
            "{{\"run_id\":\"old-sync\",\"pipeline\":\"sync\",\"stage\":\"pipeline\",\"event\":\"start\",\"timestamp\":\"{three_hours_ago}\",\"msg\":\"go\"}}\n\
             {{\"run_id\":\"old-sync\",\"pipeline\":\"sync\",\"stage\":\"pipeline\",\"event\":\"success\",\"timestamp\":\"{three_hours_ago}\",\"msg\":\"ok\"}}\n"
        ),
    )
    .unwrap();
    let ran = p.run(&["run", "nightly", "--quiet"]);
    assert!(ran.status.success(), "{}", stderr(&ran));

    let out = p.run(&["doctor", "--json"]);
    let checks = json_out(&out);
    let check = |name: &str| doctor_check(&checks, name).clone();
    let sync = check("run files (sync)");
    assert_eq!(sync["ok"], false, "{sync}");
    assert!(
        sync["detail"].as_str().unwrap().contains("a run every 15m"),
        "{sync}"
    );
    assert!(
        sync["fix"].as_str().unwrap().contains("pipewatch run sync"),
        "{sync}"
    );
    assert_eq!(check("run files (nightly)")["ok"], true);
    let fresh = check("run files (fresh)");
    assert!(
        fresh["detail"]
            .as_str()
            .unwrap()
            .contains("no run of fresh yet"),
        "{fresh}"
    );
    assert_eq!(out.status.code(), Some(1));
}
