//! The built-in scheduler's loop, the occurrence auditor, and the scheduler status.
//!
//! - [`run_builtin`] (only when `[scheduler] backend = "builtin"`) fires `pipewatch run
//!   --source scheduler` at each occurrence of the schedule while enabled. At start, and after
//!   any stretch it could not fire (suspend, a clock jump forward), it applies `catchup` /
//!   `catchup_window` to the occurrences it missed ([`builtin::plan_catchup`]): runs them with
//!   `--source catchup` or records them as `missed`. Each occurrence is handled once: the last
//!   one handled is persisted, so neither a restart nor a clock jump back fires it again.
//! - [`audit`] (every backend) accounts for every expected occurrence: one that has no run
//!   started by a scheduler within the grace period is recorded as a `missed` run — a run file
//!   of its own whose only event is `missed` (`data.scheduled_for`), so history shows it like
//!   any run. Its run id is derived from the occurrence, so it is written at most once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::AppState;
use super::api::{ApiError, launch};
use crate::config::{Backend, Catchup};
use crate::event::{Data, Level, PIPELINE_STAGE, RunId, format_timestamp, kind};
use crate::journal::Journal;
use crate::scheduler;
use crate::scheduler::builtin::{self, State};
use axum::http::StatusCode;

/// An occurrence fired this late is still on time (not a catch-up).
const ON_TIME: Duration = Duration::from_secs(60);

/// The longest the loop sleeps at once, so a wall-clock jump is noticed soon.
const MAX_SLEEP: Duration = Duration::from_secs(5);

/// The run id recorded for a missed occurrence.
pub fn missed_run_id(at: DateTime<Utc>) -> RunId {
    RunId::parse(&format!("{}-missed", at.format("%Y%m%dT%H%M%SZ")))
        .unwrap_or_else(|_| RunId::generate(at))
}

/// Writes the `missed` run for the occurrence `at` (once: an existing file means it was
/// recorded already).
pub fn record_missed(state: &AppState, at: DateTime<Utc>, why: &str) {
    let id = missed_run_id(at);
    let config = &state.config;
    match Journal::create(
        &config.server.events_dir,
        &id,
        &config.pipeline.name,
        "scheduler",
    ) {
        Ok(journal) => {
            let due = format_timestamp(at);
            let result = journal.emit(
                PIPELINE_STAGE,
                kind::MISSED,
                Level::Warn,
                &format!("the scheduled run for {due} did not happen ({why})"),
                &Data {
                    scheduled_for: Some(&due),
                    reason: Some(why),
                    ..Data::default()
                },
            );
            match result {
                Ok(()) => tracing::warn!(scheduled_for = %due, "occurrence missed: {why}"),
                Err(e) => tracing::error!("cannot record a missed occurrence: {e}"),
            }
        }
        Err(_) if config.server.events_dir.join(id.file_name()).exists() => {}
        Err(e) => tracing::error!("cannot record a missed occurrence: {e}"),
    }
}

fn load(state: &AppState) -> State {
    State::load(&state.config.server.state_dir).unwrap_or_else(|e| {
        tracing::error!("{e}");
        // An unreadable state must not fire runs the user may have disabled.
        State {
            enabled: false,
            ..State::default()
        }
    })
}

/// Changes the fields the loop owns on a fresh copy of the state, so that an enable or
/// disable written meanwhile (by the API or `pipewatch scheduler`) is never overwritten.
fn update(state: &AppState, change: impl FnOnce(&mut State)) {
    let mut s = load(state);
    change(&mut s);
    if let Err(e) = s.save(&state.config.server.state_dir) {
        tracing::error!("{e}");
    }
}

/// The built-in scheduler loop.
pub async fn run_builtin(state: Arc<AppState>) {
    let schedule = state.config.pipeline.schedule.clone();
    let mut closing = state.closing.clone();
    {
        if load(&state).last_occurrence.is_none() {
            // First start: nothing was expected before now.
            update(&state, |s| s.last_occurrence = Some(Utc::now()));
        }
    }
    tracing::info!(schedule = %schedule.expression(), "built-in scheduler started");
    loop {
        let s = load(&state);
        let now = Utc::now();
        let last = s.last_occurrence.unwrap_or(now);
        let due = builtin::occurrences(&schedule, last, now);
        if let Some(&newest) = due.last() {
            if !s.enabled {
                // Occurrences while disabled are not expected: pass over them.
                update(&state, |s| s.last_occurrence = Some(newest));
                continue;
            }
            let on_time = (now - newest).to_std().unwrap_or_default() <= ON_TIME;
            let mut late = due;
            if on_time {
                late.pop();
            }
            // Occurrences that could not be fired on time go through the catch-up policy.
            if let Some(&until) = late.last() {
                // With an on-time occurrence about to run, `last` has its run: the late ones
                // are only recorded.
                let policy = match (state.config.pipeline.catchup, on_time) {
                    (Catchup::Last, true) => Catchup::None,
                    (policy, _) => policy,
                };
                let plan =
                    builtin::plan_catchup(late, now, policy, state.config.pipeline.catchup_window);
                for at in &plan.missed {
                    record_missed(&state, *at, "the scheduler was not running");
                }
                for &at in &plan.run {
                    // Handled before it runs: a dashboard killed during the run must not run
                    // this occurrence again when it comes back.
                    update(&state, |s| s.last_occurrence = Some(at));
                    fire(&state, "catchup", true).await;
                }
                update(&state, |s| s.last_occurrence = Some(until));
            }
            if on_time {
                update(&state, |s| s.last_occurrence = Some(newest));
                fire(&state, "scheduler", false).await;
            }
            continue;
        }
        let next = schedule.next_after(&now.max(last));
        let wait = next
            .and_then(|n| (n - now).to_std().ok())
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = state.timer_wake.notified() => {}
            _ = super::ws::closed(&mut closing) => return,
        }
    }
}

