//! `pipewatch init --workspace`: a workspace of three pipelines on different schedules — a
//! 15-minute `sync`, an hourly `report`, a nightly `export` — in `pipelines/`, each file beside
//! the script its stages run, under a `pipewatch.toml` that holds what they share.
//!
//! The scripts are POSIX `sh` on Linux and macOS and batch files for `cmd.exe` on Windows
//! (chosen in one place, [`files`]; both sets are compiled and tested everywhere). A stage runs
//! in its pipeline file's folder, so each `run` names its script without a path.
//!
//! The `sync` fails now and then, deterministically: its `upload` stage fails in a run whose
//! id says it started in minutes 40–49 of the hour (UTC; the id begins with the start time,
//! `20261203T0445…`), the example CRM's "maintenance window". On its schedule that is the :45
//! run of every hour, so its history shows both outcomes; a test picks the outcome with the
//! run id. Deciding by the run id, not by a counter, keeps the scripts free of state and
//! gives a retry the same answer as the first attempt.

use std::path::PathBuf;

use crate::config::FILE_NAME;

/// A stage's `run` value, as TOML: the pipeline's script called with the one argument given.
type Run<'a> = &'a dyn Fn(&str) -> String;

/// One pipeline of the example: its file's text (given how a stage calls the script) and
/// its script for each shell.
struct Pipeline {
    name: &'static str,
    toml: fn(Run) -> String,
    sh: &'static str,
    cmd: &'static str,
}

/// The example's pipelines, in the order the text presents them.
const PIPELINES: [Pipeline; 3] = [
    Pipeline {
        name: "sync",
        toml: sync_toml,
        sh: SYNC_SH,
        cmd: SYNC_CMD,
    },
    Pipeline {
        name: "report",
        toml: report_toml,
        sh: REPORT_SH,
        cmd: REPORT_CMD,
    },
    Pipeline {
        name: "export",
        toml: export_toml,
        sh: EXPORT_SH,
        cmd: EXPORT_CMD,
    },
];

/// The pipelines' names, in the order the text presents them.
pub(super) fn names() -> Vec<&'static str> {
    PIPELINES.iter().map(|p| p.name).collect()
}

const DIR: &str = "pipelines";

/// The workspace's files for this OS, relative to the folder it is written into.
pub(super) fn files() -> Vec<(PathBuf, String)> {
    files_for(Shell::native())
}

#[derive(Clone, Copy)]
enum Shell {
    Sh,
    Cmd,
}

impl Shell {
    fn native() -> Shell {
        if cfg!(windows) { Shell::Cmd } else { Shell::Sh }
    }

    /// The `run` value, as TOML, of a stage calling `script` with `arg`.
    fn run(self, script: &str, arg: &str) -> String {
        match self {
            Shell::Sh => format!("\"sh {script}.sh {arg}\""),
            // A TOML literal string: the backslash stays. `.\` so that cmd.exe takes the
            // script from the stage's folder whatever NoDefaultCurrentDirectoryInExePath says.
            Shell::Cmd => format!("'.\\{script}.cmd {arg}'"),
        }
    }

    /// The file name and text of `p`'s script.
    fn script(self, p: &Pipeline) -> (String, &'static str) {
        match self {
            Shell::Sh => (format!("{}.sh", p.name), p.sh),
            Shell::Cmd => (format!("{}.cmd", p.name), p.cmd),
        }
    }
}

fn files_for(shell: Shell) -> Vec<(PathBuf, String)> {
    let dir = PathBuf::from(DIR);
    let mut files = vec![(PathBuf::from(FILE_NAME), WORKSPACE_TOML.to_string())];
    for p in &PIPELINES {
        let run = |stage: &str| shell.run(p.name, stage);
        files.push((dir.join(format!("{}.toml", p.name)), (p.toml)(&run)));
        let (script, body) = shell.script(p);
        files.push((dir.join(script), body.to_string()));
    }
    files
}

const WORKSPACE_TOML: &str = r#"# pipewatch workspace: several pipelines, one dashboard. Every key is documented
# in docs/configuration.md; the commented-out values below are the defaults.

[workspace]
# Globs, relative to this file; each match is one pipeline file holding [pipeline]
# and [[stages]] (here: export, report and sync, each beside the script it runs).
pipelines = ["pipelines/*.toml"]

# What follows is shared by every pipeline.

