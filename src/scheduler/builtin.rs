//! The built-in scheduler's state, decisions and on/off switch (the loop that acts on them
//! runs inside `pipewatch serve`, in `server::timer`).
//!
//! State lives in `<state_dir>/scheduler.json`, written atomically (tmp → fsync → rename), so
//! that enabled/disabled and the last occurrence handled survive restarts — and so that
//! `pipewatch scheduler enable|disable` works whether or not the dashboard is up.
//!
//! [`plan_catchup`] is the pure heart of catch-up: given the occurrences that could not be
//! fired on time, which to run and which to record as `missed`, per `catchup` and
//! `catchup_window`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Backend, SchedulerError, Status, Task, state};
use crate::config::schedule::Schedule;
use crate::config::{self, Catchup};

/// Never plan more than this many occurrences at once (a per-second schedule after a week off
/// must not allocate millions of entries).
pub const MAX_PLANNED: usize = 10_000;

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
}

impl Default for State {
    fn default() -> State {
        State {
            enabled: true,
            last_occurrence: None,
            last_run: None,
            last_run_id: None,
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

pub fn state_path(state_dir: &Path) -> PathBuf {
    state_dir.join("scheduler.json")
}

impl State {
    /// Reads the state; a missing file is the default state. A corrupt one is reported, not
    /// silently replaced (the user's enabled/disabled choice is in it).
    pub fn load(state_dir: &Path) -> Result<State, StateError> {
        let path = state_path(state_dir);
        match std::fs::read(&path) {
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

    /// Writes the state atomically.
    pub fn save(&self, state_dir: &Path) -> Result<(), StateError> {
        let path = state_path(state_dir);
        let err = |e: std::io::Error| StateError {
            path: path.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(state_dir).map_err(err)?;
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        let body = serde_json::to_vec_pretty(self).unwrap_or_default();
        f.write_all(&body).map_err(err)?;
        f.sync_all().map_err(err)?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(err)
    }
}

/// What to do about the occurrences between the last one handled and now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Occurrences to run now, oldest first.
    pub run: Vec<DateTime<Utc>>,
    /// Occurrences to record as `missed` (no run), oldest first.
    pub missed: Vec<DateTime<Utc>>,
}

/// The occurrences of `schedule` strictly after `after` and at or before `now`, at most
/// [`MAX_PLANNED`] of the newest.
pub fn occurrences(
    schedule: &Schedule,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let mut out = std::collections::VecDeque::new();
    let mut t = after;
    while let Some(next) = schedule.next_after(&t) {
        if next > now {
            break;
        }
        if out.len() == MAX_PLANNED {
            out.pop_front();
        }
        out.push_back(next);
        t = next;
    }
    out.into()
}

/// Decides what to do with occurrences that could not be fired on time (`late`, oldest
/// first): those older than `window` before `now` are only recorded as missed; of the others,
/// `none` runs none, `last` runs the newest, `all` runs each in order.
pub fn plan_catchup(
    late: Vec<DateTime<Utc>>,
    now: DateTime<Utc>,
    policy: Catchup,
    window: Duration,
) -> Plan {
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let horizon = now
        .checked_sub_signed(window)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let (old, recent): (Vec<_>, Vec<_>) = late.into_iter().partition(|t| *t < horizon);
    let mut plan = Plan {
        run: Vec::new(),
        missed: old,
    };
    match policy {
        Catchup::None => plan.missed.extend(recent),
        Catchup::All => plan.run = recent,
        Catchup::Last => {
            let mut recent = recent;
            if let Some(newest) = recent.pop() {
                plan.missed.extend(recent);
                plan.run.push(newest);
            }
        }
    }
    plan.missed.sort();
    plan
}

/// The built-in backend behind the common [`Backend`] interface: "installed" always, on or
/// off through the state file. The dashboard's loop picks a change up within seconds (at
/// once when the change comes through its API).
pub struct Builtin {
    task: Task,
    state_dir: PathBuf,
}

impl Builtin {
    pub fn new(task: Task, state_dir: PathBuf) -> Builtin {
        Builtin { task, state_dir }
    }

    fn io(&self, e: StateError) -> SchedulerError {
        SchedulerError::Io {
            path: e.path,
            source: std::io::Error::other(e.message),
        }
    }

    fn set(&self, enabled: bool) -> Result<Status, SchedulerError> {
        let mut s = State::load(&self.state_dir).map_err(|e| self.io(e))?;
        if s.enabled != enabled {
            s.enabled = enabled;
            if enabled {
                // Occurrences while it was off were not expected: count from now.
                s.last_occurrence = Some(Utc::now());
            }
            s.save(&self.state_dir).map_err(|e| self.io(e))?;
        }
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
            .and_then(|id| last_result(&self.state_dir, id));
        if s.enabled && !crate::runner::liveness::alive_runs(&self.state_dir).is_empty() {
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

    fn every_15() -> Schedule {
        "*/15 * * * *".parse().unwrap()
    }

    #[test]
    fn catchup_policies() {
        let s = every_15();
        let six_h = Duration::from_secs(6 * 3600);
        // Off from 08:00 to 09:05: 08:15, 08:30, 08:45, 09:00 were missed.
        let late = || occurrences(&s, t(8, 0), t(9, 5));
        let none = plan_catchup(late(), t(9, 5), Catchup::None, six_h);
        assert!(none.run.is_empty());
        assert_eq!(none.missed, vec![t(8, 15), t(8, 30), t(8, 45), t(9, 0)]);
        let last = plan_catchup(late(), t(9, 5), Catchup::Last, six_h);
        assert_eq!(last.run, vec![t(9, 0)]);
        assert_eq!(last.missed, vec![t(8, 15), t(8, 30), t(8, 45)]);
        let all = plan_catchup(late(), t(9, 5), Catchup::All, six_h);
        assert_eq!(all.run, vec![t(8, 15), t(8, 30), t(8, 45), t(9, 0)]);
        assert!(all.missed.is_empty());
    }

    #[test]
    fn the_window_bounds_catchup() {
        let s = every_15();
        let late = || occurrences(&s, t(8, 0), t(9, 5));
        let plan = plan_catchup(late(), t(9, 5), Catchup::All, Duration::from_secs(1800));
        assert_eq!(plan.run, vec![t(8, 45), t(9, 0)]);
        assert_eq!(plan.missed, vec![t(8, 15), t(8, 30)]);
        let plan = plan_catchup(late(), t(9, 5), Catchup::Last, Duration::from_secs(60));
        assert!(plan.run.is_empty(), "nothing recent enough to run");
        assert_eq!(plan.missed.len(), 4);
    }

    #[test]
    fn nothing_missed_nothing_planned() {
        let late = occurrences(&every_15(), t(9, 0), t(9, 5));
        let plan = plan_catchup(late, t(9, 5), Catchup::All, Duration::from_secs(60));
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn a_long_outage_is_bounded() {
        let s: Schedule = "* * * * * *".parse().unwrap();
        let start = t(0, 0);
        let now = start + chrono::Duration::days(2);
        let occ = occurrences(&s, start, now);
        assert_eq!(occ.len(), MAX_PLANNED);
        assert_eq!(occ.last(), Some(&now));
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
        };
        s.save(dir.path()).unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), s);
        std::fs::write(state_path(dir.path()), "{not json").unwrap();
        let e = State::load(dir.path()).unwrap_err();
        assert!(e.to_string().contains("scheduler.json"), "{e}");
    }
}
