//! Which stage starts when: the stages as a DAG, from the first start to the last end.
//!
//! A stage starts as soon as every stage it needs has succeeded, so independent stages run at
//! the same time; a stage one of whose needs failed, was skipped or was cancelled ends
//! `skipped` (`needs_failed`) without running. Once the run is stopping ([`Stop`]) — and from
//! the moment a journal write has failed, which is checked before each start — nothing new
//! starts: stages already running end on their own (they watch the same stop), and stages not
//! yet started end `cancelled` (for a cancel) or `skipped` (`run_stopped`) without running.
//!
//! Invariants: every stage ends with exactly one final event; a stage is started at most once;
//! `needs` form no cycle (checked by `config`), so every stage is settled when no task is left.
//! Called once per run by [`super::run`]; each started stage runs [`super::attempt::run_stage`]
//! on a task of its own.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::attempt::{StageEnd, run_stage};
use super::liveness::RunLock;
use super::plan::{Passed, Plan};
use super::progress::Ending;
use super::stop::{Stop, StopRx, Watcher};
use super::{Ctx, RunStatus};
use crate::config::{Config, Stage};
use crate::event::{Data, Level, kind};

/// How the stages ended, for the run's final event.
#[derive(Debug, PartialEq)]
pub(super) struct Settled {
    pub status: RunStatus,
    /// What stopped the run early, if anything did.
    pub why: Option<Stop>,
    /// The stages that failed, in file order.
    pub failed: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Running,
    Done(StageEnd),
    Skipped,
    /// Left out of this run by its plan (reused, or not selected): done, for the stages that
    /// need it and for the run's status.
    Passed,
}

impl State {
    /// Whether the stages that need it may start.
    fn satisfies(self) -> bool {
        matches!(self, State::Done(StageEnd::Success) | State::Passed)
    }
}

impl State {
    /// A stage in this state lets the stages that need it be skipped.
    fn blocks_dependents(self) -> bool {
        matches!(
            self,
            State::Skipped | State::Done(StageEnd::Failure | StageEnd::Cancelled)
        )
    }
}

/// How a stage that never started ends.
enum Unstarted<'a> {
    /// The run was cancelled by this stop.
    Cancelled(&'a Stop),
    /// The run stopped for another reason (its timeout, its journal).
    Skipped,
}

/// Runs the DAG until every stage has ended.
pub(super) async fn run_stages(
    config: &Config,
    ctx: &Arc<Ctx>,
    run_lock: &RunLock,
    plan: &Plan,
) -> Settled {
    let stages = &config.stages;
    let mut state = vec![State::Pending; stages.len()];
    for (&i, why) in &plan.passed {
        if let Some(stage) = stages.get(i) {
            state[i] = State::Passed;
            pass_stage(ctx, stage, why);
        }
    }
    let mut stops = Watcher::new(config.pipeline.timeout);
    let stop_rx = stops.subscribe();
    let mut tasks: JoinSet<(usize, StageEnd)> = JoinSet::new();
    loop {
        if !stops.check_journal(&ctx.journal) {
            start_ready(ctx, stages, &mut state, &mut tasks, &stops, &stop_rx);
        }
        if tasks.is_empty() {
            break;
        }
        tokio::select! {
            joined = tasks.join_next() => {
                if let Some(Ok((i, end))) = joined {
                    state[i] = State::Done(end);
                }
                // A panicked stage task (a bug) leaves its stage Running; nothing awaits it.
            }
            () = stops.next(run_lock, &ctx.journal) => {}
        }
    }
    // A write that failed in the last moments stops the run too, so its ending says why.
    stops.check_journal(&ctx.journal);
    let why = stops.current();
    settle_unstarted(ctx, stages, &mut state, why.as_ref());
    Settled {
        status: status(&state, why.as_ref()),
        failed: failed(stages, &state),
        why,
    }
}

/// Starts or skips every pending stage whose needs are settled, until nothing changes, or
/// until the journal fails: then nothing more starts, not even in this pass (a stage started
/// after a failed write would run in no journal).
fn start_ready(
    ctx: &Arc<Ctx>,
    stages: &[Stage],
    state: &mut [State],
    tasks: &mut JoinSet<(usize, StageEnd)>,
    stops: &Watcher,
    stop: &StopRx,
) {
    let mut changed = true;
    while changed {
        changed = false;
        for i in 0..stages.len() {
            if state[i] != State::Pending {
                continue;
            }
            let needs = &stages[i].needs;
            if let Some(&bad) = needs.iter().find(|&&n| state[n].blocks_dependents()) {
                state[i] = State::Skipped;
                changed = true;
                skip_stage(ctx, &stages[i], &stages[bad].name);
            } else if needs.iter().all(|&n| state[n].satisfies()) {
                if stops.check_journal(&ctx.journal) {
                    return;
                }
                state[i] = State::Running;
                let ctx = ctx.clone();
                let stage = stages[i].clone();
                let stop = stop.clone();
                tasks.spawn(async move { (i, run_stage(&ctx, &stage, stop).await) });
            }
        }
    }
}

