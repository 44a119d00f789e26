//! The dashboard's side of scheduling: for every pipeline it runs the built-in timer (with
//! `[scheduler] backend = "builtin"`) and the occurrence auditor (every backend) on the wall
//! clock, and answers the pipeline's scheduler status with the cadence of the last day.
//!
//! The loops themselves live in `scheduler` and know nothing of HTTP; here they get the
//! dashboard's launcher ([`DashboardLauncher`]) and its run index (`IndexRuns`).
//!
//! The cadence counts the occurrences expected since the schedule came on (at most the last
//! 24 hours), so that a new or re-enabled schedule is not measured against a day it was off;
//! `came_on` says where that time comes from for each backend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::error::ApiError;
use super::launch::DashboardLauncher;
use super::state::AppState;
use crate::config::{Backend, Config, Workspace};
use crate::event::{format_timestamp, parse_timestamp};
use crate::index::{RunFilter, RunSummary};
use crate::scheduler::builtin::timer::Timer;
use crate::scheduler::clock::SystemClock;
use crate::scheduler::{self, SchedulerError, Status, audit};
use crate::sync::MutexExt;

/// The scheduling tasks of each pipeline, by name: started with the dashboard, started again
/// for a pipeline whose configuration a reload changed, stopped for one it removed.
#[derive(Default)]
pub struct Schedules {
    tasks: Mutex<HashMap<String, Tasks>>,
    /// What an OS scheduler last said about each pipeline's task, and when: see
    /// [`recent_status`].
    seen: Mutex<HashMap<String, (Instant, Status)>>,
}

/// One pipeline's built-in timer (with that backend) and auditor; dropping them stops them.
struct Tasks {
    /// The configuration they were started with.
    config: Config,
    /// Wakes the timer when the pipeline's state changed (enabled or disabled).
    wake: Arc<Notify>,
    handles: Vec<JoinHandle<()>>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        // The timer records an occurrence as handled before it starts its run, so one stopped
        // at any point neither loses nor repeats an occurrence: its successor goes on from
        // the state file.
        for h in &self.handles {
            h.abort();
        }
    }
}

impl Schedules {
    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tasks>> {
        self.tasks.lock_anyway()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Status)>> {
        self.seen.lock_anyway()
    }

    /// Wakes `pipeline`'s built-in timer, if it has one.
    pub fn wake(&self, pipeline: &str) {
        if let Some(t) = self.tasks().get(pipeline) {
            t.wake.notify_one();
        }
    }

    /// Stops every pipeline's tasks (the dashboard is closing).
    pub fn stop(&self) {
        self.tasks().clear();
    }
}

/// Brings the scheduling tasks in line with `workspace`: for every pipeline the built-in timer
/// (if it is the configured backend) and the auditor, left running for a pipeline whose
/// configuration is unchanged, started again for a changed one, stopped for one no longer
/// there. All stop when the dashboard closes.
pub fn apply(state: &Arc<AppState>, workspace: &Workspace) {
    let mut tasks = state.schedules.tasks();
    tasks.retain(|name, _| workspace.get(name).is_some());
    for config in &workspace.pipelines {
        let name = &config.pipeline.name;
        if tasks.get(name).is_some_and(|t| t.config == *config) {
            continue;
        }
        // The old ones stop before the new ones start; what its old task said is forgotten.
        tasks.remove(name);
        state.schedules.seen().remove(name);
        tasks.insert(name.clone(), start(state, config));
    }
}

fn start(state: &Arc<AppState>, config: &Config) -> Tasks {
    let wake = Arc::new(Notify::new());
    let mut handles = Vec::new();
    if config.scheduler.backend == Backend::Builtin {
        let timer = Timer::from_config(config);
        handles.push(tokio::spawn(timer.run(
            SystemClock,
            Arc::new(DashboardLauncher(state.clone(), config.clone())),
            wake.clone(),
            state.closed(),
        )));
    }
    let auditor = state.clone();
    let audited = config.clone();
    handles.push(tokio::spawn(async move {
        audit::audit(
            audited.pipeline.schedule.clone(),
            audited.scheduler.grace,
            &audited.server.events_dir,
            &audited.pipeline.name,
            SystemClock,
            IndexRuns(auditor.clone(), audited.clone()),
            auditor.closed(),
        )
        .await;
    }));
    Tasks {
        config: config.clone(),
        wake,
        handles,
    }
}

