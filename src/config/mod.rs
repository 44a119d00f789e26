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

pub mod schedule;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

use crate::event::PIPELINE_STAGE;
use schedule::Schedule;

/// The name of the configuration file looked for in the working directory.
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
    #[error(
        "no {FILE_NAME} in {dir}: run `pipewatch init` to write an example, or pass --config PATH"
    )]
    NotFound { dir: PathBuf },
}

impl ConfigError {
    /// A configuration error is the user's to fix: nothing was run.
    pub fn exit_code(&self) -> u8 {
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
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

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub schedule: Schedule,
    pub overlap: Overlap,
    pub catchup: Catchup,
    pub catchup_window: Duration,
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone)]
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

#[derive(Debug, Clone)]
pub struct Server {
    pub bind: SocketAddr,
    /// Absolute.
    pub events_dir: PathBuf,
    /// Absolute.
    pub state_dir: PathBuf,
    pub poll_interval: Duration,
    /// Empty means no token.
    pub token: String,
}

#[derive(Debug, Clone)]
pub struct Retention {
    /// `None` keeps files regardless of age.
    pub max_age: Option<Duration>,
    /// 0: no limit by count.
    pub max_runs: u64,
}

#[derive(Debug, Clone)]
pub struct Scheduler {
    pub backend: Backend,
    pub task_name: String,
    /// How long after an occurrence a run may start before the occurrence is recorded as
    /// `missed`.
    pub grace: Duration,
}

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Absolute path of the file it came from.
    pub path: PathBuf,
    pub pipeline: Pipeline,
    /// In file order; `needs` refer to indices here and form no cycle.
    pub stages: Vec<Stage>,
    pub server: Server,
    pub retention: Retention,
    pub scheduler: Scheduler,
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

    /// Reads and validates the file at `path`, then applies the environment layer.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let mut config = Self::parse(&text, &abs)?;
        if let Ok(token) = std::env::var("PIPEWATCH_TOKEN")
            && !token.is_empty()
        {
            config.server.token = token;
        }
        Ok(config)
    }

    /// Parses and validates `text` as if read from `path` (used for messages and to resolve
    /// relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().trim().to_string();
            invalid_at(path, text, span.start, &message)
        })?;
        validate(raw, text, path)
    }

    /// The folder relative paths in the file are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Names of the stages in file order.
    pub fn stage_names(&self) -> Vec<&str> {
        self.stages.iter().map(|s| s.name.as_str()).collect()
    }
}

/// Builds an [`ConfigError::Invalid`] for the byte offset `at` of `text`: the line is counted
/// from 1 and the key is what stands before `=` on that line (or the table header).
fn invalid_at(path: &Path, text: &str, at: usize, message: &str) -> ConfigError {
    let line = line_of(text, at);
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        key: key_at_line(text, line),
        message: message.to_string(),
    }
}

/// The dotted key written on `line` (from 1): the key before `=` prefixed with the table it
/// is in (`pipeline.timeout`, `stages.timeout`), or the table itself on a header line.
fn key_at_line(text: &str, line: usize) -> String {
    let mut table = String::new();
    let mut key = String::new();
    for (i, l) in text.lines().take(line).enumerate() {
        let t = l.trim();
        if t.starts_with('[') {
            table = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            if i + 1 == line {
                return table;
            }
        } else if i + 1 == line {
            key = match t.split_once('=') {
                Some((k, _)) => k.trim().trim_matches('"').to_string(),
                None => t.to_string(),
            };
        }
    }
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

// ---------------------------------------------------------------------------------------------
// The file as written (serde), before validation.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    pipeline: Option<Spanned<RawPipeline>>,
    #[serde(default)]
    stages: Vec<Spanned<RawStage>>,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    scheduler: RawScheduler,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    name: Option<Spanned<String>>,
    #[serde(default)]
    schedule: Option<Schedule>,
    #[serde(default)]
    overlap: Option<Overlap>,
    #[serde(default)]
    catchup: Option<Catchup>,
    #[serde(default)]
    catchup_window: Option<Dur>,
    #[serde(default)]
    timeout: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    name: Spanned<String>,
    run: Command,
    #[serde(default)]
    needs: Vec<Spanned<String>>,
    #[serde(default)]
    timeout: Option<Dur>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default)]
    retry_delay: Option<Dur>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    workdir: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    bind: Option<Spanned<String>>,
    events_dir: Option<String>,
    state_dir: Option<String>,
    poll_interval: Option<Dur>,
    token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    max_age: Option<Dur>,
    max_runs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawScheduler {
    backend: Option<Backend>,
    task_name: Option<Spanned<String>>,
    grace: Option<Dur>,
}

