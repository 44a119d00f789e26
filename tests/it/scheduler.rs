//! The built-in scheduler through the real `pipewatch serve`: firing on a schedule of seconds,
//! enabled/disabled surviving restarts, each catch-up policy, and missed occurrences.
//!
//! The tests of the OS backends (`crontab`, a stand-in `systemctl`) are Unix-only: their
//! subject is a Unix tool, and the stand-ins are shell scripts (on Windows, `std` starts only
//! `.exe` files by name). The built-in scheduler's tests run on Windows too.

use std::time::Duration;

use chrono::Utc;
use serde_json::Value;

#[cfg(unix)]
use crate::support::tools;
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
    let mut d = Server::start(&p);
    wait_until(LONG, "two scheduled runs to succeed", || {
        let runs = d.runs();
        by_source(&runs, "scheduler")
            .iter()
            .filter(|r| r["status"] == "success")
            .count()
            >= 2
    });
    let r = d.get("/api/scheduler/status");
    let (code, status) = (r.status, r.json());
    assert_eq!(code, 200);
    assert_eq!(status["backend"], "builtin");
    assert_eq!(status["enabled"], true);
    assert_eq!(status["exists"], true);
    assert_eq!(status["schedule"], "*/1 * * * * *");
    assert!(status["next_run"].is_string(), "{status}");
    assert!(status["last_run"].is_string(), "{status}");

    let r = d.post_json("/api/scheduler/disable", "{}");
    let (code, status) = (r.status, r.json());
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["enabled"], false);
    assert_eq!(status["state"], "disabled");
    d.stop();

    let d = Server::start(&p);
    let status = d.get("/api/scheduler/status").json();
    assert_eq!(status["enabled"], false, "disabled survives a restart");
    assert!(status["next_run"].is_null());
    // That a disabled schedule fires nothing is proved on a manual clock, over an hour, in
    // `scheduler::builtin::timer::tests::a_disabled_schedule_fires_nothing_and_expects_nothing`.
    let before = by_source(&d.runs(), "scheduler").len();

    let status = d.post_json("/api/scheduler/enable", "{}").json();
    assert_eq!(status["enabled"], true);
    wait_until(LONG, "scheduled runs again", || {
        by_source(&d.runs(), "scheduler").len() > before
    });
}

/// A finished run's file, written as a runner would: `start` at `at`, `success` a second on.
fn finished_run(p: &Project, n: u32, at: chrono::DateTime<Utc>, source: &str) {
    let id = format!("{}-{n:04x}", at.format("%Y%m%dT%H%M%SZ"));
    let stamp = |t: chrono::DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let event = |event: &str, t| {
        serde_json::json!({
            "run_id": id, "stage": "pipeline", "event": event, "timestamp": stamp(t),
            "msg": event, "pipeline": "p", "source": source,
        })
        .to_string()
            + "\n"
    };
    let text = event("start", at) + &event("success", at + chrono::Duration::seconds(1));
    append(&run_path(p, &id), &text);
}

