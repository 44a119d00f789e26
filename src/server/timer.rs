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

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::AppState;
use super::api::launch;
use crate::builtin::{self, State};
use crate::config::{Backend, Catchup};
use crate::event::{Data, Level, PIPELINE_STAGE, RunId, format_timestamp, kind};
use crate::journal::Journal;

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

fn save(state: &AppState, s: &State) {
    if let Err(e) = s.save(&state.config.server.state_dir) {
        tracing::error!("{e}");
    }
}

/// The built-in scheduler loop.
pub async fn run_builtin(state: Arc<AppState>) {
    let schedule = state.config.pipeline.schedule.clone();
    let mut closing = state.closing.clone();
    {
        let mut s = load(&state);
        if s.last_occurrence.is_none() {
            // First start: nothing was expected before now.
            s.last_occurrence = Some(Utc::now());
            save(&state, &s);
        }
    }
    tracing::info!(schedule = %schedule.expression(), "built-in scheduler started");
    loop {
        let mut s = load(&state);
        let now = Utc::now();
        let last = s.last_occurrence.unwrap_or(now);
        let due = builtin::occurrences(&schedule, last, now);
        if let Some(&newest) = due.last() {
            if !s.enabled {
                // Occurrences while disabled are not expected: pass over them.
                s.last_occurrence = Some(newest);
                save(&state, &s);
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
                let plan = builtin::plan_catchup(
                    late,
                    now,
                    policy,
                    state.config.pipeline.catchup_window,
                );
                for at in &plan.missed {
                    record_missed(&state, *at, "the scheduler was not running");
                }
                for _at in &plan.run {
                    fire(&state, &mut s, "catchup", true).await;
                }
                s.last_occurrence = Some(until);
                save(&state, &s);
            }
            if on_time {
                fire(&state, &mut s, "scheduler", false).await;
                s.last_occurrence = Some(newest);
                save(&state, &s);
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
async fn fire(state: &Arc<AppState>, s: &mut State, source: &str, wait: bool) {
    match launch(state, source).await {
        Ok((id, exited)) => {
            tracing::info!(run_id = %id, source, "scheduled run started");
            s.last_run = Some(Utc::now());
            s.last_run_id = Some(id.to_string());
            save(state, s);
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
                .with_index(move |idx| idx.scheduled_runs_between(&from, &to))
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
        _ => status(state).await.is_ok_and(|s| s.enabled),
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
pub struct Status {
    pub backend: &'static str,
    pub task_name: String,
    pub exists: bool,
    pub enabled: bool,
    pub state: String,
    pub schedule: String,
    pub next_run: Option<String>,
    pub last_run: Option<String>,
    pub last_result: Option<String>,
    pub cadence: Option<Cadence>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The status of the configured backend. The built-in one answers from its state file and the
/// index; OS backends ask their tool.
pub async fn status(state: &Arc<AppState>) -> Result<Status, super::api::ApiError> {
    let config = &state.config;
    let schedule = &config.pipeline.schedule;
    let s = load(state);
    let now = Utc::now();
    let last_result = match &s.last_run_id {
        Some(id) => match RunId::parse(id) {
            Ok(id) => state
                .with_index(move |idx| idx.get_run(&id))
                .await
                .ok()
                .flatten()
                .map(|r| r.run.status),
            Err(_) => None,
        },
        None => None,
    };
    let running = !crate::liveness::alive_runs(&config.server.state_dir).is_empty();
    let next = if s.enabled {
        schedule.next_after(&now)
    } else {
        None
    };
    Ok(Status {
        backend: "builtin",
        task_name: config.scheduler.task_name.clone(),
        exists: true,
        enabled: s.enabled,
        state: if !s.enabled {
            "disabled"
        } else if running {
            "running"
        } else {
            "ready"
        }
        .to_string(),
        schedule: schedule.expression().to_string(),
        next_run: next.map(rfc3339),
        last_run: s.last_run.map(rfc3339),
        last_result,
        cadence: cadence(state, now).await,
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
        .with_index(move |idx| idx.started_scheduled_runs_between(&from, &to))
        .await
        .ok()?;
    Some(Cadence {
        expected_last_day: expected,
        started_last_day: started,
        configured_interval_s: configured,
        effective_interval_s: (started > 0).then(|| 86_400 / started as i64),
    })
}

/// Turns the built-in schedule on or off and wakes the loop.
pub async fn set_enabled(
    state: &Arc<AppState>,
    enabled: bool,
) -> Result<Status, super::api::ApiError> {
    let mut s = load(state);
    if s.enabled != enabled {
        s.enabled = enabled;
        if enabled {
            // Occurrences while it was off were not expected: start counting from now.
            s.last_occurrence = Some(Utc::now());
        }
        s.save(&state.config.server.state_dir).map_err(|e| {
            super::api::ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        })?;
        state.timer_wake.notify_one();
    }
    status(state).await
}
