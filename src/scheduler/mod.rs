//! The OS scheduler backends: install, uninstall, enable, disable and query the task that
//! starts `pipewatch run` on the pipeline's schedule, in cron, systemd or Windows Task
//! Scheduler.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`builtin`] | the built-in scheduler: its persisted state, on/off, catch-up, the timer loop |
//! | [`clock`] | the clock the scheduler's loops read and sleep on: the system's, or a test's |
//! | [`audit`] | the occurrence auditor (every backend): occurrences without a run become `missed` |
//! | [`cron`] | the crontab block between marker comments; `crontab -l` / `crontab -` |
//! | [`systemd`] | the `.service` + `.timer` unit texts, cron → `OnCalendar=`, `systemctl` |
//! | [`windows`] | the Task Scheduler XML, cron → triggers, `schtasks` |
//! | [`exec`] | running the tools: the only place a process is started |
//! | `fields` | the cron expression as value sets, shared by the translations |
//!
//! Every backend builds its argument lists and file texts with pure functions (tested as
//! text) and hands the lists to [`exec`]. The built-in backend's loop runs inside the dashboard
//! ([`builtin::timer`], started by `server`); its state is a file, which `pipewatch scheduler`
//! can change whether or not the dashboard is up.
//!
//! Invariants: every backend starts exactly `<exe> run --config <absolute config> --source
//! scheduler` (one [`Invocation`]); a schedule a backend cannot express is refused at install with
//! [`SchedulerError::Unsupported`], never approximated; nothing is pasted into a shell string
//! except the crontab line, which cron itself hands to `/bin/sh` and which [`cron`] quotes.
//!
//! A task belongs to the configuration its command runs. Task names are per user, not per
//! project (every project's default is "Pipeline Runner"), so each backend reads back from
//! what is installed the `--config` of its command and the schedule it was installed with
//! ([`Installed`]); `Task::check_owner` refuses to install, uninstall, enable or disable a
//! task that runs another configuration ([`SchedulerError::Taken`]), and the status reports
//! what is installed, not what the configuration says (`Task::describe`). A task whose
//! command names no configuration (edited by hand) cannot be told to be this project's, so it
//! is treated like another's. Tasks installed by earlier versions already ran
//! `--config <absolute path>` and are read the same way.
//!
//! Callers: the `scheduler` command and the dashboard's `/api/scheduler/*` handlers, through
//! [`backend`]. The [`Backend`] methods block on external tools: async callers run them
//! with `spawn_blocking`. [`SchedulerError::is_tool_error`] tells the API which errors are
//! a 503.

pub mod audit;
pub mod builtin;
pub mod clock;
pub mod cron;
pub mod exec;
mod fields;
pub mod record;
pub mod systemd;
pub mod windows;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Local, SecondsFormat, TimeZone};
use serde::Serialize;

use crate::config::schedule::Schedule;
use crate::config::{self, Catchup, Config, Overlap};
use crate::runner::invocation::Invocation;

/// The `state` values of [`Status`].
pub mod state {
    /// Installed, enabled, not running now.
    pub const READY: &str = "ready";
    /// A run started by the scheduler is going on now.
    pub const RUNNING: &str = "running";
    /// Installed but turned off.
    pub const DISABLED: &str = "disabled";
    /// Not installed.
    pub const MISSING: &str = "missing";
}

/// What a scheduler says about the task: the object of `GET /api/scheduler/status` (`docs/api.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Status {
    pub backend: config::Backend,
    /// The OS scheduler's name for the task (the built-in scheduler's too).
    pub task_name: String,
    /// Whether the task is installed.
    pub exists: bool,
    pub enabled: bool,
    /// `ready`, `running`, `disabled` or `missing`: the values of `scheduler::state` (an OS
    /// scheduler may report another word of its own, such as `queued`).
    pub state: String,
    /// The cron expression from the configuration.
    pub schedule: String,
    /// RFC 3339.
    #[schema(required = true)]
    pub next_run: Option<String>,
    /// RFC 3339; `None` when the run never happened or the scheduler does not know.
    #[schema(required = true)]
    pub last_run: Option<String>,
    /// `success`, `running` or `failure: …`; `None` when unknown.
    #[schema(required = true)]
    pub last_result: Option<String>,
    /// This configuration file, absolute: the one `install` installs the task for.
    pub config: String,
    /// The configuration file the installed task runs, read from the task itself; `None` when
    /// nothing is installed or its command names none.
    #[schema(required = true)]
    pub installed_for: Option<String>,
    /// The schedule the installed task fires on, as the task records it (the crontab line's
    /// fields, the cron expression the systemd timer or Windows task was made from); `None`
    /// when nothing is installed or the task does not say.
    #[schema(required = true)]
    pub installed_schedule: Option<String>,
    /// `None` when the installed task is this configuration's and fires on its schedule (or
    /// nothing is installed).
    #[schema(required = true)]
    pub mismatch: Option<Mismatch>,
    /// What the mismatch means and what to do about it; `None` without one.
    #[schema(required = true)]
    pub warning: Option<String>,
}

