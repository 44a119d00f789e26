//! `pipewatch run`: one run of the pipeline, start to finish, journaled as it happens.
//!
//! The run:
//! 1. applies the overlap policy against other runs of the same pipeline ([`liveness`]);
//! 2. takes its run lock (proof of life for the dashboard) and creates its journal;
//! 3. announces itself to the dashboard in the background ([`announce`]);
//! 4. runs the stages as a DAG: a stage starts as soon as every stage it needs has succeeded,
//!    so independent stages run at the same time; a stage whose need failed is `skipped`;
//! 5. ends with exactly one run-level `success`, `failure`, `cancelled` or `skipped`.
//!
//! Each stage attempt streams its stdout and stderr into the journal line by line as they are
//! printed (each stream on its own task, so neither pipe can fill up and block the stage), and
//! is bounded by its timeout. Stopping — a signal, a cancel request, `replace` from a newer run,
//! the run's own timeout or a journal that can no longer be written — is broadcast on one watch
//! channel that every stage task selects on.

pub mod announce;
pub mod invocation;
pub mod liveness;
pub mod process;
pub mod progress;
pub mod shutdown;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::task::JoinSet;

use crate::config::{Config, Overlap, Stage};
use crate::event::{Data, Level, PIPELINE_STAGE, RunId, Stream, kind};
use crate::journal::{Journal, JournalError, OutputLine};
use liveness::{PipelineLock, RunLock};
use progress::{Ending, Reporter};

/// Output lines longer than this are cut (and marked `data.truncated`).
pub const MAX_LINE_BYTES: usize = 32 * 1024;

/// How often the runner looks for a cancel request.
const CANCEL_POLL: Duration = Duration::from_millis(200);

/// How long to wait for a stage's output after its process tree has been killed.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Success,
    Failure,
    Cancelled,
    Skipped,
}

impl RunStatus {
    fn ending(self) -> Ending {
        match self {
            RunStatus::Success => Ending::Success,
            RunStatus::Failure => Ending::Failure,
            RunStatus::Cancelled => Ending::Cancelled,
            RunStatus::Skipped => Ending::Skipped,
        }
    }
}

/// The result of a run that got as far as having a journal (or was stopped while queued).
#[derive(Debug)]
pub struct RunOutcome {
    pub run_id: Option<RunId>,
    pub status: RunStatus,
    pub journal: Option<PathBuf>,
}

/// A run that could not be carried out: the environment, not the pipeline, is at fault.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot use the state folder {path}: {message}")]
    State { path: PathBuf, message: String },
}

/// Options from the command line.
pub struct RunOptions {
    /// `source` of every event: `cli`, `scheduler`, `manual`, …
    pub source: String,
    /// Whether to tell the dashboard.
    pub announce: bool,
    /// The run id to use (the dashboard picks it for runs it starts); generated if `None`.
    pub run_id: Option<RunId>,
}

/// Why the run is being stopped early.
#[derive(Debug, Clone, PartialEq)]
enum Stop {
    /// Cancelled: by a signal, a cancel request, or a newer run (`replaced`).
    Cancel(String),
    /// The whole run's timeout expired.
    Timeout,
    /// The journal cannot be written any more.
    Journal,
}

/// How one stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StageEnd {
    Success,
    Failure,
    Cancelled,
}

/// What every stage task shares.
struct Ctx {
    journal: Journal,
    /// Where stages' process groups are recorded, for cleanup if the runner dies.
    state_dir: PathBuf,
    /// The process groups of the stages running now; the file mirrors this set, so that a
    /// group that ended (and whose id may be reused) is never killed later.
    groups: std::sync::Mutex<std::collections::BTreeSet<u32>>,
    reporter: Arc<dyn Reporter>,
    run_id: RunId,
    pipeline: String,
}

