//! The `late` and `long` alerts of `serve`: every [`EVERY`], for the destinations that want
//! them, asks the rules (`alerts::overdue`) about each watched pipeline's schedule and each
//! running run, records what they make in the outbox in one transaction, and wakes the
//! delivery tasks (`server::alerting`). Each alert has a stable id, so asking again — next
//! round, or after a restart — never records it twice.
//!
//! The schedule is the configuration's, for every backend. Whether it is on, and since when
//! an occurrence is expected, are only asked when an occurrence could be late (a pipeline
//! whose runs start on time costs one index lookup a round): the built-in scheduler's state
//! file, or what an OS scheduler said within [`schedule::STATUS_FRESH`], and the cadence's
//! notion of when the schedule came on (`schedule::expected_from`). On top of that, this task
//! remembers when it first saw each pipeline with its schedule and backend, and when it saw
//! an OS schedule turn on: occurrences before a pipeline was added or changed by a reload,
//! or before its schedule was seen turning on, are not late.
//!
//! No round runs while the dashboard catches up after an outage (`server::catchup`): until the
//! run files are read, an occurrence whose run started meanwhile would look late.
//!
//! The workspace is read each round, so a reload's pipelines and destinations apply at the
//! next one; the task ends when the dashboard closes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::schedule;
use super::state::AppState;
use crate::alerts::AlertObject;
use crate::alerts::overdue::{self, Running};
use crate::config::{Alert, AlertKind, Backend, Config, Workspace};
use crate::event::RunId;
use crate::runner::liveness::{self, Liveness};

/// How often the rules are asked.
pub const EVERY: Duration = Duration::from_secs(5);

/// What the task remembers of a pipeline between rounds.
struct Known {
    /// The schedule and backend it was seen with: a change starts afresh.
    schedule: String,
    backend: Backend,
    /// No occurrence before this is late: when the pipeline was added or changed, or its
    /// schedule seen turning on; `None` for one there from the start and not seen off.
    floor: Option<DateTime<Utc>>,
    /// The schedule was last seen off.
    off: bool,
}

/// Asks the rules every [`EVERY`] until the dashboard closes.
pub async fn run(state: Arc<AppState>) {
    let mut known: HashMap<String, Known> = HashMap::new();
    let mut first = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = state.closed() => return,
        }
        // While the dashboard catches up on the run files of an outage, the index does not
        // know yet which occurrences had their run: asked now, the rules would call them late.
        if !state.catch_up.is_over() {
            continue;
        }
        let workspace = state.workspace();
        remember(&mut known, &workspace, first, Utc::now());
        first = false;
        round(&state, &workspace, &mut known).await;
    }
}

/// Brings `known` in line with the pipelines of `workspace` at `now`.
fn remember(
    known: &mut HashMap<String, Known>,
    workspace: &Workspace,
    first: bool,
    now: DateTime<Utc>,
) {
    known.retain(|name, _| workspace.get(name).is_some());
    for config in &workspace.pipelines {
        let schedule = config.pipeline.schedule.expression();
        let backend = config.scheduler.backend;
        let same = known
            .get(&config.pipeline.name)
            .is_some_and(|k| k.schedule == schedule && k.backend == backend);
        if !same {
            known.insert(
                config.pipeline.name.clone(),
                Known {
                    schedule: schedule.to_string(),
                    backend,
                    floor: (!first).then_some(now),
                    off: false,
                },
            );
        }
    }
}

/// One round: the alerts the rules make now, recorded.
async fn round(state: &Arc<AppState>, workspace: &Workspace, known: &mut HashMap<String, Known>) {
    let wanting = |kind| -> Vec<Alert> {
        workspace
            .alerts
            .iter()
            .filter(|a| a.wants(kind))
            .cloned()
            .collect()
    };
    let (late_dests, long_dests) = (wanting(AlertKind::Late), wanting(AlertKind::Long));
    if late_dests.is_empty() && long_dests.is_empty() {
        return;
    }
    let now = Utc::now();
    let mut made = late(state, workspace, &late_dests, known, now).await;
    made.extend(long(state, long_dests, now).await);
    if made.is_empty() {
        return;
    }
    match state
        .with_index(move |idx| idx.record_overdue(&made, now))
        .await
    {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(alerts = n, "late or long alerts recorded");
            state.alerts_recorded.notify_waiters();
        }
        Err(e) => tracing::error!("cannot record late or long alerts: {e}"),
    }
}