/// How the installed task differs from what this configuration would install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mismatch {
    /// It runs another configuration file (another project with the same `task_name`).
    OtherConfig,
    /// Its command names no configuration file: it cannot be told to be this one's.
    UnknownConfig,
    /// It is this configuration's, installed with another schedule: reinstall to apply it.
    Schedule,
}

/// What an installed task says about itself, read back from the OS scheduler's copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    /// The `--config` of its command; `None` when its command has none that can be read.
    pub config: Option<PathBuf>,
    /// The schedule as the task records it, for people to read.
    pub schedule: Option<String>,
    /// Whether the task fires when this configuration's schedule does, compared in the
    /// backend's own terms (crontab fields, `OnCalendar=` values, the recorded expression).
    pub schedule_matches: bool,
}

/// Whose task an installed one is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// It runs this configuration.
    This,
    /// It runs this other configuration file.
    Other(PathBuf),
    /// Its command names no configuration.
    Unknown,
}

/// An OS scheduler. Every method blocks on external tools.
pub trait Backend: Send + Sync {
    /// Creates (or replaces) the task and leaves it enabled.
    fn install(&self) -> Result<Status, SchedulerError>;
    /// Removes the task; removing a task that is not there is not an error.
    fn uninstall(&self) -> Result<Status, SchedulerError>;
    /// Turns the installed task on.
    fn enable(&self) -> Result<Status, SchedulerError>;
    /// Turns the installed task off; a run going on now is left to finish.
    fn disable(&self) -> Result<Status, SchedulerError>;
    /// What the scheduler says about the task now.
    fn status(&self) -> Result<Status, SchedulerError>;
}

/// Why a scheduler operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("{tool} was not found on PATH: is it installed?")]
    ToolMissing { tool: String },
    #[error("cannot run {tool}: {source}")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{tool} {}` failed ({status}): {stderr}", args.join(" "))]
    ToolFailed {
        tool: String,
        args: Vec<String>,
        status: String,
        /// The end of what it wrote to stderr (or stdout when stderr was empty).
        stderr: String,
    },
    #[error("{tool} answered something pipewatch cannot read: {reason}")]
    Output { tool: String, reason: String },
    #[error("the {backend} backend cannot install the schedule {expression:?}: {reason}")]
    Unsupported {
        backend: &'static str,
        expression: String,
        reason: String,
    },
    #[error("{what} cannot be used by the {backend} backend: {reason}")]
    InvalidValue {
        backend: &'static str,
        what: String,
        reason: String,
    },
    #[error(
        "the {backend} task {task_name:?} is not installed: run `pipewatch scheduler install --backend {backend}`"
    )]
    NotInstalled {
        backend: &'static str,
        task_name: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot find the pipewatch executable: {0}")]
    Exe(#[source] std::io::Error),
    /// The task of this name runs another configuration.
    #[error(transparent)]
    Taken(Box<Taken>),
    #[error(
        "{config}: [scheduler] backend is {configured:?}, so the {configured} scheduler runs \
         this pipeline; a {asked} task would start every run a second time. To let {asked} run \
         it instead, set backend = \"{asked}\" under [scheduler] in {config}, then run \
         `pipewatch scheduler install`{hint}"
    )]
    NotTheActive {
        config: String,
        configured: &'static str,
        asked: &'static str,
        /// What to do about the configured one.
        hint: String,
    },
}