/// Starts a scheduled run; with `wait`, until it has exited (catch-up runs one after another).
async fn fire(state: &Arc<AppState>, source: &str, wait: bool) {
    match launch(state, source).await {
        Ok((id, exited)) => {
            tracing::info!(run_id = %id, source, "scheduled run started");
            update(state, |s| {
                s.last_run = Some(Utc::now());
                s.last_run_id = Some(id.to_string());
            });
            if wait {
                let _ = exited.await;
            }
        }
        Err(e) => tracing::error!("cannot start the scheduled run: {}", e.message),
    }
}

/// The occurrence auditor: records occurrences that got no run within `grace`
/// (`[scheduler] grace`, default 2 minutes).
pub async fn audit(state: Arc<AppState>, grace: Duration) {
    let schedule = state.config.pipeline.schedule.clone();
    let mut closing = state.closing.clone();
    // Occurrences before the auditor started are not its business (the built-in scheduler's
    // catch-up handles its own downtime).
    let mut audited = Utc::now();
    let every = (grace / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = super::ws::closed(&mut closing) => return,
        }
        let grace_c = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let until = Utc::now() - grace_c;
        if until <= audited {
            continue;
        }
        let due = builtin::occurrences(&schedule, audited, until);
        audited = until;
        if due.is_empty() || !enabled_now(&state).await {
            continue;
        }
        for at in due {
            let from = format_timestamp(at - chrono::Duration::seconds(1));
            let to = format_timestamp(at + grace_c);
            let found = state
                .with_index(move |idx| idx.scheduled_runs_between(&from, &to, true))
                .await;
            match found {
                Ok(0) => record_missed(&state, at, "no run started within the grace period"),
                Ok(_) => {}
                Err(e) => tracing::error!("cannot audit occurrence {at}: {e}"),
            }
        }
    }
}

/// Whether the schedule is enabled, as far as the dashboard can tell cheaply.
async fn enabled_now(state: &Arc<AppState>) -> bool {
    match state.config.scheduler.backend {
        Backend::Builtin => load(state).enabled,
        _ => status(state).await.is_ok_and(|s| s.status.enabled),
    }
}

/// The effective cadence of the last day against the configured one.
#[derive(Debug, Clone, Serialize)]
pub struct Cadence {
    /// Occurrences the schedule had in the last 24 hours.
    pub expected_last_day: u64,
    /// Scheduled runs (scheduler or catch-up) that started in the last 24 hours.
    pub started_last_day: u64,
    /// Seconds between occurrences as configured (from the next two), if periodic.
    pub configured_interval_s: Option<i64>,
    /// 86,400 / started runs: the interval the runs really had on average.
    pub effective_interval_s: Option<i64>,
}

/// The scheduler status of contract §4, plus the cadence.
#[derive(Debug, Clone, Serialize)]
pub struct StatusWithCadence {
    #[serde(flatten)]
    pub status: scheduler::Status,
    pub cadence: Option<Cadence>,
}

fn backend(state: &AppState) -> Box<dyn scheduler::Backend> {
    scheduler::backend(
        state.config.scheduler.backend,
        &state.config,
        scheduler::OsOptions {
            exe: Some(state.exe.clone()),
            ..scheduler::OsOptions::default()
        },
    )
}

/// Runs a backend operation off the async workers; tool failures become 503 with the tool's
/// stderr in the message, refusals 409.
async fn call(
    state: &Arc<AppState>,
    op: fn(&dyn scheduler::Backend) -> Result<scheduler::Status, scheduler::SchedulerError>,
) -> Result<scheduler::Status, ApiError> {
    let b = backend(state);
    let result = tokio::task::spawn_blocking(move || op(b.as_ref()))
        .await
        .map_err(|e| ApiError::unavailable(format!("scheduler task failed: {e}")))?;
    result.map_err(|e| {
        let status = if e.is_tool_error() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::CONFLICT
        };
        ApiError::new(status, e.to_string())
    })
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
    let expected = builtin::occurrences(schedule, day_ago, now).len() as u64;
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

/// Turns the schedule on or off (any backend) and wakes the built-in loop.
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
