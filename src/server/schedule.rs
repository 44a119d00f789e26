//! The dashboard's side of scheduling: it runs the built-in timer (with `[scheduler] backend =
//! "builtin"`) and the occurrence auditor (every backend) on the wall clock, and answers the
//! scheduler status with the cadence of the last day.
//!
//! The loops themselves live in `scheduler` and know nothing of HTTP; here they get the
//! dashboard's launcher ([`DashboardLauncher`]) and its run index (`IndexRuns`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::task::JoinHandle;

use super::error::ApiError;
use super::launch::DashboardLauncher;
use super::state::AppState;
use crate::config::Backend;
use crate::event::format_timestamp;
use crate::scheduler::builtin::timer::Timer;
use crate::scheduler::clock::SystemClock;
use crate::scheduler::{self, SchedulerError, Status, audit};

/// Starts the built-in timer (if it is the configured backend) and the auditor; both stop
/// when the dashboard closes.
pub fn start(state: &Arc<AppState>) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    if state.config.scheduler.backend == Backend::Builtin {
        let timer = Timer::from_config(&state.config);
        tasks.push(tokio::spawn(timer.run(
            SystemClock,
            Arc::new(DashboardLauncher(state.clone())),
            state.timer_wake.clone(),
            state.closed(),
        )));
    }
    let auditor = state.clone();
    tasks.push(tokio::spawn(async move {
        let config = &auditor.config;
        audit::audit(
            config.pipeline.schedule.clone(),
            config.scheduler.grace,
            &config.server.events_dir,
            &config.pipeline.name,
            SystemClock,
            IndexRuns(auditor.clone()),
            auditor.closed(),
        )
        .await;
    }));
    tasks
}

/// The auditor's view of runs: the run index, and the configured backend's on/off.
struct IndexRuns(Arc<AppState>);

impl audit::Runs for IndexRuns {
    async fn scheduled_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64, String> {
        let (from, to) = (format_timestamp(from), format_timestamp(to));
        self.0
            .with_index(move |idx| idx.scheduled_runs_between(&from, &to, true))
            .await
            .map_err(|e| e.to_string())
    }

    async fn enabled(&self) -> bool {
        match self.0.config.scheduler.backend {
            Backend::Builtin => scheduler::builtin::State::load(&self.0.config.server.state_dir)
                .is_ok_and(|s| s.enabled),
            _ => call(&self.0, |b| b.status()).await.is_ok_and(|s| s.enabled),
        }
    }
}

/// The effective cadence of the last day against the configured one.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Cadence {
    /// Occurrences the schedule had in the last 24 hours.
    pub expected_last_day: u64,
    /// Scheduled runs (scheduler or catch-up) that started in the last 24 hours.
    pub started_last_day: u64,
    /// Seconds between occurrences as configured (from the next two), if periodic.
    #[schema(required = true)]
    pub configured_interval_s: Option<i64>,
    /// 86,400 / started runs: the interval the runs really had on average.
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
}

/// Runs a backend operation off the async workers.
async fn call(
    state: &Arc<AppState>,
    op: fn(&dyn scheduler::Backend) -> Result<Status, SchedulerError>,
) -> Result<Status, ApiError> {
    let b = scheduler::backend(
        state.config.scheduler.backend,
        &state.config,
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

/// The status of the configured backend, with the cadence of the last day.
pub async fn status(state: &Arc<AppState>) -> Result<StatusWithCadence, ApiError> {
    let status = call(state, |b| b.status()).await?;
    Ok(StatusWithCadence {
        status,
        cadence: cadence(state, Utc::now()).await,
    })
}

async fn cadence(state: &Arc<AppState>, now: DateTime<Utc>) -> Option<Cadence> {
    let schedule = &state.config.pipeline.schedule;
    let day_ago = now - chrono::Duration::days(1);
    let expected = schedule.occurrences(day_ago, now).len() as u64;
    let configured = schedule
        .next_after(&now)
        .and_then(|a| schedule.next_after(&a).map(|b| (b - a).num_seconds()));
    let (from, to) = (format_timestamp(day_ago), format_timestamp(now));
    let started = state
        .with_index(move |idx| idx.scheduled_runs_between(&from, &to, false))
        .await
        .ok()?;
    Some(Cadence {
        expected_last_day: expected,
        started_last_day: started,
        configured_interval_s: configured,
        effective_interval_s: (started > 0).then(|| 86_400 / started as i64),
    })
}

/// Turns the schedule on or off (any backend) and wakes the built-in timer.
pub async fn set_enabled(
    state: &Arc<AppState>,
    enabled: bool,
) -> Result<StatusWithCadence, ApiError> {
    if enabled {
        call(state, |b| b.enable()).await?;
    } else {
        call(state, |b| b.disable()).await?;
    }
    state.timer_wake.notify_one();
    status(state).await
}