fn state_err(path: &std::path::Path, e: std::io::Error) -> RunError {
    RunError::State {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Runs the pipeline once.
pub async fn run(
    config: &Config,
    opts: RunOptions,
    reporter: Arc<dyn Reporter>,
) -> Result<RunOutcome, RunError> {
    let state_dir = &config.server.state_dir;
    // Stages a killed runner left behind end now, before anything new starts.
    liveness::reap_orphans(state_dir);

    // 1. Overlap.
    let mut overlap_with: Option<String> = None;
    let pipeline_lock = match config.pipeline.overlap {
        Overlap::Parallel => None,
        policy => {
            match PipelineLock::try_acquire(state_dir).map_err(|e| state_err(state_dir, e))? {
                Some(lock) => Some(lock),
                None => {
                    let running = liveness::alive_runs(state_dir);
                    let names: Vec<String> = running.iter().map(|r| r.to_string()).collect();
                    match policy {
                        Overlap::Skip => {
                            overlap_with = Some(names.join(","));
                            None
                        }
                        Overlap::Queue | Overlap::Replace => {
                            if policy == Overlap::Replace {
                                for id in &running {
                                    liveness::request_cancel(state_dir, id, "replaced")
                                        .map_err(|e| state_err(state_dir, e))?;
                                }
                                reporter.note(&format!(
                                    "replacing the running run {} (overlap = \"replace\")",
                                    names.join(", ")
                                ));
                            } else {
                                reporter.note(&format!(
                                "waiting for the running run {} to finish (overlap = \"queue\")",
                                names.join(", ")
                            ));
                            }
                            let dir = state_dir.clone();
                            let wait =
                                tokio::task::spawn_blocking(move || PipelineLock::acquire(&dir));
                            tokio::select! {
                                lock = wait => match lock {
                                    Ok(Ok(lock)) => Some(lock),
                                    Ok(Err(e)) => return Err(state_err(state_dir, e)),
                                    Err(e) => return Err(state_err(state_dir, std::io::Error::other(e))),
                                },
                                sig = shutdown::signalled() => {
                                    reporter.note(&format!("{sig} while waiting: not started"));
                                    return Ok(RunOutcome { run_id: None, status: RunStatus::Cancelled, journal: None });
                                }
                            }
                        }
                        Overlap::Parallel => None,
                    }
                }
            }
        }
    };

    // 2. Run lock and journal.
    let started = Instant::now();
    let run_id = opts
        .run_id
        .clone()
        .unwrap_or_else(|| RunId::generate(Utc::now()));
    let run_lock = RunLock::acquire(state_dir, &run_id).map_err(|e| state_err(state_dir, e))?;
    let journal = Journal::create(
        &config.server.events_dir,
        &run_id,
        &config.pipeline.name,
        &opts.source,
    )?;
    let ctx = Arc::new(Ctx {
        state_dir: state_dir.clone(),
        groups: std::sync::Mutex::new(std::collections::BTreeSet::new()),
        journal,
        reporter,
        run_id: run_id.clone(),
        pipeline: config.pipeline.name.clone(),
    });
    let names = config.stage_names();
    let host = hostname();
    ctx.journal.emit(
        PIPELINE_STAGE,
        kind::START,
        Level::Info,
        &format!(
            "run of {} started ({} stages, source {})",
            config.pipeline.name,
            names.len(),
            opts.source
        ),
        &Data {
            stages: Some(&names),
            schedule: Some(config.pipeline.schedule.expression()),
            pid: Some(std::process::id()),
            host: host.as_deref(),
            ..Data::default()
        },
    )?;

    // 3. Announce.
    let announcement = opts.announce.then(|| {
        announce::announce(
            config.server.bind,
            &config.server.token,
            run_id.as_str(),
            &opts.source,
        )
    });

    // 4. Stages (or the overlap skip).
    let status = if let Some(other) = overlap_with {
        let msg = if other.is_empty() {
            "not started: another run of this pipeline is still running".to_string()
        } else {
            format!("not started: run {other} of this pipeline is still running")
        };
        ctx.reporter.note(&msg);
        ctx.journal.emit(
            PIPELINE_STAGE,
            kind::SKIPPED,
            Level::Warn,
            &msg,
            &Data {
                reason: Some("overlap"),
                running: (!other.is_empty()).then_some(other.as_str()),
                ..Data::default()
            },
        )?;
        RunStatus::Skipped
    } else {
        ctx.reporter.run_started(run_id.as_str(), &names);
        let (status, stop) = run_stages(config, &ctx, &run_lock).await;
        let took = started.elapsed();
        let duration_ms = Some(took.as_millis() as u64);
        let failed: Vec<&str> = stop.failed.iter().map(|s| s.as_str()).collect();
        let (event, level, msg, reason) = match (&status, &stop.why) {
            (RunStatus::Success, _) => (
                kind::SUCCESS,
                Level::Info,
                "run succeeded".to_string(),
                None,
            ),
            (RunStatus::Cancelled, Some(Stop::Cancel(r))) => (
                kind::CANCELLED,
                Level::Warn,
                format!("run cancelled ({r})"),
                Some(r.as_str()),
            ),
            (_, Some(Stop::Timeout)) => (
                kind::FAILURE,
                Level::Error,
                "run timed out".to_string(),
                Some("timeout"),
            ),
            (_, Some(Stop::Journal)) => (
                kind::FAILURE,
                Level::Error,
                "run stopped: its journal cannot be written".to_string(),
                Some("journal"),
            ),
            _ => (
                kind::FAILURE,
                Level::Error,
                format!("run failed: {}", failed.join(", ")),
                Some("stage_failed"),
            ),
        };
        ctx.journal.emit(
            PIPELINE_STAGE,
            event,
            level,
            &msg,
            &Data {
                duration_ms,
                reason,
                failed_stages: (!failed.is_empty()).then_some(failed.as_slice()),
                ..Data::default()
            },
        )?;
        status
    };

    ctx.reporter.run_finished(
        run_id.as_str(),
        status.ending(),
        started.elapsed(),
        &ctx.journal.path().display().to_string(),
    );
    run_lock.finished();
    drop(pipeline_lock);
    if let Some(a) = announcement {
        tokio::task::spawn_blocking(move || a.finish()).await.ok();
    }
    Ok(RunOutcome {
        run_id: Some(run_id),
        status,
        journal: Some(ctx.journal.path().to_path_buf()),
    })
}

/// The machine's name, for the run's `start` event.
fn hostname() -> Option<String> {
    #[cfg(unix)]
    let name = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok());
    #[cfg(not(unix))]
    let name = std::env::var("COMPUTERNAME").ok();
    name.filter(|h| !h.is_empty())
}

/// What stopped the run, and which stages failed.
struct StopInfo {
    why: Option<Stop>,
    failed: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Running,
    Done(StageEnd),
    Skipped,
}

/// Runs the DAG until every stage has ended.
async fn run_stages(config: &Config, ctx: &Arc<Ctx>, run_lock: &RunLock) -> (RunStatus, StopInfo) {
    let stages = &config.stages;
    let mut state = vec![State::Pending; stages.len()];
    let (stop_tx, stop_rx) = watch::channel::<Option<Stop>>(None);
    let mut tasks: JoinSet<(usize, StageEnd)> = JoinSet::new();
    let deadline = config
        .pipeline
        .timeout
        .map(|t| tokio::time::Instant::now() + t);
    let mut poll = tokio::time::interval(CANCEL_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let signal = shutdown::signalled();
    tokio::pin!(signal);
    let mut signal_done = false;

    loop {
        // Start or skip every pending stage whose needs are settled.
        if stop_tx.borrow().is_none() {
            let mut changed = true;
            while changed {
                changed = false;
                for i in 0..stages.len() {
                    if state[i] != State::Pending {
                        continue;
                    }
                    let needs = &stages[i].needs;
                    if let Some(&bad) = needs.iter().find(|&&n| {
                        matches!(
                            state[n],
                            State::Skipped | State::Done(StageEnd::Failure | StageEnd::Cancelled)
                        )
                    }) {
                        state[i] = State::Skipped;
                        changed = true;
                        skip_stage(ctx, &stages[i], &stages[bad].name, "needs_failed");
                    } else if needs
                        .iter()
                        .all(|&n| state[n] == State::Done(StageEnd::Success))
                    {
                        state[i] = State::Running;
                        let ctx = ctx.clone();
                        let stage = stages[i].clone();
                        let stop = stop_rx.clone();
                        tasks.spawn(async move { (i, run_stage(&ctx, &stage, stop).await) });
                    }
                }
            }
        }
        if tasks.is_empty() {
            break;
        }

        let timeout = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            joined = tasks.join_next() => {
                if let Some(Ok((i, end))) = joined {
                    state[i] = State::Done(end);
                }
                // A panicked stage task (a bug) leaves its stage Running; nothing awaits it.
            }
            sig = &mut signal, if !signal_done => {
                signal_done = true;
                let _ = stop_tx.send_if_modified(|s| set_once(s, Stop::Cancel(format!("interrupted by {sig}"))));
            }
            _ = timeout, if stop_tx.borrow().is_none() => {
                let _ = stop_tx.send_if_modified(|s| set_once(s, Stop::Timeout));
            }
            _ = poll.tick() => {
                if let Some(reason) = run_lock.cancel_requested() {
                    let _ = stop_tx.send_if_modified(|s| set_once(s, Stop::Cancel(reason)));
                }
                if ctx.journal.failure().is_some() {
                    let _ = stop_tx.send_if_modified(|s| set_once(s, Stop::Journal));
                }
            }
        }
    }

    // Settle stages that never started.
    let why = stop_tx.borrow().clone();
    for (i, st) in state.iter_mut().enumerate() {
        if *st == State::Pending {
            match &why {
                Some(Stop::Cancel(r)) => {
                    *st = State::Done(StageEnd::Cancelled);
                    end_unstarted(ctx, &stages[i], kind::CANCELLED, r);
                }
                _ => {
                    *st = State::Skipped;
                    end_unstarted(ctx, &stages[i], kind::SKIPPED, "run_stopped");
                }
            }
        }
    }
    let failed: Vec<String> = state
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == State::Done(StageEnd::Failure))
        .map(|(i, _)| stages[i].name.clone())
        .collect();
    let status = match &why {
        Some(Stop::Cancel(_)) => RunStatus::Cancelled,
        Some(_) => RunStatus::Failure,
        None if state.iter().all(|s| *s == State::Done(StageEnd::Success)) => RunStatus::Success,
        None => RunStatus::Failure,
    };
    (status, StopInfo { why, failed })
}

