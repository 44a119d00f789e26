//! How a run tells the world it is alive, and how the world asks it to stop — without talking
//! to it.
//!
//! Files under `<state_dir>`:
//! - `runs/<run_id>.lock`: created and exclusively locked (an OS file lock: `flock` on Unix,
//!   `LockFileEx` on Windows) by the runner for its whole life. The OS drops the lock when the
//!   process dies, however it dies, so "the file exists but can be locked" means the runner is
//!   gone. The dashboard uses this to mark runs `abandoned`.
//! - `runs/<run_id>.cancel`: written by whoever wants the run stopped (the `replace` overlap
//!   policy, the dashboard's cancel endpoint); its content is the reason. The runner polls for
//!   it, so this works across processes on every OS without signals.
//! - `runs/<run_id>.groups`: the process group of every stage running now, one per line, with
//!   the identity of its leader (format and rules in [`super::groups`]). A runner killed
//!   outright cannot stop its stages; whoever next finds its lock released ([`reap_orphans`]:
//!   the next run of the pipeline, the dashboard) kills those groups that are provably still
//!   the stages', so no stage outlives its run and no stranger that got a stage's id dies.
//!   (On Windows the job objects do this by themselves: they close with the runner.)
//! - `runs/<run_id>.pipeline`: the name of the run's pipeline, written before the lock is
//!   taken, so that the runs of one pipeline of a workspace can be told from the others'
//!   ([`alive_runs_of`]: overlap, "running now").
//! - `pipeline.lock`: held exclusively by a running run under the `skip`, `queue` and `replace`
//!   overlap policies; the next run tries it (skip), waits for it (queue), or cancels its
//!   holders and then waits (replace).
//!
//! Other local users may be able to write in `state_dir`, so every one of these files is
//! opened through [`crate::fsx`]: a FIFO planted under a lock's or a cancel request's name is
//! ignored with a warning instead of blocking the liveness check or the runner's cancel poll,
//! and a link is neither read through nor written through (the `.tmp` files written before a
//! rename are always new files).

use std::fs::{File, TryLockError};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::groups::{self, StageGroup};
use crate::event::RunId;
use crate::fsx;

/// A cancel request's reason is read up to this many bytes.
const MAX_REASON_BYTES: u64 = 4096;
/// A `.groups` record is read up to this many bytes (one process group a line).
const MAX_GROUPS_BYTES: u64 = 1024 * 1024;

fn runs_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("runs")
}

fn lock_path(state_dir: &Path, run_id: &RunId) -> PathBuf {
    runs_dir(state_dir).join(format!("{run_id}.lock"))
}

fn cancel_path(state_dir: &Path, run_id: &RunId) -> PathBuf {
    runs_dir(state_dir).join(format!("{run_id}.cancel"))
}

fn pipeline_path(state_dir: &Path, run_id: &RunId) -> PathBuf {
    runs_dir(state_dir).join(format!("{run_id}.pipeline"))
}

fn groups_path(state_dir: &Path, run_id: &RunId) -> PathBuf {
    runs_dir(state_dir).join(format!("{run_id}.groups"))
}

/// The runner's proof of life. Dropping it releases the lock and removes the cancel request
/// and the groups record (every stage has ended by then); [`RunLock::finished`] also removes
/// the lock file. A run that ends any other way (an error after its first event, a crash)
/// leaves the lock file behind, unlocked — which is exactly how the dashboard recognises an
/// abandoned run.
#[derive(Debug)]
pub struct RunLock {
    /// Holding the open, locked handle is the whole mechanism.
    file: File,
    lock: PathBuf,
    cancel: PathBuf,
    /// Set once the run's final event is written: only then are the files removed.
    clean: bool,
}

impl RunLock {
    /// Creates and locks `runs/<run_id>.lock`, recording that it is a run of `pipeline`.
    pub fn acquire(state_dir: &Path, run_id: &RunId, pipeline: &str) -> io::Result<RunLock> {
        std::fs::create_dir_all(runs_dir(state_dir))?;
        fsx::replace(&pipeline_path(state_dir, run_id), pipeline.as_bytes())?;
        let lock = lock_path(state_dir, run_id);
        let file = fsx::open_lock(&lock)?;
        file.lock()?;
        Ok(RunLock {
            file,
            lock,
            cancel: cancel_path(state_dir, run_id),
            clean: false,
        })
    }

