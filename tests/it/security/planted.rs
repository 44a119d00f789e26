//! Files planted by another local user where pipewatch reads or writes (issue 11, findings 3
//! and 4): a FIFO named like a run file, a run lock or a cancel request must never be waited
//! on, and a symbolic link must never take a read or a write outside `events_dir` and
//! `state_dir`. Each test plants the file, then drives the real binary; a hang fails the test
//! within seconds (every wait has a deadline, and a hung server or runner is killed).

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::*;
use nix::sys::stat::Mode;

/// How long an answer may take here: generous for a debug build on a busy machine, short
/// next to a hang.
const PROMPT: Duration = Duration::from_secs(10);
/// How long a run, a start-up or a reindex may take.
const LONG: Duration = Duration::from_secs(30);

fn mkfifo(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    nix::unistd::mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
}

/// A finished run, in the original format, as another tool writes it.
fn write_finished_run(p: &Project, id: &str, msg: &str) {
    let ts = "2026-11-29T08:15:00.000Z";
    append(
        &run_path(p, id),
        &[
            line(id, "pipeline", "start", ts, msg),
            line(id, "pipeline", "success", ts, msg),
        ]
        .concat(),
    );
}

/// A file outside the project that no planted link may change; its content, to compare.
fn outside_target(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let text = format!("{name}: must stay as it is\n");
    std::fs::write(&path, &text).unwrap();
    (path, text)
}

/// The id of the one run whose lock file appears in `<state_dir>/runs`.
fn wait_for_lock(p: &Project) -> String {
    let runs = p.state_dir().join("runs");
    let mut id = None;
    wait_until(LONG, "the run's lock file", || {
        id = std::fs::read_dir(&runs).ok().and_then(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.to_string();
                    name.strip_suffix(".lock").map(str::to_string)
                })
                .next()
        });
        id.is_some()
    });
    id.unwrap()
}

