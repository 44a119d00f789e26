//! The built-in scheduler: its persisted state and on/off switch ([`Builtin`], the backend
//! behind the common interface), and the loop that fires runs inside `pipewatch serve`
//! ([`timer`]), driven by a [`Clock`](crate::scheduler::clock::Clock) so that it can be tested in simulated time.
//!
//! State lives in `<state_dir>/scheduler.json`, written atomically (tmp → fsync → rename), so
//! that enabled/disabled and the last occurrence handled survive restarts — and so that
//! `pipewatch scheduler enable|disable` works whether or not the dashboard is up.
//!
//! | module | owns |
//! |---|---|
//! | [`plan`] | the pure heart of catch-up: which late occurrences to run, which to record |
//! | [`timer`] | the loop: fire each occurrence while enabled, catch up after downtime |

pub mod plan;
pub mod timer;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Backend, SchedulerError, Status, Task, state};
use crate::config;
use crate::fsx;

/// The persisted state of the built-in scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Whether the schedule fires. A fresh install is enabled.
    pub enabled: bool,
    /// The last occurrence that was handled (run, skipped or recorded as missed).
    #[serde(default)]
    pub last_occurrence: Option<DateTime<Utc>>,
    /// When the last scheduled run was started, and its run id.
    #[serde(default)]
    pub last_run: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_run_id: Option<String>,
    /// When the schedule was last turned on (or first started, for a fresh setup): the
    /// cadence counts the occurrences it was expected to fire from then. `None` while it is
    /// off, and in a state file written before this field existed.
    #[serde(default)]
    pub enabled_since: Option<DateTime<Utc>>,
}

impl Default for State {
    fn default() -> State {
        State {
            enabled: true,
            last_occurrence: None,
            last_run: None,
            last_run_id: None,
            enabled_since: None,
        }
    }
}

/// The state file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("built-in scheduler state {path}: {message}")]
pub struct StateError {
    pub path: PathBuf,
    pub message: String,
}

/// The state file is a few hundred bytes; anything larger than this is not one.
const MAX_STATE_BYTES: u64 = 1024 * 1024;

pub fn state_path(state_dir: &Path) -> PathBuf {
    state_dir.join("scheduler.json")
}

