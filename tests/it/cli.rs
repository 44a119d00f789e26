//! The terminal commands through the real binary: `runs`, `tail`, `doctor`, `prune`,
//! `completions`, `--version`. Run files are written by hand where the content must be known,
//! or by a real `pipewatch run` where a live runner matters (its lock). The dashboard is the
//! real `pipewatch serve`, bound to the address in the project's configuration (that is where
//! `tail` and `doctor` look for it).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::support::{
    Options, Project, QUICK, Server, doctor_check, free_port, json_out, seqs, stage, stderr,
    wait_child, wait_until,
};

const LONG: Duration = Duration::from_secs(30);

/// A project whose `[server] bind` is a free port, with one stage and `extra` config.
fn project(extra: &str) -> (Project, u16) {
    let port = free_port();
    let p = Project::with_config(&format!(
        "[[stages]]\nname = \"a\"\nrun = \"echo hi\"\n[server]\nbind = \"127.0.0.1:{port}\"\n{extra}"
    ));
    (p, port)
}

/// `pipewatch serve` at the configured address (where `tail` and `doctor` look for it).
fn serve(p: &Project) -> Server {
    Server::start_with(
        p,
        Options {
            bind: None,
            ..Options::default()
        },
    )
}

fn line(id: &str, seq: u64, stage: &str, event: &str, ts: &str, msg: &str, data: Value) -> String {
    let mut v = json!({
        "seq": seq, "run_id": id, "pipeline": "p", "stage": stage, "event": event,
        "level": if event == "failure" { "error" } else { "info" },
        "timestamp": ts, "source": "cli", "msg": msg,
    });
    if !data.is_null() {
        v["data"] = data;
    }
    format!("{v}\n")
}

/// Appends `text` to a run's file, creating the folder and file.
fn append(p: &Project, id: &str, text: &str) {
    std::fs::create_dir_all(p.events_dir()).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p.events_dir().join(format!("pipeline_{id}.jsonl")))
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.flush().unwrap();
}

/// A finished run: start, stage a, its final event, the run's final event.
fn finished_run(p: &Project, id: &str, day: &str, end: &str) {
    let t = |s: &str| format!("{day}T{s}Z");
    let mut text = run_line(id, 0, "start", &t("08:00:00.000"), "run started");
    text += &line(
        id,
        1,
        "a",
        "start",
        &t("08:00:00.100"),
        "stage a started",
        json!({"attempt": 1}),
    );
    text += &line(
        id,
        2,
        "a",
        end,
        &t("08:00:01.100"),
        &format!("stage a {end}"),
        json!({"exit_code": if end == "success" { 0 } else { 1 }, "duration_ms": 1000}),
    );
    text += &line(
        id,
        3,
        "pipeline",
        end,
        &t("08:00:02.000"),
        &format!("run {end}"),
        json!({"duration_ms": 2000}),
    );
    append(p, id, &text);
}

fn ids(runs: &Value) -> Vec<&str> {
    runs.as_array()
        .expect("an array")
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect()
}

