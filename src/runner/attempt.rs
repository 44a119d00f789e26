//! One stage, from its first attempt to its end: spawn, capture, timeout, retries.
//!
//! [`run_stage`] is called by the DAG loop ([`super::dag`]) on a task of its own for each stage
//! that starts. It runs attempts until one succeeds, the retries are used up, or the run is
//! stopped, and journals every step: `start` per attempt, `retry`, and exactly one final
//! `success`, `failure` or `cancelled`.
//!
//! Invariants:
//! - an attempt's process group is killed when the attempt ends, however it ends (exit,
//!   timeout, stop), and with it, on Linux, the processes that left the group
//!   ([`process::kill_escaped`]), so nothing a stage started outlives it; while it runs, the
//!   group is recorded for [`super::liveness::reap_orphans`];
//! - no attempt starts once the journal has failed: it would run in no journal;
//! - an attempt stopped by the run, or one that ends while the run is stopping, is never
//!   retried;
//! - how a stop ends a stage is decided on the [`Stop`] value, never on its text. A stage whose
//!   process is stopped ends `cancelled` only for a cancel and `failure` otherwise; one stopped
//!   while waiting to retry ends `failure` only for the run's timeout and `cancelled`
//!   otherwise. The two agree for a cancel and a timeout (`docs/events.md`) and differ for a
//!   journal that cannot be written, which that file does not describe for stages; they are
//!   kept as they were, since the words are part of the file format.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use process_wrap::tokio::ChildWrapper;
use tokio::task::JoinSet;

use super::capture::{StopReading, pump};
use super::groups::StageGroup;
use super::progress::Ending;
use super::stop::{Stop, StopRx, stopped};
use super::{Ctx, process};
use crate::config::Stage;
use crate::event::{Data, Level, Stream, kind};
use crate::journal::OutputLine;

/// How long to keep reading a stage's output after its process tree has been killed (what was
/// read by then is journaled, however long that takes).
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// While waiting for the output, how often to look for processes that left the stage's group
/// and still hold its pipes.
const ESCAPED_EVERY: Duration = Duration::from_millis(50);

/// How one stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StageEnd {
    Success,
    Failure,
    Cancelled,
}

/// How one attempt ended.
#[derive(Debug)]
enum Attempt {
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    SpawnFailed(String),
    TimedOut,
    Stopped(Stop),
}

impl Attempt {
    fn succeeded(&self) -> bool {
        matches!(self, Attempt::Exited { code: Some(0), .. })
    }

    /// The exit code and signal, for a process that ended by itself.
    fn status(&self) -> (Option<i32>, Option<i32>) {
        match self {
            Attempt::Exited { code, signal } => (*code, *signal),
            _ => (None, None),
        }
    }

    /// The journal's `data.reason` for a failed attempt.
    fn reason(&self) -> &'static str {
        match self {
            Attempt::Exited {
                signal: Some(_), ..
            } => "signal",
            Attempt::Exited { .. } => "exit",
            Attempt::SpawnFailed(_) => "spawn",
            Attempt::TimedOut => "timeout",
            Attempt::Stopped(Stop::Timeout) => "timeout",
            Attempt::Stopped(_) => "cancelled",
        }
    }

    /// Why the attempt failed, in words, for messages.
    fn describe(&self, stage: &Stage) -> String {
        match self {
            Attempt::Exited { code: Some(c), .. } => format!("exit code {c}"),
            Attempt::Exited {
                signal: Some(s), ..
            } => format!("killed by signal {s}"),
            Attempt::Exited { .. } => "exited abnormally".to_string(),
            Attempt::SpawnFailed(e) => format!("could not start: {e}"),
            Attempt::TimedOut => format!(
                "timed out after {}",
                humantime::format_duration(stage.timeout.unwrap_or_default())
            ),
            Attempt::Stopped(Stop::Timeout) => "the run timed out".to_string(),
            Attempt::Stopped(s @ (Stop::Cancel(_) | Stop::Interrupted(_))) => {
                format!("cancelled ({})", s.cancelled_by().unwrap_or_default())
            }
            Attempt::Stopped(Stop::Journal) => "stopped: the journal cannot be written".to_string(),
        }
    }
}