/// A task of this name that runs another configuration than the one asking: refused, with
/// the key to change and how to remove the other task.
#[derive(Debug, thiserror::Error)]
#[error(
    "the {backend} task {task_name:?} {}, not {config}: refusing to {action} it. \
     To give this pipeline a task of its own, set task_name to another name under \
     [scheduler] in {config}{}",
    runs_what(.other.as_deref()),
    .remove_hint
)]
pub struct Taken {
    pub backend: &'static str,
    pub task_name: String,
    /// The configuration file the installed task runs, if its command names one.
    pub other: Option<String>,
    /// This configuration file.
    pub config: String,
    /// What was asked, as a verb before "it": `install over`, `uninstall`, `enable`, `disable`.
    pub action: &'static str,
    /// How to remove the other task by hand, when that is what the user wants.
    pub remove_hint: String,
}

/// What a task runs, for messages: `other` is the configuration its command names.
fn runs_what(other: Option<&str>) -> String {
    match other {
        Some(p) => format!("runs the pipeline of {p}"),
        None => "runs a command that names no pipewatch configuration".to_string(),
    }
}

/// One pipeline has exactly one active scheduler: its configuration's `[scheduler] backend`.
/// Installing or turning on another would have both start every occurrence (the second run
/// `skipped (overlap)`, or twice with `queue` / `parallel`). Uninstalling, turning off and
/// asking the status of any backend stay allowed: that is how a task left over from an
/// earlier backend is cleaned up.
pub fn check_active(config: &Config, asked: config::Backend) -> Result<(), SchedulerError> {
    let configured = config.scheduler.backend;
    if asked == configured {
        return Ok(());
    }
    Err(SchedulerError::NotTheActive {
        config: config.path.display().to_string(),
        configured: configured.as_str(),
        asked: asked.as_str(),
        hint: if configured == config::Backend::Builtin {
            " (and restart `pipewatch serve`: its built-in scheduler then stands aside)".into()
        } else {
            format!(
                " (and remove the {0} task: `pipewatch scheduler uninstall --backend {0}`)",
                configured.as_str()
            )
        },
    })
}

impl crate::exit::Code for SchedulerError {
    /// A schedule or value the backend refuses is a usage error; a tool that is missing or
    /// failed, or a file that cannot be written, is the environment's.
    fn exit_code(&self) -> u8 {
        if self.is_tool_error()
            || matches!(self, SchedulerError::Io { .. } | SchedulerError::Exe(_))
        {
            crate::exit::ENVIRONMENT
        } else {
            crate::exit::USAGE
        }
    }
}

impl SchedulerError {
    /// Whether the scheduler tool is missing or failed (the API answers 503), as opposed to
    /// a schedule or value the backend refuses.
    pub fn is_tool_error(&self) -> bool {
        matches!(
            self,
            SchedulerError::ToolMissing { .. }
                | SchedulerError::Spawn { .. }
                | SchedulerError::ToolFailed { .. }
                | SchedulerError::Output { .. }
        )
    }
}

/// How to reach the OS scheduler; the defaults suit the normal case.
#[derive(Debug, Clone, Default)]
pub struct OsOptions {
    /// The pipewatch executable the task starts; default: this process's
    /// (`std::env::current_exe()`).
    pub exe: Option<PathBuf>,
    /// systemd: system units in `/etc/systemd/system` with `systemctl --system`, instead of
    /// the user's units in `~/.config/systemd/user` with `systemctl --user`.
    pub system: bool,
    /// systemd: write the units in this folder instead (tests, packaging).
    pub unit_dir: Option<PathBuf>,
    /// The `PATH` the tools are looked up on; default: this process's.
    pub tool_path: Option<OsString>,
}

/// The OS backend `kind` for `config`; `None` for [`config::Backend::Builtin`], which runs
/// inside `pipewatch serve`.
pub fn os_backend(
    kind: config::Backend,
    config: &Config,
    opts: OsOptions,
) -> Option<Box<dyn Backend>> {
    let task = Task::from_config(config, opts.exe.clone());
    let tools = exec::Tools::new(opts.tool_path.clone());
    match kind {
        config::Backend::Builtin => None,
        config::Backend::Cron => Some(Box::new(cron::Cron::new(task, tools))),
        config::Backend::Systemd => Some(Box::new(systemd::Systemd::new(task, tools, &opts))),
        config::Backend::Windows => Some(Box::new(windows::Windows::new(task, tools))),
    }
}

/// The backend `kind` for `config`, built-in included.
pub fn backend(kind: config::Backend, config: &Config, opts: OsOptions) -> Box<dyn Backend> {
    match os_backend(kind, config, opts) {
        Some(b) => b,
        None => Box::new(builtin::Builtin::new(
            Task::from_config(config, None),
            config,
        )),
    }
}

