//! `pipewatch init`: a commented `pipewatch.toml` and the example pipeline it runs.
//!
//! The example needs nothing but what every machine has: POSIX `sh` on Linux and macOS,
//! Windows PowerShell on Windows (the scripts for the current OS are chosen in one place,
//! `scripts`). It is made to be worth watching: five stages, two of them at the same time,
//! output on stdout and stderr, a few seconds of runtime, and a stage that fails once and
//! succeeds on its retry. Existing files are never overwritten: if any target exists, nothing
//! is written.

use std::path::{Path, PathBuf};

use crate::config::FILE_NAME;

/// `init` refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "{} already exists; pipewatch init never overwrites files (remove it or init in another folder)",
        .0.display()
    )]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl crate::exit::Code for InitError {
    fn exit_code(&self) -> u8 {
        match self {
            InitError::Exists(_) => crate::exit::USAGE,
            _ => crate::exit::ENVIRONMENT,
        }
    }
}

const SCRIPTS_DIR: &str = "pipeline";

/// Writes the example into `dir`; returns the files written.
pub fn write_example(dir: &Path) -> Result<Vec<PathBuf>, InitError> {
    let (runs, scripts) = scripts();
    let mut files: Vec<(PathBuf, String)> = vec![(dir.join(FILE_NAME), config_text(&runs))];
    for (name, body) in scripts {
        files.push((dir.join(SCRIPTS_DIR).join(name), body.to_string()));
    }
    if let Some((p, _)) = files.iter().find(|(p, _)| p.exists()) {
        return Err(InitError::Exists(p.clone()));
    }
    let mut written = Vec::new();
    for (path, body) in files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| InitError::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        // create_new: a file that appeared since the check above is still not overwritten.
        let result = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, body.as_bytes()));
        result.map_err(|source| InitError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
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

/// The stage commands and script files for this OS.
#[cfg(not(windows))]
fn scripts() -> (Runs, Vec<(&'static str, &'static str)>) {
    let sh = |args: &str| format!("\"sh {SCRIPTS_DIR}/{args}\"");
    (
        Runs {
            extract: sh("extract.sh"),
            translate_fr: sh("translate.sh fr"),
            translate_de: sh("translate.sh de"),
            load: sh("load.sh"),
            report: sh("report.sh"),
        },
        vec![
            ("extract.sh", EXTRACT_SH),
            ("translate.sh", TRANSLATE_SH),
            ("load.sh", LOAD_SH),
            ("report.sh", REPORT_SH),
        ],
    )
}

#[cfg(windows)]
fn scripts() -> (Runs, Vec<(&'static str, &'static str)>) {
    let ps = |file: &str, arg: &str| {
        let arg = if arg.is_empty() {
            String::new()
        } else {
            format!(", \"{arg}\"")
        };
        format!(
            "[\"powershell\", \"-NoProfile\", \"-ExecutionPolicy\", \"Bypass\", \"-File\", \"{SCRIPTS_DIR}/{file}\"{arg}]"
        )
    };
    (
        Runs {
            extract: ps("extract.ps1", ""),
            translate_fr: ps("translate.ps1", "fr"),
            translate_de: ps("translate.ps1", "de"),
            load: ps("load.ps1", ""),
            report: ps("report.ps1", ""),
        },
        vec![
            ("extract.ps1", EXTRACT_PS1),
            ("translate.ps1", TRANSLATE_PS1),
            ("load.ps1", LOAD_PS1),
            ("report.ps1", REPORT_PS1),
        ],
    )
}

#[cfg(not(windows))]
const EXTRACT_SH: &str = r#"#!/bin/sh
# Stage 1: fetch a batch of documents (simulated).
set -e
echo "fetching documents for run $PIPEWATCH_RUN_ID"
for page in 1 2 3 4 5; do
  sleep 0.2
  echo "fetched page $page/5 (50 documents)"
done
echo "extracted 250 documents"
"#;

#[cfg(not(windows))]
const TRANSLATE_SH: &str = r#"#!/bin/sh
# Stages 2a and 2b: translate the batch into one language (the argument).
# Both run at the same time; each reports a few problems on stderr.
set -e
lang="${1:-fr}"
echo "[$lang] translating 250 documents"
for batch in 1 2 3 4; do
  sleep 0.3
  echo "[$lang] batch $batch/4 translated"
done
echo "[$lang] warning: 3 documents had untranslatable terms; kept the originals" >&2
echo "[$lang] done"
"#;

#[cfg(not(windows))]
const LOAD_SH: &str = r#"#!/bin/sh
# Stage 3: load the translations. The example warehouse drops the first
# connection of every run, so attempt 1 fails and the retry succeeds.
echo "connecting to the warehouse (attempt ${PIPEWATCH_ATTEMPT:-1})"
sleep 0.4
if [ "${PIPEWATCH_ATTEMPT:-1}" = "1" ]; then
  echo "error: warehouse connection reset by peer" >&2
  exit 1
fi
echo "loaded 500 rows"
"#;

#[cfg(not(windows))]
const REPORT_SH: &str = r#"#!/bin/sh
# Stage 4: summarize the run.
echo "run $PIPEWATCH_RUN_ID: 250 documents, 2 languages, 500 rows ($REPORT_FORMAT report)"
"#;

#[cfg(windows)]
const EXTRACT_PS1: &str = r#"# Stage 1: fetch a batch of documents (simulated).
$ErrorActionPreference = "Stop"
Write-Output "fetching documents for run $env:PIPEWATCH_RUN_ID"
foreach ($page in 1..5) {
  Start-Sleep -Milliseconds 200
  Write-Output "fetched page $page/5 (50 documents)"
}
Write-Output "extracted 250 documents"
"#;

#[cfg(windows)]
const TRANSLATE_PS1: &str = r#"# Stages 2a and 2b: translate the batch into one language (the argument).
param([string]$Lang = "fr")
$ErrorActionPreference = "Stop"
Write-Output "[$Lang] translating 250 documents"
foreach ($batch in 1..4) {
  Start-Sleep -Milliseconds 300
  Write-Output "[$Lang] batch $batch/4 translated"
}
[Console]::Error.WriteLine("[$Lang] warning: 3 documents had untranslatable terms; kept the originals")
Write-Output "[$Lang] done"
"#;

#[cfg(windows)]
const LOAD_PS1: &str = r#"# Stage 3: load the translations. The example warehouse drops the first
# connection of every run, so attempt 1 fails and the retry succeeds.
$attempt = if ($env:PIPEWATCH_ATTEMPT) { $env:PIPEWATCH_ATTEMPT } else { "1" }
Write-Output "connecting to the warehouse (attempt $attempt)"
Start-Sleep -Milliseconds 400
if ($attempt -eq "1") {
  [Console]::Error.WriteLine("error: warehouse connection reset by peer")
  exit 1
}
Write-Output "loaded 500 rows"
"#;

#[cfg(windows)]
const REPORT_PS1: &str = r#"# Stage 4: summarize the run.
Write-Output "run $($env:PIPEWATCH_RUN_ID): 250 documents, 2 languages, 500 rows ($($env:REPORT_FORMAT) report)"
"#;

/// `pipewatch init`: writes the example into `dir` and says what to do next.
pub fn command(dir: &Path) -> Result<u8, super::CliError> {
    let files = write_example(dir)?;
    for f in &files {
        println!("wrote {}", f.strip_prefix(dir).unwrap_or(f).display());
    }
    println!("next: pipewatch run   (or pipewatch serve to watch it live)");
    Ok(crate::exit::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn example_config_is_valid_and_worth_watching() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_example(dir.path()).unwrap();
        assert!(files.len() >= 5);
        let c = Config::load(&dir.path().join(FILE_NAME)).unwrap();
        assert!(c.stages.len() >= 4);
        assert!(c.stages.iter().any(|s| s.retries > 0));
        let parallel = c
            .stages
            .iter()
            .filter(|s| s.needs == c.stages[1].needs)
            .count();
        assert!(parallel >= 2);
    }

    #[test]
    fn never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "mine").unwrap();
        assert!(matches!(
            write_example(dir.path()),
            Err(InitError::Exists(_))
        ));
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap(),
            "mine"
        );
        assert!(!dir.path().join(SCRIPTS_DIR).exists());
    }
}
