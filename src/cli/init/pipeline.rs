//! `pipewatch init`'s one-pipeline example: a commented `pipewatch.toml` and the pipeline it
//! runs.
//!
//! The example needs nothing but what every machine has: POSIX `sh` on Linux and macOS,
//! `cmd.exe` on Windows, where the `report` stage is a PowerShell script when Windows
//! PowerShell is found to work (the scripts for the current OS are chosen in one place,
//! `scripts`). It is made to be worth watching: five stages, two of them at the same time,
//! output on stdout and stderr, a few seconds of runtime (about 30 s with
//! [`super::STEP_SECONDS_VAR`] at 2; each step prints its progress), and a stage that fails once and succeeds on its retry.

use std::path::PathBuf;

use crate::config::FILE_NAME;

const SCRIPTS_DIR: &str = "pipeline";

/// The example's files for this OS, relative to the folder it is written into.
pub(super) fn files() -> Vec<(PathBuf, String)> {
    files_of(scripts())
}

fn files_of(Example { runs, scripts }: Example) -> Vec<(PathBuf, String)> {
    let mut files = vec![(PathBuf::from(FILE_NAME), config_text(&runs))];
    for (name, body) in scripts {
        files.push((PathBuf::from(SCRIPTS_DIR).join(name), body.to_string()));
    }
    files
}

/// The `run` value of each example stage, as TOML.
struct Runs {
    extract: String,
    translate_fr: String,
    translate_de: String,
    load: String,
    report: String,
}

fn config_text(r: &Runs) -> String {
    format!(
        r#"# pipewatch configuration. Every key is documented in docs/configuration.md;
# the commented-out values below are the defaults.

[pipeline]
name = "translation"
# 5-field cron (minute hour day month weekday), or @hourly, @daily, ...
schedule = "*/15 * * * *"
# When a run starts while another is still going: skip | queue | parallel | replace
overlap = "skip"
# Occurrences missed while nothing could run them: none | last | all
# catchup = "last"
# catchup_window = "6h"
# Whole-run time limit (none by default).
timeout = "10m"

# Stages run as soon as every stage they `need` has succeeded, so stages with the
# same needs run at the same time. `run` is one string for the platform shell, or a
# list of arguments run directly. Each stage sees PIPEWATCH_RUN_ID, PIPEWATCH_PIPELINE,
# PIPEWATCH_STAGE and PIPEWATCH_ATTEMPT in its environment.

[[stages]]
name = "extract"
run = {extract}
timeout = "1m"

[[stages]]
name = "translate_fr"
run = {translate_fr}
needs = ["extract"]

[[stages]]
name = "translate_de"
run = {translate_de}
needs = ["extract"]

[[stages]]
name = "load"
run = {load}
needs = ["translate_fr", "translate_de"]
# The example warehouse drops the first connection: one retry, one second later.
retries = 1
retry_delay = "1s"

[[stages]]
name = "report"
run = {report}
needs = ["load"]
env = {{ REPORT_FORMAT = "text" }}

[server]
# bind = "127.0.0.1:8001"
# events_dir = "logs/events"     # one JSONL file per run
# state_dir = ".pipewatch"       # index, checkpoints, locks
# poll_interval = "2s"
# token = ""                     # or PIPEWATCH_TOKEN; required to bind beyond loopback

[retention]
# max_age = "90d"
# max_runs = 0

[scheduler]
# builtin | windows | systemd | cron
backend = "builtin"
task_name = "Pipeline Runner"
"#,
        extract = r.extract,
        translate_fr = r.translate_fr,
        translate_de = r.translate_de,
        load = r.load,
        report = r.report,
    )
}

/// The example's stage commands and script files.
struct Example {
    runs: Runs,
    scripts: Vec<(&'static str, &'static str)>,
}

/// The example for this OS: the only place that chooses. Every set is compiled everywhere, so
/// the tests check each of them on any machine.
fn scripts() -> Example {
    if cfg!(windows) {
        windows_example(powershell_works())
    } else {
        sh_example()
    }
}

/// POSIX `sh` scripts (Linux, macOS, the BSDs).
fn sh_example() -> Example {
    let sh = |args: &str| format!("\"sh {SCRIPTS_DIR}/{args}\"");
    Example {
        runs: Runs {
            extract: sh("extract.sh"),
            translate_fr: sh("translate.sh fr"),
            translate_de: sh("translate.sh de"),
            load: sh("load.sh"),
            report: sh("report.sh"),
        },
        scripts: vec![
            ("extract.sh", EXTRACT_SH),
            ("translate.sh", TRANSLATE_SH),
            ("load.sh", LOAD_SH),
            ("report.sh", REPORT_SH),
        ],
    }
}