#[test]
fn runs_lists_a_folder_of_known_runs_newest_first() {
    let (p, _) = project("");
    finished_run(&p, "r1", "2026-11-27", "success");
    finished_run(&p, "r2", "2026-11-28", "failure");
    append(
        &p,
        "r3",
        &run_line("r3", 0, "start", "2026-11-29T08:00:00.000Z", "go"),
    );

    // No index yet: read from the files.
    let o = p.run(&["runs"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let rows: Vec<&str> = text.lines().collect();
    assert!(
        rows[0].starts_with("RUN") && rows[0].contains("STATUS"),
        "{text}"
    );
    assert!(
        rows[1].starts_with("r3") && rows[1].contains("running"),
        "{text}"
    );
    assert!(
        rows[2].starts_with("r2") && rows[2].contains("failure"),
        "{text}"
    );
    assert!(
        rows[3].starts_with("r1") && rows[3].contains("success") && rows[3].contains("2.0s"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "no colour off a terminal: {text:?}");

    let runs = json_out(&p.run(&["runs", "--json"]));
    assert_eq!(ids(&runs), ["r3", "r2", "r1"]);
    assert_eq!(runs[2]["status"], "success");
    assert_eq!(runs[2]["duration_ms"], 2000);
    assert_eq!(runs[2]["source"], "cli");
    assert_eq!(runs[2]["started_at"], "2026-11-27T08:00:00.000Z");
    assert_eq!(
        ids(&json_out(
            &p.run(&["runs", "list", "--status", "failure", "--json"])
        )),
        ["r2"]
    );
    assert_eq!(
        ids(&json_out(&p.run(&["runs", "--limit", "1", "--json"]))),
        ["r3"]
    );

    // With the dashboard's index on disk, runs written after it (the dashboard down) are
    // still listed: the command catches up from the files without writing the index.
    let o = p.run(&["reindex"]);
    assert!(o.status.success(), "{}", stderr(&o));
    finished_run(&p, "r4", "2026-11-29", "success");
    append(
        &p,
        "r3",
        &run_line("r3", 1, "cancelled", "2026-11-29T08:00:05.000Z", "stop"),
    );
    let runs = json_out(&p.run(&["runs", "--json"]));
    assert_eq!(ids(&runs), ["r4", "r3", "r2", "r1"]);
    assert_eq!(runs[1]["status"], "cancelled");

    let o = p.run(&["runs", "--status", "bogus"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn runs_show_a_failed_run_with_the_end_of_its_stderr() {
    let (p, _) = project("");
    let id = "20261129T080000Z-aaaaaa";
    let ts = "2026-11-29T08:00:00.000Z";
    let mut text = line(id, 0, "pipeline", "start", ts, "run started", json!(null));
    text += &line(id, 1, "extract", "start", ts, "go", json!({"attempt": 1}));
    text += &line(
        id,
        2,
        "extract",
        "success",
        "2026-11-29T08:00:01.000Z",
        "ok",
        json!({"exit_code": 0, "duration_ms": 1000}),
    );
    text += &line(id, 3, "load", "start", ts, "go", json!({"attempt": 1}));
    let mut seq = 4;
    for i in 1..=15 {
        text += &line(
            id,
            seq,
            "load",
            "log",
            ts,
            &format!("err-{i:02}"),
            json!({"stream": "stderr"}),
        );
        seq += 1;
    }
    text += &line(id, seq, "load", "retry", ts, "again", json!({"attempt": 2}));
    text += &line(
        id,
        seq + 1,
        "load",
        "failure",
        "2026-11-29T08:00:03.000Z",
        "stage load failed",
        json!({"exit_code": 2, "attempt": 2, "duration_ms": 500}),
    );
    text += &line(
        id,
        seq + 2,
        "pipeline",
        "failure",
        "2026-11-29T08:00:04.000Z",
        "run failed",
        json!({"reason": "stage_failed"}),
    );
    append(&p, id, &text);

    let o = p.run(&["runs", "show", id]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        out.contains("failure: stage failed: load (exit code 2)"),
        "{out}"
    );
    let load = out
        .lines()
        .find(|l| l.starts_with("load"))
        .expect("a load row");
    assert!(
        load.contains("failure") && load.ends_with("exit code 2"),
        "{load}"
    );
    assert!(out.contains("err-06") && out.contains("err-15"), "{out}");
    assert!(!out.contains("err-05"), "only the last 10 lines: {out}");

    let v = json_out(&p.run(&["runs", "show", id, "--json"]));
    assert_eq!(v["run_id"], id);
    assert_eq!(v["status"], "failure");
    let stages = v["stages"].as_array().unwrap();
    assert_eq!(stages[0]["name"], "extract");
    assert!(stages[0].get("stderr_tail").is_none());
    assert_eq!(stages[1]["exit_code"], 2);
    assert_eq!(stages[1]["attempts"], 2);
    let tail: Vec<&str> = stages[1]["stderr_tail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(tail.len(), 10);
    assert_eq!(tail[9], "err-15");

    let o = p.run(&["runs", "show", "no-such-run"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no run no-such-run"), "{}", stderr(&o));
    let o = p.run(&["runs", "show", "../etc"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("invalid run id"), "{}", stderr(&o));
}

/// A running `pipewatch tail`, its stdout lines and stderr text collected as they come.
struct Tail {
    child: Child,
    lines: mpsc::Receiver<String>,
    err: Arc<Mutex<String>>,
}

impl Tail {
    fn start(p: &Project, args: &[&str]) -> Tail {
        let mut child = p.spawn(args);
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let err = Arc::new(Mutex::new(String::new()));
        let e = err.clone();
        let stream = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(stream).lines().map_while(Result::ok) {
                let mut s = e.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        });
        Tail { child, lines, err }
    }

    fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// The next `n` events it printed.
    fn next(&self, n: usize) -> Vec<Value> {
        (0..n)
            .map(|_| {
                let l = self.lines.recv_timeout(LONG).unwrap_or_else(|_| {
                    panic!("tail printed no more events; stderr: {}", self.stderr())
                });
                serde_json::from_str(&l).unwrap_or_else(|e| panic!("{l:?}: {e}"))
            })
            .collect()
    }

    /// Waits for it to end; the rest of its output and its exit code.
    fn finish(mut self) -> (Vec<Value>, i32) {
        let status = wait_child(&mut self.child, LONG);
        std::thread::sleep(Duration::from_millis(50));
        let rest = self
            .lines
            .try_iter()
            .map(|l| serde_json::from_str(&l).unwrap())
            .collect();
        (rest, status.code().unwrap_or(-1))
    }
}

/// A run's first line: its run-level `start`.
fn started(id: &str) -> String {
    run_line(id, 0, "start", "2026-11-29T08:00:00.000Z", "go")
}

/// A run-level event without data.
fn run_line(id: &str, seq: u64, event: &str, ts: &str, msg: &str) -> String {
    line(id, seq, "pipeline", event, ts, msg, json!(null))
}

fn log_line(id: &str, seq: u64, msg: &str) -> String {
    line(
        id,
        seq,
        "a",
        "log",
        "2026-11-29T08:00:00.500Z",
        msg,
        json!({"stream": "stdout"}),
    )
}

#[test]
fn tail_follows_a_run_file_with_the_dashboard_down() {
    let (p, _) = project("");
    let id = "tail-file";
    append(&p, id, &started(id));
    let t = Tail::start(&p, &["tail", id, "--json"]);
    assert_eq!(seqs(&t.next(1)), [0]);
    for s in 1..=3 {
        append(&p, id, &log_line(id, s, &format!("line {s}")));
    }
    assert_eq!(seqs(&t.next(3)), [1, 2, 3]);
    // A line being written is not read until it is complete.
    let last = run_line(id, 4, "failure", "2026-11-29T08:00:01.000Z", "run failed");
    append(&p, id, &last[..10]);
    std::thread::sleep(Duration::from_millis(300));
    append(&p, id, &last[10..]);
    let (rest, code) = t.finish();
    assert_eq!(seqs(&rest), [4]);
    assert_eq!(rest[0]["event"], "failure");
    assert_eq!(code, 1, "a failed run exits 1");

    // Pretty output of a finished run: each event once, then exit with the run's result.
    let o = p.run(&["tail", id]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.lines().count(), 5, "{out}");
    assert!(
        out.contains("line 2") && out.contains("run failed"),
        "{out}"
    );
    assert!(stderr(&o).contains("from its file"), "{}", stderr(&o));

    let o = p.run(&["tail", "nobody-knows-me"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no run nobody-knows-me"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn tail_follows_through_the_dashboard_and_across_its_restart_without_repeating_a_line() {
    let (p, _) = project("");
    let id = "tail-ws";
    append(&p, id, &started(id));
    let mut d = serve(&p);
    let t = Tail::start(&p, &["tail", id, "--json"]);
    assert_eq!(seqs(&t.next(1)), [0]);
    wait_until(LONG, "tail to use the dashboard", || {
        t.stderr().contains("through the dashboard")
    });
    for s in 1..=3 {
        append(&p, id, &log_line(id, s, "live"));
    }
    assert_eq!(seqs(&t.next(3)), [1, 2, 3]);

    d.stop();
    wait_until(LONG, "tail to fall back to the file", || {
        t.stderr().contains("went away")
    });
    for s in 4..=6 {
        append(&p, id, &log_line(id, s, "while down"));
    }
    assert_eq!(seqs(&t.next(3)), [4, 5, 6]);

    let _d = serve(&p);
    wait_until(LONG, "tail to go back to the dashboard", || {
        t.stderr().matches("through the dashboard").count() >= 2
    });
    for s in 7..=8 {
        append(&p, id, &log_line(id, s, "after"));
    }
    append(
        &p,
        id,
        &run_line(id, 9, "success", "2026-11-29T08:00:09.000Z", "done"),
    );
    let got = t.next(3);
    let (rest, code) = t.finish();
    assert_eq!(seqs(&got), [7, 8, 9]);
    assert!(
        rest.is_empty(),
        "nothing after the end, nothing twice: {rest:?}"
    );
    assert_eq!(code, 0);
}

#[test]
fn tail_latest_waits_for_the_next_run() {
    let (p, _) = project("");
    // A finished run is not "the latest running run".
    finished_run(&p, "old", "2026-11-28", "success");
    let t = Tail::start(&p, &["tail", "--latest", "--json"]);
    wait_until(LONG, "tail to wait", || {
        t.stderr().contains("waiting for the next one")
    });
    let o = p.run(&["run", "--quiet", "--no-notify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (events, code) = t.finish();
    assert_eq!(code, 0, "{}", t_err(&events));
    let run_ids: std::collections::BTreeSet<&str> = events
        .iter()
        .map(|e| e["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(run_ids.len(), 1);
    assert_ne!(run_ids.first().copied(), Some("old"));
    assert_eq!(events.first().unwrap()["event"], "start");
    assert_eq!(events.last().unwrap()["event"], "success");
    assert_eq!(seqs(&events), (0..events.len() as u64).collect::<Vec<_>>());
}

fn t_err(events: &[Value]) -> String {
    format!("{events:?}")
}

fn doctor(p: &Project, env: &[(&str, &std::ffi::OsStr)]) -> (Value, i32) {
    let mut c = p.cmd(&["doctor", "--json"]);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    (json_out(&o), o.status.code().unwrap_or(-1))
}

fn set_mtime(path: &Path, ago: Duration) {
    let f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - ago).unwrap();
}

#[test]
fn doctor_fails_each_check_in_turn_with_its_fix() {
    let (p, _) = project("");
    // No events folder.
    let (checks, code) = doctor(&p, &[]);
    assert_eq!(code, 1);
    assert_eq!(doctor_check(&checks, "config")["ok"], true);
    let c = doctor_check(&checks, "events folder");
    assert_eq!(c["ok"], false);
    assert!(c["fix"].as_str().unwrap().contains("mkdir -p"), "{c}");

    // A newest run older than two intervals (every 15 minutes) plus the grace.
    finished_run(&p, "r1", "2026-11-28", "success");
    let file = p.events_dir().join("pipeline_r1.jsonl");
    set_mtime(&file, Duration::from_secs(2 * 3600));
    let (checks, _) = doctor(&p, &[]);
    assert_eq!(doctor_check(&checks, "events folder")["ok"], true);
    let c = doctor_check(&checks, "run files");
    assert_eq!(c["ok"], false, "{c}");
    assert!(
        c["detail"].as_str().unwrap().contains("a run every 15m"),
        "{c}"
    );
    set_mtime(&file, Duration::from_secs(60));
    assert_eq!(doctor_check(&doctor(&p, &[]).0, "run files")["ok"], true);

    // The dashboard down: a failed check with the fix, not a crash; then up.
    let (checks, code) = doctor(&p, &[]);
    assert_eq!(code, 1);
    let c = doctor_check(&checks, "dashboard");
    assert_eq!(c["ok"], false);
    assert!(
        c["fix"].as_str().unwrap().contains("pipewatch serve"),
        "{c}"
    );
    assert_eq!(doctor_check(&checks, "websocket")["level"], "skip");
    let _d = serve(&p);
    let (checks, _) = doctor(&p, &[]);
    let c = doctor_check(&checks, "dashboard");
    assert_eq!(c["ok"], true, "{c}");
    assert!(
        c["detail"].as_str().unwrap().contains("events ingested"),
        "{c}"
    );
    assert_eq!(doctor_check(&checks, "websocket")["ok"], true);
    // The built-in scheduler runs inside the dashboard: with it up, that check passes.
    assert_eq!(doctor_check(&checks, "scheduler")["ok"], true, "{checks:?}");

    // The scheduler's tool missing: cron with a PATH that has no crontab.
    let cron = Project::with_config(
        "[[stages]]\nname = \"a\"\nrun = \"echo hi\"\n[scheduler]\nbackend = \"cron\"\n",
    );
    let empty = tempfile::tempdir().unwrap();
    let (checks, code) = doctor(&cron, &[("PATH", empty.path().as_os_str())]);
    assert_eq!(code, 1);
    let c = doctor_check(&checks, "scheduler");
    assert_eq!(c["ok"], false);
    assert!(c["detail"].as_str().unwrap().contains("crontab"), "{c}");
    assert!(c["fix"].as_str().unwrap().contains("cron"), "{c}");

    // A configuration that does not load is a failed check too.
    let bad = Project::with_config("[[stages]]\nname = \"a\"\nrun = \"x\"\ntimeout = \"soon\"\n");
    let (checks, code) = doctor(&bad, &[]);
    assert_eq!(code, 1);
    assert!(
        doctor_check(&checks, "config")["detail"]
            .as_str()
            .unwrap()
            .contains("timeout")
    );

    // The text form: marks and fixes.
    let o = p.run(&["doctor"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("✓ config"), "{out}");
}

#[test]
fn prune_removes_old_runs_but_never_a_running_one() {
    let p = Project::with_config(&format!(
        "[[stages]]\nname = \"wait\"\nrun = '''{}'''\n[retention]\nmax_age = \"1s\"\n",
        stage::GATE
    ));
    finished_run(&p, "old1", "2026-01-01", "success");
    finished_run(&p, "old2", "2026-01-02", "failure");
    assert!(p.run(&["reindex"]).status.success());
    let mut running = p.spawn(&["run", "--quiet", "--no-notify"]);
    wait_until(LONG, "the run to start", || p.journals().len() == 3);
    let live = p
        .journals()
        .into_iter()
        .find(|f| !f.to_string_lossy().contains("old"))
        .unwrap();
    let live_id = live
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .trim_start_matches("pipeline_")
        .trim_end_matches(".jsonl")
        .to_string();
    std::thread::sleep(Duration::from_millis(1500)); // older than max_age, still running

    let o = p.run(&["prune", "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        out.contains("would remove old1") && out.contains("would remove old2"),
        "{out}"
    );
    assert!(
        out.contains(&format!("kept {live_id}: it is running")),
        "{out}"
    );
    assert_eq!(p.journals().len(), 3, "a dry run removes nothing");

    let o = p.run(&["prune"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        out.contains("removed old1") && out.contains("removed 2 runs"),
        "{out}"
    );
    assert_eq!(p.journals(), vec![live.clone()]);
    // The index rows went too: the index no longer lists them.
    assert_eq!(
        ids(&json_out(&p.run(&["runs", "--json"]))),
        [live_id.as_str()]
    );

    std::fs::write(p.path().join("go"), "").unwrap();
    assert!(wait_child(&mut running, LONG).success());
    assert!(live.exists());
}

#[test]
fn completions_and_version() {
    let p = Project::new();
    let o = p.run(&["completions", "bash"]);
    assert!(o.status.success());
    let script = String::from_utf8_lossy(&o.stdout);
    assert!(
        script.len() > 1000 && script.contains("pipewatch"),
        "{script}"
    );
    for shell in ["zsh", "fish", "powershell"] {
        assert!(!p.run(&["completions", shell]).stdout.is_empty(), "{shell}");
    }

    let o = p.run(&["--version"]);
    let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let commit = v
        .strip_prefix(&format!("pipewatch {} (commit ", env!("CARGO_PKG_VERSION")))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{v:?}"));
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{v:?}"
    );
}

#[test]
fn every_new_command_has_help() {
    let p = Project::new();
    for cmd in [
        &["runs", "--help"][..],
        &["runs", "show", "--help"],
        &["tail", "--help"],
        &["doctor", "--help"],
        &["prune", "--help"],
        &["completions", "--help"],
    ] {
        let o = p.run(cmd);
        assert!(o.status.success() && !o.stdout.is_empty(), "{cmd:?}");
    }
}

/// What a command that printed into a pipe its reader closed (`| head`) left behind: its
/// exit code and stderr.
fn after_closed_pipe(mut child: Child) -> (Option<i32>, String) {
    let status = wait_child(&mut child, LONG);
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut err).unwrap();
    }
    (status.code(), err)
}

#[test]
fn a_reader_that_closes_stdout_early_ends_every_command_quietly() {
    let (p, _) = project("");
    finished_run(&p, "20261129T080000Z-0001", "2026-11-29", "success");
    for args in [
        &["scheduler", "status"][..],
        &["scheduler", "status", "--json"],
        &["scheduler", "uninstall"],
        &["runs"],
        &["runs", "--json"],
        &["openapi"],
        &["completions", "bash"],
        &["doctor"],
    ] {
        let mut child = p.spawn(args);
        // The reader is gone before the command writes: its first write meets a closed pipe.
        drop(child.stdout.take());
        let (code, err) = after_closed_pipe(child);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?} said: {err}");
    }

    // `tail | head -1`: the reader takes one line and goes; the next event ends the follow.
    let id = "tail-head";
    append(&p, id, &started(id));
    let mut child = p.spawn(&["tail", id, "--json", "--no-dashboard"]);
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("\"start\""), "{first}");
    append(&p, id, &log_line(id, 1, "one more"));
    let (code, err) = after_closed_pipe(child);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        !err.contains("error") && !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
}

#[test]
fn serve_on_a_taken_address_says_how_to_choose_another() {
    let (p, _) = project("");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let o = p.run(&["serve", "--bind", &addr.to_string()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains(&format!("cannot listen on {addr}")), "{e}");
    assert!(
        e.contains("--bind") && e.contains("[server] bind") && e.contains("pipewatch tail"),
        "{e}"
    );
}

/// A second project whose configuration names the first one's dashboard address: `tail`
/// follows its own runs from their files instead of waiting on a dashboard that never sees
/// them, and `doctor` fails, saying the dashboard is another project's.
#[test]
fn tail_and_doctor_know_another_projects_dashboard() {
    let a = Project::with_config(QUICK);
    let s = Server::start(&a);
    let b = Project::with_config(QUICK);
    let text = std::fs::read_to_string(b.path().join("pipewatch.toml")).unwrap();
    b.write_config(&format!(
        "{text}\n[server]\nbind = \"127.0.0.1:{}\"\n",
        s.port
    ));
    let o = b.run(&["run", "--no-notify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = b.journal()[0]["run_id"].as_str().unwrap().to_string();

    let mut child = b.cmd(&["tail", &id, "--json"]);
    let started = std::time::Instant::now();
    let o = child.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(20));
    let events: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.last().unwrap()["event"], "success", "{events:?}");
    assert!(
        stderr(&o).contains("another events folder"),
        "{}",
        stderr(&o)
    );

    let (checks, code) = doctor(&b, &[]);
    assert_eq!(code, 1, "{checks:?}");
    let c = doctor_check(&checks, "dashboard folder");
    assert_eq!(c["ok"], false, "{c}");
    assert!(
        c["detail"].as_str().unwrap().contains("another project"),
        "{c}"
    );
    // The first project's doctor, pointed at its own dashboard, has no such complaint.
    let text = std::fs::read_to_string(a.path().join("pipewatch.toml")).unwrap();
    a.write_config(&format!(
        "{text}\n[server]\nbind = \"127.0.0.1:{}\"\n",
        s.port
    ));
    let (checks, _) = doctor(&a, &[]);
    assert_eq!(doctor_check(&checks, "dashboard")["ok"], true, "{checks:?}");
    assert!(
        checks
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["check"] != "dashboard folder"),
        "{checks:?}"
    );
}