[server]
# bind = "127.0.0.1:8001"
# events_dir = "logs/events"     # one JSONL file per run, of every pipeline
# state_dir = ".pipewatch"       # index, checkpoints, locks
# poll_interval = "2s"
# token = ""                     # or PIPEWATCH_TOKEN; required to bind beyond loopback

[retention]
# max_age = "90d"
# max_runs = 0

[scheduler]
# builtin | windows | systemd | cron
backend = "builtin"
# OS schedulers get one task per pipeline: "Pipeline Runner - sync", ...
task_name = "Pipeline Runner"
"#;

fn sync_toml(run: Run) -> String {
    format!(
        r#"# Every 15 minutes: the orders and customers changed since the last run are
# copied to the CRM. The upload fails in runs started in minutes 40-49 of the
# hour (UTC), the CRM's maintenance window: the :45 run of every hour fails.

[pipeline]
name = "sync"
# 5-field cron (minute hour day month weekday), or @hourly, @daily, ...
schedule = "*/15 * * * *"
# A run due while the last one still goes is recorded as skipped.
overlap = "skip"
timeout = "5m"

# Stages run in this file's folder. orders and customers need nothing, so they
# run at the same time; upload waits for both.

[[stages]]
name = "orders"
run = {orders}

[[stages]]
name = "customers"
run = {customers}

[[stages]]
name = "upload"
run = {upload}
needs = ["orders", "customers"]
"#,
        orders = run("orders"),
        customers = run("customers"),
        upload = run("upload"),
    )
}

fn report_toml(run: Run) -> String {
    format!(
        r#"# Every hour: the last hour's orders, summed up.

[pipeline]
name = "report"
schedule = "@hourly"
# A run due while the last one still goes waits for it.
overlap = "queue"
timeout = "10m"

[[stages]]
name = "aggregate"
run = {aggregate}

[[stages]]
name = "render"
run = {render}
needs = ["aggregate"]
env = {{ REPORT_FORMAT = "text" }}
"#,
        aggregate = run("aggregate"),
        render = run("render"),
    )
}

fn export_toml(run: Run) -> String {
    format!(
        r#"# Every night at 02:30: the day's orders, dumped, compressed and published.

[pipeline]
name = "export"
schedule = "30 2 * * *"
overlap = "skip"
# Missed while the machine was off: run once when it is back (within 6 hours).
catchup = "last"
catchup_window = "6h"
timeout = "30m"

[[stages]]
name = "dump"
run = {dump}

[[stages]]
name = "compress"
run = {compress}
needs = ["dump"]

[[stages]]
name = "publish"
run = {publish}
needs = ["compress"]
# The archive is sometimes slow to answer: one more try, 5 seconds later.
retries = 1
retry_delay = "5s"
"#,
        dump = run("dump"),
        compress = run("compress"),
        publish = run("publish"),
    )
}

const SYNC_SH: &str = r#"#!/bin/sh
# The sync pipeline's stages: the argument names one. Each step takes
# EXAMPLE_STEP_SECONDS (0.2 by default; serve --example makes its first run
# slow enough to watch).
set -e
step="${EXAMPLE_STEP_SECONDS:-0.2}"
case "$1" in
  orders|customers)
    echo "fetching the $1 changed since the last sync"
    for page in 1 2 3 4; do
      sleep "$step"
      echo "$1: page $page/4 fetched"
    done
    if [ "$1" = customers ]; then
      echo "customers: 2 records have no email address; skipped them" >&2
    fi
    ;;
  upload)
    echo "uploading to the CRM"
    sleep "$step"
    # The run id begins with the run's start time (UTC): 20261203T0445...
    # Minutes 40-49 are the CRM's maintenance window.
    case "$PIPEWATCH_RUN_ID" in
      ????????T??4*)
        echo "error: the CRM answered 503 Service Unavailable (maintenance, minutes 40-49)" >&2
        exit 1
        ;;
    esac
    sleep "$step"
    echo "uploaded 120 orders and 35 customers"
    ;;
  *)
    echo "unknown stage: $1" >&2
    exit 2
    ;;
esac
"#;

const REPORT_SH: &str = r#"#!/bin/sh
# The report pipeline's stages: the argument names one. Each step takes
# EXAMPLE_STEP_SECONDS (0.2 by default).
set -e
step="${EXAMPLE_STEP_SECONDS:-0.2}"
case "$1" in
  aggregate)
    echo "summing up the last hour's orders"
    for shard in 1 2 3 4 5 6; do
      sleep "$step"
      echo "shard $shard/6: 20 orders"
    done
    echo "120 orders from 35 customers"
    ;;
  render)
    sleep "$step"
    echo "report of run $PIPEWATCH_RUN_ID written ($REPORT_FORMAT)"
    ;;
  *)
    echo "unknown stage: $1" >&2
    exit 2
    ;;
