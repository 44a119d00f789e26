//! The overlap policy: what a new run does while another run of the same pipeline is running.
//!
//! Runs coordinate through the pipeline lock ([`PipelineLock`], `pipeline.lock` in the
//! pipeline's own state folder), so the policy holds across processes whoever started them,
//! and the pipelines of a workspace never hold each other up:
//! - `parallel`: take no lock, run;
//! - `skip`: run if the lock is free, otherwise record a `skipped` run;
//! - `queue`: wait for the lock, then run;
//! - `replace`: ask the running runs to stop (reason `replaced`), wait for the lock, then run.
//!
//! Under `[cluster]`, a run this host admitted is then admitted across hosts
//! ([`admit_across_hosts`]) by the pipeline's key in the engine (`cluster::lock`), under the
//! same policy.
//!
//! Invariants: a run admitted under `skip`, `queue` or `replace` holds the lock until it has
//! written its final event; a run interrupted while it waits has written nothing. Called once
//! per run by [`super::run`], before the run has a journal.

use std::path::Path;
use std::sync::Arc;

use crate::cluster::lock::{EngineLock, LockError, Locks, Take};
use crate::config::Config;

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

/// Where the runs of one pipeline meet: the folder of its lock, and the runs folder of the
/// whole configuration with the pipeline's name to pick its runs out.
pub(super) struct Scope<'a> {
    pub(super) lock_dir: &'a Path,
    pub(super) state_dir: &'a Path,
    pub(super) pipeline: &'a str,
}