/// The runs of `config`'s pipeline in the index: all of them for a file of one pipeline
/// (whatever name other tools' runs carry), the pipeline's own in a workspace.
fn runs_of(config: &Config) -> Option<String> {
    config.run_name().map(str::to_string)
}

/// The auditor's view of one pipeline's runs: the run index, and its backend's on/off.
struct IndexRuns(Arc<AppState>, Config);

impl audit::Runs for IndexRuns {
    async fn scheduled_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64, String> {
        let (from, to) = (format_timestamp(from), format_timestamp(to));
        let pipeline = runs_of(&self.1);
        self.0
            .with_index(move |idx| {
                idx.scheduled_runs_between(&from, &to, true, pipeline.as_deref())
            })
            .await
            .map_err(|e| e.to_string())
    }

    async fn enabled(&self) -> bool {
        match self.1.scheduler.backend {
            Backend::Builtin => {
                scheduler::builtin::State::load(&self.1.pipeline_state_dir).is_ok_and(|s| s.enabled)
            }
            _ => call(&self.0, &self.1, |b| b.status())
                .await
                .is_ok_and(|s| s.enabled),
        }
    }
}

/// The effective cadence against the configured one, over the last 24 hours or, when the
/// schedule came on later than that, since it came on (`since`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Cadence {
    /// RFC 3339: where the counts start, the later of 24 hours ago and when the schedule came
    /// on (`came_on`); `null` while the schedule is off (nothing is expected of it then).
    #[schema(required = true)]
    pub since: Option<String>,
    /// Occurrences of the schedule from `since` to now; 0 while the schedule is off.
    pub expected_last_day: u64,
    /// Scheduled runs (scheduler or catch-up) that started from `since` to now (in the last
    /// 24 hours while the schedule is off); recorded misses are not runs.
    pub started_last_day: u64,
    /// Seconds between occurrences as configured (from the next two), if periodic.
    #[schema(required = true)]
    pub configured_interval_s: Option<i64>,
    /// The average interval between the starts of those runs, first to last; `null` with
    /// fewer than two (one run has no interval).
    #[schema(required = true)]
    pub effective_interval_s: Option<i64>,
}

/// The scheduler status of `GET /api/scheduler/status`, plus the cadence.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatusWithCadence {
    #[serde(flatten)]
    pub status: Status,
    /// `null` when the index cannot say.
    #[schema(required = true)]
    pub cadence: Option<Cadence>,
    /// The newest run of any source (`manual` and `cli` too; recorded misses left out), as
    /// `/api/runs` lists it: `last_run` only knows the runs the scheduler started. `null` when
    /// there is none or the index cannot say.
    #[schema(required = true)]
    pub latest_run: Option<RunSummary>,
}

/// Runs a backend operation on `config`'s task off the async workers.
pub(crate) async fn call(
    state: &Arc<AppState>,
    config: &Config,
    op: fn(&dyn scheduler::Backend) -> Result<Status, SchedulerError>,
) -> Result<Status, ApiError> {
    let b = scheduler::backend(
        config.scheduler.backend,
        config,
        scheduler::OsOptions {
            exe: Some(state.exe.clone()),
            ..scheduler::OsOptions::default()
        },
    );
    let result = tokio::task::spawn_blocking(move || op(b.as_ref()))
        .await
        .map_err(|e| ApiError::unavailable(format!("scheduler task failed: {e}")))?;
    Ok(result?)
}

/// How long the pipeline list reuses what an OS scheduler said about a pipeline's task: the
/// overview asks about every pipeline at each refresh, and an OS scheduler's tool takes from
/// milliseconds (crontab) to a tenth of a second or more (Task Scheduler) per task. A change
/// made through the dashboard shows at once; one made from a terminal within this.
pub const STATUS_FRESH: Duration = Duration::from_secs(10);