/// What every backend needs from the configuration.
#[derive(Debug, Clone)]
pub struct Task {
    pub task_name: String,
    pub schedule: Schedule,
    pub overlap: Overlap,
    pub catchup: Catchup,
    /// The whole run's timeout.
    pub timeout: Option<Duration>,
    /// The configuration file (made absolute when the command is built).
    pub config_path: PathBuf,
    /// The pipeline of a workspace the task runs (`run NAME`).
    pub pipeline: Option<String>,
    /// `None`: the running executable, resolved when the command is built.
    pub exe: Option<PathBuf>,
}

impl Task {
    pub fn from_config(config: &Config, exe: Option<PathBuf>) -> Task {
        // In a workspace each pipeline has a task of its own (§7: `<task_name> - <pipeline>`).
        let task_name = match config.run_name() {
            Some(p) => format!("{} - {p}", config.scheduler.task_name),
            None => config.scheduler.task_name.clone(),
        };
        Task {
            task_name,
            schedule: config.pipeline.schedule.clone(),
            overlap: config.pipeline.overlap,
            catchup: config.pipeline.catchup,
            timeout: config.pipeline.timeout,
            config_path: config.path.clone(),
            pipeline: config.run_name().map(str::to_string),
            exe,
        }
    }

    /// The command the scheduler starts, with absolute paths.
    pub fn invocation(&self) -> Result<Invocation, SchedulerError> {
        let exe = match &self.exe {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(SchedulerError::Exe)?,
        };
        let mut inv = Invocation::new(absolute(&exe)?, absolute(&self.config_path)?, "scheduler");
        inv.pipeline = self.pipeline.clone();
        Ok(inv)
    }

    /// A status with this task's name and schedule; the backend fills in the rest.
    pub(crate) fn status(&self, backend: config::Backend) -> Status {
        Status {
            backend,
            task_name: self.task_name.clone(),
            exists: false,
            enabled: false,
            state: state::MISSING.to_string(),
            schedule: self.schedule.expression().to_string(),
            next_run: None,
            last_run: None,
            last_result: None,
            config: self.config_text(),
            installed_for: None,
            installed_schedule: None,
            mismatch: None,
            warning: None,
        }
    }

    /// This configuration file, absolute, for messages and the status.
    fn config_text(&self) -> String {
        std::path::absolute(&self.config_path)
            .unwrap_or_else(|_| self.config_path.clone())
            .display()
            .to_string()
    }

    /// Whose task `installed` is: this configuration's when its `--config` is this file —
    /// the same absolute path, or the same file once links are resolved.
    pub fn owner(&self, installed: &Installed) -> Owner {
        let Some(theirs) = &installed.config else {
            return Owner::Unknown;
        };
        let ours =
            std::path::absolute(&self.config_path).unwrap_or_else(|_| self.config_path.clone());
        let same = same_path(&ours, theirs)
            || matches!(
                (std::fs::canonicalize(&ours), std::fs::canonicalize(theirs)),
                (Ok(a), Ok(b)) if a == b
            );
        if same {
            Owner::This
        } else {
            Owner::Other(theirs.clone())
        }
    }

    /// Refuses `action` on an installed task that is not this configuration's; nothing
    /// installed (`None`) is this configuration's to install.
    pub(crate) fn check_owner(
        &self,
        backend: &'static str,
        action: &'static str,
        installed: Option<&Installed>,
        remove_hint: impl FnOnce() -> String,
    ) -> Result<(), SchedulerError> {
        let other = match installed.map(|i| self.owner(i)) {
            None | Some(Owner::This) => return Ok(()),
            Some(Owner::Other(p)) => Some(p.display().to_string()),
            Some(Owner::Unknown) => None,
        };
        Err(SchedulerError::Taken(Box::new(Taken {
            backend,
            task_name: self.task_name.clone(),
            other,
            config: self.config_text(),
            action,
            remove_hint: remove_hint(),
        })))
    }