/// Runs one stage, with its retries, to its end; journals everything about it.
pub(super) async fn run_stage(ctx: &Arc<Ctx>, stage: &Stage, stop: StopRx) -> StageEnd {
    let log = StageLog {
        ctx,
        stage,
        started: Instant::now(),
    };
    let mut attempt: u32 = 1;
    loop {
        log.started(attempt);
        // `took` is the process's own run time: from start to exit, not counting the
        // journaling of output still queued when it exited.
        let (result, took) = run_attempt(ctx, stage, attempt, stop.clone()).await;
        if result.succeeded() {
            return log.succeeded(attempt, took);
        }
        if let Attempt::Stopped(s) = &result
            && s.is_cancel()
        {
            return log.cancelled(attempt, s, took);
        }
        let stopping = matches!(result, Attempt::Stopped(_)) || stop.borrow().is_some();
        if attempt > stage.retries || stopping {
            return log.failed(attempt, &result, took);
        }
        log.retrying(attempt, &result, took);
        if let Some(s) = wait_to_retry(stage.retry_delay, stop.clone()).await {
            return log.stopped_waiting(attempt, &s);
        }
        attempt += 1;
    }
}

/// Sleeps `delay`, unless the run stops first: then, why.
async fn wait_to_retry(delay: Duration, stop: StopRx) -> Option<Stop> {
    tokio::select! {
        _ = tokio::time::sleep(delay) => None,
        s = stopped(stop) => Some(s),
    }
}

/// Journals and reports one stage's steps.
struct StageLog<'a> {
    ctx: &'a Ctx,
    stage: &'a Stage,
    /// When the stage's first attempt started. A stage's duration (`duration_ms` of its final
    /// event, and what the reporter prints) runs from here to its end, retries and their
    /// delays included; each attempt's own process time is its `attempt_ms`.
    started: Instant,
}

/// A duration as the journal writes it.
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl StageLog<'_> {
    fn started(&self, attempt: u32) {
        let name = &self.stage.name;
        let msg = if attempt > 1 {
            format!("stage {name} started (attempt {attempt})")
        } else {
            format!("stage {name} started")
        };
        let _ = self.ctx.journal.emit(
            name,
            kind::START,
            Level::Info,
            &msg,
            &Data {
                attempt: Some(attempt),
                ..Data::default()
            },
        );
        self.ctx.reporter.stage_started(name, attempt);
    }

    fn succeeded(&self, attempt: u32, took: Duration) -> StageEnd {
        let name = &self.stage.name;
        let _ = self.ctx.journal.emit(
            name,
            kind::SUCCESS,
            Level::Info,
            &format!("stage {name} succeeded"),
            &Data {
                attempt: Some(attempt),
                exit_code: Some(0),
                duration_ms: Some(ms(self.started.elapsed())),
                attempt_ms: Some(ms(took)),
                ..Data::default()
            },
        );
        self.ctx
            .reporter
            .stage_finished(name, Ending::Success, self.started.elapsed(), "");
        StageEnd::Success
    }

    /// The attempt's process was stopped by a cancel of the run.
    fn cancelled(&self, attempt: u32, stop: &Stop, took: Duration) -> StageEnd {
        let name = &self.stage.name;
        let reason = stop.reason();
        let by = stop.cancelled_by().unwrap_or_default();
        let _ = self.ctx.journal.emit(
            name,
            kind::CANCELLED,
            Level::Warn,
            &format!("stage {name} cancelled ({by})"),
            &Data {
                attempt: Some(attempt),
                reason: Some(reason),
                interrupted_by: stop.interrupted_by(),
                duration_ms: Some(ms(self.started.elapsed())),
                attempt_ms: Some(ms(took)),
                ..Data::default()
            },
        );
        self.ctx
            .reporter
            .stage_finished(name, Ending::Cancelled, self.started.elapsed(), reason);
        StageEnd::Cancelled
    }

    fn retrying(&self, attempt: u32, result: &Attempt, took: Duration) {
        let name = &self.stage.name;
        let delay = self.stage.retry_delay;
        let why = result.describe(self.stage);
        let (exit_code, signal) = result.status();
        let _ = self.ctx.journal.emit(
            name,
            kind::RETRY,
            Level::Warn,
            &format!(
                "stage {name} attempt {attempt} failed ({why}); retrying in {}",
                humantime::format_duration(delay)
            ),
            &Data {
                attempt: Some(attempt + 1),
                exit_code,
                signal,
                reason: Some(result.reason()),
                attempt_ms: Some(ms(took)),
                delay_ms: Some(ms(delay)),
                ..Data::default()
            },
        );
        self.ctx
            .reporter
            .stage_retrying(name, attempt + 1, delay, &why);
    }

    /// The run stopped while the stage waited for its next attempt.
    fn stopped_waiting(&self, attempt: u32, stop: &Stop) -> StageEnd {
        let (event, ending, end) = match stop {
            Stop::Timeout => (kind::FAILURE, Ending::Failure, StageEnd::Failure),
            Stop::Cancel(_) | Stop::Interrupted(_) | Stop::Journal => {
                (kind::CANCELLED, Ending::Cancelled, StageEnd::Cancelled)
            }
        };
        let name = &self.stage.name;
        let reason = stop.reason();
        let _ = self.ctx.journal.emit(
            name,
            event,
            Level::Warn,
            &format!("stage {name} stopped while waiting to retry ({reason})"),
            &Data {
                attempt: Some(attempt),
                reason: Some(reason),
                interrupted_by: stop.interrupted_by(),
                duration_ms: Some(ms(self.started.elapsed())),
                ..Data::default()
            },
        );
        self.ctx
            .reporter
            .stage_finished(name, ending, self.started.elapsed(), reason);
        end
    }

    fn failed(&self, attempt: u32, result: &Attempt, took: Duration) -> StageEnd {
        let name = &self.stage.name;
        let why = result.describe(self.stage);
        let (exit_code, signal) = result.status();
        let error = match result {
            Attempt::SpawnFailed(e) => Some(e.as_str()),
            _ => None,
        };
        let _ = self.ctx.journal.emit(
            name,
            kind::FAILURE,
            Level::Error,
            &format!("stage {name} failed: {why}"),
            &Data {
                attempt: Some(attempt),
                exit_code,
                signal,
                reason: Some(result.reason()),
                error,
                duration_ms: Some(ms(self.started.elapsed())),
                attempt_ms: Some(ms(took)),
                ..Data::default()
            },
        );
        self.ctx
            .reporter
            .stage_finished(name, Ending::Failure, self.started.elapsed(), &why);
        StageEnd::Failure
    }
}

