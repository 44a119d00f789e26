//! The `pipewatch.toml` configuration: every key, its default, and validation.
//!
//! [`Config::load`] reads the file, deserializes it with unknown keys refused, and then checks
//! what serde cannot: stage names unique, `needs` naming real stages, no dependency cycle, at
//! least one stage. Every error is a [`ConfigError`] naming the file, the line (from 1) and the
//! key — or, for a cycle, the stages in it — so the user can fix it before anything runs.
//!
//! Layering follows the usual order: embedded defaults < the file < environment
//! (`PIPEWATCH_TOKEN`) < command-line flags (applied by the caller on the returned value).
//! Relative paths in the file are resolved against the file's folder here, once, so no other
//! module has to know where the file was.
//!
//! # Layout
//!
//! - this module: the types every other module reads ([`Config`] and its tables), finding and
//!   loading the file;
//! - `file.rs`: the file as written — the raw TOML tables with spans, durations,
//!   commands, and the line and key of a byte offset;
//! - `validate.rs`: the checks, each a small function, and the defaults;
//! - [`alerts`]: the `[[alerts]]` destinations;
//! - [`smtp`]: the `[smtp]` mail server of e-mail destinations;
//! - [`cluster`]: the `[cluster]` NATS JetStream servers of many hosts;
//! - [`schedule`]: the cron expression;
//! - [`host`]: a host name or IP and port (`[server] allowed_hosts`, and the `Host` header
//!   the dashboard compares with it).
//!
//! Used by every command: `cli` loads it; `runner`, `server`, `scheduler` and `retention` read
//! the validated values and never the file.

pub mod alerts;
pub mod cluster;
mod file;
pub mod host;
pub mod params;
pub mod schedule;
pub mod smtp;
mod validate;
mod workspace;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use alerts::{Alert, AlertKind, Destination, Format, Overdue};
pub use cluster::Cluster;
pub use file::parse_duration;
use schedule::Schedule;
pub use smtp::{Smtp, SmtpTls};
pub use validate::DEFAULT_STREAM_BUFFER;
pub use workspace::Workspace;

pub const FILE_NAME: &str = "pipewatch.toml";

/// A configuration that failed to load; always says where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}:{line}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
    /// The pipeline asked for is not in the workspace, or one must be named.
    #[error("{path}: {message}")]
    Pipeline { path: PathBuf, message: String },
    #[error(
        "no {FILE_NAME} in {dir}: run `pipewatch init` to write an example, or pass --config PATH"
    )]
    NotFound { dir: PathBuf },
}

impl crate::exit::Code for ConfigError {
    /// A configuration error is the user's to fix: nothing was run.
    fn exit_code(&self) -> u8 {
        crate::exit::USAGE
    }
}

/// What to do when a run starts while another run of the same pipeline is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Do not start; the new run ends `skipped` (reason `overlap`). Task Scheduler: IgnoreNew.
    Skip,
    /// Wait for the running one to finish, then run. Task Scheduler: Queue.
    Queue,
    /// Run both at once. Task Scheduler: Parallel.
    Parallel,
    /// Cancel the running one (reason `replaced`) and start. Task Scheduler: StopExisting.
    Replace,
}

/// What to do with schedule occurrences missed while nothing could run them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Catchup {
    None,
    Last,
    All,
}

/// Which scheduler starts `pipewatch run` on the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Builtin,
    Windows,
    Systemd,
    Cron,
}

impl Backend {
    /// The name used in the file, on the command line and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Builtin => "builtin",
            Backend::Windows => "windows",
            Backend::Systemd => "systemd",
            Backend::Cron => "cron",
        }
    }
}

/// A stage's command: one string for the platform shell, or an argument list run directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Shell(String),
    Argv(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub name: String,
    pub schedule: Schedule,
    pub overlap: Overlap,
    pub catchup: Catchup,
    pub catchup_window: Duration,
    pub timeout: Option<Duration>,
    /// `[pipeline.params]`, by name.
    pub params: Vec<params::Param>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub name: String,
    pub run: Command,
    /// Indices into [`Config::stages`], resolved from the `needs` names.
    pub needs: Vec<usize>,
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub retry_delay: Duration,
    pub env: BTreeMap<String, String>,
    /// Absolute (resolved against the config file's folder).
    pub workdir: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub bind: SocketAddr,
    /// Absolute.
    pub events_dir: PathBuf,
    /// Absolute.
    pub state_dir: PathBuf,
    pub poll_interval: Duration,
    /// `stream_buffer`: the bytes of recent events the dashboard keeps for its streams (the
    /// bus's ring), whatever the number of clients. A reader further behind is caught up from
    /// the run files instead.
    pub stream_buffer: usize,
    /// Empty means no token.
    pub token: String,
    /// `allowed_hosts`: the names (and IPs) besides its own address and loopback that the
    /// dashboard answers to in a request's `Host` — the names a reverse proxy forwards.
    pub allowed_hosts: Vec<host::Host>,
}