/// Windows: batch files for `cmd.exe`, which every Windows has and which is the platform
/// shell a `run` string goes to. With `powershell`, the `report` stage is a Windows PowerShell
/// script instead, run as an argument list — the way to call PowerShell from a stage.
fn windows_example(powershell: bool) -> Example {
    // TOML literal strings: the backslashes stay as they are.
    let cmd = |args: &str| format!("'{SCRIPTS_DIR}\\{args}'");
    let mut scripts = vec![
        ("extract.cmd", EXTRACT_CMD),
        ("translate.cmd", TRANSLATE_CMD),
        ("load.cmd", LOAD_CMD),
    ];
    let report = if powershell {
        scripts.push(("report.ps1", REPORT_PS1));
        format!(
            "[\"powershell\", \"-NoProfile\", \"-NonInteractive\", \"-ExecutionPolicy\", \"Bypass\", \"-File\", '{SCRIPTS_DIR}\\report.ps1']"
        )
    } else {
        scripts.push(("report.cmd", REPORT_CMD));
        cmd("report.cmd")
    };
    Example {
        runs: Runs {
            extract: cmd("extract.cmd"),
            translate_fr: cmd("translate.cmd fr"),
            translate_de: cmd("translate.cmd de"),
            load: cmd("load.cmd"),
            report,
        },
        scripts,
    }
}