/// One attempt: start the process, stream its output, wait for it, a timeout or a stop.
async fn run_attempt(
    ctx: &Arc<Ctx>,
    stage: &Stage,
    attempt: u32,
    stop: StopRx,
) -> (Attempt, Duration) {
    // A failed write (a full disk) stops the run; the run's watcher notices within its tick,
    // but no process may start in the meantime: it would run in no journal.
    if ctx.journal.failure().is_some() {
        return (Attempt::Stopped(Stop::Journal), Duration::ZERO);
    }
    let mut child = match spawn(ctx, stage, attempt) {
        Ok(c) => c,
        Err(msg) => return (Attempt::SpawnFailed(msg), Duration::ZERO),
    };
    let group = child.id().map(StageGroup::led_by);
    if let Some(g) = &group {
        ctx.track_group(g, true);
    }
    let stop_reading = StopReading::new();
    let pumps = capture(ctx, stage, &mut child, &stop_reading);
    let spawned = Instant::now();
    let result = wait(&mut child, stage.timeout, stop).await;
    // Kill the whole group: on timeout or stop this ends the stage; after a normal exit it
    // ends anything the stage left running in the background (which would otherwise hold the
    // pipes open).
    let took = spawned.elapsed();
    process::kill_tree(&mut child);
    // Reap the stage's process (if it has not exited) and the rest of its group.
    let _ = child.wait().await;
    if let Some(g) = &group {
        ctx.track_group(g, false);
    }
    drain(pumps, &stop_reading, &stage.name).await;
    (result, took)
}

/// Starts the stage's process with the run's variables added to its environment. A failure
/// is also journaled as a `stderr` line, so it shows where the stage's output would.
fn spawn(ctx: &Ctx, stage: &Stage, attempt: u32) -> Result<Box<dyn ChildWrapper>, String> {
    let mut env: BTreeMap<String, String> = stage.env.clone();
    env.insert("PIPEWATCH_RUN_ID".into(), ctx.run_id.to_string());
    env.insert("PIPEWATCH_PIPELINE".into(), ctx.pipeline.clone());
    env.insert("PIPEWATCH_STAGE".into(), stage.name.clone());
    env.insert("PIPEWATCH_ATTEMPT".into(), attempt.to_string());
    for (name, value) in &ctx.params {
        env.insert(crate::config::params::env_name(name), value.clone());
    }
    let mut cmd = process::build(&stage.run, &stage.workdir, &env);
    process::spawn(&mut cmd).map_err(|e| {
        let msg = format!(
            "{e} (program {:?}, in {})",
            process::argv(&stage.run).0,
            stage.workdir.display()
        );
        let _ = ctx.journal.emit_output(
            &stage.name,
            Stream::Stderr,
            &[OutputLine {
                text: msg.as_bytes(),
                truncated: false,
            }],
        );
        msg
    })
}