fn set_once(slot: &mut Option<Stop>, stop: Stop) -> bool {
    if slot.is_none() {
        *slot = Some(stop);
        true
    } else {
        false
    }
}

fn skip_stage(ctx: &Ctx, stage: &Stage, needed: &str, reason: &str) {
    let _ = ctx.journal.emit(
        &stage.name,
        kind::SKIPPED,
        Level::Warn,
        &format!("skipped: needed stage {needed} did not succeed"),
        &Data {
            reason: Some(reason),
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

fn end_unstarted(ctx: &Ctx, stage: &Stage, event: &str, reason: &str) {
    let (ending, msg) = if event == kind::CANCELLED {
        (
            Ending::Cancelled,
            format!("cancelled before it started ({reason})"),
        )
    } else {
        (
            Ending::Skipped,
            "skipped: the run was stopped before it started".to_string(),
        )
    };
    let _ = ctx.journal.emit(
        &stage.name,
        event,
        Level::Warn,
        &msg,
        &Data {
            reason: Some(reason),
            ..Data::default()
        },
    );
    ctx.reporter
        .stage_finished(&stage.name, ending, Duration::ZERO, "not started");
}

/// How one attempt ended.
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
            Attempt::Stopped(Stop::Cancel(r)) => format!("cancelled ({r})"),
            Attempt::Stopped(Stop::Journal) => "stopped: the journal cannot be written".to_string(),
        }
    }
}

