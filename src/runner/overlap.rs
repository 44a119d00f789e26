//! The overlap policy: what a new run does while another run of the same pipeline is running.
//!
//! Runs coordinate through the pipeline lock ([`PipelineLock`], `<state_dir>/pipeline.lock`),
//! so the policy holds across processes whoever started them:
//! - `parallel`: take no lock, run;
//! - `skip`: run if the lock is free, otherwise record a `skipped` run;
//! - `queue`: wait for the lock, then run;
//! - `replace`: ask the running runs to stop (reason `replaced`), wait for the lock, then run.
//!
//! Invariants: a run admitted under `skip`, `queue` or `replace` holds the lock until it has
//! written its final event; a run interrupted while it waits has written nothing. Called once
//! per run by [`super::run`], before the run has a journal.

use std::path::Path;

use super::liveness::{self, PipelineLock};
use super::progress::Reporter;
use super::{RunError, shutdown, state_err};
use crate::config::Overlap;
use crate::event::RunId;

/// What the policy allows the new run to do.
#[derive(Debug)]
pub(super) enum Admission {
    /// Run, holding the pipeline lock (none under `parallel`) until the run has ended.
    Run(Option<PipelineLock>),
    /// Do not run any stage: other runs are running under `skip`. Their ids, comma-separated.
    Skip { running: String },
    /// Interrupted by a signal while waiting for the lock: nothing was started or written.
    Interrupted,
}

/// Applies `policy` against the other runs whose state lives in `state_dir`.
pub(super) async fn admit(
    policy: Overlap,
    state_dir: &Path,
    reporter: &dyn Reporter,
) -> Result<Admission, RunError> {
    match policy {
        Overlap::Parallel => Ok(Admission::Run(None)),
        Overlap::Skip => skip(state_dir),
        Overlap::Queue => queue(state_dir, reporter).await,
        Overlap::Replace => replace(state_dir, reporter).await,
    }
}

fn skip(state_dir: &Path) -> Result<Admission, RunError> {
    if let Some(lock) = try_lock(state_dir)? {
        return Ok(Admission::Run(Some(lock)));
    }
    let running = liveness::alive_runs(state_dir);
    Ok(Admission::Skip {
        running: names(&running).join(","),
    })
}

async fn queue(state_dir: &Path, reporter: &dyn Reporter) -> Result<Admission, RunError> {
    if let Some(lock) = try_lock(state_dir)? {
        return Ok(Admission::Run(Some(lock)));
    }
    let running = liveness::alive_runs(state_dir);
    reporter.note(&format!(
        "waiting for the running run {} to finish (overlap = \"queue\")",
        names(&running).join(", ")
    ));
    wait_for_lock(state_dir, reporter).await
}

async fn replace(state_dir: &Path, reporter: &dyn Reporter) -> Result<Admission, RunError> {
    if let Some(lock) = try_lock(state_dir)? {
        return Ok(Admission::Run(Some(lock)));
    }
    let running = liveness::alive_runs(state_dir);
    for id in &running {
        liveness::request_cancel(state_dir, id, "replaced").map_err(|e| state_err(state_dir, e))?;
    }
    reporter.note(&format!(
        "replacing the running run {} (overlap = \"replace\")",
        names(&running).join(", ")
    ));
    wait_for_lock(state_dir, reporter).await
}

/// Takes the pipeline lock if no other run holds it.
fn try_lock(state_dir: &Path) -> Result<Option<PipelineLock>, RunError> {
    PipelineLock::try_acquire(state_dir).map_err(|e| state_err(state_dir, e))
}

/// Waits for the pipeline lock, off the async workers, unless a signal comes first.
async fn wait_for_lock(state_dir: &Path, reporter: &dyn Reporter) -> Result<Admission, RunError> {
    let dir = state_dir.to_path_buf();
    let wait = tokio::task::spawn_blocking(move || PipelineLock::acquire(&dir));
    tokio::select! {
        lock = wait => match lock {
            Ok(Ok(lock)) => Ok(Admission::Run(Some(lock))),
            Ok(Err(e)) => Err(state_err(state_dir, e)),
            Err(e) => Err(state_err(state_dir, std::io::Error::other(e))),
        },
        sig = shutdown::signalled() => {
            reporter.note(&format!("{sig} while waiting: not started"));
            Ok(Admission::Interrupted)
        }
    }
}

fn names(running: &[RunId]) -> Vec<String> {
    running.iter().map(|r| r.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::progress::Quiet;

    #[tokio::test]
    async fn a_free_lock_admits_and_a_held_one_skips() {
        let dir = tempfile::tempdir().unwrap();
        let first = admit(Overlap::Skip, dir.path(), &Quiet).await.unwrap();
        assert!(matches!(first, Admission::Run(Some(_))));
        let second = admit(Overlap::Skip, dir.path(), &Quiet).await.unwrap();
        // No run lock is held here, so no run is named.
        assert!(
            matches!(&second, Admission::Skip { running } if running.is_empty()),
            "{second:?}"
        );
        let parallel = admit(Overlap::Parallel, dir.path(), &Quiet).await.unwrap();
        assert!(matches!(parallel, Admission::Run(None)));
    }

    #[tokio::test]
    async fn skip_names_the_running_runs_without_spaces() {
        let dir = tempfile::tempdir().unwrap();
        let _held = admit(Overlap::Skip, dir.path(), &Quiet).await.unwrap();
        let ids = [RunId::parse("r1").unwrap(), RunId::parse("r2").unwrap()];
        let _locks: Vec<_> = ids
            .iter()
            .map(|id| liveness::RunLock::acquire(dir.path(), id).unwrap())
            .collect();
        match admit(Overlap::Skip, dir.path(), &Quiet).await.unwrap() {
            Admission::Skip { running } => assert_eq!(running, "r1,r2"),
            other => panic!("{other:?}"),
        }
    }
}
