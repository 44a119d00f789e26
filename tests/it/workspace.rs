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

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect()
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
    assert_eq!(names(&list), ["export", "sync"]);
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
    assert_eq!(names(&s.json("/api/pipelines")), ["export", "sync"]);

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
    assert_eq!(names(&list), ["sync", "export"]);
    assert_eq!(list[1]["removed"], true);
    assert_eq!(list[1]["last_run"]["run_id"], export_id.as_str());
    assert_eq!(s.post_json("/api/pipelines/export/run", "").status, 404);
}
