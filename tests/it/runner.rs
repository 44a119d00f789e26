//! `pipewatch run` through the binary: the journal, stages, output capture, timeouts,
//! retries, cancellation, overlap, liveness and the dashboard notification.
//!
//! Stage commands are written for both shells ([`stage::sh`]); the tests whose subject is Unix
//! process handling (signals, process groups, daemons) are in [`unix`].

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use pipewatch::event::RunId;
use pipewatch::runner::liveness::{self, Liveness};

use crate::support::*;

const LONG: Duration = Duration::from_secs(60);

fn stage(name: &str, run: &str, extra: &str) -> String {
    format!("[[stages]]\nname = \"{name}\"\nrun = '''{run}'''\n{extra}\n")
}

/// A stage that prints `first`, then waits until the file `go` exists (at most a minute, so
/// that a stage whose runner a test killed does not outlive the test), then prints `second`.
fn gated() -> String {
    stage::sh(
        &format!("echo first; {}; echo second", stage::GATE),
        &format!("echo first& ({})& echo second", stage::GATE),
    )
}

fn run_id_of(events: &[serde_json::Value]) -> RunId {
    RunId::parse(events[0]["run_id"].as_str().unwrap()).unwrap()
}

#[test]
fn journal_lines_are_complete_with_seq_from_zero() {
    let p = Project::with_config(&stage(
        "a",
        &stage::sh("echo one; echo two >&2", "echo one& >&2 echo two"),
        "",
    ));
    let out = p.run(&["run", "--no-notify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let name = p.journals()[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("pipeline_") && name.ends_with(".jsonl"),
        "{name}"
    );
    let events = p.journal();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i as u64);
        for key in [
            "run_id",
            "stage",
            "event",
            "timestamp",
            "msg",
            "pipeline",
            "level",
            "source",
        ] {
            assert!(e.get(key).is_some(), "{key} missing in {e}");
        }
        assert_eq!(e["source"], "cli");
        let ts = e["timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.len() == 24, "{ts}");
    }
    assert_eq!(events[0]["stage"], "pipeline");
    assert_eq!(events[0]["event"], "start");
    assert_eq!(run_end(&events)["event"], "success");
    assert_eq!(logs(&events, "a", "stdout"), vec!["one"]);
    assert_eq!(logs(&events, "a", "stderr"), vec!["two"]);
    let id = run_id_of(&events);
    assert!(name.contains(id.as_str()));
}

#[test]
fn output_is_journaled_when_printed() {
    let p = Project::with_config(&stage("a", &gated(), ""));
    let mut child = p.spawn(&["run", "--no-notify", "--quiet"]);
    wait_until(LONG, "the first line in the journal", || {
        p.journals()
            .first()
            .is_some_and(|j| logs(&read_events(j), "a", "stdout") == ["first"])
    });
    // The stage is still running: the second line does not exist yet.
    std::fs::write(p.path().join("go"), "").unwrap();
    assert!(wait_child(&mut child, LONG).success());
    assert_eq!(logs(&p.journal(), "a", "stdout"), ["first", "second"]);
}

#[test]
fn order_is_kept_per_stream() {
    // cmd: `echo off` rather than `@` in a loop's body, and a loop followed by more commands
    // in parentheses: Wine's cmd reads both differently from Windows' otherwise.
    let script = stage::sh(
        "i=0; while [ $i -lt 2000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done",
        "@echo off& for /l %i in (0,1,1999) do (echo out%i& >&2 echo err%i)",
    );
    let p = Project::with_config(&stage("a", &script, ""));
    assert!(p.run(&["run", "--no-notify"]).status.success());
    let events = p.journal();
    let out: Vec<String> = (0..2000).map(|i| format!("out{i}")).collect();
    let err: Vec<String> = (0..2000).map(|i| format!("err{i}")).collect();
    assert_eq!(logs(&events, "a", "stdout"), out);
    assert_eq!(logs(&events, "a", "stderr"), err);
}