    /// Fills in what the installed task says about itself: the configuration it runs, the
    /// schedule it has, and how either differs from this configuration.
    pub(crate) fn describe(&self, status: &mut Status, installed: &Installed) {
        status.installed_for = installed.config.as_ref().map(|p| p.display().to_string());
        status.installed_schedule = installed.schedule.clone();
        let config = status.config.clone();
        let name = &self.task_name;
        let (mismatch, warning) = match self.owner(installed) {
            Owner::Other(p) => (
                Mismatch::OtherConfig,
                format!(
                    "the task {name:?} runs the pipeline of {}, not this one ({config}): set \
                     task_name to another name under [scheduler] in {config} and install again",
                    p.display()
                ),
            ),
            Owner::Unknown => (
                Mismatch::UnknownConfig,
                format!(
                    "the task {name:?} runs a command that names no pipewatch configuration: \
                     remove it, or set task_name to another name under [scheduler] in {config}"
                ),
            ),
            Owner::This if !installed.schedule_matches => (
                Mismatch::Schedule,
                format!(
                    "the task {name:?} was installed with the schedule {}, but {config} says \
                     {:?}: run `pipewatch scheduler install` to apply it",
                    installed
                        .schedule
                        .as_deref()
                        .map_or_else(|| "pipewatch cannot read".to_string(), |s| format!("{s:?}")),
                    self.schedule.expression()
                ),
            ),
            Owner::This => return,
        };
        status.mismatch = Some(mismatch);
        status.warning = Some(warning);
    }

    /// The next occurrence after now, computed from the schedule (for schedulers that do not
    /// say).
    pub(crate) fn next_from_schedule(&self) -> Option<String> {
        self.schedule.next_after(&Local::now()).map(|t| rfc3339(&t))
    }
}

/// Whether two absolute paths name the same file as written: case-insensitively on Windows,
/// whose file systems ignore case.
fn same_path(a: &Path, b: &Path) -> bool {
    #[cfg(windows)]
    {
        a.as_os_str().to_string_lossy().to_lowercase()
            == b.as_os_str().to_string_lossy().to_lowercase()
    }
    #[cfg(not(windows))]
    {
        a == b
    }
}

fn absolute(p: &Path) -> Result<PathBuf, SchedulerError> {
    std::path::absolute(p).map_err(|source| SchedulerError::Io {
        path: p.to_path_buf(),
        source,
    })
}