/// A duration written like `30m`, `10s`, `1h30m`, `90d`; `0` means zero.
#[derive(Debug, Clone, Copy)]
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).map_err(de::Error::custom)
    }
}

/// Parses a duration as written in the configuration (`250ms`, `10s`, `5m`, `6h`, `90d`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t).map_err(|e| {
        format!("invalid duration {s:?} ({e}); write a number and a unit, like \"30s\", \"5m\", \"6h\" or \"90d\"")
    })
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Command;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command string or a list of arguments")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Command, E> {
                if v.trim().is_empty() {
                    return Err(E::custom("the command is empty"));
                }
                Ok(Command::Shell(v.to_string()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Command, A::Error> {
                let mut argv = Vec::new();
                while let Some(a) = seq.next_element::<String>()? {
                    argv.push(a);
                }
                if argv.first().is_none_or(|p| p.is_empty()) {
                    return Err(de::Error::custom(
                        "the argument list is empty or names no program",
                    ));
                }
                Ok(Command::Argv(argv))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Validation.

fn validate(raw: RawConfig, text: &str, path: &Path) -> Result<Config, ConfigError> {
    let err = |at: usize, key: &str, message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        line: line_of(text, at),
        key: key.to_string(),
        message,
    };
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();

    let Some(raw_pipeline) = raw.pipeline else {
        return Err(err(
            0,
            "pipeline",
            "missing [pipeline] table with a `name`".to_string(),
        ));
    };
    let pipeline_at = raw_pipeline.span().start;
    let rp = raw_pipeline.into_inner();
    let Some(name) = rp.name else {
        return Err(err(
            pipeline_at,
            "pipeline.name",
            "missing: every pipeline needs a name".to_string(),
        ));
    };
    let name_at = name.span().start;
    let name = name.into_inner();
    if name.trim().is_empty() || name.chars().any(char::is_control) {
        return Err(err(
            name_at,
            "pipeline.name",
            "must be a non-empty name without control characters".to_string(),
        ));
    }
    let pipeline = Pipeline {
        name,
        schedule: rp.schedule.unwrap_or_default(),
        overlap: rp.overlap.unwrap_or(Overlap::Skip),
        catchup: rp.catchup.unwrap_or(Catchup::Last),
        catchup_window: rp
            .catchup_window
            .map_or(Duration::from_secs(6 * 3600), |d| d.0),
        timeout: non_zero(rp.timeout),
    };

    if raw.stages.is_empty() {
        return Err(err(
            pipeline_at,
            "stages",
            "the pipeline has no stages: add at least one [[stages]] table with `name` and `run`"
                .to_string(),
        ));
    }

    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, s) in raw.stages.iter().enumerate() {
        let n = s.get_ref().name.get_ref();
        let at = s.get_ref().name.span().start;
        if !valid_stage_name(n) {
            return Err(err(
                at,
                "stages.name",
                format!("invalid stage name {n:?}: use 1 to 64 letters, digits, `_`, `-` or `.`"),
            ));
        }
        if n == PIPELINE_STAGE {
            return Err(err(
                at,
                "stages.name",
                format!("{n:?} is reserved for run-level events; choose another stage name"),
            ));
        }
        if index.insert(n.clone(), i).is_some() {
            return Err(err(
                at,
                "stages.name",
                format!("duplicate stage name {n:?}: stage names must be unique"),
            ));
        }
    }

    let mut stages = Vec::with_capacity(raw.stages.len());
    let mut stage_lines = Vec::with_capacity(raw.stages.len());
    for s in raw.stages {
        let stage_at = s.span().start;
        let s = s.into_inner();
        let mut needs = Vec::new();
        for n in &s.needs {
            match index.get(n.get_ref()) {
                Some(&j) if !needs.contains(&j) => needs.push(j),
                Some(_) => {}
                None => {
                    return Err(err(
                        n.span().start,
                        "stages.needs",
                        format!(
                            "stage {:?} needs {:?}, which is not a stage of this pipeline",
                            s.name.get_ref(),
                            n.get_ref()
                        ),
                    ));
                }
            }
        }
        for k in s.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(err(
                    stage_at,
                    "stages.env",
                    format!("invalid environment variable name {k:?}"),
                ));
            }
        }
        stage_lines.push(line_of(text, s.name.span().start));
        stages.push(Stage {
            name: s.name.into_inner(),
            run: s.run,
            needs,
            timeout: non_zero(s.timeout),
            retries: s.retries.unwrap_or(0),
            retry_delay: s.retry_delay.map_or(Duration::ZERO, |d| d.0),
            env: s.env,
            workdir: s.workdir.map_or_else(|| base.clone(), |w| base.join(w)),
        });
    }

    if let Some(cycle) = find_cycle(&stages) {
        let names: Vec<&str> = cycle.iter().map(|&i| stages[i].name.as_str()).collect();
        let first = cycle.first().copied().unwrap_or(0);
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            line: stage_lines[first],
            key: "stages.needs".to_string(),
            message: format!(
                "dependency cycle: {} -> {}",
                names.join(" -> "),
                names.first().copied().unwrap_or("")
            ),
        });
    }

    let bind = match raw.server.bind {
        None => SocketAddr::from(([127, 0, 0, 1], 8001)),
        Some(b) => b.get_ref().trim().parse::<SocketAddr>().map_err(|e| {
            err(
                b.span().start,
                "server.bind",
                format!(
                    "invalid address {:?} ({e}); write an IP and a port, like \"127.0.0.1:8001\"",
                    b.get_ref()
                ),
            )
        })?,
    };
    let server = Server {
        bind,
        events_dir: base.join(raw.server.events_dir.as_deref().unwrap_or("logs/events")),
        state_dir: base.join(raw.server.state_dir.as_deref().unwrap_or(".pipewatch")),
        poll_interval: raw
            .server
            .poll_interval
            .map_or(Duration::from_secs(2), |d| d.0)
            .max(Duration::from_millis(50)),
        token: raw.server.token.unwrap_or_default(),
    };

    let retention = Retention {
        max_age: match raw.retention.max_age {
            None => Some(Duration::from_secs(90 * 86_400)),
            Some(Dur(d)) if d.is_zero() => None,
            Some(Dur(d)) => Some(d),
        },
        max_runs: raw.retention.max_runs.unwrap_or(0),
    };

    let task_name = match raw.scheduler.task_name {
        None => "Pipeline Runner".to_string(),
        Some(t) => {
            let v = t.get_ref();
            if v.trim().is_empty() || v.chars().any(char::is_control) {
                return Err(err(
                    t.span().start,
                    "scheduler.task_name",
                    "must be a non-empty name without control characters".to_string(),
                ));
            }
            t.into_inner()
        }
    };
    let scheduler = Scheduler {
        backend: raw.scheduler.backend.unwrap_or(Backend::Builtin),
        task_name,
        grace: raw
            .scheduler
            .grace
            .map_or(Duration::from_secs(120), |d| d.0)
            .max(Duration::from_secs(1)),
    };

    Ok(Config {
        path: path.to_path_buf(),
        pipeline,
        stages,
        server,
        retention,
        scheduler,
    })
}