#[test]
fn a_fifo_named_like_a_run_file_is_never_waited_on() {
    let p = Project::with_config(QUICK);
    write_finished_run(&p, "good", "fine");
    let s = Server::start(&p);
    s.wait_run("good", LONG, |r| r["status"] == "success");
    mkfifo(&run_path(&p, "fifo"));

    // Many readers at once: each used to hold a thread of the blocking pool for ever, until
    // none was left for the index and `/api/runs` hung too.
    let (tx, rx) = mpsc::channel();
    for _ in 0..40 {
        let tx = tx.clone();
        let answer = s.spawn_get("/api/runs/fifo/events");
        std::thread::spawn(move || {
            let _ = tx.send(answer.recv());
        });
    }
    drop(tx);
    let deadline = Instant::now() + PROMPT;
    for n in 0..40 {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = match rx.recv_timeout(left) {
            Ok(Ok(Ok(r))) => r,
            other => {
                panic!("request {n} for a FIFO run file: no answer within {PROMPT:?} ({other:?})")
            }
        };
        assert_eq!(r.status, 404, "{}", r.body);
        r.assert_error();
        assert!(r.body.contains("not a regular file"), "{}", r.body);
    }
    let runs = s.get_within("/api/runs", PROMPT);
    assert_eq!(runs.status, 200, "{}", runs.body);
    let ids: Vec<String> = runs
        .json()
        .as_array()
        .expect("a list of runs")
        .iter()
        .filter_map(|r| r["run_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids, ["good"]);
    assert_eq!(s.get_within("/api/health", PROMPT).json()["status"], "ok");
    // The tailer's next listing of the folder says what it skipped.
    wait_until(LONG, "a warning naming the FIFO", || {
        let log = s.stderr();
        log.contains("pipeline_fifo.jsonl is a FIFO, not a regular file")
    });
}

#[test]
fn a_fifo_run_file_hangs_neither_start_up_nor_reindex() {
    let p = Project::with_config(QUICK);
    write_finished_run(&p, "good", "fine");
    mkfifo(&run_path(&p, "fifo"));

    // No index yet: start-up rebuilds it from every run file.
    let mut s = Server::start_with(
        &p,
        Options {
            ready_within: LONG,
            ..Options::default()
        },
    );
    s.wait_run("good", LONG, |r| r["status"] == "success");
    assert_eq!(s.get_within("/api/runs/fifo", PROMPT).status, 404);
    s.stop();
    let log = s.stderr();
    assert!(
        log.contains("pipeline_fifo.jsonl"),
        "no warning names the FIFO:\n{log}"
    );

    let mut reindex = p.spawn(&["reindex"]);
    let status = wait_child(&mut reindex, LONG);
    let out = reindex.wait_with_output().unwrap();
    assert!(status.success(), "reindex: {status}\n{}", stderr(&out));
    assert!(
        stderr(&out).contains("pipeline_fifo.jsonl"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_fifo_as_a_run_lock_stalls_neither_the_api_nor_metrics() {
    let p = Project::with_config(QUICK);
    let id = "locked";
    let ts = "2026-11-29T08:15:00.000Z";
    append(
        &run_path(&p, id),
        &[
            line(id, "pipeline", "start", ts, "go"),
            line(id, "a", "start", ts, "go"),
        ]
        .concat(),
    );
    mkfifo(&p.state_dir().join("runs").join(format!("{id}.lock")));
    let s = Server::start(&p);

    // The liveness check (every 2 s, under the index's lock) used to wait on the FIFO for
    // ever, and every request that needs the index with it. It must find no live runner
    // behind a lock that is no lock, so the run ends `abandoned`, while everything answers.
    let deadline = Instant::now() + LONG;
    loop {
        let runs = s.get_within("/api/runs", PROMPT);
        assert_eq!(runs.status, 200, "{}", runs.body);
        assert_eq!(s.get_within("/metrics", PROMPT).status, 200);
        let run = s.get_within(&format!("/api/runs/{id}"), PROMPT).json();
        if run["status"] == "abandoned" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "run {id} still {} after {LONG:?}",
            run["status"]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = s.stderr();
    assert!(
        log.contains(&format!("{id}.lock")),
        "no warning names the FIFO:\n{log}"
    );
}

#[test]
fn a_fifo_as_a_cancel_request_does_not_keep_a_run_past_its_timeout() {
    let p =
        Project::with_config("timeout = \"3s\"\n[[stages]]\nname = \"a\"\nrun = \"sleep 30\"\n");
    let mut runner = p.spawn(&["run"]);
    let id = wait_for_lock(&p);
    mkfifo(&p.state_dir().join("runs").join(format!("{id}.cancel")));

    // Its cancel poll used to block the runner's loop on the FIFO: the run outlived its
    // timeout. (Killed, with a failure, after `LONG`.)
    let status = wait_child(&mut runner, LONG);
    let out = runner.wait_with_output().unwrap();
    assert!(!status.success(), "a timed-out run exits non-zero");
    let events = p.journal();
    let end = run_end(&events);
    assert_eq!(end["event"], "failure", "{end}");
    assert_eq!(end["data"]["reason"], "timeout", "{end}");
    assert!(
        stderr(&out).contains(&format!("{id}.cancel")),
        "no warning names the FIFO:\n{}",
        stderr(&out)
    );
}

#[test]
fn a_symlinked_run_file_is_never_served() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.jsonl");
    let ts = "2026-11-29T08:15:00.000Z";
    std::fs::write(
        &secret,
        [
            line("x", "pipeline", "start", ts, "TOP-SECRET"),
            line("x", "pipeline", "success", ts, "TOP-SECRET"),
        ]
        .concat(),
    )
    .unwrap();
    let p = Project::with_config(QUICK);
    // Run ids are listed in order: `y` is read after the link `x`.
    write_finished_run(&p, "y", "fine");
    symlink(&secret, run_path(&p, "x")).unwrap();

    let s = Server::start(&p);
    s.wait_run("y", LONG, |r| r["status"] == "success");
    let events = s.get_within("/api/runs/x/events", PROMPT);
    assert_eq!(events.status, 404, "{}", events.body);
    assert!(!events.body.contains("TOP-SECRET"), "{}", events.body);
    assert_eq!(s.get_within("/api/runs/x", PROMPT).status, 404);
    let list = s.get_within("/api/runs", PROMPT);
    assert!(!list.body.contains("TOP-SECRET"), "{}", list.body);
    let mut ws = s.ws("/ws/events/x");
    let streamed = read_for(&mut ws, Duration::from_secs(1));
    assert!(
        streamed.iter().all(|e| e["msg"] != "TOP-SECRET"),
        "{streamed:?}"
    );
    let log = s.stderr();
    assert!(
        log.contains("pipeline_x.jsonl"),
        "no warning names the link:\n{log}"
    );
}

#[test]
fn planted_temporary_file_links_redirect_no_write() {
    let outside = tempfile::tempdir().unwrap();
    let (scheduler_target, scheduler_text) = outside_target(outside.path(), "scheduler");
    let (cancel_target, cancel_text) = outside_target(outside.path(), "cancel");
    let (groups_target, groups_text) = outside_target(outside.path(), "groups");
    let p = Project::with_config(
        "[[stages]]\nname = \"a\"\nrun = \"sleep 1\"\n\
         [[stages]]\nname = \"b\"\nrun = \"sleep 30\"\nneeds = [\"a\"]\n",
    );
    let state = p.state_dir();
    let runs = state.join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    symlink(&scheduler_target, state.join("scheduler.json.tmp")).unwrap();
    let s = Server::start(&p);

    // The built-in scheduler's state file.
    let r = s.post_json("/api/scheduler/disable", "{}");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["enabled"], false);
    let saved = state.join("scheduler.json");
    assert!(std::fs::symlink_metadata(&saved).unwrap().is_file());
    assert!(std::fs::read_to_string(&saved).unwrap().contains("false"));

    // A run's record of its process groups (rewritten when `b` starts), then its cancel
    // request.
    let r = s.post_json("/api/pipeline/run", "{}");
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["run_id"].as_str().unwrap().to_string();
    symlink(&groups_target, runs.join(format!("{id}.groups.tmp"))).unwrap();
    symlink(&cancel_target, runs.join(format!("{id}.cancel.tmp"))).unwrap();
    s.wait_run(&id, LONG, |r| {
        r["stages"].as_array().is_some_and(|st| {
            st.iter()
                .any(|s| s["name"] == "b" && s["status"] == "running")
        })
    });
    let groups = runs.join(format!("{id}.groups"));
    wait_until(LONG, "the run's process groups recorded", || {
        std::fs::symlink_metadata(&groups).is_ok_and(|m| m.is_file() && m.len() > 0)
    });
    let r = s.post_json(&format!("/api/runs/{id}/cancel"), "{}");
    assert_eq!(r.status, 202, "{}", r.body);
    s.wait_run(&id, LONG, |r| r["status"] == "cancelled");

    let mut overwritten = Vec::new();
    for (what, path, text) in [
        ("scheduler.json.tmp", &scheduler_target, &scheduler_text),
        (".groups.tmp", &groups_target, &groups_text),
        (".cancel.tmp", &cancel_target, &cancel_text),
    ] {
        let now = std::fs::read_to_string(path).unwrap();
        if &now != text {
            overwritten.push(format!("{what} wrote {now:?} through its link"));
        }
    }
    assert!(overwritten.is_empty(), "{overwritten:#?}");
}

#[test]
fn a_planted_index_link_or_fifo_is_moved_aside_not_written_through() {
    let outside = tempfile::tempdir().unwrap();
    let (target, text) = outside_target(outside.path(), "index");
    let missing = outside.path().join("new.db");
    for plant in ["link", "dangling link", "fifo"] {
        let p = Project::with_config(QUICK);
        write_finished_run(&p, "good", "fine");
        let index = p.state_dir().join("index.db");
        std::fs::create_dir_all(p.state_dir()).unwrap();
        match plant {
            "link" => symlink(&target, &index).unwrap(),
            "dangling link" => symlink(&missing, &index).unwrap(),
            _ => mkfifo(&index),
        }
        let mut s = Server::start_with(
            &p,
            Options {
                ready_within: LONG,
                ..Options::default()
            },
        );
        s.wait_run("good", LONG, |r| r["status"] == "success");
        s.stop();
        assert!(
            std::fs::symlink_metadata(&index).unwrap().is_file(),
            "{plant}: the index is a new regular file"
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), text, "{plant}");
        assert!(
            !missing.exists(),
            "{plant}: the index was created outside state_dir"
        );
    }
}