/// A schedule turned on an hour ago is expected to have fired 4 times (every 15 minutes), not
/// the 96 of a whole day; one scheduled run has no interval "in practice", two do; turning the
/// schedule off expects nothing, and on again counts from then.
#[test]
fn the_cadence_counts_from_when_the_schedule_came_on() {
    use chrono::DurationRound;
    // Clear of a quarter hour, so that no occurrence falls during the test.
    let quarter =
        |t: chrono::DateTime<Utc>| t.duration_trunc(chrono::Duration::minutes(15)).unwrap();
    while Utc::now() + chrono::Duration::seconds(30)
        >= quarter(Utc::now()) + chrono::Duration::minutes(15)
    {
        std::thread::sleep(Duration::from_secs(1));
    }
    let now = Utc::now();
    let on = now - chrono::Duration::hours(1);
    let p = project("schedule = \"*/15 * * * *\"\ncatchup = \"none\"", "");
    std::fs::create_dir_all(p.state_dir()).unwrap();
    std::fs::write(
        p.state_dir().join("scheduler.json"),
        serde_json::json!({ "enabled": true, "last_occurrence": now, "enabled_since": on })
            .to_string(),
    )
    .unwrap();
    // One scheduled run 40 minutes ago, and a manual one since.
    let first = quarter(now) - chrono::Duration::minutes(30) + chrono::Duration::seconds(2);
    finished_run(&p, 1, first, "scheduler");
    finished_run(&p, 2, first + chrono::Duration::minutes(5), "manual");
    let d = Server::start(&p);
    let s = d.wait_json("/api/scheduler/status", "both runs indexed", LONG, |s| {
        s["latest_run"]["source"] == "manual"
    });
    let cadence = &s["cadence"];
    let since = chrono::DateTime::parse_from_rfc3339(cadence["since"].as_str().unwrap()).unwrap();
    assert!(
        (since.with_timezone(&Utc) - on).num_milliseconds().abs() < 1000,
        "{s}"
    );
    assert_eq!(cadence["expected_last_day"], 4, "{s}");
    assert_eq!(cadence["started_last_day"], 1, "{s}");
    assert!(
        cadence["effective_interval_s"].is_null(),
        "one run has no interval: {s}"
    );
    assert_eq!(cadence["configured_interval_s"], 900, "{s}");
    // `last_run` is the scheduler's; the manual run is the newest of any kind.
    assert_eq!(s["latest_run"]["source"], "manual", "{s}");

    finished_run(&p, 3, first + chrono::Duration::minutes(15), "scheduler");
    let s = d.wait_json("/api/scheduler/status", "the second run", LONG, |s| {
        s["cadence"]["started_last_day"] == 2
    });
    assert_eq!(s["cadence"]["effective_interval_s"], 900, "{s}");

    let s = d.post_json("/api/scheduler/disable", "{}").json();
    assert!(s["cadence"]["since"].is_null(), "{s}");
    assert_eq!(s["cadence"]["expected_last_day"], 0, "{s}");
    let s = d.post_json("/api/scheduler/enable", "{}").json();
    let since =
        chrono::DateTime::parse_from_rfc3339(s["cadence"]["since"].as_str().unwrap()).unwrap();
    assert!(since.with_timezone(&Utc) >= now, "{s}");
    assert_eq!(s["cadence"]["expected_last_day"], 0, "{s}");
    assert_eq!(s["cadence"]["started_last_day"], 0, "{s}");
}

/// Starts the dashboard as if it had been down for the last few minutes, with a schedule
/// whose four occurrences fell 5, 4, 3 and 2 minutes ago (the newest too long ago to count as
/// on time): all four were missed.
fn after_downtime(catchup: &str, window: &str) -> (Project, Server) {
    use chrono::{DurationRound, Timelike};
    let minute = Utc::now()
        .duration_trunc(chrono::Duration::minutes(1))
        .unwrap();
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
    let d = Server::start(&p);
    (p, d)
}

#[test]
fn catchup_none_records_every_miss() {
    let (_p, d) = after_downtime("none", "1h");
    wait_until(LONG, "4 missed runs", || {
        with_status(&d.runs(), "missed").len() >= 4
    });
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
        by_source(&runs, "catchup")
            .iter()
            .any(|r| r["status"] == "success")
            && with_status(&runs, "missed").len() >= 3
    });
    let runs = d.runs();
    assert_eq!(by_source(&runs, "catchup").len(), 1, "{runs:?}");
    assert_eq!(with_status(&runs, "missed").len(), 3, "{runs:?}");
}

#[test]
fn catchup_all_runs_each_within_the_window() {
    // A window of 4½ minutes: the occurrences 2 and 3 minutes ago (and some seconds) always
    // run, one after the other; the one 5 minutes ago is always recorded as missed; the one 4
    // minutes ago runs or is missed depending on how far into its minute the test started.
    let (_p, d) = after_downtime("all", "4m30s");
    wait_until(LONG, "every occurrence run or recorded", || {
        let runs = d.runs();
        let ran = by_source(&runs, "catchup")
            .iter()
            .filter(|r| r["status"] == "success")
            .count();
        ran >= 2 && ran + with_status(&runs, "missed").len() == 4
    });
    let runs = d.runs();
    assert!(!with_status(&runs, "missed").is_empty(), "{runs:?}");
    assert_eq!(
        by_source(&runs, "catchup").len() + with_status(&runs, "missed").len(),
        4,
        "{runs:?}"
    );
}