async fn stopped(mut rx: watch::Receiver<Option<Stop>>) -> Stop {
    let stop = match rx.wait_for(|s| s.is_some()).await {
        Ok(s) => s.clone(),
        Err(_) => None,
    };
    match stop {
        Some(s) => s,
        // The sender lives as long as the run; if it is gone, nothing will ever stop us.
        None => std::future::pending().await,
    }
}

/// Runs one stage, with its retries, to its end; journals everything about it.
async fn run_stage(ctx: &Arc<Ctx>, stage: &Stage, stop: watch::Receiver<Option<Stop>>) -> StageEnd {
    let started = Instant::now();
    let mut attempt: u32 = 1;
    loop {
        let _ = ctx.journal.emit(
            &stage.name,
            kind::START,
            Level::Info,
            &if attempt > 1 {
                format!("stage {} started (attempt {attempt})", stage.name)
            } else {
                format!("stage {} started", stage.name)
            },
            &Data {
                attempt: Some(attempt),
                ..Data::default()
            },
        );
        ctx.reporter.stage_started(&stage.name, attempt);
        // `took` is the process's own run time: from start to exit, not counting the
        // journaling of output still queued when it exited.
        let (result, took) = run_attempt(ctx, stage, attempt, stop.clone()).await;
        let (code, signal) = match &result {
            Attempt::Exited { code, signal } => (*code, *signal),
            _ => (None, None),
        };
        if matches!(result, Attempt::Exited { code: Some(0), .. }) {
            let _ = ctx.journal.emit(
                &stage.name,
                kind::SUCCESS,
                Level::Info,
                &format!("stage {} succeeded", stage.name),
                &Data {
                    attempt: Some(attempt),
                    exit_code: Some(0),
                    duration_ms: Some(took.as_millis() as u64),
                    ..Data::default()
                },
            );
            ctx.reporter
                .stage_finished(&stage.name, Ending::Success, started.elapsed(), "");
            return StageEnd::Success;
        }
        let why = result.describe(stage);
        if let Attempt::Stopped(Stop::Cancel(r)) = &result {
            let _ = ctx.journal.emit(
                &stage.name,
                kind::CANCELLED,
                Level::Warn,
                &format!("stage {} cancelled ({r})", stage.name),
                &Data {
                    attempt: Some(attempt),
                    reason: Some(r),
                    duration_ms: Some(took.as_millis() as u64),
                    ..Data::default()
                },
            );
            ctx.reporter
                .stage_finished(&stage.name, Ending::Cancelled, started.elapsed(), r);
            return StageEnd::Cancelled;
        }
        let stopping = matches!(result, Attempt::Stopped(_)) || stop.borrow().is_some();
        if attempt <= stage.retries && !stopping {
            let delay = stage.retry_delay;
            let _ = ctx.journal.emit(
                &stage.name,
                kind::RETRY,
                Level::Warn,
                &format!(
                    "stage {} attempt {attempt} failed ({why}); retrying in {}",
                    stage.name,
                    humantime::format_duration(delay)
                ),
                &Data {
                    attempt: Some(attempt + 1),
                    exit_code: code,
                    signal,
                    reason: Some(result.reason()),
                    delay_ms: Some(delay.as_millis() as u64),
                    ..Data::default()
                },
            );
            ctx.reporter
                .stage_retrying(&stage.name, attempt + 1, delay, &why);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                s = stopped(stop.clone()) => {
                    let r = match s { Stop::Cancel(r) => r, Stop::Timeout => "timeout".into(), Stop::Journal => "journal".into() };
                    let (event, ending) = if r == "timeout" { (kind::FAILURE, Ending::Failure) } else { (kind::CANCELLED, Ending::Cancelled) };
                    let _ = ctx.journal.emit(
                        &stage.name,
                        event,
                        Level::Warn,
                        &format!("stage {} stopped while waiting to retry ({r})", stage.name),
                        &Data { attempt: Some(attempt), reason: Some(&r), ..Data::default() },
                    );
                    ctx.reporter.stage_finished(&stage.name, ending, started.elapsed(), &r);
                    return if ending == Ending::Failure { StageEnd::Failure } else { StageEnd::Cancelled };
                }
            }
            attempt += 1;
            continue;
        }
        let error = match &result {
            Attempt::SpawnFailed(e) => Some(e.as_str()),
            _ => None,
        };
        let _ = ctx.journal.emit(
            &stage.name,
            kind::FAILURE,
            Level::Error,
            &format!("stage {} failed: {why}", stage.name),
            &Data {
                attempt: Some(attempt),
                exit_code: code,
                signal,
                reason: Some(result.reason()),
                error,
                duration_ms: Some(took.as_millis() as u64),
                ..Data::default()
            },
        );
        ctx.reporter
            .stage_finished(&stage.name, Ending::Failure, started.elapsed(), &why);
        return StageEnd::Failure;
    }
}