/// Whether Windows PowerShell runs here. Being on `PATH` proves nothing (Wine ships a
/// `powershell.exe` that prints nothing and exits 0; PowerShell may be removed or blocked by
/// policy), so it is asked to echo a word, and has 20 seconds to do it (its first start on a
/// fresh machine is slow).
fn powershell_works() -> bool {
    use std::io::Read;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    const WORD: &str = "pipewatch-powershell-ok";
    let spawned = Command::new("powershell")
        .args(["-NoProfile", "-NonInteractive", "-Command"])
        .arg(format!("Write-Output {WORD}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = spawned else {
        return false;
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                // A few bytes: the pipe cannot have filled while it ran.
                let mut out = String::new();
                if let Some(mut stdout) = child.stdout.take() {
                    let _ = stdout.read_to_string(&mut out);
                }
                return status.success() && out.trim() == WORD;
            }
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

const EXTRACT_SH: &str = r#"#!/bin/sh
# Stage 1: fetch a batch of documents (simulated). Each step takes
# EXAMPLE_STEP_SECONDS (0.2 by default; serve --example makes its first run
# slow enough to watch).
set -e
step="${EXAMPLE_STEP_SECONDS:-0.2}"
echo "fetching documents for run $PIPEWATCH_RUN_ID"
for page in 1 2 3 4 5; do
  sleep "$step"
  echo "fetched page $page/5 (50 documents)"
done
echo "extracted 250 documents"
"#;

const TRANSLATE_SH: &str = r#"#!/bin/sh
# Stages 2a and 2b: translate the batch into one language (the argument).
# Both run at the same time; each reports a few problems on stderr.
set -e
step="${EXAMPLE_STEP_SECONDS:-0.2}"
lang="${1:-fr}"
echo "[$lang] translating 250 documents"
for batch in 1 2 3 4 5 6; do
  sleep "$step"
  echo "[$lang] batch $batch/6 translated"
done
echo "[$lang] warning: 3 documents had untranslatable terms; kept the originals" >&2
echo "[$lang] done"
"#;

const LOAD_SH: &str = r#"#!/bin/sh
# Stage 3: load the translations. The example warehouse drops the first
# connection of every run, so attempt 1 fails and the retry succeeds.
set -e
step="${EXAMPLE_STEP_SECONDS:-0.2}"
echo "connecting to the warehouse (attempt ${PIPEWATCH_ATTEMPT:-1})"
sleep "$step"
if [ "${PIPEWATCH_ATTEMPT:-1}" = "1" ]; then
  echo "error: warehouse connection reset by peer" >&2
  exit 1
fi
echo "connected; writing 500 rows"
sleep "$step"
echo "loaded 500 rows"
"#;

const REPORT_SH: &str = r#"#!/bin/sh
# Stage 4: summarize the run.
set -e
sleep "${EXAMPLE_STEP_SECONDS:-0.2}"
echo "run $PIPEWATCH_RUN_ID: 250 documents, 2 languages, 500 rows ($REPORT_FORMAT report)"
"#;

// The batch files have CRLF line ends, as cmd.exe expects (labels and blocks can misparse
// without). `ping -n 2` on the loopback address is the pause of about a second that every
// Windows can make without a console (`timeout` refuses to run with its input redirected);
// each step pauses `ping -n <EXAMPLE_STEP_SECONDS + 1>`, which is no pause when it is unset.

const EXTRACT_CMD: &str = "@echo off\r\n\
rem Stage 1: fetch a batch of documents (simulated). Each step takes\r\n\
rem EXAMPLE_STEP_SECONDS (none by default; serve --example makes its first run\r\n\
rem slow enough to watch).\r\n\
setlocal\r\n\
set /a \"pings=%EXAMPLE_STEP_SECONDS%+1\"\r\n\
echo fetching documents for run %PIPEWATCH_RUN_ID%\r\n\
ping -n 2 127.0.0.1 >nul 2>&1\r\n\
for %%p in (1 2 3 4 5) do (\r\n\
\x20 ping -n %pings% 127.0.0.1 >nul 2>&1\r\n\
\x20 echo fetched page %%p/5 ^(50 documents^)\r\n\
)\r\n\
echo extracted 250 documents\r\n";

const TRANSLATE_CMD: &str = "@echo off\r\n\
rem Stages 2a and 2b: translate the batch into one language (the argument).\r\n\
rem Both run at the same time; each reports a few problems on stderr.\r\n\
setlocal\r\n\
set /a \"pings=%EXAMPLE_STEP_SECONDS%+1\"\r\n\
set \"lang=%~1\"\r\n\
if \"%lang%\"==\"\" set \"lang=fr\"\r\n\
echo [%lang%] translating 250 documents\r\n\
ping -n 2 127.0.0.1 >nul 2>&1\r\n\
for %%b in (1 2 3 4 5 6) do (\r\n\
\x20 ping -n %pings% 127.0.0.1 >nul 2>&1\r\n\
\x20 echo [%lang%] batch %%b/6 translated\r\n\
)\r\n\
>&2 echo [%lang%] warning: 3 documents had untranslatable terms; kept the originals\r\n\
echo [%lang%] done\r\n";

const LOAD_CMD: &str = "@echo off\r\n\
rem Stage 3: load the translations. The example warehouse drops the first\r\n\
rem connection of every run, so attempt 1 fails and the retry succeeds.\r\n\
setlocal\r\n\
set /a \"pings=%EXAMPLE_STEP_SECONDS%+1\"\r\n\
set \"attempt=%PIPEWATCH_ATTEMPT%\"\r\n\
if \"%attempt%\"==\"\" set \"attempt=1\"\r\n\
echo connecting to the warehouse (attempt %attempt%)\r\n\
ping -n 2 127.0.0.1 >nul 2>&1\r\n\
ping -n %pings% 127.0.0.1 >nul 2>&1\r\n\
if \"%attempt%\"==\"1\" (\r\n\
\x20 >&2 echo error: warehouse connection reset by peer\r\n\
\x20 exit /b 1\r\n\
)\r\n\
echo connected; writing 500 rows\r\n\
ping -n %pings% 127.0.0.1 >nul 2>&1\r\n\
echo loaded 500 rows\r\n";

const REPORT_CMD: &str = "@echo off\r\n\
rem Stage 4: summarize the run.\r\n\
setlocal\r\n\
set /a \"pings=%EXAMPLE_STEP_SECONDS%+1\"\r\n\
ping -n %pings% 127.0.0.1 >nul 2>&1\r\n\
echo run %PIPEWATCH_RUN_ID%: 250 documents, 2 languages, 500 rows (%REPORT_FORMAT% report)\r\n";

const REPORT_PS1: &str = r#"# Stage 4: summarize the run.
$step = 0
if ($env:EXAMPLE_STEP_SECONDS) { $step = [double]$env:EXAMPLE_STEP_SECONDS }
Start-Sleep -Milliseconds ([int]($step * 1000))
Write-Output "run $($env:PIPEWATCH_RUN_ID): 250 documents, 2 languages, 500 rows ($($env:REPORT_FORMAT) report)"
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::init::STEP_SECONDS_VAR;
    use crate::config::Config;

    /// Every example (each OS's, with and without PowerShell) is valid and worth watching,
    /// whichever OS the test runs on.
    #[test]
    fn example_config_is_valid_and_worth_watching() {
        for (what, example) in [
            ("sh", sh_example()),
            ("cmd", windows_example(false)),
            ("cmd and PowerShell", windows_example(true)),
            ("this OS", scripts()),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let files = super::super::write(dir.path(), files_of(example)).unwrap();
            assert!(files.len() >= 5, "{what}");
            let c = Config::load(&dir.path().join(FILE_NAME)).unwrap();
            assert!(c.stages.len() >= 4, "{what}");
            assert!(c.stages.iter().any(|s| s.retries > 0), "{what}");
            let parallel = c
                .stages
                .iter()
                .filter(|s| s.needs == c.stages[1].needs)
                .count();
            assert!(parallel >= 2, "{what}");
            // Each stage names a script that was written.
            for stage in &c.stages {
                let run = format!("{:?}", stage.run);
                assert!(
                    files.iter().any(|f| {
                        let name = f.file_name().unwrap().to_str().unwrap();
                        run.contains(&format!("{SCRIPTS_DIR}\\\\{name}"))
                            || run.contains(&format!("{SCRIPTS_DIR}/{name}"))
                    }),
                    "{what}: {run}"
                );
            }
        }
    }

    /// Every script paces its steps by the variable `serve --example` sets.
    #[test]
    fn every_script_reads_the_step_seconds() {
        for example in [sh_example(), windows_example(false), windows_example(true)] {
            for (name, body) in example.scripts {
                assert!(body.contains(STEP_SECONDS_VAR), "{name}");
            }
        }
    }

    /// The batch files have CRLF line ends only, and echo no commands.
    #[test]
    fn batch_files_have_crlf_line_ends() {
        for (name, body) in windows_example(false).scripts {
            if name.ends_with(".cmd") {
                assert_eq!(
                    body.matches('\n').count(),
                    body.matches("\r\n").count(),
                    "{name}"
                );
                assert!(body.starts_with("@echo off\r\n"), "{name}");
            }
        }
    }
}