/// `config`'s task status as its OS scheduler said it within [`STATUS_FRESH`], else asked now.
pub async fn recent_status(state: &Arc<AppState>, config: &Config) -> Result<Status, ApiError> {
    let name = &config.pipeline.name;
    if let Some((at, s)) = state.schedules.seen().get(name)
        && at.elapsed() < STATUS_FRESH
    {
        return Ok(s.clone());
    }
    let s = call(state, config, |b| b.status()).await?;
    remember(state, config, &s);
    Ok(s)
}

fn remember(state: &AppState, config: &Config, status: &Status) {
    state.schedules.seen().insert(
        config.pipeline.name.clone(),
        (Instant::now(), status.clone()),
    );
}

/// The status of `config`'s task in its backend, with the cadence and the newest run.
pub async fn status(state: &Arc<AppState>, config: &Config) -> Result<StatusWithCadence, ApiError> {
    let status = call(state, config, |b| b.status()).await?;
    remember(state, config, &status);
    let now = Utc::now();
    Ok(StatusWithCadence {
        cadence: cadence(state, config, status.enabled, now).await,
        latest_run: latest_run(state, config).await,
        status,
    })
}

/// How many runs back the newest run that is not a recorded miss is looked for.
const LATEST_LOOKBACK: usize = 20;

async fn latest_run(state: &Arc<AppState>, config: &Config) -> Option<RunSummary> {
    let filter = RunFilter {
        status: None,
        pipeline: runs_of(config),
        host: None,
    };
    let runs = state
        .with_index(move |idx| idx.list_runs(LATEST_LOOKBACK, None, &filter))
        .await
        .ok()?;
    runs.into_iter().find(|r| r.status != "missed")
}

async fn cadence(
    state: &Arc<AppState>,
    config: &Config,
    enabled: bool,
    now: DateTime<Utc>,
) -> Option<Cadence> {
    let schedule = &config.pipeline.schedule;
    let day_ago = now - chrono::Duration::days(1);
    let configured = schedule
        .next_after(&now)
        .and_then(|a| schedule.next_after(&a).map(|b| (b - a).num_seconds()));
    // While the schedule is off nothing is expected; the runs of the last day still show.
    let window = if enabled {
        let on = came_on(state, config, day_ago, now).await?;
        Some(if on.at > day_ago {
            on
        } else {
            Since {
                at: day_ago,
                inclusive: false,
            }
        })
    } else {
        None
    };
    let expected = window.map_or(0, |w| {
        // `occurrences` counts those strictly after its start.
        let after = if w.inclusive {
            w.at - chrono::Duration::milliseconds(1)
        } else {
            w.at
        };
        schedule.occurrences(after, now).len() as u64
    });
    let from = format_timestamp(window.map_or(day_ago, |w| w.at));
    let to = format_timestamp(now);
    let pipeline = runs_of(config);
    let (started, first, last) = state
        .with_index(move |idx| idx.scheduled_span(&from, &to, false, pipeline.as_deref()))
        .await
        .ok()?;
    let effective = match (
        first.as_deref().and_then(parse_timestamp),
        last.as_deref().and_then(parse_timestamp),
    ) {
        (Some(first), Some(last)) if started >= 2 => {
            Some((last - first).num_seconds() / (started as i64 - 1))
        }
        _ => None,
    };
    Some(Cadence {
        since: window.map(|w| format_timestamp(w.at)),
        expected_last_day: expected,
        started_last_day: started,
        configured_interval_s: configured,
        effective_interval_s: effective,
    })
}

/// The first moment an occurrence of `config`'s schedule is expected, as the cadence counts
/// them: when the schedule came on ([`came_on`]), looking back a day at most for an OS
/// scheduler's; `None` when the index cannot say. The `late` alerts (`server::overdue`) use
/// it, so that an occurrence the cadence does not expect is never late.
pub(crate) async fn expected_from(
    state: &Arc<AppState>,
    config: &Config,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let on = came_on(state, config, now - chrono::Duration::days(1), now).await?;
    Some(if on.inclusive {
        on.at
    } else {
        on.at + chrono::Duration::milliseconds(1)
    })
}

/// Where the cadence's window starts.
#[derive(Debug, Clone, Copy)]
struct Since {
    at: DateTime<Utc>,
    /// Whether an occurrence at `at` itself is expected (`at` is that occurrence), or only
    /// those after it (`at` is when the schedule was turned on).
    inclusive: bool,
}

