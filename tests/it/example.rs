//! The examples through the real binary: `init --workspace` (three pipelines that run by name
//! right away, one of them failing when its run id says so) and `serve --example`, which
//! writes the example workspace into the user's data folder (pointed at a temporary folder
//! here), serves it and starts one run of each pipeline — and keeps serving a one-pipeline
//! example that an earlier version wrote there.
//!
//! The sync's outcome is picked by the run id (`--run-id`): its upload fails in runs started
//! in minutes 40–49 of the hour, which the id's leading time says.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use serde_json::Value;

use crate::support::{
    Project, ev, free_port, http, json_out, logs, pipeline_names, read_events, run_end, run_path,
    server, stderr, wait_until,
};

/// A run id whose start time is in minute `minute` of the hour.
fn run_id_at(minute: u32) -> String {
    format!("20261203T04{minute:02}12345Z-abcdef")
}

#[test]
fn init_workspace_writes_three_pipelines_that_run_by_name() {
    let p = Project::new();
    let out = p.run(&["init", "--workspace"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let config = std::fs::read_to_string(p.path().join("pipewatch.toml")).unwrap();
    assert!(config.contains("[workspace]"), "{config}");
    assert!(config.contains("# "), "the config is commented");

    let list = json_out(&p.run(&["pipelines", "--json"]));
    assert_eq!(pipeline_names(&list), ["export", "report", "sync"]);
    let schedules: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["schedule"].as_str().unwrap())
        .collect();
    assert_eq!(schedules, ["30 2 * * *", "@hourly", "*/15 * * * *"]);

    let doctor = json_out(&p.run(&["doctor", "--json"]));
    let config_check = doctor
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "config")
        .unwrap();
    assert_eq!(config_check["ok"], true, "{config_check}");

    // Each runs by name: report and export succeed, with output on both streams.
    for name in ["report", "export"] {
        let out = p.run(&["run", name, "--no-notify"]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
    }
    let ended = |id: &str| read_events(&run_path(&p, id));
    let events: Vec<Value> = p.journals().iter().flat_map(|j| read_events(j)).collect();
    assert!(!logs(&events, "compress", "stderr").is_empty());
    assert!(!logs(&events, "aggregate", "stdout").is_empty());

    // The sync succeeds, except in runs started in minutes 40-49.
    let fine = run_id_at(15);
    let out = p.run(&["run", "sync", "--no-notify", "--run-id", &fine]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let events = ended(&fine);
    assert_eq!(run_end(&events)["event"], "success");
    assert_eq!(ev(&events, "upload", "success").len(), 1);
    assert!(events.iter().all(|e| e["pipeline"] == "sync"));

    let failing = run_id_at(45);
    let out = p.run(&["run", "sync", "--no-notify", "--run-id", &failing]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let events = ended(&failing);
    assert_eq!(run_end(&events)["event"], "failure");
    assert_eq!(ev(&events, "upload", "failure").len(), 1);
    assert_eq!(ev(&events, "orders", "success").len(), 1);
    assert!(
        logs(&events, "upload", "stderr")
            .iter()
            .any(|l| l.contains("503")),
        "{events:?}"
    );

    let list = json_out(&p.run(&["pipelines", "--json"]));
    let status: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["last_run"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["success", "success", "failure"]);
}

#[test]
fn init_workspace_never_overwrites_and_names_the_files_in_the_way() {
    let p = Project::new();
    let dir = p.path().join("pipelines");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("sync.toml"), "mine").unwrap();
    let out = p.run(&["init", "--workspace"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("sync.toml already exists") && err.contains("never overwrites"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("sync.toml")).unwrap(),
        "mine"
    );
    assert!(!p.path().join("pipewatch.toml").exists());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

    // Next to a one-pipeline example, the workspace would replace its pipewatch.toml.
    let q = Project::new();
    assert!(q.run(&["init"]).status.success());
    let out = q.run(&["init", "--workspace"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("pipewatch.toml already exists"));
    assert!(!q.path().join("pipelines").exists());
}

/// `serve --example` with the user's data folder in `data`, its first line read.
fn serve_example(
    p: &Project,
    data: &Path,
    port: u16,
) -> (Child, BufReader<std::process::ChildStdout>, String) {
    let mut cmd = p.cmd(&["serve", "--example", "--bind", &format!("127.0.0.1:{port}")]);
    for var in ["XDG_DATA_HOME", "HOME", "LOCALAPPDATA"] {
        cmd.env(var, data);
    }
    // The first runs at full speed: the test watches them end, not their pace.
    cmd.env("EXAMPLE_STEP_SECONDS", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    (child, out, first)
}

/// Where `serve --example` keeps the example when the user's data folder is `data`.
fn example_dir(data: &Path) -> PathBuf {
    let base = if cfg!(target_os = "macos") {
        data.join("Library").join("Application Support")
    } else {
        data.to_path_buf()
    };
    base.join("pipewatch").join("example")
}

/// How many of the runs `serve --example` started itself (source `manual`; the built-in
/// scheduler's have `scheduler`) have ended, whichever way, in the example in `dir` (skipped
/// too: one that meets a scheduled run of its pipeline, at a quarter hour, is skipped).
fn ended_first_runs(dir: &Path) -> usize {
    let Ok(files) = std::fs::read_dir(dir.join("logs").join("events")) else {
        return 0;
    };
    files
        .filter_map(|f| std::fs::read_to_string(f.ok()?.path()).ok())
        .filter(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|e| {
                    e["stage"] == "pipeline"
                        && e["source"] == "manual"
                        && ["success", "failure", "skipped", "cancelled"]
                            .contains(&e["event"].as_str().unwrap_or_default())
                })
        })
        .count()
}

/// How long a run of the example may take: its stages are real programs (the shell's, and
/// under Windows cmd.exe's), several seconds under Wine on a loaded machine.
const EXAMPLE_RUN_WITHIN: Duration = Duration::from_secs(90);

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn serve_example_serves_a_workspace_from_the_data_folder_and_reuses_it() {
    let p = Project::new();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let (child, mut out, first) = serve_example(&p, data.path(), port);
    let dir = first
        .trim()
        .strip_prefix("wrote the example workspace into ")
        .and_then(|rest| rest.split(" (").next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{first:?}"));
    assert_eq!(dir, example_dir(data.path()), "{first:?}");
    assert!(dir.join("pipewatch.toml").is_file(), "{}", dir.display());
    let mut second = String::new();
    out.read_line(&mut second).unwrap();
    assert!(
        second.contains(&format!("http://127.0.0.1:{port}/")),
        "{second:?}"
    );

    // Three pipelines, each with its first run on the page's list once it has ended.
    let pipelines = || {
        let r = http::request(port, "GET", "/api/pipelines", &[], b"").unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };
    assert_eq!(pipeline_names(&pipelines()), ["export", "report", "sync"]);
    wait_until(EXAMPLE_RUN_WITHIN, "the example's first runs end", || {
        ended_first_runs(&dir) == 3
    });
    wait_until(
        EXAMPLE_RUN_WITHIN,
        "the first runs on /api/pipelines",
        || {
            pipelines()
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["last_run"]["run_id"].is_string())
        },
    );
    stop(child);
    // Nothing written where it was started.
    assert_eq!(std::fs::read_dir(p.path()).unwrap().count(), 0);

    // Started again: the same folder, served as it is.
    let (child, _out, first) = serve_example(&p, data.path(), free_port());
    assert_eq!(
        first.trim(),
        format!("serving the example workspace in {}", dir.display())
    );
    wait_until(EXAMPLE_RUN_WITHIN, "the second start's runs end", || {
        ended_first_runs(&dir) == 6
    });
    stop(child);
}

/// An earlier version wrote the one-pipeline example into the data folder: it is served as
/// it is, with its one pipeline, and nothing is added to it.
#[test]
fn serve_example_keeps_serving_an_earlier_one_pipeline_example() {
    let p = Project::new();
    let data = tempfile::tempdir().unwrap();
    let dir = example_dir(data.path());
    std::fs::create_dir_all(&dir).unwrap();
    let out = server::pipewatch(&dir).arg("init").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let before = std::fs::read_to_string(dir.join("pipewatch.toml")).unwrap();

    let port = free_port();
    let (child, mut out, first) = serve_example(&p, data.path(), port);
    assert_eq!(
        first.trim(),
        format!("serving the example pipeline in {}", dir.display())
    );
    // The second line: listening.
    out.read_line(&mut String::new()).unwrap();
    let r = http::request(port, "GET", "/api/pipelines", &[], b"").unwrap();
    assert_eq!(pipeline_names(&r.json()), ["translation"]);
    wait_until(EXAMPLE_RUN_WITHIN, "the example's first run ends", || {
        ended_first_runs(&dir) == 1
    });
    stop(child);
    assert!(!dir.join("pipelines").exists());
    assert_eq!(
        std::fs::read_to_string(dir.join("pipewatch.toml")).unwrap(),
        before
    );
}