#[test]
fn a_million_lines_neither_deadlock_nor_get_lost() {
    // Both streams at once, so a runner that drained one pipe before the other would block.
    // The lines come from files the test writes: a loop in cmd.exe prints a million lines in
    // minutes under Wine.
    let script = stage::sh(
        "cat lines.txt; cat err.txt >&2",
        "type lines.txt& >&2 type err.txt",
    );
    let p = Project::with_config(&stage("a", &script, ""));
    let numbers = |n: u32| (1..=n).map(|i| format!("{i}\n")).collect::<String>();
    std::fs::write(p.path().join("lines.txt"), numbers(1_000_000)).unwrap();
    std::fs::write(p.path().join("err.txt"), numbers(1000)).unwrap();
    let out = p.run(&["run", "--no-notify", "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let events = p.journal();
    let lines = logs(&events, "a", "stdout");
    assert_eq!(lines.len(), 1_000_000);
    assert!(
        lines
            .iter()
            .enumerate()
            .all(|(i, l)| *l == (i + 1).to_string())
    );
    assert_eq!(logs(&events, "a", "stderr").len(), 1000);
    // All of it journaled before the stage's end, and the run's end last: a stage that
    // printed faster than its lines could be journaled once had a quarter of its output
    // before its `success` and the rest after the run's.
    let last_line = events.iter().rposition(|e| e["event"] == "log").unwrap();
    let a_end = events
        .iter()
        .position(|e| e["stage"] == "a" && e["event"] == "success")
        .expect("stage a's success");
    assert!(
        last_line < a_end,
        "a line at {last_line} after the stage's end at {a_end}"
    );
    assert_eq!(run_end(&events)["event"], "success");
}

#[test]
fn long_lines_are_capped_and_bad_utf8_replaced() {
    // The bytes are written by the test and printed by the stage as they are.
    let mut bytes = vec![b'x'; 100_000];
    bytes.extend_from_slice(b"\ncaf\xc3\xa9 \xff\xfe end\nafter\n");
    let p = Project::with_config(&stage("a", &stage::sh("cat out.bin", "type out.bin"), ""));
    std::fs::write(p.path().join("out.bin"), bytes).unwrap();
    assert!(p.run(&["run", "--no-notify"]).status.success());
    let events = p.journal();
    let lines: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "log").collect();
    assert_eq!(lines.len(), 3);
    let long = lines[0]["msg"].as_str().unwrap();
    assert!(
        long.len() <= 32 * 1024 && long.len() > 1000,
        "{}",
        long.len()
    );
    assert_eq!(lines[0]["data"]["truncated"], true);
    assert_eq!(lines[1]["msg"], "café \u{fffd}\u{fffd} end");
    assert_eq!(lines[2]["msg"], "after");
}

/// What a stage leaves running in the background when it exits is ended with it: the run
/// does not wait for it (it holds the stage's output open). The Unix tests in [`unix`] also
/// check the process itself is gone.
#[test]
fn a_background_process_left_by_a_stage_does_not_hold_the_run() {
    let script = stage::sh(
        "sleep 300 & echo done",
        // Its lines go to the stage's output, which it holds open.
        "start /b ping -n 300 127.0.0.1& echo done",
    );
    let p = Project::with_config(&stage("a", &script, ""));
    let started = Instant::now();
    let out = p.run(&["run", "--no-notify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    let out = logs(&p.journal(), "a", "stdout");
    assert!(out.iter().any(|l| l == "done"), "{out:?}");
}

#[test]
fn retries_then_failure_skips_dependents_but_not_independents() {
    let config = [
        stage(
            "flaky",
            &stage::sh(
                "echo try $PIPEWATCH_ATTEMPT; exit 3",
                "echo try %PIPEWATCH_ATTEMPT%& exit 3",
            ),
            "retries = 2\nretry_delay = \"100ms\"",
        ),
        stage("after", "echo never", "needs = [\"flaky\"]"),
        stage("after_after", "echo never", "needs = [\"after\"]"),
        stage("free", "echo free", ""),
    ]
    .concat();
    let p = Project::with_config(&config);
    let out = p.run(&["run", "--no-notify"]);
    assert_eq!(out.status.code(), Some(1));
    let events = p.journal();
    assert_eq!(
        ev(&events, "pipeline", "start")[0]["data"]["stage_needs"],
        serde_json::json!({"flaky": [], "after": ["flaky"], "after_after": ["after"], "free": []}),
        "the start event carries the dependency graph"
    );
    assert_eq!(ev(&events, "flaky", "start").len(), 3);
    let retries = ev(&events, "flaky", "retry");
    assert_eq!(retries.len(), 2);
    assert_eq!(retries[0]["data"]["attempt"], 2);
    assert_eq!(retries[0]["data"]["exit_code"], 3);
    assert_eq!(retries[0]["data"]["delay_ms"], 100);
    assert_eq!(
        logs(&events, "flaky", "stdout"),
        ["try 1", "try 2", "try 3"]
    );
    let failure = ev(&events, "flaky", "failure");
    assert_eq!(failure[0]["data"]["exit_code"], 3);
    assert_eq!(failure[0]["data"]["reason"], "exit");
    assert_eq!(ev(&events, "after", "skipped").len(), 1);
    assert_eq!(ev(&events, "after_after", "skipped").len(), 1);
    assert_eq!(ev(&events, "free", "success").len(), 1);
    assert_eq!(run_end(&events)["event"], "failure");
    // Exactly one terminal event per stage.
    for s in ["flaky", "after", "after_after", "free"] {
        let ends = events
            .iter()
            .filter(|e| {
                e["stage"] == s
                    && ["success", "failure", "skipped", "cancelled"]
                        .contains(&e["event"].as_str().unwrap())
            })
            .count();
        assert_eq!(ends, 1, "{s}");
    }
}

#[test]
fn a_program_that_cannot_start_fails_with_reason_spawn() {
    let p =
        Project::with_config("[[stages]]\nname = \"a\"\nrun = [\"./no-such-program\", \"x\"]\n");
    assert_eq!(p.run(&["run", "--no-notify"]).status.code(), Some(1));
    let events = p.journal();
    let f = ev(&events, "a", "failure");
    assert_eq!(f[0]["data"]["reason"], "spawn");
    assert!(
        f[0]["msg"].as_str().unwrap().contains("no-such-program"),
        "{}",
        f[0]
    );
}

#[test]
fn argv_stages_get_their_arguments_unchanged() {
    // Unix: printf shows each argument as it came. Windows passes a program one command line,
    // quoted by the C runtime's rules; cmd's `echo` prints the rest of it as it came: the
    // argument with a space is quoted, and nothing was expanded on the way.
    let (argv, shown) = if cfg!(windows) {
        (
            r#"["cmd", "/d", "/c", "echo", "a b", "$HOME", "`x`;"]"#,
            r#""a b" $HOME `x`;"#,
        )
    } else {
        (
            r#"["printf", "%s|", "a b", "$HOME", "`x`;"]"#,
            "a b|$HOME|`x`;|",
        )
    };
    let echo = stage::sh(
        "echo $GREETING $PIPEWATCH_STAGE",
        "echo %GREETING% %PIPEWATCH_STAGE%",
    );
    let p = Project::with_config(&format!(
        "[[stages]]\nname = \"a\"\nrun = {argv}\nenv = {{ GREETING = \"hi\" }}\n\
         [[stages]]\nname = \"b\"\nrun = '''{echo}'''\nenv = {{ GREETING = \"hello\" }}\n",
    ));
    assert!(p.run(&["run", "--no-notify"]).status.success());
    let events = p.journal();
    assert_eq!(logs(&events, "a", "stdout"), [shown]);
    assert_eq!(logs(&events, "b", "stdout"), ["hello b"]);
}

#[test]
fn whole_run_timeout() {
    let config = [
        stage("slow", &stage::sleep(300), ""),
        stage("later", stage::OK, "needs = [\"slow\"]"),
    ]
    .concat();
    let p = Project::new();
    p.write_config(&format!(
        "[pipeline]\nname = \"p\"\ntimeout = \"500ms\"\n{config}"
    ));
    let started = Instant::now();
    let out = p.run(&["run", "--no-notify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // The stage's sleeping child was ended with it: nothing held its output open.
    assert!(started.elapsed() < Duration::from_secs(30));
    let events = p.journal();
    assert_eq!(
        ev(&events, "slow", "failure")[0]["data"]["reason"],
        "timeout"
    );
    assert_eq!(ev(&events, "later", "skipped").len(), 1);
    let end = run_end(&events);
    assert_eq!(end["event"], "failure");
    assert_eq!(end["data"]["reason"], "timeout");
}

fn wait_for_stage_start(p: &Project, stage: &str) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    wait_until(LONG, "the stage to start", || {
        events = p
            .journals()
            .first()
            .map(|j| read_events(j))
            .unwrap_or_default();
        !logs(&events, stage, "stdout").is_empty()
    });
    events
}

#[test]
fn a_killed_runner_is_seen_as_gone() {
    let p = Project::with_config(&stage("a", &gated(), ""));
    let mut child = p.spawn(&["run", "--no-notify"]);
    let id = run_id_of(&wait_for_stage_start(&p, "a"));
    assert_eq!(liveness::liveness(&p.state_dir(), &id), Liveness::Alive);
    child.kill().unwrap(); // SIGKILL, TerminateProcess: no cleanup runs
    child.wait().unwrap();
    assert_eq!(liveness::liveness(&p.state_dir(), &id), Liveness::Gone);
    std::fs::write(p.path().join("go"), "").unwrap();
}

fn overlap_project(policy: &str) -> Project {
    let p = Project::new();
    p.write_config(&format!(
        "[pipeline]\nname = \"p\"\noverlap = \"{policy}\"\n{}",
        stage("a", &gated(), "")
    ));
    p
}

#[test]
fn overlap_skip_records_a_skipped_run_and_exits_zero() {
    let p = overlap_project("skip");
    let mut first = p.spawn(&["run", "--no-notify"]);
    let first_id = run_id_of(&wait_for_stage_start(&p, "a"));
    let out = p.run(&["run", "--no-notify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let files = p.journals();
    assert_eq!(files.len(), 2);
    let second = files
        .iter()
        .map(|f| read_events(f))
        .find(|e| run_id_of(e) != first_id)
        .unwrap();
    assert_eq!(second.len(), 2, "{second:?}");
    assert_eq!(second[0]["event"], "start");
    assert_eq!(second[1]["event"], "skipped");
    assert_eq!(second[1]["data"]["reason"], "overlap");
    assert_eq!(second[1]["data"]["running"], first_id.as_str());
    std::fs::write(p.path().join("go"), "").unwrap();
    assert!(wait_child(&mut first, LONG).success());
}

#[test]
fn overlap_queue_waits_its_turn() {
    let p = overlap_project("queue");
    let mut first = p.spawn(&["run", "--no-notify"]);
    wait_for_stage_start(&p, "a");
    let mut second = p.spawn(&["run", "--no-notify"]);
    // The second run is waiting, not running.
    std::thread::sleep(Duration::from_millis(300));
    assert!(second.try_wait().unwrap().is_none());
    assert_eq!(p.journals().len(), 1);
    std::fs::write(p.path().join("go"), "").unwrap();
    assert!(wait_child(&mut first, LONG).success());
    assert!(wait_child(&mut second, LONG).success());
    let files = p.journals();
    assert_eq!(files.len(), 2);
    let mut runs: Vec<_> = files.iter().map(|f| read_events(f)).collect();
    runs.sort_by_key(|r| r[0]["timestamp"].as_str().unwrap_or_default().to_string());
    let (a, b) = (&runs[0], &runs[1]);
    let (first_end, second_start) = (run_end(a), &b[0]);
    assert!(first_end["timestamp"].as_str() <= second_start["timestamp"].as_str());
    assert_eq!(run_end(b)["event"], "success");
}

#[test]
fn overlap_parallel_runs_both() {
    let p = overlap_project("parallel");
    let mut first = p.spawn(&["run", "--no-notify"]);
    wait_for_stage_start(&p, "a");
    let mut second = p.spawn(&["run", "--no-notify"]);
    wait_until(LONG, "both runs to be in their stage", || {
        p.journals().len() == 2
            && p.journals()
                .iter()
                .all(|j| !logs(&read_events(j), "a", "stdout").is_empty())
    });
    std::fs::write(p.path().join("go"), "").unwrap();
    assert!(wait_child(&mut first, LONG).success());
    assert!(wait_child(&mut second, LONG).success());
}

#[test]
fn overlap_replace_cancels_the_running_one() {
    let p = overlap_project("replace");
    let mut first = p.spawn(&["run", "--no-notify"]);
    let first_id = run_id_of(&wait_for_stage_start(&p, "a"));
    let mut second = p.spawn(&["run", "--no-notify"]);
    let status = wait_child(&mut first, LONG);
    assert_eq!(status.code(), Some(1));
    let files = p.journals();
    let old = files
        .iter()
        .map(|f| read_events(f))
        .find(|e| run_id_of(e) == first_id)
        .unwrap();
    let end = run_end(&old);
    assert_eq!(end["event"], "cancelled");
    assert_eq!(end["data"]["reason"], "replaced");
    std::fs::write(p.path().join("go"), "").unwrap();
    assert!(wait_child(&mut second, LONG).success());
}

#[test]
fn a_hung_dashboard_does_not_hold_the_run() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let _holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let p = Project::with_config(&format!(
        "{}[server]\nbind = \"{addr}\"\n",
        stage("a", stage::OK, "")
    ));
    let started = Instant::now();
    let out = p.run(&["run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_millis(4000),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn the_dashboard_is_notified_with_the_run_id() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&req).contains("\"source\"") {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        let _ = s.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}");
        String::from_utf8_lossy(&req).into_owned()
    });
    let p = Project::with_config(&format!(
        "{}[server]\nbind = \"{addr}\"\ntoken = \"s3cret\"\n",
        stage("a", stage::OK, "")
    ));
    assert!(p.run(&["run", "--source", "scheduler"]).status.success());
    let req = server.join().unwrap();
    let id = run_id_of(&p.journal());
    assert!(
        req.starts_with("POST /api/pipeline/notify-scheduled-run "),
        "{req}"
    );
    assert!(
        req.to_ascii_lowercase()
            .contains("authorization: bearer s3cret"),
        "{req}"
    );
    assert!(req.contains(&format!("\"run_id\":\"{id}\"")), "{req}");
    assert!(req.contains("\"source\":\"scheduler\""), "{req}");
    assert_eq!(p.journal()[0]["source"], "scheduler");
}

#[test]
fn quiet_prints_nothing_and_plain_lines_name_the_stages() {
    let p = Project::with_config(&stage("a", "echo hi", ""));
    let out = p.run(&["run", "--no-notify", "--quiet"]);
    assert!(out.status.success());
    assert_eq!(stderr(&out), "");
    assert!(out.stdout.is_empty());
    let out = p.run(&["run", "--no-notify"]);
    let err = stderr(&out);
    assert!(
        err.contains("a: started") && err.contains("a: success"),
        "{err}"
    );
}

#[test]
fn a_failed_run_leaves_no_lock_or_state_files() {
    let p = Project::with_config(&stage("a", "exit 3", ""));
    let out = p.run(&["run", "--no-notify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(run_files(&p), Vec::<String>::new());
}

#[test]
fn a_run_that_cannot_create_its_journal_leaves_no_lock_file() {
    let p = Project::with_config(&format!(
        "[server]\nevents_dir = \"not-a-folder/events\"\n{}",
        stage("a", stage::OK, "")
    ));
    std::fs::write(p.path().join("not-a-folder"), "a file").unwrap();
    let out = p.run(&["run", "--no-notify"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("not-a-folder"), "{}", stderr(&out));
    assert_eq!(
        run_files(&p),
        Vec::<String>::new(),
        "a run with no run file left files that nothing will ever clean up"
    );
}

/// The names of the files in `<state_dir>/runs`.
fn run_files(p: &Project) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(p.state_dir().join("runs"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Why a run failed, and how long each stage took, say the same thing everywhere: the
/// runner's output, the journal, `runs show` (text and JSON). A stage retried after a delay
/// lasts from its first attempt's start to its end; each attempt's own time is `attempt_ms`;
/// the stderr shown is the last attempt's, labelled with it; a timed-out stage says so; a
/// skipped stage says which stage it needed.
#[test]
fn why_a_run_failed_and_stage_durations_agree_everywhere() {
    let config = [
        stage(
            "validate",
            &stage::sh(
                "n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; echo \"bad row in attempt $n\" >&2; exit 3",
                ">&2 echo bad row in attempt %PIPEWATCH_ATTEMPT%& exit 3",
            ),
            "retries = 1\nretry_delay = \"1s\"",
        ),
        stage("load", &stage::sleep(30), "timeout = \"1s\""),
        stage("report", stage::OK, "needs = [\"validate\"]"),
    ]
    .concat();
    let p = Project::with_config(&config);
    let out = p.run(&["run", "--no-notify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let printed = stderr(&out);
    let events = p.journal();
    let id = run_id_of(&events);

    // The journal: the stage's duration spans both attempts and the delay; the attempt's
    // own time is short.
    let end = ev(&events, "validate", "failure");
    let data = &end[0]["data"];
    let stage_ms = data["duration_ms"].as_u64().expect("duration_ms");
    let attempt_ms = data["attempt_ms"].as_u64().expect("attempt_ms");
    assert!(
        stage_ms >= 1000,
        "the retry delay is part of the stage: {data}"
    );
    assert!(attempt_ms < stage_ms, "{data}");
    let retry = ev(&events, "validate", "retry");
    assert!(retry[0]["data"]["attempt_ms"].is_u64(), "{}", retry[0]);

    // `pipewatch run` printed the same duration (in seconds, one decimal).
    let secs = format!("{:.1}s", stage_ms as f64 / 1000.0);
    let line = printed
        .lines()
        .find(|l| l.starts_with("validate: failure"))
        .unwrap_or_else(|| panic!("no validate line in:\n{printed}"));
    let shown: f64 = line
        .split(" in ")
        .nth(1)
        .and_then(|s| s.split('s').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no duration in {line}"));
    assert!(
        (shown - stage_ms as f64 / 1000.0).abs() <= 0.15,
        "runner printed {line}, the journal says {secs}"
    );

    // `runs show`: why the run failed, each stage's outcome, the last attempt's stderr.
    let o = p.run(&["runs", "show", id.as_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        text.contains("validate (exit code 3)") && text.contains("load (timed out)"),
        "the header names the failed stages and how: {text}"
    );
    let row = |name: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in {text}"))
            .to_string()
    };
    assert!(row("validate").contains("exit code 3"), "{text}");
    assert!(row("validate").contains(&secs), "{secs} in {text}");
    assert!(row("load").contains("timed out"), "{text}");
    assert!(row("report").contains("validate did not succeed"), "{text}");
    assert!(
        text.contains("stderr lines of validate (attempt 2 of 2)")
            && text.contains("bad row in attempt 2")
            && !text.contains("bad row in attempt 1"),
        "only the last attempt's stderr, labelled: {text}"
    );

    // The same through the API's objects.
    let v = json_out(&p.run(&["runs", "show", id.as_str(), "--json"]));
    let st = |name: &str| -> serde_json::Value {
        v["stages"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no stage {name} in {v}"))
    };
    let ms = st("validate")["duration_ms"].as_u64().expect("a duration");
    assert!(
        ms.abs_diff(stage_ms) <= 5,
        "API {ms} ms, journal {stage_ms} ms"
    );
    assert_eq!(st("validate")["reason"], "exit");
    assert_eq!(st("validate")["exit_code"], 3);
    assert_eq!(st("load")["reason"], "timeout");
    assert_eq!(st("report")["reason"], "needs_failed");
    assert_eq!(st("report")["needs"], "validate");
    let mut failed: Vec<&str> = v["failed_stages"]
        .as_array()
        .expect("failed_stages")
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    failed.sort_unstable();
    assert_eq!(failed, ["load", "validate"], "{v}");
    let first_error = v["first_error_seq"].as_u64().expect("first_error_seq");
    let at = events
        .iter()
        .find(|e| e["seq"] == first_error)
        .expect("the first error's event");
    assert_eq!(at["level"], "error", "{at}");
    assert_eq!(v["events"], events.len());
    assert_eq!(
        st("validate")["stderr_tail"],
        serde_json::json!(["bad row in attempt 2"])
    );
}

/// Stopping a stage's processes the Unix way: process groups, signals, daemons that leave
/// the group. On Windows a stage's job object holds every descendant; there is no group to
/// leave and no SIGTERM.
#[cfg(unix)]
mod unix {
    use std::time::{Duration, Instant};

    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use pipewatch::runner::liveness::{self, Liveness};

    use super::{LONG, run_id_of, stage, wait_for_stage_start};
    use crate::support::*;

    // Unix-only: the grandchildren are `sleep 300 &` (shell job control), found by pid.
    #[test]
    fn stage_timeout_kills_the_whole_tree() {
        let script = "sleep 300 & echo $! > grandchild.pid; echo started; wait";
        let p = Project::with_config(&stage("a", script, "timeout = \"500ms\""));
        let started = Instant::now();
        let out = p.run(&["run", "--no-notify"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(started.elapsed() < Duration::from_secs(30));
        let events = p.journal();
        let failure = ev(&events, "a", "failure");
        assert_eq!(failure.len(), 1);
        assert_eq!(failure[0]["data"]["reason"], "timeout");
        assert_eq!(run_end(&events)["event"], "failure");
        let pid: i32 = std::fs::read_to_string(p.path().join("grandchild.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        wait_until(Duration::from_secs(5), "the grandchild to die", || {
            !pid_alive(pid)
        });
    }

    #[test]
    fn leftover_background_processes_are_killed_when_a_stage_exits() {
        let script = "sleep 300 & echo $! > bg.pid; echo done";
        let p = Project::with_config(&stage("a", script, ""));
        let started = Instant::now();
        assert!(p.run(&["run", "--no-notify"]).status.success());
        // The runner did not wait for the background sleep holding the pipe open.
        assert!(started.elapsed() < Duration::from_secs(30));
        let pid: i32 = std::fs::read_to_string(p.path().join("bg.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        wait_until(
            Duration::from_secs(5),
            "the background process to die",
            || !pid_alive(pid),
        );
    }

    // Unix-only: SIGTERM, and a grandchild left by `sleep 300 &`.
    #[test]
    fn sigterm_cancels_running_stages_and_completes_the_journal() {
        let config = [
            stage(
                "a",
                "sleep 300 & echo $! > grandchild.pid; echo started; wait",
                "",
            ),
            stage("b", "true", "needs = [\"a\"]"),
        ]
        .concat();
        let p = Project::with_config(&config);
        let mut child = p.spawn(&["run", "--no-notify"]);
        let events = wait_for_stage_start(&p, "a");
        let id = run_id_of(&events);
        assert_eq!(liveness::liveness(&p.state_dir(), &id), Liveness::Alive);
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let status = wait_child(&mut child, LONG);
        assert_eq!(status.code(), Some(1));
        let events = p.journal();
        assert_eq!(ev(&events, "a", "cancelled").len(), 1);
        assert_eq!(ev(&events, "b", "cancelled").len(), 1);
        let end = run_end(&events);
        assert_eq!(end["event"], "cancelled");
        // The reason is a code, like every other reason; the signal is in its own key.
        assert_eq!(end["data"]["reason"], "interrupted", "{end}");
        assert_eq!(end["data"]["interrupted_by"], "SIGTERM", "{end}");
        let a_end = ev(&events, "a", "cancelled");
        assert_eq!(a_end[0]["data"]["reason"], "interrupted", "{a_end:?}");
        let pid: i32 = std::fs::read_to_string(p.path().join("grandchild.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        wait_until(Duration::from_secs(5), "the grandchild to die", || {
            !pid_alive(pid)
        });
        assert_eq!(liveness::liveness(&p.state_dir(), &id), Liveness::Gone);
    }

    // Linux-only: `setsid` daemons, caught by the runner as a child subreaper.
    /// Kills, when the test ends however it ends, the processes whose pids a stage wrote to these
    /// files (daemons a stage started that pipewatch may have failed to stop).
    #[cfg(target_os = "linux")]
    struct KillPidFiles(Vec<std::path::PathBuf>);

    #[cfg(target_os = "linux")]
    impl Drop for KillPidFiles {
        fn drop(&mut self) {
            for f in &self.0 {
                if let Some(pid) = read_pid(f) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }

    #[cfg(target_os = "linux")]
    fn read_pid(file: &std::path::Path) -> Option<i32> {
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    }

    /// A daemon that leaves the stage's process group and session (`setsid`), writes its pid to
    /// `daemon.pid` and sleeps.
    #[cfg(target_os = "linux")]
    const DAEMON: &str = "setsid sh -c 'echo $$ > daemon.pid; exec sleep 1000'";

    /// Runs the project's pipeline and returns how long the run took and the daemon's pid,
    /// checking that the run ended with `code`.
    #[cfg(target_os = "linux")]
    fn run_with_daemon(p: &Project, code: i32) -> (Duration, i32) {
        let started = Instant::now();
        let out = p.run(&["run", "--no-notify"]);
        let took = started.elapsed();
        assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
        let pid = read_pid(&p.path().join("daemon.pid")).expect("the daemon wrote its pid");
        (took, pid)
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_setsid_daemon_dies_with_its_stage_on_timeout() {
        let script = format!("{DAEMON} & sleep 1000");
        let p = Project::with_config(&stage("a", &script, "timeout = \"2s\""));
        let _reap = KillPidFiles(vec![p.path().join("daemon.pid")]);
        let (took, pid) = run_with_daemon(&p, 1);
        let alive = pid_alive(pid);
        assert!(
            !alive,
            "the daemon {pid} the stage started with setsid survived the stage's timeout \
             (the run took {took:?})"
        );
        // Nothing held the stage's output pipe open after the timeout: no wait for it to close.
        assert!(
            took < Duration::from_millis(6500),
            "the run took {took:?} for a 2 s timeout"
        );
        assert_eq!(
            ev(&p.journal(), "a", "failure")[0]["data"]["reason"],
            "timeout"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_daemon_that_left_the_group_dies_when_its_stage_exits() {
        // The stage forks a daemon twice removed (the subshell exits at once), detached from the
        // stage's output, waits until it has left the group and written its pid, and succeeds.
        let script = format!(
            "({DAEMON} > /dev/null 2>&1 &); while [ ! -s daemon.pid ]; do sleep 0.01; done; echo ok"
        );
        let p = Project::with_config(&stage("a", &script, ""));
        let _reap = KillPidFiles(vec![p.path().join("daemon.pid")]);
        let (_, pid) = run_with_daemon(&p, 0);
        assert!(
            !pid_alive(pid),
            "the daemon {pid} the stage left behind outside its group survived the run"
        );
    }
}