/// One attempt: start the process, stream its output, wait for it, a timeout or a stop.
async fn run_attempt(
    ctx: &Arc<Ctx>,
    stage: &Stage,
    attempt: u32,
    stop: watch::Receiver<Option<Stop>>,
) -> (Attempt, Duration) {
    let mut env: BTreeMap<String, String> = stage.env.clone();
    env.insert("PIPEWATCH_RUN_ID".into(), ctx.run_id.to_string());
    env.insert("PIPEWATCH_PIPELINE".into(), ctx.pipeline.clone());
    env.insert("PIPEWATCH_STAGE".into(), stage.name.clone());
    env.insert("PIPEWATCH_ATTEMPT".into(), attempt.to_string());
    let mut cmd = process::build(&stage.run, &stage.workdir, &env);
    let mut child = match process::spawn(&mut cmd) {
        Ok(c) => c,
        Err(e) => {
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
            return (Attempt::SpawnFailed(msg), Duration::ZERO);
        }
    };
    let pgid = child.id();
    if let Some(g) = pgid {
        ctx.track_group(g, true);
    }
    let mut pumps = JoinSet::new();
    if let Some(out) = child.stdout().take() {
        pumps.spawn(pump(out, ctx.clone(), stage.name.clone(), Stream::Stdout));
    }
    if let Some(err) = child.stderr().take() {
        pumps.spawn(pump(err, ctx.clone(), stage.name.clone(), Stream::Stderr));
    }

    let timeout = async {
        match stage.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let spawned = Instant::now();
    let result = tokio::select! {
        status = child.wait() => match status {
            Ok(st) => {
                let (code, signal) = process::describe(st);
                Attempt::Exited { code, signal }
            }
            Err(e) => Attempt::SpawnFailed(format!("cannot wait for the process: {e}")),
        },
        _ = timeout => Attempt::TimedOut,
        s = stopped(stop) => Attempt::Stopped(s),
    };
    // Kill the whole group: on timeout or stop this ends the stage; after a normal exit it
    // ends anything the stage left running in the background (which would otherwise hold the
    // pipes open).
    let took = spawned.elapsed();
    process::kill_tree(&mut child);
    if !matches!(result, Attempt::Exited { .. }) {
        let _ = child.wait().await;
    }
    if let Some(g) = pgid {
        ctx.track_group(g, false);
    }
    let drained = tokio::time::timeout(DRAIN_GRACE, async {
        while pumps.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        // Something outside the group still holds the pipe; stop reading rather than hang.
        pumps.abort_all();
    }
    (result, took)
}

/// Output read but not yet journaled, per stream, in bytes. Reading runs ahead of journaling
/// by up to this much, so a stage that prints in bursts is not held back by the journal;
/// beyond it, the stage waits on its pipe.
const READ_AHEAD_BYTES: usize = 16 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

impl Ctx {
    /// Adds or removes a running stage's process group, and records the set.
    fn track_group(&self, pgid: u32, running: bool) {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        if running {
            groups.insert(pgid);
        } else {
            groups.remove(&pgid);
        }
        liveness::record_groups(&self.state_dir, &self.run_id, &groups);
    }
}

/// Reads one output stream to its end and journals each line as soon as it is complete.
///
/// Two tasks: a reader that drains the pipe into a queue bounded by bytes, and a writer that
/// splits the chunks into lines and journals everything of a chunk in one write. Each line is
/// journaled as soon as the writer reaches it; the queue only absorbs bursts.
async fn pump<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    mut reader: R,
    ctx: Arc<Ctx>,
    stage: String,
    stream: Stream,
) {
    let budget = Arc::new(tokio::sync::Semaphore::new(READ_AHEAD_BYTES));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Vec<u8>, OwnedSemaphorePermit)>();
    let read_budget = budget.clone();
    let read = tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // n <= CHUNK < READ_AHEAD_BYTES, so the permits always exist; the semaphore is
            // never closed, so acquiring only fails if the run is being torn down.
            let Ok(permit) = read_budget.clone().acquire_many_owned(n as u32).await else {
                return;
            };
            if tx.send((buf[..n].to_vec(), permit)).is_err() {
                return;
            }
        }
    });
    // The writer is CPU work (splitting, JSON) plus blocking file writes: it runs on the
    // blocking pool so that it can never starve the reader, or the stage's exit, of a worker.
    let write = tokio::task::spawn_blocking(move || {
        let mut lines = LineSplitter::new(MAX_LINE_BYTES);
        loop {
            let chunk = rx.blocking_recv();
            match &chunk {
                Some((c, _)) => lines.feed(c),
                None => lines.finish(),
            }
            // A failed write is recorded in the journal and stops the run; keep draining so
            // the stage is never blocked on a full pipe meanwhile.
            let _ = ctx.journal.emit_output(&stage, stream, &lines.lines());
            lines.clear();
            // Dropping the chunk returns its bytes to the reader's budget.
            if chunk.is_none() {
                break;
            }
        }
    });
    let _ = write.await;
    let _ = read.await;
}