/// Ends the stages that never started, once the run is over.
fn settle_unstarted(ctx: &Ctx, stages: &[Stage], state: &mut [State], why: Option<&Stop>) {
    for (i, st) in state.iter_mut().enumerate() {
        if *st != State::Pending {
            continue;
        }
        match why {
            Some(s) if s.is_cancel() => {
                *st = State::Done(StageEnd::Cancelled);
                end_unstarted(ctx, &stages[i], Unstarted::Cancelled(s));
            }
            _ => {
                *st = State::Skipped;
                end_unstarted(ctx, &stages[i], Unstarted::Skipped);
            }
        }
    }
}

/// The run's status: a cancel wins, then any other stop, then any stage that did not succeed.
fn status(state: &[State], why: Option<&Stop>) -> RunStatus {
    match why {
        Some(Stop::Cancel(_) | Stop::Interrupted(_)) => RunStatus::Cancelled,
        Some(Stop::Timeout | Stop::Journal) => RunStatus::Failure,
        None if state.iter().all(|s| s.satisfies()) => RunStatus::Success,
        None => RunStatus::Failure,
    }
}

fn failed(stages: &[Stage], state: &[State]) -> Vec<String> {
    state
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == State::Done(StageEnd::Failure))
        .map(|(i, _)| stages[i].name.clone())
        .collect()
}

/// Records a stage the plan leaves out, before anything runs.
fn pass_stage(ctx: &Ctx, stage: &Stage, why: &Passed) {
    let (msg, reason, from_run, note) = match why {
        Passed::Reused { from_run } => (
            format!("skipped: reused, it succeeded in run {from_run}"),
            "reused",
            Some(from_run.as_str()),
            format!("reused from {from_run}"),
        ),
        Passed::NotSelected => (
            "skipped: not selected (--stage)".to_string(),
            "not_selected",
            None,
            "not selected".to_string(),
        ),
    };
    let _ = ctx.journal.emit(
        &stage.name,
        kind::SKIPPED,
        Level::Info,
        &msg,
        &Data {
            reason: Some(reason),
            from_run,
            ..Data::default()
        },
    );
    ctx.reporter
        .stage_finished(&stage.name, Ending::Skipped, Duration::ZERO, &note);
}

fn skip_stage(ctx: &Ctx, stage: &Stage, needed: &str) {
    let _ = ctx.journal.emit(
        &stage.name,
        kind::SKIPPED,
        Level::Warn,
        &format!("skipped: needed stage {needed} did not succeed"),
        &Data {
            reason: Some("needs_failed"),
            needs: Some(needed),
            ..Data::default()
        },
    );
    ctx.reporter.stage_finished(
        &stage.name,
        Ending::Skipped,
        Duration::ZERO,
        &format!("{needed} did not succeed"),
    );
}

fn end_unstarted(ctx: &Ctx, stage: &Stage, how: Unstarted) {
    let (event, ending, msg, reason, interrupted_by) = match how {
        Unstarted::Cancelled(stop) => (
            kind::CANCELLED,
            Ending::Cancelled,
            format!(
                "cancelled before it started ({})",
                stop.cancelled_by().unwrap_or_default()
            ),
            stop.reason(),
            stop.interrupted_by(),
        ),
        Unstarted::Skipped => (
            kind::SKIPPED,
            Ending::Skipped,
            "skipped: the run was stopped before it started".to_string(),
            "run_stopped",
            None,
        ),
    };
    let _ = ctx.journal.emit(
        &stage.name,
        event,
        Level::Warn,
        &msg,
        &Data {
            reason: Some(reason),
            interrupted_by,
            ..Data::default()
        },
    );
    ctx.reporter
        .stage_finished(&stage.name, ending, Duration::ZERO, "not started");
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: State = State::Done(StageEnd::Success);
    const FAILED: State = State::Done(StageEnd::Failure);

    #[test]
    fn status_puts_a_cancel_first_then_a_stop_then_the_stages() {
        let cancel = Stop::Cancel("replaced".into());
        assert_eq!(status(&[OK, OK], None), RunStatus::Success);
        assert_eq!(status(&[OK, FAILED], None), RunStatus::Failure);
        assert_eq!(status(&[OK, State::Skipped], None), RunStatus::Failure);
        assert_eq!(status(&[State::Passed, OK], None), RunStatus::Success);
        assert_eq!(status(&[OK, OK], Some(&cancel)), RunStatus::Cancelled);
        assert_eq!(status(&[OK, OK], Some(&Stop::Timeout)), RunStatus::Failure);
        assert_eq!(status(&[OK], Some(&Stop::Journal)), RunStatus::Failure);
    }

    #[test]
    fn failed_skipped_and_cancelled_needs_block_dependents() {
        assert!(FAILED.blocks_dependents());
        assert!(State::Skipped.blocks_dependents());
        assert!(State::Done(StageEnd::Cancelled).blocks_dependents());
        assert!(!OK.blocks_dependents());
        assert!(!State::Running.blocks_dependents());
        assert!(!State::Pending.blocks_dependents());
        assert!(!State::Passed.blocks_dependents());
        assert!(State::Passed.satisfies() && OK.satisfies() && !FAILED.satisfies());
    }
}
