//! Which OS-scheduler tasks `pipewatch scheduler install` made for a configuration, kept in
//! `<state_dir>/scheduler-tasks.json`, so that a later `install` removes the task of a
//! pipeline that has left the configuration — a crontab line, a systemd timer or a Windows
//! task that would otherwise go on starting `pipewatch run NAME` for a pipeline that is no
//! more, failing every time.
//!
//! A task is only ever removed through its backend's `uninstall`, which refuses one that runs
//! another configuration: the record says where to look, the task itself says whose it is.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{OsOptions, SchedulerError, backend};
use crate::config::{self, Config, Workspace};
use crate::fsx;

/// One task installed for the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub backend: config::Backend,
    /// The pipeline of a workspace it runs; `None` for the task of a single-pipeline file.
    pub pipeline: Option<String>,
    /// systemd: a system unit.
    #[serde(default)]
    pub system: bool,
}

/// The record is a few hundred bytes; a larger file is not one.
const MAX_BYTES: u64 = 1024 * 1024;

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("scheduler-tasks.json")
}

/// The tasks recorded; none when there is no record. An unreadable record is an error naming
/// the file (deleting it forgets which tasks to clean up, nothing else).
pub fn load(state_dir: &Path) -> Result<Vec<Entry>, SchedulerError> {
    let path = path(state_dir);
    let io = |source| SchedulerError::Io {
        path: path.clone(),
        source,
    };
    match fsx::read(&path, MAX_BYTES) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            io(std::io::Error::other(format!(
                "unreadable ({e}); delete it"
            )))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(e)),
    }
}

/// Writes the record atomically.
pub fn save(state_dir: &Path, entries: &[Entry]) -> Result<(), SchedulerError> {
    let path = path(state_dir);
    let io = |source| SchedulerError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(io)?;
    let body = serde_json::to_vec_pretty(entries).unwrap_or_default();
    fsx::replace_durably(&path, &body).map_err(io)
}

/// The entry of `config`'s task with `backend`.
pub fn entry(config: &Config, backend: config::Backend, system: bool) -> Entry {
    Entry {
        backend,
        pipeline: config.run_name().map(str::to_string),
        system,
    }
}

/// Whether `entry`'s task belongs to a pipeline `workspace` no longer has.
pub fn is_left_over(entry: &Entry, workspace: &Workspace) -> bool {
    match &entry.pipeline {
        Some(name) => !workspace.is_workspace || workspace.get(name).is_none(),
        None => workspace.is_workspace,
    }
}

/// What removing a left-over task came to.
pub enum Removed {
    /// It is gone (or was already).
    Gone,
    /// It runs another configuration now: not ours to remove, and no longer recorded.
    NotOurs(SchedulerError),
    /// The backend failed: still recorded, tried again at the next install.
    Failed(SchedulerError),
}

/// Removes `entry`'s task through its backend, for the configuration of `workspace`.
pub fn remove(entry: &Entry, workspace: &Workspace, opts: OsOptions) -> Removed {
    // The task's name and unit come from the pipeline's name and the shared [scheduler]:
    // any of the configuration's pipelines, renamed, names the left-over task.
    let mut config = workspace.shared().clone();
    match &entry.pipeline {
        Some(name) => {
            config.pipeline.name = name.clone();
            config.in_workspace = true;
        }
        None => config.in_workspace = false,
    }
    let opts = OsOptions {
        system: entry.system,
        ..opts
    };
    match backend(entry.backend, &config, opts).uninstall() {
        Ok(_) => Removed::Gone,
        Err(e @ SchedulerError::Taken(_)) => Removed::NotOurs(e),
        Err(e) => Removed::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(dir: &Path, names: &[&str]) -> Workspace {
        let pipelines = dir.join("pipelines");
        std::fs::create_dir_all(&pipelines).unwrap();
        for n in names {
            std::fs::write(
                pipelines.join(format!("{n}.toml")),
                format!("[pipeline]\nname = \"{n}\"\n[[stages]]\nname = \"a\"\nrun = \"true\"\n"),
            )
            .unwrap();
        }
        let file = dir.join("pipewatch.toml");
        Workspace::parse("[workspace]\npipelines = [\"pipelines/*.toml\"]\n", &file).unwrap()
    }

    fn of(pipeline: Option<&str>) -> Entry {
        Entry {
            backend: config::Backend::Cron,
            pipeline: pipeline.map(str::to_string),
            system: false,
        }
    }

    #[test]
    fn a_task_is_left_over_when_its_pipeline_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let ws = workspace(dir.path(), &["a", "b"]);
        assert!(!is_left_over(&of(Some("a")), &ws));
        assert!(is_left_over(&of(Some("gone")), &ws));
        // The single pipeline's task, once the file became a workspace.
        assert!(is_left_over(&of(None), &ws));
        let single: Workspace = ws.pipelines[0].clone().into();
        let mut single = single;
        single.is_workspace = false;
        single.pipelines[0].in_workspace = false;
        assert!(!is_left_over(&of(None), &single));
        assert!(is_left_over(&of(Some("a")), &single));
    }

    #[test]
    fn the_record_round_trips_and_a_damaged_one_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
        let entries = vec![of(Some("a")), of(None)];
        save(dir.path(), &entries).unwrap();
        assert_eq!(load(dir.path()).unwrap(), entries);
        std::fs::write(path(dir.path()), "{").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("scheduler-tasks.json"), "{e}");
    }
}