esac
"#;

const EXPORT_SH: &str = r#"#!/bin/sh
# The export pipeline's stages: the argument names one. Each step takes
# EXAMPLE_STEP_SECONDS (0.2 by default).
set -e
step="${EXAMPLE_STEP_SECONDS:-0.2}"
case "$1" in
  dump)
    echo "dumping the day's orders"
    for part in 1 2 3 4 5 6; do
      sleep "$step"
      echo "part $part/6 dumped (400 rows)"
    done
    ;;
  compress)
    for part in 1 2 3; do
      sleep "$step"
      echo "compressed $part/3"
    done
    echo "warning: part 4 was empty; left it out" >&2
    ;;
  publish)
    sleep "$step"
    echo "published orders-export.tar.gz (2400 rows) to the archive"
    ;;
  *)
    echo "unknown stage: $1" >&2
    exit 2
    ;;
esac
"#;

// The batch files follow the one-pipeline example's rules (see `pipeline.rs`): CRLF line
// ends, `ping -n <EXAMPLE_STEP_SECONDS + 1>` on the loopback address as each step's pause (no
// pause when it is unset), no parentheses in text echoed inside a block.

const SYNC_CMD: &str = "@echo off\r\n\
rem The sync pipeline's stages: the argument names one. Each step takes\r\n\
rem EXAMPLE_STEP_SECONDS (none by default; serve --example makes its first run\r\n\
rem slow enough to watch).\r\n\
setlocal\r\n\
set /a \"pings=%EXAMPLE_STEP_SECONDS%+1\"\r\n\
set \"stage=%~1\"\r\n\
if \"%stage%\"==\"orders\" goto fetch\r\n\
if \"%stage%\"==\"customers\" goto fetch\r\n\
if \"%stage%\"==\"upload\" goto upload\r\n\
>&2 echo unknown stage: %stage%\r\n\
exit /b 2\r\n\
\r\n\
:fetch\r\n\
echo fetching the %stage% changed since the last sync\r\n\
for %%p in (1 2 3 4) do (\r\n\
\x20 ping -n %pings% 127.0.0.1 >nul 2>&1\r\n\
\x20 echo %stage%: page %%p/4 fetched\r\n\
)\r\n\
if \"%stage%\"==\"customers\" (\r\n\
\x20 >&2 echo customers: 2 records have no email address; skipped them\r\n\
)\r\n\
exit /b 0\r\n\
\r\n\
:upload\r\n\
echo uploading to the CRM\r\n\
ping -n %pings% 127.0.0.1 >nul 2>&1\r\n\
rem The run id begins with the run's start time (UTC): 20261203T0445...\r\n\
rem Minutes 40-49 are the CRM's maintenance window.\r\n\
if \"%PIPEWATCH_RUN_ID:~11,1%\"==\"4\" (\r\n\
\x20 >&2 echo error: the CRM answered 503 Service Unavailable - maintenance, minutes 40-49\r\n\
\x20 exit /b 1\r\n\
)\r\n\
ping -n %pings% 127.0.0.1 >nul 2>&1\r\n\
echo uploaded 120 orders and 35 customers\r\n\
exit /b 0\r\n";

const REPORT_CMD: &str = "@echo off\r\n\
rem The report pipeline's stages: the argument names one. Each step takes\r\n\
rem EXAMPLE_STEP_SECONDS (none by default).\r\n\
setlocal\r\n\
set /a \"pings=%EXAMPLE_STEP_SECONDS%+1\"\r\n\
if \"%~1\"==\"aggregate\" goto aggregate\r\n\
if \"%~1\"==\"render\" goto render\r\n\
>&2 echo unknown stage: %~1\r\n\
exit /b 2\r\n\
\r\n\
:aggregate\r\n\
echo summing up the last hour's orders\r\n\
for %%s in (1 2 3 4 5 6) do (\r\n\
\x20 ping -n %pings% 127.0.0.1 >nul 2>&1\r\n\
\x20 echo shard %%s/6: 20 orders\r\n\
)\r\n\
echo 120 orders from 35 customers\r\n\
exit /b 0\r\n\
\r\n\
:render\r\n\
ping -n %pings% 127.0.0.1 >nul 2>&1\r\n\
echo report of run %PIPEWATCH_RUN_ID% written (%REPORT_FORMAT%)\r\n\
exit /b 0\r\n";