/// When the schedule came on, from the best record there is:
///
/// 1. the built-in scheduler's state file (`enabled_since`: when it was turned on, or first
///    started for a fresh setup);
/// 2. otherwise (an OS task, whose scheduler pipewatch cannot ask when it was created or
///    turned on, or a state file older than that field) the occurrence answered by the first
///    scheduled run or recorded miss since `day_ago`: nothing shows the schedule was on
///    before it;
/// 3. otherwise when this dashboard started: from then on the auditor records every
///    occurrence that gets no run, so an occurrence due since would have left a record.
///
/// `None` when the index cannot say.
async fn came_on(
    state: &Arc<AppState>,
    config: &Config,
    day_ago: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<Since> {
    if config.scheduler.backend == Backend::Builtin
        && let Ok(s) = scheduler::builtin::State::load(&config.pipeline_state_dir)
        && let Some(at) = s.enabled_since
    {
        return Some(Since {
            at,
            inclusive: false,
        });
    }
    let (from, to) = (format_timestamp(day_ago), format_timestamp(now));
    let pipeline = runs_of(config);
    let (_, first, _) = state
        .with_index(move |idx| idx.scheduled_span(&from, &to, true, pipeline.as_deref()))
        .await
        .ok()?;
    if let Some(first) = first.as_deref().and_then(parse_timestamp) {
        // A run starts at most `grace` after its occurrence; a miss is recorded at it.
        let grace =
            chrono::Duration::from_std(config.scheduler.grace).unwrap_or(chrono::Duration::zero());
        let schedule = &config.pipeline.schedule;
        let at = schedule
            .occurrences(first - grace - chrono::Duration::milliseconds(1), first)
            .last()
            .copied()
            .unwrap_or(first);
        return Some(Since {
            at,
            inclusive: true,
        });
    }
    let up =
        chrono::Duration::from_std(state.started.elapsed()).unwrap_or(chrono::Duration::zero());
    Some(Since {
        at: now - up,
        inclusive: false,
    })
}

/// Turns `config`'s schedule on or off (any backend) and wakes its built-in timer.
pub async fn set_enabled(
    state: &Arc<AppState>,
    config: &Config,
    enabled: bool,
) -> Result<StatusWithCadence, ApiError> {
    let switched = if enabled {
        call(state, config, |b| b.enable()).await
    } else {
        call(state, config, |b| b.disable()).await
    };
    if let Err(e) = switched {
        // Whatever the task is now, the status seen before may no longer be it.
        state.schedules.seen().remove(&config.pipeline.name);
        return Err(e);
    }
    state.wake_timer(&config.pipeline.name);
    status(state, config).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path, schedule: &str) -> Config {
        let text = format!(
            "[pipeline]\nname = \"p\"\nschedule = \"{schedule}\"\n\
             [server]\nevents_dir = \"events\"\nstate_dir = \"state\"\n\
             [[stages]]\nname = \"a\"\nrun = \"true\"\n"
        );
        Config::parse(&text, &dir.join("pipewatch.toml")).unwrap()
    }

    fn wake(state: &AppState) -> Arc<Notify> {
        state.schedules.tasks()["p"].wake.clone()
    }

    #[tokio::test]
    async fn only_a_changed_pipeline_gets_new_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let state =
            crate::server::detached_state(config(dir.path(), "@daily"), "pw".into()).unwrap();
        apply(&state, &state.workspace());
        let first = wake(&state);

        apply(&state, &state.workspace());
        assert!(Arc::ptr_eq(&first, &wake(&state)), "unchanged: kept");

        state.replace_workspace(config(dir.path(), "@hourly").into());
        apply(&state, &state.workspace());
        assert!(
            !Arc::ptr_eq(&first, &wake(&state)),
            "changed: started again"
        );
        // The old timer and auditor are gone: only the new tasks hold their wake.
        tokio::task::yield_now().await;
        assert_eq!(Arc::strong_count(&first), 1);

        state.schedules.stop();
        assert!(state.schedules.tasks().is_empty());
    }
}