impl Server {
    /// The identity of the events folder: the one fact a runner and a dashboard must share
    /// for the dashboard to see the runner's runs. 16 hex digits of FNV-1a (stable across
    /// versions and platforms) over the folder's canonical path (as configured if it does not
    /// exist). Opaque: it says which folder without saying where.
    pub fn events_id(&self) -> String {
        use std::hash::Hasher;
        let path =
            std::fs::canonicalize(&self.events_dir).unwrap_or_else(|_| self.events_dir.clone());
        let mut h = fnv::FnvHasher::default();
        h.write(path.to_string_lossy().as_bytes());
        format!("{:016x}", h.finish())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    /// `None` keeps files regardless of age.
    pub max_age: Option<Duration>,
    /// 0: no limit by count.
    pub max_runs: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scheduler {
    pub backend: Backend,
    pub task_name: String,
    /// How long after an occurrence a run may start before the occurrence is recorded as
    /// `missed`.
    pub grace: Duration,
}

/// A loaded, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Absolute path of the configuration file it came from: the workspace file for a
    /// pipeline of a workspace. A task or a dashboard belongs to this file.
    pub path: PathBuf,
    /// The file the pipeline is written in (`path` but in a workspace).
    pub file: PathBuf,
    /// What is this pipeline's own in the state: the overlap lock and the built-in
    /// scheduler's switch. `[server] state_dir` for a single pipeline (where it always was),
    /// `<state_dir>/pipelines/<name>` for a pipeline of a workspace.
    pub pipeline_state_dir: PathBuf,
    /// One of the pipelines of a `[workspace]`: commands that start it name it.
    pub in_workspace: bool,
    pub pipeline: Pipeline,
    /// In file order; `needs` refer to indices here and form no cycle.
    pub stages: Vec<Stage>,
    pub server: Server,
    pub retention: Retention,
    pub scheduler: Scheduler,
    /// `[cluster]`: runs publish their events to, and claim their occurrences in, NATS
    /// JetStream; `serve` shows every host's runs from it.
    pub cluster: Option<Cluster>,
}

impl Config {
    /// Finds the configuration: `explicit` when given, else `pipewatch.toml` in `cwd`.
    pub fn locate(explicit: Option<&Path>, cwd: &Path) -> Result<PathBuf, ConfigError> {
        match explicit {
            Some(p) => Ok(cwd.join(p)),
            None => {
                let p = cwd.join(FILE_NAME);
                if p.exists() {
                    Ok(p)
                } else {
                    Err(ConfigError::NotFound {
                        dir: cwd.to_path_buf(),
                    })
                }
            }
        }
    }

    /// Reads and validates the file at `path` as one pipeline (the only one of its
    /// workspace: see [`Workspace::load`] for several), then applies the environment layer.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let ws = Workspace::load(path)?;
        Ok(ws.select(None, "run")?.clone())
    }