const EXPORT_CMD: &str = "@echo off\r\n\
rem The export pipeline's stages: the argument names one. Each step takes\r\n\
rem EXAMPLE_STEP_SECONDS (none by default).\r\n\
setlocal\r\n\
set /a \"pings=%EXAMPLE_STEP_SECONDS%+1\"\r\n\
if \"%~1\"==\"dump\" goto dump\r\n\
if \"%~1\"==\"compress\" goto compress\r\n\
if \"%~1\"==\"publish\" goto publish\r\n\
>&2 echo unknown stage: %~1\r\n\
exit /b 2\r\n\
\r\n\
:dump\r\n\
echo dumping the day's orders\r\n\
for %%p in (1 2 3 4 5 6) do (\r\n\
\x20 ping -n %pings% 127.0.0.1 >nul 2>&1\r\n\
\x20 echo part %%p/6 dumped - 400 rows\r\n\
)\r\n\
exit /b 0\r\n\
\r\n\
:compress\r\n\
for %%p in (1 2 3) do (\r\n\
\x20 ping -n %pings% 127.0.0.1 >nul 2>&1\r\n\
\x20 echo compressed %%p/3\r\n\
)\r\n\
>&2 echo warning: part 4 was empty; left it out\r\n\
exit /b 0\r\n\
\r\n\
:publish\r\n\
ping -n %pings% 127.0.0.1 >nul 2>&1\r\n\
echo published orders-export.tar.gz (2400 rows) to the archive\r\n\
exit /b 0\r\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::init::STEP_SECONDS_VAR;
    use crate::config::Workspace;

    /// Both sets load as a workspace of three pipelines on different schedules, and every
    /// stage names a script that was written, whichever OS the test runs on.
    #[test]
    fn both_sets_are_a_valid_workspace_of_three() {
        for shell in [Shell::Sh, Shell::Cmd] {
            let dir = tempfile::tempdir().unwrap();
            let files = crate::cli::init::write(dir.path(), files_for(shell)).unwrap();
            let ws = Workspace::load(&dir.path().join(FILE_NAME)).unwrap();
            let root: PathBuf = dir.path().components().collect();
            assert!(ws.is_workspace);
            // In file order: the glob's matches sorted by path.
            assert_eq!(ws.names(), ["export", "report", "sync"]);
            let schedules: Vec<&str> = ws
                .pipelines
                .iter()
                .map(|c| c.pipeline.schedule.expression())
                .collect();
            assert_eq!(schedules, ["30 2 * * *", "@hourly", "*/15 * * * *"]);
            for c in &ws.pipelines {
                let name = &c.pipeline.name;
                let p = PIPELINES.iter().find(|p| p.name == name).unwrap();
                for stage in &c.stages {
                    assert_eq!(stage.workdir, root.join(DIR), "{name}");
                    let run = format!("{:?}", stage.run);
                    let (script, _) = shell.script(p);
                    assert!(run.contains(&script), "{name}: {run}");
                    assert!(files.iter().any(|f| f.ends_with(&script)), "{script}");
                }
            }
        }
    }

    #[test]
    fn every_script_reads_the_step_seconds_and_batch_files_have_crlf_line_ends() {
        for shell in [Shell::Sh, Shell::Cmd] {
            for p in &PIPELINES {
                let (script, body) = shell.script(p);
                assert!(body.contains(STEP_SECONDS_VAR), "{script}");
                if matches!(shell, Shell::Cmd) {
                    assert_eq!(
                        body.matches('\n').count(),
                        body.matches("\r\n").count(),
                        "{script}"
                    );
                    assert!(body.starts_with("@echo off\r\n"), "{script}");
                }
            }
        }
    }

    /// Both shells decide the sync's outcome on the same character of the run id: the tens
    /// of the start minute (index 11 of `20261203T0445…`).
    #[test]
    fn the_sync_fails_on_the_tens_of_the_start_minute() {
        let id = "20261203T044512345Z-abcdef";
        assert_eq!(&id[11..12], "4");
        assert!(SYNC_SH.contains("????????T??4*)"));
        assert!(SYNC_CMD.contains("%PIPEWATCH_RUN_ID:~11,1%\"==\"4\""));
    }
}