/// The `late` alerts at `now`, each with its destination's name.
async fn late(
    state: &Arc<AppState>,
    workspace: &Workspace,
    dests: &[Alert],
    known: &mut HashMap<String, Known>,
    now: DateTime<Utc>,
) -> Vec<(String, AlertObject)> {
    let watched: Vec<(&Config, Vec<&Alert>)> = workspace
        .pipelines
        .iter()
        .map(|c| {
            let d = dests
                .iter()
                .filter(|a| a.watches(&c.pipeline.name))
                .collect();
            (c, d)
        })
        .filter(|(_, d): &(&Config, Vec<&Alert>)| !d.is_empty())
        .collect();
    if watched.is_empty() {
        return Vec::new();
    }
    // The newest start of every watched pipeline, in one visit to the index.
    let names: Vec<Option<String>> = watched
        .iter()
        .map(|(c, _)| c.run_name().map(str::to_string))
        .collect();
    let newest = match state
        .with_index(move |idx| {
            names
                .iter()
                .map(|n| idx.newest_start(n.as_deref()))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
    {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("cannot check for late runs: {e}");
            return Vec::new();
        }
    };
    let mut made = Vec::new();
    for ((config, dests), newest) in watched.into_iter().zip(newest) {
        let name = &config.pipeline.name;
        let Some(k) = known.get_mut(name) else {
            continue;
        };
        let schedule = &config.pipeline.schedule;
        let floor = k.floor.unwrap_or(DateTime::<Utc>::MIN_UTC);
        let late_for = |since: DateTime<Utc>, a: &Alert| {
            overdue::late_occurrence(schedule, a.overdue.late_after, since, newest, now)
        };
        // Most rounds end here: every occurrence due has its run.
        if dests.iter().all(|a| late_for(floor, a).is_none()) {
            continue;
        }
        let on = schedule_on(state, config).await;
        if !on {
            k.off = true;
            continue;
        }
        if std::mem::take(&mut k.off) {
            // Seen turning on: nothing before was expected.
            k.floor = Some(now);
            continue;
        }
        let Some(expected) = schedule::expected_from(state, config, now).await else {
            continue;
        };
        let since = expected.max(floor);
        let base = state.base_url();
        for a in dests {
            if let Some(t) = late_for(since, a) {
                made.push((
                    a.name.clone(),
                    overdue::late_alert(&a.name, name, t, &base, now),
                ));
            }
        }
    }
    made
}

/// Whether `config`'s schedule is on: the built-in scheduler's state, or what its OS
/// scheduler said lately.
async fn schedule_on(state: &Arc<AppState>, config: &Config) -> bool {
    match config.scheduler.backend {
        Backend::Builtin => {
            let dir = config.pipeline_state_dir.clone();
            tokio::task::spawn_blocking(move || crate::scheduler::builtin::State::load(&dir))
                .await
                .is_ok_and(|s| s.is_ok_and(|s| s.enabled))
        }
        _ => schedule::recent_status(state, config)
            .await
            .is_ok_and(|s| s.enabled),
    }
}

/// The `long` alerts at `now`, each with its destination's name.
async fn long(
    state: &Arc<AppState>,
    dests: Vec<Alert>,
    now: DateTime<Utc>,
) -> Vec<(String, AlertObject)> {
    if dests.is_empty() {
        return Vec::new();
    }
    let state_dir = state.config.server.state_dir.clone();
    let base = state.base_url();
    let read = state
        .with_index(move |idx| {
            let running: Vec<Running> = idx
                .running_with_start()?
                .into_iter()
                .filter(|r| dests.iter().any(|a| a.watches(&r.pipeline)))
                .filter(|r| runner_alive(&state_dir, &r.run_id))
                .collect();
            let pipelines: HashSet<&str> = running.iter().map(|r| r.pipeline.as_str()).collect();
            let mut medians = HashMap::new();
            for p in pipelines {
                medians.insert(p.to_string(), overdue::median(&idx.success_durations(p)?));
            }
            Ok((running, medians, dests))
        })
        .await;
    let (running, medians, dests) = match read {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot check for long runs: {e}");
            return Vec::new();
        }
    };
    let mut made = Vec::new();
    for run in &running {
        let median = medians.get(&run.pipeline).copied().flatten();
        for a in dests.iter().filter(|a| a.watches(&run.pipeline)) {
            let limit = overdue::threshold(&a.overdue, median);
            if let Some(alert) = overdue::long_alert(&a.name, run, limit, median, &base, now) {
                made.push((a.name.clone(), alert));
            }
        }
    }
    made
}

/// Whether a `running` run still has its runner: one whose runner died (its lock left
/// behind, held by nobody) is the watchdog's to mark abandoned, not a long run. A run with
/// no lock file (another tool's) is taken at its word.
fn runner_alive(state_dir: &std::path::Path, run_id: &str) -> bool {
    let Ok(id) = RunId::parse(run_id) else {
        return true;
    };
    !liveness::has_lock_file(state_dir, &id)
        || liveness::liveness(state_dir, &id) == Liveness::Alive
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn workspace(schedule: &str) -> Workspace {
        let text = format!(
            "[pipeline]\nname = \"p\"\nschedule = \"{schedule}\"\n\
             [[stages]]\nname = \"a\"\nrun = \"true\"\n"
        );
        Config::parse(&text, Path::new("/p/pipewatch.toml"))
            .unwrap()
            .into()
    }

    #[test]
    fn pipelines_added_or_changed_later_expect_nothing_before() {
        let t0 = DateTime::<Utc>::UNIX_EPOCH;
        let t1 = t0 + chrono::Duration::hours(1);
        let mut known = HashMap::new();
        remember(&mut known, &workspace("@hourly"), true, t0);
        assert_eq!(known["p"].floor, None, "there from the start");
        remember(&mut known, &workspace("@hourly"), false, t1);
        assert_eq!(known["p"].floor, None, "unchanged");
        remember(&mut known, &workspace("@daily"), false, t1);
        assert_eq!(known["p"].floor, Some(t1), "a new schedule");
        let empty = Workspace {
            pipelines: Vec::new(),
            ..workspace("@daily")
        };
        remember(&mut known, &empty, false, t1);
        assert!(known.is_empty());
    }
}
