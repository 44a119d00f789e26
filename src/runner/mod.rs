//! `pipewatch run`: one run of the pipeline, start to finish, journaled as it happens.
//!
//! The run ([`run`], called by `cli::run`):
//! 1. applies the overlap policy against other runs of the same pipeline (`overlap.rs`), on
//!    this host and, under `[cluster]`, across hosts (`cluster::lock`);
//! 2. takes its run lock (proof of life for the dashboard, [`liveness`]) and creates its
//!    journal;
//! 3. announces itself to the dashboard in the background ([`announce`]);
//! 4. runs the stages as a DAG (`dag.rs`), each stage with its attempts, timeouts and retries
//!    (`attempt.rs`) and its output captured line by line (`capture.rs`);
//! 5. ends with exactly one run-level `success`, `failure`, `cancelled` or `skipped`.
//!
//! Stopping — a signal, a cancel request, `replace` from a newer run, the run's own timeout or
//! a journal that can no longer be written — is one typed reason (`stop.rs`) broadcast on one
//! watch channel that every stage task selects on. The words written to the journal for each
//! ending (`msg`, `data.reason`) are part of the file format (`docs/events.md`).
//!
//! Invariants: the pipeline lock (if the policy takes one) and the run lock are held until the
//! run's final event is written; the run lock's files are removed only after it.

pub mod announce;
mod attempt;
mod capture;
mod dag;
pub mod groups;
pub mod invocation;
pub mod liveness;
mod overlap;
pub mod plan;
pub mod process;
#[cfg(target_os = "linux")]
mod procfs;
pub mod progress;
pub mod shutdown;
mod stop;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::config::Config;
use crate::event::{Data, Level, PIPELINE_STAGE, RunId, kind};
use crate::journal::{Journal, JournalError};
use crate::sync::MutexExt;
pub use capture::LineSplitter;
use dag::Settled;
use groups::StageGroup;
use liveness::RunLock;
use overlap::Admission;
use progress::{Ending, Reporter};
use stop::Stop;

/// Output lines longer than this are cut (and marked `data.truncated`).
pub const MAX_LINE_BYTES: usize = 32 * 1024;

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

impl RunOutcome {
    /// Interrupted while waiting for its turn: no run id, no journal.
    fn not_started() -> RunOutcome {
        RunOutcome {
            run_id: None,
            status: RunStatus::Cancelled,
            journal: None,
        }
    }
}

/// A run that could not be carried out: the environment, not the pipeline, is at fault.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot use the state folder {path}: {message}")]
    State { path: PathBuf, message: String },
}

impl crate::exit::Code for RunError {
    fn exit_code(&self) -> u8 {
        crate::exit::ENVIRONMENT
    }
}

/// Options from the command line.
pub struct RunOptions {
    /// `source` of every event: `cli`, `scheduler`, `manual`, …
    pub source: String,
    /// Whether to tell the dashboard.
    pub announce: bool,
    /// The run id to use (the dashboard picks it for runs it starts); generated if `None`.
    pub run_id: Option<RunId>,
    /// The value of every parameter (`config::params::resolve`).
    pub params: std::collections::BTreeMap<String, String>,
    /// The stages left out: reused by a retry, or not chosen with `--stage`.
    pub plan: plan::Plan,
    /// The run this one retries.
    pub retry_of: Option<RunId>,
}

/// What every stage task shares.
struct Ctx {
    journal: Journal,
    /// Where stages' process groups are recorded, for cleanup if the runner dies.
    state_dir: PathBuf,
    /// The process groups of the stages running now; the file mirrors this set, so that a
    /// group that ended (and whose id may be reused) is never killed later.
    groups: Mutex<BTreeSet<StageGroup>>,
    reporter: Arc<dyn Reporter>,
    run_id: RunId,
    pipeline: String,
    /// Given to every stage as `PIPEWATCH_PARAM_<NAME>`.
    params: std::collections::BTreeMap<String, String>,
}

impl Ctx {
    /// Creates the run's journal.
    fn create(
        config: &Config,
        run_id: &RunId,
        source: &str,
        params: std::collections::BTreeMap<String, String>,
        reporter: Arc<dyn Reporter>,
    ) -> Result<Ctx, RunError> {
        let journal = Journal::create(
            &config.server.events_dir,
            run_id,
            &config.pipeline.name,
            source,
        )?;
        Ok(Ctx {
            state_dir: config.server.state_dir.clone(),
            groups: Mutex::new(BTreeSet::new()),
            journal,
            reporter,
            run_id: run_id.clone(),
            pipeline: config.pipeline.name.clone(),
            params,
        })
    }