#[cfg(unix)]
/// A `systemctl` that reports an installed, enabled timer.
const ENABLED_SYSTEMCTL: &str = r#"#!/bin/sh
case "$*" in
  *"show "*.timer*) printf 'LoadState=loaded\nUnitFileState=enabled\nActiveState=active\nNextElapseUSecRealtime=\nLastTriggerUSec=\n' ;;
  *"show "*.service*) printf 'ActiveState=inactive\nResult=success\nExecMainStatus=0\n' ;;
esac
exit 0
"#;

#[cfg(unix)]
#[test]
fn an_occurrence_the_os_scheduler_never_ran_becomes_a_missed_run() {
    // systemd says the timer is enabled, but nothing ever starts the runs.
    let p = project(
        "schedule = \"*/1 * * * * *\"",
        "backend = \"systemd\"\ngrace = \"1s\"",
    );
    let path = tools::stand_in(p.path(), "systemctl", ENABLED_SYSTEMCTL);
    let d = Server::start_with(
        &p,
        Options {
            env: vec![("PATH".into(), path)],
            ..Options::default()
        },
    );
    wait_until(LONG, "missed runs", || {
        with_status(&d.runs(), "missed").len() >= 2
    });
    let runs = d.runs();
    let missed = with_status(&runs, "missed")[0];
    assert_eq!(missed["source"], "scheduler");
    let id = missed["run_id"].as_str().unwrap();
    let events = d.get(&format!("/api/runs/{id}/events")).json();
    assert_eq!(events[0]["event"], "missed");
    let due = events[0]["data"]["scheduled_for"].as_str().unwrap();
    assert_eq!(missed["scheduled_for"], due);
    let r = d.get("/api/scheduler/status");
    let (code, status) = (r.status, r.json());
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["backend"], "systemd");
    assert_eq!(status["enabled"], true);
    assert_eq!(status["cadence"]["started_last_day"], 0);
    // Counted from the first occurrence the dashboard saw, not over a whole day (86,400).
    assert!(status["cadence"]["since"].is_string(), "{status}");
    assert!(
        status["cadence"]["expected_last_day"].as_u64().unwrap() < 600,
        "{status}"
    );
}

#[cfg(unix)]
#[test]
fn a_failing_scheduler_tool_is_a_503_with_its_stderr() {
    let p = project("", "backend = \"systemd\"");
    let path = tools::stand_in(
        p.path(),
        "systemctl",
        "#!/bin/sh\necho 'Failed to connect to bus: No medium found' >&2\nexit 1\n",
    );
    let d = Server::start_with(
        &p,
        Options {
            env: vec![("PATH".into(), path)],
            ..Options::default()
        },
    );
    let r = d.get("/api/scheduler/status");
    let (code, body) = (r.status, r.json());
    assert_eq!(code, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("Failed to connect to bus"),
        "{body}"
    );
    // Turning on a task that was never installed is the user's to fix, not the tool's.
    let r = d.post_json("/api/scheduler/enable", "{}");
    let (code, body) = (r.status, r.json());
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("pipewatch scheduler install"),
        "{body}"
    );
}

#[cfg(unix)]
/// Restores the user's crontab when dropped, whatever the test did. The crontab is one per
/// user, so the tests that change it hold [`CRONTAB`] throughout (through [`own_crontab`]).
struct CrontabGuard(Option<Vec<u8>>);

#[cfg(unix)]
static CRONTAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The crontab to this test alone until the guards drop (the restore first, then the lock).
#[cfg(unix)]
fn own_crontab() -> (CrontabGuard, std::sync::MutexGuard<'static, ()>) {
    let lock = CRONTAB
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    (CrontabGuard(crontab()), lock)
}