    /// The run's final event is written (or no event at all, so that nothing will ever look
    /// for the run): release the lock and remove the lock file.
    pub fn finished(mut self) {
        self.clean = true;
    }

    /// The reason in a pending cancel request, if one was made.
    pub fn cancel_requested(&self) -> Option<String> {
        // Polled from the runner's loop: the open must never wait (a FIFO), and the reason
        // goes into the journal, so it is read from no file but a regular one, and bounded.
        let mut reason = Vec::new();
        match fsx::open_read(&self.cancel)
            .and_then(|f| f.take(MAX_REASON_BYTES).read_to_end(&mut reason))
        {
            Ok(_) => {
                let reason = String::from_utf8_lossy(&reason);
                let r = reason.trim();
                Some(if r.is_empty() { "cancelled" } else { r }.to_string())
            }
            Err(e) => {
                if let Some(refused) = fsx::not_regular(&e) {
                    fsx::warn_ignored(refused, "cancel request");
                }
                None
            }
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.cancel);
        // The runner drops its lock only after its stages have ended: no group is left.
        let _ = std::fs::remove_file(self.lock.with_extension("groups"));
        if self.clean {
            let _ = std::fs::remove_file(self.lock.with_extension("pipeline"));
            let _ = std::fs::remove_file(&self.lock);
        }
        let _ = self.file.unlock();
    }
}

/// What can be told about a run's runner from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Its lock is held: the runner is running.
    Alive,
    /// No lock file, or one nobody holds: no runner is running it.
    Gone,
}

/// Whether a run's lock file exists at all: a runner that died leaves it behind (unlocked);
/// one that ended normally removes it; files written by other tools never had one.
pub fn has_lock_file(state_dir: &Path, run_id: &RunId) -> bool {
    lock_path(state_dir, run_id).exists()
}

/// Whether the runner of `run_id` is alive.
pub fn liveness(state_dir: &Path, run_id: &RunId) -> Liveness {
    // A FIFO or a link under the lock's name is no runner's lock (and must not be waited on:
    // this runs under the dashboard's index lock).
    let file = match fsx::open_read(&lock_path(state_dir, run_id)) {
        Ok(file) => file,
        Err(e) => {
            if let Some(refused) = fsx::not_regular(&e) {
                fsx::warn_ignored(refused, "run lock");
            }
            return Liveness::Gone;
        }
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            Liveness::Gone
        }
        Err(TryLockError::WouldBlock) => Liveness::Alive,
        // A lock we cannot even test (an unsupported file system): assume alive rather than
        // declaring a live run abandoned.
        Err(TryLockError::Error(_)) => Liveness::Alive,
    }
}

/// Removes the lock file a dead runner left behind (only if nobody holds it).
pub fn remove_stale_lock(state_dir: &Path, run_id: &RunId) {
    if liveness(state_dir, run_id) == Liveness::Gone {
        let _ = std::fs::remove_file(pipeline_path(state_dir, run_id));
        let _ = std::fs::remove_file(lock_path(state_dir, run_id));
    }
}

/// Records the process groups of the stages running now (replacing the previous record), so
/// that they can be killed if the runner dies.
pub fn record_groups(
    state_dir: &Path,
    run_id: &RunId,
    groups: &std::collections::BTreeSet<StageGroup>,
) {
    let path = groups_path(state_dir, run_id);
    let text: String = groups.iter().map(|g| format!("{g}\n")).collect();
    let _ = fsx::replace(&path, text.as_bytes());
}

/// Kills the stages left running by runners that died (their lock released, their process
/// groups recorded) — each group only if it is provably still the stage's
/// ([`super::groups::reap`]) — and forgets those records. Returns how many groups were
/// signalled.
pub fn reap_orphans(state_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(runs_dir(state_dir)) else {
        return 0;
    };
    let mut killed = 0;
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".groups"))
            .and_then(|n| RunId::parse(n).ok())
        else {
            continue;
        };
        if liveness(state_dir, &id) == Liveness::Alive {
            continue;
        }
        let path = groups_path(state_dir, &id);
        for line in fsx::read_to_string(&path, MAX_GROUPS_BYTES)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            if groups::reap(&id, line) {
                killed += 1;
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    killed
}

