//! The `pipewatch run` command line, built in one place for everyone who starts a run from
//! outside: the OS scheduler backends (the task, unit or crontab line), the built-in scheduler
//! and the dashboard's "Run now", and `serve --example`'s first run.
//!
//! A run is always a program plus separate arguments, never a string for a shell: a path with
//! spaces or quotes reaches `pipewatch run` unchanged. The flags here are the ones `cli`
//! parses for `run`; a test below keeps the two in step.

use std::ffi::OsString;
use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::event::RunId;

/// `<exe> run --config <config> --source <source>` plus the optional flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub exe: PathBuf,
    pub config: PathBuf,
    /// The pipeline of a workspace to run (`run NAME`); `None` for a file of one pipeline.
    pub pipeline: Option<String>,
    /// Recorded as every event's `source` (`scheduler`, `catchup`, `manual`, ...).
    pub source: String,
    /// `--quiet`: no terminal output (nobody reads a background run's stdout).
    pub quiet: bool,
    /// `--no-notify`: the starter is the dashboard itself, which knows the run already.
    pub no_notify: bool,
    /// `--run-id`: the id the starter has shown before the run wrote anything.
    pub run_id: Option<RunId>,
    /// `--param NAME=VALUE` each.
    pub params: Vec<(String, String)>,
    /// `--stage NAME` each: only these stages.
    pub stages: Vec<String>,
    /// `--retry RUN_ID`, with `--force`.
    pub retry: Option<(RunId, bool)>,
    /// `--occurrence TIME`: the occurrence of the schedule a scheduler starts this run for
    /// (the built-in scheduler knows it); under `[cluster]` it is what the run claims.
    pub occurrence: Option<DateTime<Utc>>,
}

impl Invocation {
    /// A run of `config` by `exe`, announced to the dashboard and printing as usual.
    pub fn new(exe: impl Into<PathBuf>, config: impl Into<PathBuf>, source: &str) -> Invocation {
        Invocation {
            exe: exe.into(),
            config: config.into(),
            pipeline: None,
            source: source.to_string(),
            quiet: false,
            no_notify: false,
            run_id: None,
            params: Vec::new(),
            stages: Vec::new(),
            retry: None,
            occurrence: None,
        }
    }

    /// A run of `config`'s pipeline: named when it is one of a workspace.
    pub fn of(exe: impl Into<PathBuf>, config: &crate::config::Config, source: &str) -> Invocation {
        let mut inv = Invocation::new(exe, &config.path, source);
        inv.pipeline = config.run_name().map(str::to_string);
        inv
    }

    /// A run the dashboard starts itself: quiet, not announced back to it, with the id given.
    pub fn from_dashboard(mut self, run_id: Option<RunId>) -> Invocation {
        self.quiet = true;
        self.no_notify = true;
        self.run_id = run_id;
        self
    }

    /// The arguments after the executable.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["run".into()];
        if let Some(name) = &self.pipeline {
            args.push(name.into());
        }
        args.extend([
            "--config".into(),
            self.config.clone().into_os_string(),
            "--source".into(),
            self.source.clone().into(),
        ]);
        if self.quiet {
            args.push("--quiet".into());
        }
        if self.no_notify {
            args.push("--no-notify".into());
        }
        if let Some(id) = &self.run_id {
            args.push("--run-id".into());
            args.push(id.as_str().into());
        }
        for (name, value) in &self.params {
            args.push("--param".into());
            args.push(format!("{name}={value}").into());
        }
        for stage in &self.stages {
            args.push("--stage".into());
            args.push(stage.into());
        }
        if let Some(at) = &self.occurrence {
            args.push("--occurrence".into());
            args.push(at.to_rfc3339_opts(SecondsFormat::Secs, true).into());
        }
        if let Some((id, force)) = &self.retry {
            args.push("--retry".into());
            args.push(id.as_str().into());
            if *force {
                args.push("--force".into());
            }
        }
        args
    }

    /// The command, ready to be given stdio and spawned.
    pub fn command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.args(self.args());
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduled_run_has_only_config_and_source() {
        let inv = Invocation::new("/usr/bin/pipewatch", "/srv/etl/pipewatch.toml", "scheduler");
        assert_eq!(
            inv.args(),
            [
                "run",
                "--config",
                "/srv/etl/pipewatch.toml",
                "--source",
                "scheduler"
            ]
            .map(OsString::from)
        );
    }

    #[test]
    fn an_occurrence_is_passed_as_utc_to_the_second() {
        let mut inv = Invocation::new("pw", "p.toml", "scheduler");
        inv.occurrence = chrono::DateTime::parse_from_rfc3339("2026-12-03T11:15:00+01:00")
            .ok()
            .map(|t| t.with_timezone(&Utc));
        let args = inv.args();
        assert_eq!(
            args[args.len() - 2..],
            ["--occurrence", "2026-12-03T10:15:00Z"].map(OsString::from)
        );
    }

    #[test]
    fn a_pipeline_of_a_workspace_is_named() {
        let mut inv = Invocation::new("pw", "/w/pipewatch.toml", "scheduler");
        inv.pipeline = Some("sync".into());
        assert_eq!(
            inv.args(),
            [
                "run",
                "sync",
                "--config",
                "/w/pipewatch.toml",
                "--source",
                "scheduler"
            ]
            .map(OsString::from)
        );
    }

    #[test]
    fn a_dashboard_run_is_quiet_silent_and_keeps_its_id() {
        let id = RunId::parse("20260101T000000Z-abcd").unwrap();
        let inv = Invocation::new("pw", "p.toml", "manual").from_dashboard(Some(id));
        assert_eq!(
            inv.args(),
            [
                "run",
                "--config",
                "p.toml",
                "--source",
                "manual",
                "--quiet",
                "--no-notify",
                "--run-id",
                "20260101T000000Z-abcd"
            ]
            .map(OsString::from)
        );
    }
}