/// RFC 3339 with whole seconds and the numeric offset.
pub(crate) fn rfc3339<Tz: TimeZone>(t: &DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// A path as UTF-8 for a text format (crontab, unit file, XML), refusing what the format
/// cannot carry.
fn path_text<'a>(backend: &'static str, p: &'a Path) -> Result<&'a str, SchedulerError> {
    let s = p.to_str().ok_or_else(|| SchedulerError::InvalidValue {
        backend,
        what: format!("the path {}", p.display()),
        reason: "it is not valid UTF-8".to_string(),
    })?;
    if s.chars().any(char::is_control) {
        return Err(SchedulerError::InvalidValue {
            backend,
            what: format!("the path {s:?}"),
            reason: "it contains a control character (a line break ends a crontab line or a unit file setting)".to_string(),
        });
    }
    Ok(s)
}

/// A file written whole or not at all: a half-written unit or task file is worse than none.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SchedulerError> {
    let io = |source| SchedulerError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Through a new temporary file, never one planted there (a link would redirect the write).
    crate::fsx::replace(path, bytes).map_err(io)
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Values shared by the backends' tests.

    use super::*;

    /// Every character that has broken a shell, cron, a unit file or XML somewhere.
    pub const HOSTILE: &str = "it's \"q\" ; $(touch x) `id` 100% \\ back & <x> ünï 漢字";

    pub fn task(expr: &str) -> Task {
        Task {
            task_name: format!("Pipeline {HOSTILE}"),
            schedule: expr.parse().unwrap(),
            overlap: Overlap::Skip,
            catchup: Catchup::Last,
            timeout: Some(Duration::from_secs(1800)),
            config_path: PathBuf::from(format!("/srv/{HOSTILE}/pipewatch.toml")),
            pipeline: None,
            exe: Some(PathBuf::from(format!("/opt/{HOSTILE}/pipewatch"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_run_config_source_scheduler() {
        let mut t = test_support::task("@daily");
        // Absolute in the platform's form (`/srv/…` has no drive on Windows, and would be
        // completed with the current one).
        let root = if cfg!(windows) { r"C:\" } else { "/" };
        t.exe = Some(PathBuf::from(root).join("opt").join("pipewatch"));
        t.config_path = PathBuf::from(root)
            .join("srv")
            .join(test_support::HOSTILE)
            .join("pipewatch.toml");
        let inv = t.invocation().unwrap();
        assert!(inv.exe.is_absolute() && inv.config.is_absolute());
        let args = inv.args();
        assert_eq!(args.len(), 5);
        assert_eq!(args[0], "run");
        assert_eq!(args[1], "--config");
        assert_eq!(PathBuf::from(&args[2]), t.config_path);
        assert_eq!(args[3], "--source");
        assert_eq!(args[4], "scheduler");
    }

    #[test]
    fn status_serializes_with_the_contract_fields() {
        let s = test_support::task("*/15 * * * *").status(config::Backend::Cron);
        let v = serde_json::to_value(&s).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let mut want = vec![
            "backend",
            "task_name",
            "exists",
            "enabled",
            "state",
            "schedule",
            "next_run",
            "last_run",
            "last_result",
            "config",
            "installed_for",
            "installed_schedule",
            "mismatch",
            "warning",
        ];
        want.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, want);
        assert_eq!(v["backend"], "cron");
        assert_eq!(v["state"], "missing");
        assert!(v["last_run"].is_null());
    }

    #[cfg(unix)]
    #[test]
    fn a_task_is_this_configurations_when_it_runs_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("pipewatch.toml");
        std::fs::write(&real, "").unwrap();
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut t = test_support::task("@daily");
        t.config_path = link;
        let runs = |p: &Path| Installed {
            config: Some(p.to_path_buf()),
            schedule: Some("@daily".into()),
            schedule_matches: true,
        };
        assert_eq!(t.owner(&runs(&real)), Owner::This, "through the link");
        assert_eq!(t.owner(&runs(&t.config_path.clone())), Owner::This);
        let other = dir.path().join("other.toml");
        assert_eq!(t.owner(&runs(&other)), Owner::Other(other.clone()));
        assert_eq!(t.owner(&Installed::default()), Owner::Unknown);
        assert!(
            t.check_owner("cron", "uninstall", None, String::new)
                .is_ok()
        );
        let err = t
            .check_owner("cron", "uninstall", Some(&runs(&other)), String::new)
            .unwrap_err();
        assert_eq!(crate::exit::Code::exit_code(&err), crate::exit::USAGE);
        assert!(!err.is_tool_error());
    }

    #[test]
    fn the_status_says_whose_task_it_is_and_its_schedule() {
        let t = test_support::task("*/15 * * * *");
        let ours = std::path::absolute(&t.config_path).unwrap();
        let mut s = t.status(config::Backend::Cron);
        let installed = Installed {
            config: Some(ours.clone()),
            schedule: Some("*/5 * * * *".into()),
            schedule_matches: false,
        };
        t.describe(&mut s, &installed);
        assert_eq!(s.installed_for, Some(ours.display().to_string()));
        assert_eq!(s.installed_schedule.as_deref(), Some("*/5 * * * *"));
        assert_eq!(s.mismatch, Some(Mismatch::Schedule));
        assert!(s.warning.as_deref().unwrap().contains("\"*/5 * * * *\""));

        let mut s = t.status(config::Backend::Cron);
        t.describe(
            &mut s,
            &Installed {
                schedule_matches: true,
                ..installed.clone()
            },
        );
        assert_eq!((s.mismatch, s.warning), (None, None));

        let mut s = t.status(config::Backend::Cron);
        t.describe(
            &mut s,
            &Installed {
                config: Some("/elsewhere/pipewatch.toml".into()),
                ..installed
            },
        );
        assert_eq!(s.mismatch, Some(Mismatch::OtherConfig));
        let w = s.warning.unwrap();
        assert!(
            w.contains("/elsewhere/pipewatch.toml") && w.contains("task_name"),
            "{w}"
        );
        assert_eq!(
            serde_json::to_value(Mismatch::OtherConfig).unwrap(),
            "other_config"
        );
    }

    #[test]
    fn builtin_is_not_an_os_backend() {
        let text = "[pipeline]\nname = \"p\"\n[[stages]]\nname = \"a\"\nrun = \"true\"\n";
        let config = Config::parse(text, Path::new("/tmp/pipewatch.toml")).unwrap();
        assert!(os_backend(config::Backend::Builtin, &config, OsOptions::default()).is_none());
        for kind in [
            config::Backend::Cron,
            config::Backend::Systemd,
            config::Backend::Windows,
        ] {
            assert!(os_backend(kind, &config, OsOptions::default()).is_some());
        }
    }
}