    /// Parses and validates `text` as if read from `path` (used for messages and to resolve
    /// relative paths): a file with `[pipeline]`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw = file::read(text, path)?;
        if let Some(ws) = &raw.workspace {
            return Err(validate::error_at(
                path,
                text,
                ws.span().start,
                "workspace",
                "a workspace of several pipelines, where one pipeline file was expected"
                    .to_string(),
            ));
        }
        validate::validate(raw, text, path)
    }

    /// The folder relative paths in the file are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// The name `pipewatch run` is given to run this pipeline: its name in a workspace,
    /// nothing for a file of one pipeline.
    pub fn run_name(&self) -> Option<&str> {
        self.in_workspace.then_some(self.pipeline.name.as_str())
    }

    /// Each stage's `needs`, by name: the pipeline's dependency graph.
    pub fn stage_needs(&self) -> std::collections::BTreeMap<&str, Vec<&str>> {
        self.stages
            .iter()
            .map(|s| {
                let needs = s
                    .needs
                    .iter()
                    .filter_map(|&i| self.stages.get(i).map(|n| n.name.as_str()))
                    .collect();
                (s.name.as_str(), needs)
            })
            .collect()
    }

    /// Names of the stages in file order.
    pub fn stage_names(&self) -> Vec<&str> {
        self.stages.iter().map(|s| s.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/p/pipewatch.toml"))
    }

    /// The line, key and message of the error `text` is refused with.
    pub(super) fn err(text: &str) -> (usize, String, String) {
        match parse(text) {
            Err(ConfigError::Invalid {
                line, key, message, ..
            }) => (line, key, message),
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    #[test]
    fn stream_buffer_is_a_size_in_bounds() {
        let with = |v: &str| format!("{MINIMAL}\n[server]\nstream_buffer = {v}\n");
        for (v, bytes) in [
            ("\"64MiB\"", 64 << 20),
            ("\"2MB\"", 2_000_000),
            ("\"1 gib\"", 1 << 30),
            ("\"1048576\"", 1 << 20),
        ] {
            assert_eq!(parse(&with(v)).unwrap().server.stream_buffer, bytes, "{v}");
        }
        for bad in ["\"512KiB\"", "\"lots\"", "\"16 MiBs\"", "\"8GiB\"", "\"\""] {
            let (line, key, message) = err(&with(bad));
            assert_eq!((line, key.as_str()), (9, "server.stream_buffer"), "{bad}");
            assert!(message.contains("1MiB to 4GiB"), "{message}");
        }
    }

    pub(super) const MINIMAL: &str =
        "[pipeline]\nname = \"p\"\n\n[[stages]]\nname = \"a\"\nrun = \"true\"\n";

    #[test]
    fn defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.pipeline.name, "p");
        assert_eq!(c.pipeline.overlap, Overlap::Skip);
        assert_eq!(c.pipeline.catchup, Catchup::Last);
        assert_eq!(c.pipeline.catchup_window, Duration::from_secs(6 * 3600));
        assert_eq!(c.pipeline.timeout, None);
        assert_eq!(c.pipeline.schedule.expression(), "*/15 * * * *");
        assert_eq!(c.stages[0].retries, 0);
        assert_eq!(c.stages[0].workdir, Path::new("/p"));
        assert_eq!(c.server.bind.to_string(), "127.0.0.1:8001");
        assert_eq!(c.server.events_dir, Path::new("/p/logs/events"));
        assert_eq!(c.server.state_dir, Path::new("/p/.pipewatch"));
        assert_eq!(c.server.poll_interval, Duration::from_secs(2));
        assert_eq!(c.server.stream_buffer, 16 * 1024 * 1024);
        assert_eq!(c.retention.max_age, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(c.scheduler.backend, Backend::Builtin);
        assert_eq!(c.scheduler.task_name, "Pipeline Runner");
    }

    /// A path written with `/` is joined and shown in the platform's form: on Windows,
    /// `C:\etl\logs\events`, not `C:\etl\logs/events`.
    #[test]
    fn paths_are_in_the_platform_form() {
        let c = parse(&format!(
            "{MINIMAL}workdir = \"jobs/a/\"\n[server]\nstate_dir = \"var//state\"\n"
        ))
        .unwrap();
        // The configuration's own folder is put in the platform's form too.
        let base: PathBuf = Path::new("/p").components().collect();
        let text = |p: &Path| p.to_string_lossy().into_owned();
        assert_eq!(
            text(&c.server.events_dir),
            text(&base.join("logs").join("events"))
        );
        assert_eq!(
            text(&c.server.state_dir),
            text(&base.join("var").join("state"))
        );
        assert_eq!(
            text(&c.stages[0].workdir),
            text(&base.join("jobs").join("a"))
        );
    }

    #[test]
    fn every_key() {
        let c = parse(
            r#"
[pipeline]
name = "translation"
schedule = "@hourly"
overlap = "replace"
catchup = "all"
catchup_window = "2h"
timeout = "30m"

[[stages]]
name = "a"
run = ["python", "x.py"]
timeout = "5m"
retries = 2
retry_delay = "10s"
env = { LANG = "C.UTF-8" }
workdir = "sub"

[[stages]]
name = "b"
run = "echo hi"
needs = ["a"]

[server]
bind = "0.0.0.0:9000"
events_dir = "ev"
state_dir = "st"
poll_interval = "500ms"
token = "t"

[retention]
max_age = "0"
max_runs = 100

[scheduler]
backend = "systemd"
task_name = "Nightly"
"#,
        )
        .unwrap();
        assert_eq!(c.pipeline.overlap, Overlap::Replace);
        assert_eq!(c.pipeline.catchup, Catchup::All);
        assert_eq!(c.pipeline.timeout, Some(Duration::from_secs(1800)));
        assert_eq!(
            c.stages[0].run,
            Command::Argv(vec!["python".into(), "x.py".into()])
        );
        assert_eq!(c.stages[0].workdir, Path::new("/p/sub"));
        assert_eq!(c.stages[0].retry_delay, Duration::from_secs(10));
        assert_eq!(c.stages[1].needs, vec![0]);
        assert_eq!(c.server.poll_interval, Duration::from_millis(500));
        assert_eq!(c.retention.max_age, None);
        assert_eq!(c.retention.max_runs, 100);
        assert_eq!(c.scheduler.backend, Backend::Systemd);
    }
}