impl<'a> Scope<'a> {
    pub(super) fn of(config: &'a Config) -> Scope<'a> {
        Scope {
            lock_dir: &config.pipeline_state_dir,
            state_dir: &config.server.state_dir,
            pipeline: &config.pipeline.name,
        }
    }

    fn running(&self) -> Vec<RunId> {
        liveness::alive_runs_of(self.state_dir, self.pipeline)
    }
}

/// Applies `policy` against the other runs of the pipeline.
pub(super) async fn admit(
    policy: Overlap,
    scope: &Scope<'_>,
    reporter: &dyn Reporter,
) -> Result<Admission, RunError> {
    match policy {
        Overlap::Parallel => Ok(Admission::Run(None)),
        Overlap::Skip => skip(scope),
        Overlap::Queue => queue(scope, reporter).await,
        Overlap::Replace => replace(scope, reporter).await,
    }
}

fn skip(scope: &Scope) -> Result<Admission, RunError> {
    if let Some(lock) = try_lock(scope.lock_dir)? {
        return Ok(Admission::Run(Some(lock)));
    }
    let running = scope.running();
    Ok(Admission::Skip {
        running: names(&running).join(","),
    })
}

async fn queue(scope: &Scope<'_>, reporter: &dyn Reporter) -> Result<Admission, RunError> {
    if let Some(lock) = try_lock(scope.lock_dir)? {
        return Ok(Admission::Run(Some(lock)));
    }
    let running = scope.running();
    reporter.note(&format!(
        "waiting for the running run {} to finish (overlap = \"queue\")",
        names(&running).join(", ")
    ));
    wait_for_lock(scope.lock_dir, reporter).await
}

async fn replace(scope: &Scope<'_>, reporter: &dyn Reporter) -> Result<Admission, RunError> {
    if let Some(lock) = try_lock(scope.lock_dir)? {
        return Ok(Admission::Run(Some(lock)));
    }
    let running = scope.running();
    for id in &running {
        liveness::request_cancel(scope.state_dir, id, "replaced")
            .map_err(|e| state_err(scope.state_dir, e))?;
    }
    reporter.note(&format!(
        "replacing the running run {} (overlap = \"replace\")",
        names(&running).join(", ")
    ));
    wait_for_lock(scope.lock_dir, reporter).await
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

/// What the policy allows across hosts (`[cluster]`), once this host's lock is held.
pub(super) enum Across {
    /// Run, holding the engine's lock (none under `parallel`, without `[cluster]`, or when the
    /// engine could not be reached: then the policy holds on this host only).
    Run(Option<EngineLock>),
    /// A run on another host is running under `skip`: its id.
    Skip { running: String },
    /// Interrupted by a signal while waiting: nothing was started or written.
    Interrupted,
}

/// Applies `policy` against the runs of the pipeline on other hosts, through the engine's lock
/// (`cluster::lock`): `skip` skips while another run holds it, `queue` waits for it, `replace`
/// asks its holder to stop and waits. Called after [`admit`] let the run go on this host.
pub(super) async fn admit_across_hosts(
    policy: Overlap,
    config: &Config,
    run_id: &RunId,
    reporter: &dyn Reporter,
) -> Result<Across, RunError> {
    let Some(cluster) = config.cluster.as_ref() else {
        return Ok(Across::Run(None));
    };
    let word = match policy {
        Overlap::Parallel => return Ok(Across::Run(None)),
        Overlap::Skip => "skip",
        Overlap::Queue => "queue",
        Overlap::Replace => "replace",
    };
    let local_only = |e: LockError| {
        reporter.note(&format!(
            "{e}: overlap = \"{word}\" holds on this host only for this run"
        ));
        Ok(Across::Run(None))
    };
    let locks = match Locks::open(cluster, &config.pipeline.name).await {
        Ok(locks) => locks,
        Err(e) => return local_only(e),
    };
    // A run on another host replacing this one: stop it as a local `replace` would.
    let state_dir = config.server.state_dir.clone();
    let me = run_id.clone();
    let on_replace: Arc<dyn Fn(&str) + Send + Sync> = Arc::new(move |by: &str| {
        tracing::info!(run_id = %me, by, "replaced by a run on another host");
        let _ = liveness::request_cancel(&state_dir, &me, "replaced");
    });
    let signal = shutdown::signalled();
    tokio::pin!(signal);
    let mut waiting = false;
    loop {
        match locks.try_take(run_id, on_replace.clone()).await {
            Ok(Take::Taken(lock)) => return Ok(Across::Run(Some(lock))),
            Ok(Take::Held { holder, revision }) => {
                let on = format!("run {} on host {}", holder.run_id, holder.host);
                match policy {
                    Overlap::Skip => {
                        return Ok(Across::Skip {
                            running: holder.run_id,
                        });
                    }
                    Overlap::Replace => {
                        if let Err(e) = locks.request_replace(holder, revision, run_id).await {
                            tracing::debug!("{e}");
                        }
                    }
                    Overlap::Queue | Overlap::Parallel => {}
                }
                if !waiting {
                    reporter.note(&match policy {
                        Overlap::Replace => {
                            format!("replacing the running {on} (overlap = \"replace\")")
                        }
                        _ => {
                            format!("waiting for the running {on} to finish (overlap = \"{word}\")")
                        }
                    });
                    waiting = true;
                }
            }
            // Before any answer the engine is out of reach: this host's lock decides. Once
            // waiting for another host's run, wait on (it may still hold the lock).
            Err(e) if !waiting => return local_only(e),
            Err(e) => tracing::debug!("{e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Locks::retry_every()) => {}
            sig = &mut signal => {
                reporter.note(&format!("{sig} while waiting: not started"));
                return Ok(Across::Interrupted);
            }
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

    fn scope(dir: &Path) -> Scope<'_> {
        Scope {
            lock_dir: dir,
            state_dir: dir,
            pipeline: "p",
        }
    }

    #[tokio::test]
    async fn a_free_lock_admits_and_a_held_one_skips() {
        let dir = tempfile::tempdir().unwrap();
        let first = admit(Overlap::Skip, &scope(dir.path()), &Quiet)
            .await
            .unwrap();
        assert!(matches!(first, Admission::Run(Some(_))));
        let second = admit(Overlap::Skip, &scope(dir.path()), &Quiet)
            .await
            .unwrap();
        // No run lock is held here, so no run is named.
        assert!(
            matches!(&second, Admission::Skip { running } if running.is_empty()),
            "{second:?}"
        );
        let parallel = admit(Overlap::Parallel, &scope(dir.path()), &Quiet)
            .await
            .unwrap();
        assert!(matches!(parallel, Admission::Run(None)));
    }

    #[tokio::test]
    async fn skip_names_the_running_runs_without_spaces() {
        let dir = tempfile::tempdir().unwrap();
        let _held = admit(Overlap::Skip, &scope(dir.path()), &Quiet)
            .await
            .unwrap();
        let ids = [RunId::parse("r1").unwrap(), RunId::parse("r2").unwrap()];
        let _locks: Vec<_> = ids
            .iter()
            .map(|id| liveness::RunLock::acquire(dir.path(), id, "p").unwrap())
            .collect();
        match admit(Overlap::Skip, &scope(dir.path()), &Quiet)
            .await
            .unwrap()
        {
            Admission::Skip { running } => assert_eq!(running, "r1,r2"),
            other => panic!("{other:?}"),
        }
    }
}