fn non_zero(d: Option<Dur>) -> Option<Duration> {
    d.map(|d| d.0).filter(|d| !d.is_zero())
}

fn valid_stage_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Returns the stages of one dependency cycle in order, if there is one.
fn find_cycle(stages: &[Stage]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(i: usize, stages: &[Stage], mark: &mut [Mark], path: &mut Vec<usize>) -> bool {
        mark[i] = Mark::OnPath;
        path.push(i);
        for &j in &stages[i].needs {
            match mark[j] {
                Mark::OnPath => {
                    let start = path.iter().position(|&p| p == j).unwrap_or(0);
                    path.drain(..start);
                    return true;
                }
                Mark::New => {
                    if visit(j, stages, mark, path) {
                        return true;
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        mark[i] = Mark::Done;
        false
    }
    let mut mark = vec![Mark::New; stages.len()];
    for i in 0..stages.len() {
        if mark[i] == Mark::New {
            let mut path = Vec::new();
            if visit(i, stages, &mut mark, &mut path) {
                // `path` runs from the needed stage down to the one needing it; present it in
                // the order "a needs b needs c needs a" reads naturally.
                return Some(path);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/p/pipewatch.toml"))
    }

    fn err(text: &str) -> (usize, String, String) {
        match parse(text) {
            Err(ConfigError::Invalid {
                line, key, message, ..
            }) => (line, key, message),
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    const MINIMAL: &str = "[pipeline]\nname = \"p\"\n\n[[stages]]\nname = \"a\"\nrun = \"true\"\n";

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
        assert_eq!(c.retention.max_age, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(c.scheduler.backend, Backend::Builtin);
        assert_eq!(c.scheduler.task_name, "Pipeline Runner");
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

    #[test]
    fn unknown_key_names_line_and_key() {
        let (line, key, msg) = err(&format!("{MINIMAL}colour = \"red\"\n"));
        assert_eq!(line, 7);
        assert_eq!(key, "stages.colour");
        assert!(msg.contains("unknown field"), "{msg}");
    }

    #[test]
    fn bad_duration() {
        let (line, key, msg) = err(&format!("{MINIMAL}timeout = \"5 parsecs\"\n"));
        assert_eq!((line, key.as_str()), (7, "stages.timeout"));
        assert!(msg.contains("5 parsecs"), "{msg}");
    }

    #[test]
    fn bad_cron() {
        let (line, key, msg) = err(
            "[pipeline]\nname = \"p\"\nschedule = \"*/15 * * *\"\n[[stages]]\nname = \"a\"\nrun = \"true\"\n",
        );
        assert_eq!((line, key.as_str()), (3, "pipeline.schedule"));
        assert!(msg.contains("*/15 * * *"), "{msg}");
    }

    #[test]
    fn needs_unknown_stage() {
        let (line, key, msg) = err(&format!(
            "{MINIMAL}\n[[stages]]\nname = \"b\"\nrun = \"true\"\nneeds = [\"nope\"]\n"
        ));
        assert_eq!((line, key.as_str()), (11, "stages.needs"));
        assert!(msg.contains("\"nope\""), "{msg}");
    }

    #[test]
    fn cycle_names_the_stages() {
        let text = "[pipeline]\nname = \"p\"\n[[stages]]\nname = \"a\"\nrun = \"x\"\nneeds = [\"c\"]\n[[stages]]\nname = \"b\"\nrun = \"x\"\nneeds = [\"a\"]\n[[stages]]\nname = \"c\"\nrun = \"x\"\nneeds = [\"b\"]\n";
        let (_, key, msg) = err(text);
        assert_eq!(key, "stages.needs");
        assert!(msg.contains("dependency cycle"), "{msg}");
        for s in ["a", "b", "c"] {
            assert!(msg.contains(&format!("{s} ")) || msg.ends_with(s), "{msg}");
        }
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        let (_, _, msg) = err(
            "[pipeline]\nname = \"p\"\n[[stages]]\nname = \"a\"\nrun = \"x\"\nneeds = [\"a\"]\n",
        );
        assert_eq!(msg, "dependency cycle: a -> a");
    }

    #[test]
    fn duplicate_and_empty() {
        let (line, _, msg) = err(&format!("{MINIMAL}[[stages]]\nname = \"a\"\nrun = \"y\"\n"));
        assert_eq!(line, 8);
        assert!(msg.contains("duplicate"), "{msg}");
        let (_, key, _) = err("[pipeline]\nname = \"p\"\n");
        assert_eq!(key, "stages");
        let (_, key, _) = err("[[stages]]\nname = \"a\"\nrun = \"x\"\n");
        assert_eq!(key, "pipeline");
    }

    #[test]
    fn bad_enum_and_bind() {
        let (line, key, msg) = err(
            "[pipeline]\nname = \"p\"\noverlap = \"sometimes\"\n[[stages]]\nname = \"a\"\nrun = \"x\"\n",
        );
        assert_eq!((line, key.as_str()), (3, "pipeline.overlap"));
        assert!(msg.contains("sometimes"), "{msg}");
        let (line, key, _) = err(&format!("{MINIMAL}[server]\nbind = \"localhost\"\n"));
        assert_eq!((line, key.as_str()), (8, "server.bind"));
    }

    #[test]
    fn empty_command_refused() {
        let (line, key, _) = err("[pipeline]\nname = \"p\"\n[[stages]]\nname = \"a\"\nrun = []\n");
        assert_eq!((line, key.as_str()), (5, "stages.run"));
    }
}