/// Starts capturing the child's stdout and stderr, each on its own task.
fn capture(
    ctx: &Arc<Ctx>,
    stage: &Stage,
    child: &mut Box<dyn ChildWrapper>,
    stop: &StopReading,
) -> JoinSet<()> {
    let mut pumps = JoinSet::new();
    if let Some(out) = child.stdout().take() {
        let name = stage.name.clone();
        pumps.spawn(pump(
            out,
            ctx.clone(),
            name,
            Stream::Stdout,
            stop.subscribe(),
        ));
    }
    if let Some(err) = child.stderr().take() {
        let name = stage.name.clone();
        pumps.spawn(pump(
            err,
            ctx.clone(),
            name,
            Stream::Stderr,
            stop.subscribe(),
        ));
    }
    pumps
}

/// Waits for the process to exit, its timeout, or the run to stop, whichever comes first.
async fn wait(
    child: &mut Box<dyn ChildWrapper>,
    timeout: Option<Duration>,
    stop: StopRx,
) -> Attempt {
    let timeout = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        status = process::wait_main(child) => match status {
            Ok(st) => {
                let (code, signal) = process::describe(st);
                Attempt::Exited { code, signal }
            }
            Err(e) => Attempt::SpawnFailed(format!("cannot wait for the process: {e}")),
        },
        _ = timeout => Attempt::TimedOut,
        s = stopped(stop) => Attempt::Stopped(s),
    }
}

/// Waits for the output of a finished attempt to be journaled, ending meanwhile the stage's
/// processes that left its group (they hold its pipes open, and are re-parented to the runner
/// as their parents die), and once more when the output is done (one that let go of the pipes
/// is ended too). Reading stops after [`DRAIN_GRACE`]; journaling what was read does not: the
/// attempt's end is journaled after all of its output.
async fn drain(mut pumps: JoinSet<()>, stop: &StopReading, stage: &str) {
    let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
    loop {
        match tokio::time::timeout(ESCAPED_EVERY, pumps.join_next()).await {
            Ok(None) => break,
            Ok(Some(_)) => {}
            Err(_) if tokio::time::Instant::now() >= deadline => {
                // Something may still hold a pipe that nothing here can end; stop reading
                // rather than hang, and wait for what was read to be journaled.
                stop.stop();
                while pumps.join_next().await.is_some() {}
                break;
            }
            Err(_) => kill_escaped(stage).await,
        }
    }
    kill_escaped(stage).await;
}

/// [`process::kill_escaped`] for `stage`, off the async worker threads.
async fn kill_escaped(stage: &str) {
    let stage = stage.to_string();
    let _ = tokio::task::spawn_blocking(move || process::kill_escaped(Some(&stage))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage() -> Stage {
        Stage {
            name: "s".into(),
            run: crate::config::Command::Shell("true".into()),
            needs: Vec::new(),
            timeout: Some(Duration::from_millis(300)),
            retries: 0,
            retry_delay: Duration::ZERO,
            env: BTreeMap::new(),
            workdir: ".".into(),
        }
    }

    #[test]
    fn attempt_reasons_and_words_are_the_journaled_ones() {
        let s = stage();
        let cases = [
            (
                Attempt::Exited {
                    code: Some(3),
                    signal: None,
                },
                "exit",
                "exit code 3",
            ),
            (
                Attempt::Exited {
                    code: None,
                    signal: Some(9),
                },
                "signal",
                "killed by signal 9",
            ),
            (
                Attempt::Exited {
                    code: None,
                    signal: None,
                },
                "exit",
                "exited abnormally",
            ),
            (
                Attempt::SpawnFailed("no such file".into()),
                "spawn",
                "could not start: no such file",
            ),
            (Attempt::TimedOut, "timeout", "timed out after 300ms"),
            (
                Attempt::Stopped(Stop::Timeout),
                "timeout",
                "the run timed out",
            ),
            (
                Attempt::Stopped(Stop::Cancel("replaced".into())),
                "cancelled",
                "cancelled (replaced by a newer run)",
            ),
            (
                Attempt::Stopped(Stop::Interrupted("SIGINT")),
                "cancelled",
                "cancelled (interrupted by SIGINT)",
            ),
            (
                Attempt::Stopped(Stop::Journal),
                "cancelled",
                "stopped: the journal cannot be written",
            ),
        ];
        for (attempt, reason, words) in cases {
            assert_eq!(attempt.reason(), reason, "{attempt:?}");
            assert_eq!(attempt.describe(&s), words, "{attempt:?}");
        }
    }

    #[test]
    fn only_exit_code_zero_succeeds() {
        let ok = Attempt::Exited {
            code: Some(0),
            signal: None,
        };
        assert!(ok.succeeded());
        assert!(!Attempt::TimedOut.succeeded());
        assert!(
            !Attempt::Exited {
                code: Some(1),
                signal: None
            }
            .succeeded()
        );
    }
}