/// Splits a byte stream into lines: `\n` ends a line (a trailing `\r` is dropped); a line
/// longer than the cap is cut at the cap (on a UTF-8 boundary) and the rest, up to its `\n`,
/// discarded; an unterminated last line is kept when the stream ends.
pub struct LineSplitter {
    cap: usize,
    /// Complete lines found since the last `clear`, back to back.
    bytes: Vec<u8>,
    /// (start, end, truncated) of each line in `bytes`.
    spans: Vec<(usize, usize, bool)>,
    /// The current, unterminated line.
    partial: Vec<u8>,
    /// The current line was already cut; skip to its end.
    discarding: bool,
}

impl LineSplitter {
    pub fn new(cap: usize) -> LineSplitter {
        LineSplitter {
            cap: cap.max(4),
            bytes: Vec::new(),
            spans: Vec::new(),
            partial: Vec::new(),
            discarding: false,
        }
    }

    pub fn feed(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            match memchr::memchr(b'\n', chunk) {
                Some(nl) => {
                    let (head, rest) = chunk.split_at(nl);
                    if self.discarding {
                        self.discarding = false;
                        self.partial.clear();
                    } else {
                        self.partial.extend_from_slice(head);
                        self.complete();
                    }
                    chunk = &rest[1..];
                }
                None => {
                    if !self.discarding {
                        self.partial.extend_from_slice(chunk);
                        if self.partial.len() > self.cap {
                            self.cut();
                        }
                    }
                    chunk = &[];
                }
            }
        }
    }

    /// The stream ended: an unterminated last line is still a line.
    pub fn finish(&mut self) {
        if !self.discarding && !self.partial.is_empty() {
            self.complete();
        }
        self.discarding = false;
        self.partial.clear();
    }

    fn complete(&mut self) {
        if self.partial.last() == Some(&b'\r') {
            self.partial.pop();
        }
        if self.partial.len() > self.cap {
            self.cut();
            self.discarding = false;
            return;
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&self.partial);
        self.spans.push((start, self.bytes.len(), false));
        self.partial.clear();
    }

    /// Emits the first `cap` bytes of the current line (backing off to a character boundary)
    /// as a truncated line and discards the rest of it.
    fn cut(&mut self) {
        let mut end = self.cap;
        while end > 0 && end < self.partial.len() && (self.partial[end] & 0xC0) == 0x80 {
            end -= 1;
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&self.partial[..end]);
        self.spans.push((start, self.bytes.len(), true));
        self.partial.clear();
        self.discarding = true;
    }

    /// The complete lines found so far.
    pub fn lines(&self) -> Vec<OutputLine<'_>> {
        self.spans
            .iter()
            .map(|&(s, e, truncated)| OutputLine {
                text: &self.bytes[s..e],
                truncated,
            })
            .collect()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], cap: usize) -> Vec<(String, bool)> {
        let mut s = LineSplitter::new(cap);
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c);
            out.extend(
                s.lines()
                    .iter()
                    .map(|l| (String::from_utf8_lossy(l.text).into_owned(), l.truncated)),
            );
            s.clear();
        }
        s.finish();
        out.extend(
            s.lines()
                .iter()
                .map(|l| (String::from_utf8_lossy(l.text).into_owned(), l.truncated)),
        );
        out
    }

    fn plain(v: &[&str]) -> Vec<(String, bool)> {
        v.iter().map(|s| (s.to_string(), false)).collect()
    }

    #[test]
    fn lines_across_chunks() {
        assert_eq!(
            split(&[b"a\nb", b"c\r\n", b"\n", b"tail"], 100),
            plain(&["a", "bc", "", "tail"])
        );
        assert_eq!(split(&[b"x\n"], 100), plain(&["x"]));
    }

    #[test]
    fn long_lines_are_cut_once() {
        let out = split(&[b"0123456789", b"abc\nok\n"], 8);
        assert_eq!(
            out,
            vec![("01234567".to_string(), true), ("ok".to_string(), false)]
        );
        let out = split(&[b"0123456789abc\n"], 8);
        assert_eq!(out, vec![("01234567".to_string(), true)]);
    }

    #[test]
    fn cut_respects_utf8() {
        let out = split(&["ééééé\n".as_bytes()], 5);
        assert_eq!(out, vec![("éé".to_string(), true)]);
    }

    proptest::proptest! {
        #[test]
        fn any_chunking_gives_the_same_lines(text in "[a-c\n]{0,200}", cuts in proptest::collection::vec(0usize..200, 0..10)) {
            let bytes = text.as_bytes();
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            points.sort();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points { chunks.push(&bytes[last..p]); last = p; }
            chunks.push(&bytes[last..]);
            let expected: Vec<&str> = {
                let mut v: Vec<&str> = text.split('\n').collect();
                if v.last() == Some(&"") { v.pop(); }
                v
            };
            proptest::prop_assert_eq!(split(&chunks, 1000), plain(&expected));
        }
    }
}