/// Run ids whose runners are alive now.
pub fn alive_runs(state_dir: &Path) -> Vec<RunId> {
    let Ok(entries) = std::fs::read_dir(runs_dir(state_dir)) else {
        return Vec::new();
    };
    let mut ids: Vec<RunId> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let id = name.to_str()?.strip_suffix(".lock")?;
            RunId::parse(id).ok()
        })
        .filter(|id| liveness(state_dir, id) == Liveness::Alive)
        .collect();
    ids.sort();
    ids
}

/// Run ids of `pipeline` whose runners are alive now. A run that recorded no pipeline (a
/// runner of an earlier version) counts as everyone's.
pub fn alive_runs_of(state_dir: &Path, pipeline: &str) -> Vec<RunId> {
    alive_runs(state_dir)
        .into_iter()
        .filter(|id| {
            let mut name = Vec::new();
            match fsx::open_read(&pipeline_path(state_dir, id))
                .and_then(|f| f.take(256).read_to_end(&mut name))
            {
                Ok(_) => name == pipeline.as_bytes(),
                Err(_) => true,
            }
        })
        .collect()
}

/// Asks the runner of `run_id` to stop, giving `reason`.
pub fn request_cancel(state_dir: &Path, run_id: &RunId, reason: &str) -> io::Result<()> {
    std::fs::create_dir_all(runs_dir(state_dir))?;
    fsx::replace(&cancel_path(state_dir, run_id), reason.as_bytes())
}

/// The overlap lock of the pipeline whose state lives in `state_dir`.
#[derive(Debug)]
pub struct PipelineLock {
    /// Held for as long as this value lives.
    file: File,
}

impl PipelineLock {
    fn open(state_dir: &Path) -> io::Result<File> {
        std::fs::create_dir_all(state_dir)?;
        fsx::open_lock(&state_dir.join("pipeline.lock"))
    }

    /// Takes the lock if no other run holds it.
    pub fn try_acquire(state_dir: &Path) -> io::Result<Option<PipelineLock>> {
        let file = Self::open(state_dir)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(PipelineLock { file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    /// Waits for the lock. Blocking: call it off the async worker threads.
    pub fn acquire(state_dir: &Path) -> io::Result<PipelineLock> {
        let file = Self::open(state_dir)?;
        file.lock()?;
        Ok(PipelineLock { file })
    }
}

impl Drop for PipelineLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_tells_liveness_and_cancel_reaches_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let id = RunId::parse("r1").unwrap();
        assert_eq!(liveness(dir.path(), &id), Liveness::Gone);
        let lock = RunLock::acquire(dir.path(), &id, "p").unwrap();
        assert_eq!(liveness(dir.path(), &id), Liveness::Alive);
        assert_eq!(alive_runs(dir.path()), vec![id.clone()]);
        assert_eq!(lock.cancel_requested(), None);
        request_cancel(dir.path(), &id, "replaced").unwrap();
        assert_eq!(lock.cancel_requested().as_deref(), Some("replaced"));
        lock.finished();
        assert_eq!(liveness(dir.path(), &id), Liveness::Gone);
        assert!(!has_lock_file(dir.path(), &id));
        assert!(alive_runs(dir.path()).is_empty());
        // A run that ends without finishing leaves its (unlocked) lock file behind.
        let lock = RunLock::acquire(dir.path(), &id, "p").unwrap();
        drop(lock);
        assert!(has_lock_file(dir.path(), &id));
        assert_eq!(liveness(dir.path(), &id), Liveness::Gone);
    }

    #[test]
    fn the_runs_of_one_pipeline_are_told_from_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let id = |s: &str| RunId::parse(s).unwrap();
        let _a = RunLock::acquire(dir.path(), &id("r1"), "sync").unwrap();
        let _b = RunLock::acquire(dir.path(), &id("r2"), "export").unwrap();
        let ended = RunLock::acquire(dir.path(), &id("r3"), "sync").unwrap();
        ended.finished();
        assert_eq!(alive_runs_of(dir.path(), "sync"), [id("r1")]);
        assert_eq!(alive_runs_of(dir.path(), "export"), [id("r2")]);
        assert_eq!(alive_runs(dir.path()), [id("r1"), id("r2")]);
        assert!(!pipeline_path(dir.path(), &id("r3")).exists());
    }

    #[test]
    fn pipeline_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let a = PipelineLock::try_acquire(dir.path()).unwrap();
        assert!(a.is_some());
        assert!(PipelineLock::try_acquire(dir.path()).unwrap().is_none());
        drop(a);
        assert!(PipelineLock::try_acquire(dir.path()).unwrap().is_some());
    }
}