impl State {
    /// Reads the state; a missing file is the default state. A corrupt one is reported, not
    /// silently replaced (the user's enabled/disabled choice is in it).
    pub fn load(state_dir: &Path) -> Result<State, StateError> {
        let path = state_path(state_dir);
        // Not `fs::read`: a FIFO planted under the name would block the dashboard's start.
        match fsx::read(&path, MAX_STATE_BYTES) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError {
                path,
                message: format!("unreadable ({e}); fix or delete the file"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(StateError {
                path,
                message: e.to_string(),
            }),
        }
    }

    /// Holds the state's lock file until dropped: every read-modify-write of the state (the
    /// dashboard's loop, the API, `pipewatch scheduler`) takes it, so that one never writes
    /// back a copy read before another's change — an enable or disable is never lost.
    pub fn lock(state_dir: &Path) -> Result<std::fs::File, StateError> {
        let path = state_dir.join("scheduler.json.lock");
        let err = |e: std::io::Error| StateError {
            path: path.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(state_dir).map_err(err)?;
        let file = fsx::open_lock(&path).map_err(err)?;
        file.lock().map_err(err)?;
        Ok(file)
    }

    /// Writes the state atomically.
    pub fn save(&self, state_dir: &Path) -> Result<(), StateError> {
        let path = state_path(state_dir);
        let err = |e: std::io::Error| StateError {
            path: path.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(state_dir).map_err(err)?;
        let body = serde_json::to_vec_pretty(self).unwrap_or_default();
        // Through a new temporary file, never one planted (a link would redirect the write).
        fsx::replace_durably(&path, &body).map_err(err)
    }
}

/// The built-in backend behind the common [`Backend`] interface: "installed" always, on or
/// off through the state file. The dashboard's loop picks a change up within seconds (at
/// once when the change comes through its API).
pub struct Builtin {
    task: Task,
    /// The pipeline's own state folder: its `scheduler.json`.
    state_dir: PathBuf,
    /// The configuration's: the run index and the runs' locks.
    shared_dir: PathBuf,
    pipeline: String,
}

impl Builtin {
    pub fn new(task: Task, config: &config::Config) -> Builtin {
        Builtin {
            task,
            state_dir: config.pipeline_state_dir.clone(),
            shared_dir: config.server.state_dir.clone(),
            pipeline: config.pipeline.name.clone(),
        }
    }

    fn io(&self, e: StateError) -> SchedulerError {
        SchedulerError::Io {
            path: e.path,
            source: std::io::Error::other(e.message),
        }
    }

    fn set(&self, enabled: bool) -> Result<Status, SchedulerError> {
        let lock = State::lock(&self.state_dir).map_err(|e| self.io(e))?;
        let mut s = State::load(&self.state_dir).map_err(|e| self.io(e))?;
        if s.enabled != enabled {
            s.enabled = enabled;
            if enabled {
                // Occurrences while it was off were not expected: count from now.
                let now = Utc::now();
                s.last_occurrence = Some(now);
                s.enabled_since = Some(now);
            } else {
                s.enabled_since = None;
            }
            s.save(&self.state_dir).map_err(|e| self.io(e))?;
        }
        drop(lock);
        self.status()
    }
}

impl Backend for Builtin {
    fn install(&self) -> Result<Status, SchedulerError> {
        self.set(true)
    }

    fn uninstall(&self) -> Result<Status, SchedulerError> {
        self.set(false)
    }

    fn enable(&self) -> Result<Status, SchedulerError> {
        self.set(true)
    }

    fn disable(&self) -> Result<Status, SchedulerError> {
        self.set(false)
    }

    fn status(&self) -> Result<Status, SchedulerError> {
        let s = State::load(&self.state_dir).map_err(|e| self.io(e))?;
        let mut status = self.task.status(config::Backend::Builtin);
        status.exists = true;
        // Its state lives in this configuration's state folder: it is always this one's, on
        // this one's schedule.
        status.installed_for = Some(status.config.clone());
        status.installed_schedule = Some(status.schedule.clone());
        status.enabled = s.enabled;
        status.state = if s.enabled {
            state::READY
        } else {
            state::DISABLED
        }
        .to_string();
        status.next_run = if s.enabled {
            self.task.next_from_schedule()
        } else {
            None
        };
        status.last_run = s
            .last_run
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        status.last_result = s
            .last_run_id
            .as_deref()
            .and_then(|id| last_result(&self.shared_dir, id));
        if s.enabled
            && !crate::runner::liveness::alive_runs_of(&self.shared_dir, &self.pipeline).is_empty()
        {
            status.state = state::RUNNING.to_string();
        }
        Ok(status)
    }
}

/// The status of the last scheduled run, from the run index if there is one.
fn last_result(state_dir: &Path, id: &str) -> Option<String> {
    let id = crate::event::RunId::parse(id).ok()?;
    let db = crate::index::path(state_dir);
    if !db.exists() {
        return None;
    }
    let index = crate::index::Index::open(&db).ok()?;
    Some(index.get_run(&id).ok()??.run.status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, h, m, 0).unwrap()
    }

    #[test]
    fn state_round_trips_and_survives_restarts() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), State::default());
        let s = State {
            enabled: false,
            last_occurrence: Some(t(9, 0)),
            last_run: Some(t(9, 0)),
            last_run_id: Some("r".into()),
            enabled_since: Some(t(8, 0)),
        };
        s.save(dir.path()).unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), s);
        std::fs::write(state_path(dir.path()), "{not json").unwrap();
        let e = State::load(dir.path()).unwrap_err();
        assert!(e.to_string().contains("scheduler.json"), "{e}");
    }

    #[test]
    fn changes_made_at_once_under_the_lock_are_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        let start = t(9, 0);
        State {
            last_occurrence: Some(start),
            ..State::default()
        }
        .save(dir.path())
        .unwrap();
        let change = |f: fn(&mut State)| {
            let dir = dir.path().to_path_buf();
            move || {
                for _ in 0..100 {
                    let _lock = State::lock(&dir).unwrap();
                    let mut s = State::load(&dir).unwrap();
                    f(&mut s);
                    s.save(&dir).unwrap();
                }
            }
        };
        let ticks = std::thread::spawn(change(|s| {
            s.last_occurrence = s.last_occurrence.map(|t| t + chrono::Duration::seconds(1))
        }));
        let toggles = std::thread::spawn(change(|s| s.enabled = !s.enabled));
        ticks.join().unwrap();
        toggles.join().unwrap();
        let s = State::load(dir.path()).unwrap();
        assert_eq!(
            s.last_occurrence,
            Some(start + chrono::Duration::seconds(100))
        );
        assert!(s.enabled, "100 toggles of an enabled schedule");
    }

    #[test]
    fn turning_the_schedule_on_records_when() {
        let dir = tempfile::tempdir().unwrap();
        let config = config::Config::parse(
            &format!(
                "[pipeline]\nname = \"p\"\n[[stages]]\nname = \"a\"\nrun = \"true\"\n\
                 [server]\nstate_dir = {:?}\n",
                dir.path().display().to_string()
            ),
            &dir.path().join("pipewatch.toml"),
        )
        .unwrap();
        let b = Builtin::new(crate::scheduler::test_support::task("@daily"), &config);
        b.disable().unwrap();
        assert_eq!(State::load(dir.path()).unwrap().enabled_since, None);
        let before = Utc::now();
        b.enable().unwrap();
        let since = State::load(dir.path()).unwrap().enabled_since.unwrap();
        assert!(since >= before && since <= Utc::now(), "{since}");
        // Enabling what is on already keeps the time it came on.
        b.enable().unwrap();
        assert_eq!(State::load(dir.path()).unwrap().enabled_since, Some(since));
    }
}