#[cfg(unix)]
impl Drop for CrontabGuard {
    fn drop(&mut self) {
        use std::io::Write;
        match &self.0 {
            Some(saved) => {
                let mut c = std::process::Command::new("crontab")
                    .arg("-")
                    .stdin(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                c.stdin.take().unwrap().write_all(saved).unwrap();
                c.wait().unwrap();
            }
            None => {
                let _ = std::process::Command::new("crontab").arg("-r").status();
            }
        }
    }
}

#[cfg(unix)]
fn crontab() -> Option<Vec<u8>> {
    let out = std::process::Command::new("crontab")
        .arg("-l")
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

#[cfg(unix)]
fn set_crontab(text: &[u8]) {
    use std::io::Write;
    let mut c = std::process::Command::new("crontab")
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(text).unwrap();
    assert!(c.wait().unwrap().success());
}

#[cfg(unix)]
#[test]
fn cron_install_disable_enable_uninstall_leave_other_lines_intact() {
    if !tools::crontab() {
        return;
    }
    let _restore = own_crontab();
    let mine = b"MAILTO=\"\"\n# my backups\n30 2 * * * /usr/local/bin/backup --all > /dev/null 2>&1\n@reboot echo 'hi %there'\n";
    set_crontab(mine);
    let p = project(
        "schedule = \"*/15 * * * *\"",
        "backend = \"cron\"\ntask_name = \"Nightly $(touch x); `id` 'q' % é\"",
    );
    let run = |action: &str| {
        let out = p.run(&["scheduler", action, "--json"]);
        assert!(out.status.success(), "{action}: {}", stderr(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let without_block = |text: &[u8]| {
        let text = String::from_utf8_lossy(text).into_owned();
        let begin = text.find("# BEGIN pipewatch").expect("a pipewatch block");
        let end = text.find("# END pipewatch").expect("its end");
        let end = end + text[end..].find('\n').map_or(text.len() - end, |n| n + 1);
        format!("{}{}", &text[..begin], &text[end..])
    };

    let s = run("install");
    assert_eq!(
        (s["exists"].as_bool(), s["enabled"].as_bool()),
        (Some(true), Some(true))
    );
    let installed = crontab().unwrap();
    assert_eq!(
        without_block(&installed).as_bytes(),
        mine,
        "the user's lines are untouched"
    );
    let text = String::from_utf8_lossy(&installed).into_owned();
    assert!(text.contains("run --config"), "{text}");
    assert!(text.contains("--source scheduler"), "{text}");

    let s = run("disable");
    assert_eq!(s["enabled"], false);
    let disabled = crontab().unwrap();
    assert_eq!(without_block(&disabled).as_bytes(), mine);
    assert!(
        String::from_utf8_lossy(&disabled).contains("\n#*/15"),
        "{}",
        String::from_utf8_lossy(&disabled)
    );

    let s = run("enable");
    assert_eq!(s["enabled"], true);
    assert_eq!(
        crontab().unwrap(),
        installed,
        "enable restores the installed line"
    );

    let s = run("status");
    assert_eq!(s["backend"], "cron");
    assert!(s["next_run"].is_string());

    let s = run("uninstall");
    assert_eq!(s["exists"], false);
    assert_eq!(
        crontab().unwrap(),
        mine,
        "uninstall leaves exactly the user's crontab"
    );
    assert!(
        !p.path().join("x").exists(),
        "nothing in the task name was run"
    );
}

#[cfg(unix)]
#[test]
fn a_failed_systemd_install_leaves_the_unit_files_as_they_were() {
    let p = project("", "backend = \"systemd\"");
    let config_home = p.path().join("config-home");
    let units = config_home.join("systemd/user");
    let listing = |dir: &std::path::Path| -> Vec<(String, String)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| {
                        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                        (e.file_name().to_string_lossy().into_owned(), text)
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let install = |systemctl: &str| {
        let path = tools::stand_in(p.path(), "systemctl", systemctl);
        p.cmd(&["scheduler", "install", "--backend", "systemd"])
            .env("PATH", path)
            .env("XDG_CONFIG_HOME", &config_home)
            .output()
            .unwrap()
    };
    // No user bus (a shell without a login session): daemon-reload fails.
    let no_bus = "#!/bin/sh\necho 'Failed to connect to bus: No medium found' >&2\nexit 1\n";
    let out = install(no_bus);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Failed to connect to bus"), "{stderr}");
    assert_eq!(listing(&units), vec![], "unit files left behind");

    // Installed once, then a reinstall whose `enable` fails: the first install's files stay.
    let out = install(ENABLED_SYSTEMCTL);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = listing(&units);
    assert_eq!(installed.len(), 2, "{installed:?}");
    p.write_config(
        "[pipeline]\nname = \"p\"\nschedule = \"0 * * * *\"\n[[stages]]\nname = \"a\"\nrun = \"echo hi\"\n[scheduler]\nbackend = \"systemd\"\n",
    );
    let enable_fails =
        "#!/bin/sh\ncase \"$*\" in *enable*) echo 'Unit is masked.' >&2; exit 1 ;; esac\nexit 0\n";
    let out = install(enable_fails);
    assert!(!out.status.success());
    assert_eq!(
        listing(&units),
        installed,
        "a failed reinstall changed the installed units"
    );
}

/// One pipeline has one active scheduler, its configuration's: installing or turning on
/// another backend's task (the built-in scheduler of `serve` would fire too) is refused,
/// naming the file and the key to change; nothing is installed.
#[test]
fn a_second_scheduler_for_the_same_pipeline_is_refused() {
    let p = project("schedule = \"*/15 * * * *\"", "backend = \"builtin\"");
    let config = p.path().join("pipewatch.toml");
    for args in [
        ["scheduler", "install", "--backend", "cron"],
        ["scheduler", "enable", "--backend", "systemd"],
    ] {
        let out = p.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&config.display().to_string())
                && err.contains("[scheduler] backend is \"builtin\"")
                && err.contains(&format!("set backend = \"{}\"", args[3])),
            "{err}"
        );
    }
    // The configured one is the one status names.
    let out = p.run(&["scheduler", "status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["backend"], "builtin");
}

#[cfg(unix)]
/// `pipewatch ARGS` in `p` that must succeed, its `--json` answer.
fn json_ok(p: &Project, args: &[&str]) -> Value {
    let out = p.run(args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[cfg(unix)]
/// `pipewatch ARGS` in `p` that must be refused as a usage error (exit 2) naming each of
/// `needles`; its stderr.
fn refused(p: &Project, args: &[&str], needles: &[&str]) -> String {
    let out = p.run(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: no {n:?} in: {err}");
    }
    err
}

#[cfg(unix)]
fn config_of(p: &Project) -> String {
    p.path().join("pipewatch.toml").display().to_string()
}

/// Issue 14: every project's default task is "Pipeline Runner", so a second project's install
/// replaced the first one's crontab block, the first one's status still showed its own
/// schedule, and the second one's uninstall removed the first one's task. Now each block is
/// the configuration's it runs: another configuration's is left alone, with a message naming
/// it and the key to change, and status says what is installed.
#[cfg(unix)]
#[test]
fn cron_blocks_of_two_projects_with_one_task_name_are_kept_apart() {
    if !tools::crontab() {
        return;
    }
    let _restore = own_crontab();
    let mine = b"# my backups\n30 2 * * * /usr/local/bin/backup\n";
    set_crontab(mine);
    let a = project("schedule = \"*/5 * * * *\"", "backend = \"cron\"");
    let b = project("schedule = \"*/15 * * * *\"", "backend = \"cron\"");
    let (config_a, config_b) = (config_of(&a), config_of(&b));

    let s = json_ok(&a, &["scheduler", "install", "--json"]);
    assert_eq!(s["installed_for"], config_a.as_str(), "{s}");
    assert_eq!(s["config"], config_a.as_str(), "{s}");
    assert_eq!(s["installed_schedule"], "*/5 * * * *", "{s}");
    assert!(s["mismatch"].is_null() && s["warning"].is_null(), "{s}");
    let installed = crontab().unwrap();

    // B may not install over A's task, nor remove or switch it.
    let err = refused(
        &b,
        &["scheduler", "install"],
        &[&config_a, &config_b, "task_name", "[scheduler]"],
    );
    assert!(err.contains("Pipeline Runner"), "{err}");
    for action in ["uninstall", "disable", "enable"] {
        refused(&b, &["scheduler", action], &[&config_a, "task_name"]);
    }
    assert_eq!(crontab().unwrap(), installed, "B changed the crontab");

    // A's status is A's task; B's status says the task there is A's, with A's schedule.
    let s = json_ok(&a, &["scheduler", "status", "--json"]);
    assert_eq!(s["installed_schedule"], "*/5 * * * *", "{s}");
    assert!(s["mismatch"].is_null(), "{s}");
    let s = json_ok(&b, &["scheduler", "status", "--json"]);
    assert_eq!(s["exists"], true, "{s}");
    assert_eq!(s["schedule"], "*/15 * * * *", "{s}");
    assert_eq!(s["installed_schedule"], "*/5 * * * *", "{s}");
    assert_eq!(s["installed_for"], config_a.as_str(), "{s}");
    assert_eq!(s["mismatch"], "other_config", "{s}");
    assert!(s["warning"].as_str().unwrap().contains(&config_a), "{s}");
    let out = b.run(&["scheduler", "status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("installed for:      {config_a}")) && text.contains("warning:"),
        "{text}"
    );

    // B's doctor fails its scheduler check, naming A's configuration.
    let out = b.run(&["doctor", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let checks: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let check = checks.iter().find(|c| c["check"] == "scheduler").unwrap();
    assert_eq!(check["level"], "fail", "{check}");
    assert!(
        check["detail"].as_str().unwrap().contains(&config_a)
            && check["fix"].as_str().unwrap().contains("task_name"),
        "{check}"
    );

    // With a name of its own, B installs beside A; A's task stays as it was.
    b.write_config(
        "[pipeline]\nname = \"p\"\nschedule = \"*/15 * * * *\"\n[[stages]]\nname = \"a\"\nrun = \"echo hi\"\n[scheduler]\nbackend = \"cron\"\ntask_name = \"Pipeline Runner B\"\n",
    );
    let s = json_ok(&b, &["scheduler", "install", "--json"]);
    assert_eq!(s["installed_for"], config_b.as_str(), "{s}");
    assert_eq!(s["installed_schedule"], "*/15 * * * *", "{s}");
    let both = String::from_utf8(crontab().unwrap()).unwrap();
    assert!(
        both.contains(&String::from_utf8(installed.clone()).unwrap()),
        "A's block changed: {both}"
    );
    let s = json_ok(&a, &["scheduler", "status", "--json"]);
    assert_eq!(s["installed_for"], config_a.as_str(), "{s}");
    assert_eq!(s["installed_schedule"], "*/5 * * * *", "{s}");
    assert!(s["mismatch"].is_null(), "{s}");

    // A's configuration changes its schedule: status tells until A installs again, which
    // replaces its own task.
    a.write_config(
        "[pipeline]\nname = \"p\"\nschedule = \"*/10 * * * *\"\n[[stages]]\nname = \"a\"\nrun = \"echo hi\"\n[scheduler]\nbackend = \"cron\"\n",
    );
    let s = json_ok(&a, &["scheduler", "status", "--json"]);
    assert_eq!(s["schedule"], "*/10 * * * *", "{s}");
    assert_eq!(s["installed_schedule"], "*/5 * * * *", "{s}");
    assert_eq!(s["mismatch"], "schedule", "{s}");
    let s = json_ok(&a, &["scheduler", "install", "--json"]);
    assert_eq!(s["installed_schedule"], "*/10 * * * *", "{s}");
    assert!(s["mismatch"].is_null(), "{s}");

    json_ok(&a, &["scheduler", "uninstall", "--json"]);
    let s = json_ok(&b, &["scheduler", "status", "--json"]);
    assert_eq!(s["exists"], true, "A's uninstall removed B's task: {s}");
    json_ok(&b, &["scheduler", "uninstall", "--json"]);
    assert_eq!(
        crontab().unwrap(),
        mine,
        "the user's crontab is back as it was"
    );
}

/// The same for systemd units in one unit folder (a stand-in `systemctl`): B cannot install
/// over, remove or switch A's units, and its status names A's configuration.
#[cfg(unix)]
#[test]
fn systemd_units_of_two_projects_with_one_task_name_are_kept_apart() {
    let a = project("schedule = \"*/5 * * * *\"", "backend = \"systemd\"");
    let b = project("schedule = \"*/15 * * * *\"", "backend = \"systemd\"");
    let (config_a, config_b) = (config_of(&a), config_of(&b));
    let config_home = a.path().join("config-home");
    let units = config_home.join("systemd/user");
    let path = tools::stand_in(a.path(), "systemctl", ENABLED_SYSTEMCTL);
    let run = |p: &Project, args: &[&str]| {
        p.cmd(args)
            .env("PATH", &path)
            .env("XDG_CONFIG_HOME", &config_home)
            .output()
            .unwrap()
    };
    let unit_files = || {
        let mut v: Vec<(String, String)> = std::fs::read_dir(&units)
            .unwrap()
            .flatten()
            .map(|e| {
                let text = std::fs::read_to_string(e.path()).unwrap();
                (e.file_name().to_string_lossy().into_owned(), text)
            })
            .collect();
        v.sort();
        v
    };
    let out = run(&a, &["scheduler", "install", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["installed_for"], config_a.as_str(), "{s}");
    assert_eq!(s["installed_schedule"], "*/5 * * * *", "{s}");
    assert!(s["mismatch"].is_null(), "{s}");
    let installed = unit_files();

    for action in ["install", "uninstall", "disable"] {
        let out = run(&b, &["scheduler", action]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{action}: {err}");
        assert!(
            err.contains(&config_a) && err.contains(&config_b) && err.contains("task_name"),
            "{action}: {err}"
        );
    }
    assert_eq!(unit_files(), installed, "B changed A's units");

    let out = run(&b, &["scheduler", "status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["installed_for"], config_a.as_str(), "{s}");
    assert_eq!(s["installed_schedule"], "*/5 * * * *", "{s}");
    assert_eq!(s["mismatch"], "other_config", "{s}");

    // B's dashboard says the same, and its switch cannot turn A's timer off.
    let d = Server::start_with(
        &b,
        Options {
            env: vec![
                ("PATH".into(), path.clone()),
                ("XDG_CONFIG_HOME".into(), config_home.clone().into()),
            ],
            ..Options::default()
        },
    );
    let r = d.get("/api/scheduler/status");
    let (code, s) = (r.status, r.json());
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["installed_for"], config_a.as_str(), "{s}");
    assert_eq!(s["mismatch"], "other_config", "{s}");
    assert!(s["warning"].as_str().unwrap().contains(&config_a), "{s}");
    let r = d.post_json("/api/scheduler/disable", "{}");
    let (code, body) = (r.status, r.json());
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains(&config_a),
        "{body}"
    );
    drop(d);
    assert_eq!(unit_files(), installed, "B's dashboard changed A's units");

    b.write_config(
        "[pipeline]\nname = \"p\"\nschedule = \"*/15 * * * *\"\n[[stages]]\nname = \"a\"\nrun = \"echo hi\"\n[scheduler]\nbackend = \"systemd\"\ntask_name = \"Pipeline Runner B\"\n",
    );
    let out = run(&b, &["scheduler", "install", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["installed_for"], config_b.as_str(), "{s}");
    let all = unit_files();
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(
        installed.iter().all(|f| all.contains(f)),
        "A's units changed"
    );
}

/// A pipeline removed from a workspace loses its OS task at the next install: a left-over
/// crontab line would start `pipewatch run NAME` for a pipeline that is no more, failing at
/// every occurrence.
#[cfg(unix)]
#[test]
fn install_removes_the_cron_line_of_a_pipeline_that_left_the_workspace() {
    if !tools::crontab() {
        return;
    }
    let _restore = own_crontab();
    let mine = b"# my backups\n30 2 * * * /usr/local/bin/backup\n";
    set_crontab(mine);
    let p = Project::workspace(
        "[scheduler]\nbackend = \"cron\"\n",
        &[
            ("export", "@hourly"),
            ("report", "@hourly"),
            ("sync", "@hourly"),
        ],
    );
    let dir = p.path().join("pipelines");
    let blocks = || {
        let text = String::from_utf8(crontab().unwrap()).unwrap();
        let mut names: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# BEGIN pipewatch "))
            .map(str::to_string)
            .collect();
        names.sort();
        names
    };
    let install = p.run(&["scheduler", "install", "--json"]);
    assert!(install.status.success(), "{}", stderr(&install));
    assert_eq!(
        blocks(),
        [
            "Pipeline Runner - export",
            "Pipeline Runner - report",
            "Pipeline Runner - sync"
        ]
    );

    std::fs::remove_file(dir.join("report.toml")).unwrap();
    let again = p.run(&["scheduler", "install", "--json"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("removed the cron task of pipeline report"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        json_out(&again).as_array().unwrap().len(),
        2,
        "the statuses are the pipelines'"
    );
    assert_eq!(
        blocks(),
        ["Pipeline Runner - export", "Pipeline Runner - sync"]
    );

    // The dashboard's pipeline list asks cron about each, and sees its own switch at once.
    let d = Server::start(&p);
    let enabled = |list: &Value| -> Vec<bool> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|p| p["enabled"].as_bool().unwrap())
            .collect()
    };
    assert_eq!(enabled(&d.json("/api/pipelines")), [true, true]);
    let off = d.post_json("/api/pipelines/sync/scheduler/disable", "");
    assert_eq!(off.status, 200, "{}", off.body);
    assert_eq!(enabled(&d.json("/api/pipelines")), [true, false]);
    let on = d.post_json("/api/pipelines/sync/scheduler/enable", "");
    assert_eq!(on.status, 200, "{}", on.body);
    assert_eq!(enabled(&d.json("/api/pipelines")), [true, true]);
    drop(d);

    // Installing one pipeline's task leaves the others; uninstalling all leaves the user's.
    let one = p.run(&["scheduler", "install", "--pipeline", "sync"]);
    assert!(one.status.success(), "{}", stderr(&one));
    assert_eq!(blocks().len(), 2);
    let gone = p.run(&["scheduler", "uninstall"]);
    assert!(gone.status.success(), "{}", stderr(&gone));
    assert_eq!(crontab().unwrap(), mine);
}

/// A workspace gets one pair of systemd units per pipeline, each running its pipeline by name
/// on its own schedule; a pipeline that leaves the workspace loses its units at the next
/// install.
#[cfg(unix)]
#[test]
fn each_pipeline_gets_its_own_systemd_units_and_a_removed_one_loses_them() {
    let p = Project::workspace(
        "[scheduler]\nbackend = \"systemd\"\n",
        &[("export", "30 2 * * *"), ("sync", "*/15 * * * *")],
    );
    let dir = p.path().join("pipelines");
    let config_home = p.path().join("config-home");
    let units = config_home.join("systemd/user");
    let path = tools::stand_in(p.path(), "systemctl", ENABLED_SYSTEMCTL);
    let install = || {
        let out = p
            .cmd(&["scheduler", "install"])
            .env("PATH", &path)
            .env("XDG_CONFIG_HOME", &config_home)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        out
    };
    let files = || {
        let mut v: Vec<String> = std::fs::read_dir(&units)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    install();
    assert_eq!(
        files(),
        [
            "pipewatch-export.service",
            "pipewatch-export.timer",
            "pipewatch-sync.service",
            "pipewatch-sync.timer"
        ]
    );
    let service = std::fs::read_to_string(units.join("pipewatch-sync.service")).unwrap();
    let exec = service
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .unwrap();
    assert!(exec.contains(r#""run" "sync""#), "{exec}");
    assert!(exec.contains(r#""--source" "scheduler""#), "{exec}");
    let timer = std::fs::read_to_string(units.join("pipewatch-export.timer")).unwrap();
    assert!(timer.contains("OnCalendar=*-*-* 02:30:00"), "{timer}");

    std::fs::remove_file(dir.join("sync.toml")).unwrap();
    let out = install();
    assert!(
        stderr(&out).contains("removed the systemd task of pipeline sync"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        files(),
        ["pipewatch-export.service", "pipewatch-export.timer"]
    );
}

/// The built-in scheduler fires every pipeline of a workspace on its own schedule; one
/// pipeline's switch leaves the other's alone.
#[test]
fn the_builtin_scheduler_fires_each_pipeline_of_a_workspace_on_its_own() {
    let p = Project::workspace(
        "[scheduler]\ngrace = \"30s\"\n",
        &[("fast", "*/1 * * * * *"), ("slow", "*/2 * * * * *")],
    );
    let d = Server::start(&p);
    let scheduled = |name: &str| {
        d.json(&format!("/api/runs?pipeline={name}&limit=1000"))
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["source"] == "scheduler" && r["status"] == "success")
            .count()
    };
    wait_until(LONG, "two scheduled runs of each pipeline", || {
        scheduled("fast") >= 2 && scheduled("slow") >= 2
    });

    let off = d.post_json("/api/pipelines/fast/scheduler/disable", "");
    assert_eq!(off.status, 200, "{}", off.body);
    // A run the timer had started as the switch turned may still end: let it.
    std::thread::sleep(Duration::from_secs(2));
    let (fast, slow) = (scheduled("fast"), scheduled("slow"));
    wait_until(LONG, "slow fires on", || scheduled("slow") >= slow + 2);
    assert_eq!(scheduled("fast"), fast, "a disabled pipeline fired");
    let list = d.json("/api/pipelines");
    assert_eq!(list[0]["enabled"], false);
    assert_eq!(list[1]["enabled"], true);
}