    /// Adds or removes a running stage's process group, and records the set.
    fn track_group(&self, group: &StageGroup, running: bool) {
        let mut groups = self.groups.lock_anyway();
        if running {
            groups.insert(group.clone());
        } else {
            groups.remove(group);
        }
        liveness::record_groups(&self.state_dir, &self.run_id, &groups);
    }
}

fn state_err(path: &Path, e: std::io::Error) -> RunError {
    RunError::State {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Runs the pipeline once.
///
/// It owns its process, as `pipewatch run` does: on Linux it makes the process the reaper of
/// its stages' orphans, and once the stages have ended it kills every child process left
/// ([`process::kill_escaped`]). So it is never called inside a process that has children of
/// its own (the dashboard starts `pipewatch run` as a process of its own).
pub async fn run(
    config: &Config,
    opts: RunOptions,
    reporter: Arc<dyn Reporter>,
) -> Result<RunOutcome, RunError> {
    let state_dir = &config.server.state_dir;
    // Stages a killed runner left behind end now, before anything new starts.
    liveness::reap_orphans(state_dir);
    // What the stages orphan comes back to this process, to be ended with its stage.
    process::adopt_orphans();

    // With [cluster] the run is named in the engine's lock before it starts, so its id is
    // fixed now; otherwise when it starts (after any wait for its turn).
    let early_id = config.cluster.as_ref().map(|_| {
        opts.run_id
            .clone()
            .unwrap_or_else(|| RunId::generate(Utc::now()))
    });

    // 1. Overlap: on this host, then (with [cluster]) across hosts.
    let policy = config.pipeline.overlap;
    let (pipeline_lock, overlap_with) =
        match overlap::admit(policy, &overlap::Scope::of(config), reporter.as_ref()).await? {
            Admission::Run(lock) => (lock, None),
            Admission::Skip { running } => (None, Some(running)),
            Admission::Interrupted => return Ok(RunOutcome::not_started()),
        };
    let (engine_lock, overlap_with) = match (overlap_with, &early_id) {
        (Some(running), _) => (None, Some(running)),
        (None, None) => (None, None),
        (None, Some(id)) => {
            match overlap::admit_across_hosts(policy, config, id, reporter.as_ref()).await? {
                overlap::Across::Run(lock) => (lock, None),
                overlap::Across::Skip { running } => (None, Some(running)),
                overlap::Across::Interrupted => return Ok(RunOutcome::not_started()),
            }
        }
    };

    // 2. Run lock and journal.
    let started = Instant::now();
    let run_id = early_id
        .or_else(|| opts.run_id.clone())
        .unwrap_or_else(|| RunId::generate(Utc::now()));
    let names = config.stage_names();
    let (run_lock, ctx) = match begin(config, &run_id, &names, &opts, reporter) {
        Ok((lock, ctx)) => (lock, Arc::new(ctx)),
        Err(e) => {
            if let Some(lock) = engine_lock {
                lock.release().await;
            }
            return Err(e);
        }
    };

    // 3. Announce.
    let announcement = announce_to_dashboard(config, &run_id, &opts);

    // 4. Stages (or the overlap skip).
    let status = match overlap_with {
        Some(running) => journal_overlap_skip(&ctx, &running)?,
        None => {
            ctx.reporter.run_started(run_id.as_str(), &names);
            let settled = dag::run_stages(config, &ctx, &run_lock, &opts.plan).await;
            // Every stage has ended: whatever they orphaned is this process's child now, and
            // goes before the run's final event.
            let _ = tokio::task::spawn_blocking(|| process::kill_escaped(None)).await;
            journal_end(&ctx, &settled, started.elapsed())?;
            settled.status
        }
    };

    // 5. Done: only now may the locks go.
    ctx.reporter.run_finished(
        run_id.as_str(),
        status.ending(),
        started.elapsed(),
        &ctx.journal.path().display().to_string(),
    );
    run_lock.finished();
    if let Some(lock) = engine_lock {
        lock.release().await;
    }
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

/// Records a run that is not started for a reason outside the pipeline (`reason`, one of the
/// codes of `docs/events.md`, `msg` in words): its `start` and a run-level `skipped`, no stage,
/// announced to the dashboard as any run is. The overlap policy is not consulted (nothing
/// runs); the run lock is held while the two events are written, as a run's is.
pub async fn record_skipped(
    config: &Config,
    opts: RunOptions,
    reporter: Arc<dyn Reporter>,
    reason: &'static str,
    msg: &str,
) -> Result<RunOutcome, RunError> {
    let started = Instant::now();
    let run_id = opts
        .run_id
        .clone()
        .unwrap_or_else(|| RunId::generate(Utc::now()));
    let (run_lock, ctx) = begin(config, &run_id, &config.stage_names(), &opts, reporter)?;
    let announcement = announce_to_dashboard(config, &run_id, &opts);
    ctx.reporter.note(msg);
    // Should this fail, the run has a start and no end: its lock is kept, so the dashboard
    // sees it abandoned, as any run whose journal broke.
    ctx.journal.emit(
        PIPELINE_STAGE,
        kind::SKIPPED,
        Level::Warn,
        msg,
        &Data {
            reason: Some(reason),
            ..Data::default()
        },
    )?;
    ctx.reporter.run_finished(
        run_id.as_str(),
        Ending::Skipped,
        started.elapsed(),
        &ctx.journal.path().display().to_string(),
    );
    run_lock.finished();
    if let Some(a) = announcement {
        tokio::task::spawn_blocking(move || a.finish()).await.ok();
    }
    Ok(RunOutcome {
        run_id: Some(run_id),
        status: RunStatus::Skipped,
        journal: Some(ctx.journal.path().to_path_buf()),
    })
}

/// Takes the run's lock, opens its journal and writes its `start`. On failure nothing of the
/// run is left: not one event was written, so no reader will ever look for it and its lock
/// file would only be litter. (A run that fails later, with events but no final one, keeps its
/// lock: that is how the dashboard sees it abandoned.)
fn begin(
    config: &Config,
    run_id: &RunId,
    names: &[&str],
    opts: &RunOptions,
    reporter: Arc<dyn Reporter>,
) -> Result<(RunLock, Ctx), RunError> {
    let state_dir = &config.server.state_dir;
    let run_lock = RunLock::acquire(state_dir, run_id, &config.pipeline.name)
        .map_err(|e| state_err(state_dir, e))?;
    match Ctx::create(config, run_id, &opts.source, opts.params.clone(), reporter)
        .and_then(|ctx| journal_start(&ctx, config, names, opts).map(|()| ctx))
    {
        Ok(ctx) => Ok((run_lock, ctx)),
        Err(e) => {
            run_lock.finished();
            Err(e)
        }
    }
}

/// Tells the dashboard of this configuration that the run started, unless asked not to.
fn announce_to_dashboard(
    config: &Config,
    run_id: &RunId,
    opts: &RunOptions,
) -> Option<announce::Announcement> {
    opts.announce.then(|| {
        announce::announce(
            config.server.bind,
            &config.server.token,
            run_id.as_str(),
            &opts.source,
            &config.server.events_id(),
        )
    })
}

/// The run-level `start` event.
fn journal_start(
    ctx: &Ctx,
    config: &Config,
    names: &[&str],
    opts: &RunOptions,
) -> Result<(), RunError> {
    // The host `[cluster]` names this machine, else its own name.
    let host = config
        .cluster
        .as_ref()
        .map(|c| c.host.clone())
        .or_else(crate::config::cluster::machine_name);
    let graph = config.stage_needs();
    let source = &opts.source;
    let retry = opts
        .retry_of
        .as_ref()
        .map(|id| format!(", retrying {id}"))
        .unwrap_or_default();
    ctx.journal.emit(
        PIPELINE_STAGE,
        kind::START,
        Level::Info,
        &format!(
            "run of {} started ({} stages, source {source}{retry})",
            config.pipeline.name,
            names.len(),
        ),
        &Data {
            stages: Some(names),
            stage_needs: Some(&graph),
            params: (!opts.params.is_empty()).then_some(&opts.params),
            retry_of: opts.retry_of.as_ref().map(RunId::as_str),
            schedule: Some(config.pipeline.schedule.expression()),
            pid: Some(std::process::id()),
            host: host.as_deref(),
            ..Data::default()
        },
    )?;
    Ok(())
}

/// The run-level `skipped` of a run that `overlap = "skip"` kept from running.
fn journal_overlap_skip(ctx: &Ctx, running: &str) -> Result<RunStatus, RunError> {
    let msg = if running.is_empty() {
        "not started: another run of this pipeline is still running".to_string()
    } else {
        format!("not started: run {running} of this pipeline is still running")
    };
    ctx.reporter.note(&msg);
    ctx.journal.emit(
        PIPELINE_STAGE,
        kind::SKIPPED,
        Level::Warn,
        &msg,
        &Data {
            reason: Some("overlap"),
            running: (!running.is_empty()).then_some(running),
            ..Data::default()
        },
    )?;
    Ok(RunStatus::Skipped)
}

/// The run's final event after its stages: what it says.
#[derive(Debug, PartialEq)]
struct RunEnd<'a> {
    event: &'static str,
    level: Level,
    msg: String,
    reason: Option<&'a str>,
}

/// What the run's final event says: a stop says why the run ended, otherwise the stages do.
fn run_end(settled: &Settled) -> RunEnd<'_> {
    let stop_reason = settled.why.as_ref().map(Stop::reason);
    let (event, level, msg, reason) = match (&settled.why, settled.status) {
        (Some(s @ (Stop::Cancel(_) | Stop::Interrupted(_))), _) => (
            kind::CANCELLED,
            Level::Warn,
            format!("run cancelled ({})", s.cancelled_by().unwrap_or_default()),
            stop_reason,
        ),
        (Some(Stop::Timeout), _) => (
            kind::FAILURE,
            Level::Error,
            "run timed out".to_string(),
            stop_reason,
        ),
        (Some(Stop::Journal), _) => (
            kind::FAILURE,
            Level::Error,
            "run stopped: its journal cannot be written".to_string(),
            stop_reason,
        ),
        (None, RunStatus::Success) => (
            kind::SUCCESS,
            Level::Info,
            "run succeeded".to_string(),
            None,
        ),
        (None, _) => (
            kind::FAILURE,
            Level::Error,
            format!("run failed: {}", settled.failed.join(", ")),
            Some("stage_failed"),
        ),
    };
    RunEnd {
        event,
        level,
        msg,
        reason,
    }
}

/// The run-level `success`, `failure` or `cancelled` after the stages.
fn journal_end(ctx: &Ctx, settled: &Settled, took: Duration) -> Result<(), RunError> {
    let end = run_end(settled);
    let failed: Vec<&str> = settled.failed.iter().map(|s| s.as_str()).collect();
    ctx.journal.emit(
        PIPELINE_STAGE,
        end.event,
        end.level,
        &end.msg,
        &Data {
            duration_ms: Some(took.as_millis() as u64),
            reason: end.reason,
            interrupted_by: settled.why.as_ref().and_then(Stop::interrupted_by),
            failed_stages: (!failed.is_empty()).then_some(failed.as_slice()),
            ..Data::default()
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(
        status: RunStatus,
        why: Option<Stop>,
        failed: &[&str],
    ) -> (String, String, Option<String>) {
        let settled = Settled {
            status,
            why,
            failed: failed.iter().map(|s| s.to_string()).collect(),
        };
        let e = run_end(&settled);
        (e.event.to_string(), e.msg, e.reason.map(str::to_string))
    }

    fn words(event: &str, msg: &str, reason: Option<&str>) -> (String, String, Option<String>) {
        (
            event.to_string(),
            msg.to_string(),
            reason.map(str::to_string),
        )
    }

    #[test]
    fn the_final_event_keeps_the_journaled_words() {
        assert_eq!(
            end(RunStatus::Success, None, &[]),
            words("success", "run succeeded", None)
        );
        assert_eq!(
            end(RunStatus::Failure, None, &["a", "b"]),
            words("failure", "run failed: a, b", Some("stage_failed"))
        );
        assert_eq!(
            end(RunStatus::Failure, Some(Stop::Timeout), &["a"]),
            words("failure", "run timed out", Some("timeout"))
        );
        assert_eq!(
            end(RunStatus::Failure, Some(Stop::Journal), &[]),
            words(
                "failure",
                "run stopped: its journal cannot be written",
                Some("journal")
            )
        );
        assert_eq!(
            end(
                RunStatus::Cancelled,
                Some(Stop::Interrupted("SIGTERM")),
                &[]
            ),
            words(
                "cancelled",
                "run cancelled (interrupted by SIGTERM)",
                Some("interrupted")
            )
        );
        assert_eq!(
            end(RunStatus::Cancelled, Some(Stop::Cancel("user".into())), &[]),
            words("cancelled", "run cancelled (by a user)", Some("user"))
        );
    }

    #[test]
    fn a_stop_ending_the_run_is_logged_at_its_level() {
        let settled = Settled {
            status: RunStatus::Cancelled,
            why: Some(Stop::Cancel("replaced".into())),
            failed: Vec::new(),
        };
        assert_eq!(run_end(&settled).level, Level::Warn);
        let settled = Settled {
            status: RunStatus::Failure,
            why: Some(Stop::Timeout),
            failed: Vec::new(),
        };
        assert_eq!(run_end(&settled).level, Level::Error);
    }
}
