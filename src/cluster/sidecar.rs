//! What the engine acknowledged of one run file: a small JSON file per run,
//! `<state_dir>/cluster/forwarded/<run_id>.json`, replaced whole (temporary file, then rename),
//! so a reader sees the old record or the new, never a part.
//!
//! The sidecar is a hint, not the truth: a forwarder killed between the engine's ack and the
//! rename leaves it behind what the stream holds, and two forwarders racing on one file may
//! each write theirs. So every forwarder, before it resumes a file, asks the stream for the
//! run subject's last message as well (`super::forward`); the sidecar spares it reading the
//! file from its start, and says which files are done without asking anyone.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::event::RunId;
use crate::tail::Checkpoint;

/// A sidecar larger than this is not one pipewatch wrote: it is not read.
const MAX_BYTES: u64 = 64 * 1024;

/// The folder of the sidecars, under the state folder.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("cluster").join("forwarded")
}

/// The sidecar of one run.
pub fn path(dir: &Path, run_id: &RunId) -> PathBuf {
    dir.join(format!("{run_id}.json"))
}

/// One sidecar's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sidecar {
    /// The run's pipeline, which names its subject: taken once from the file's first event,
    /// kept here so that every later publish of the run goes to the same subject.
    pub pipeline: String,
    /// The file's identity, and how far into it every line was acknowledged (or was found in
    /// the stream already).
    pub dev: u64,
    pub ino: u64,
    pub offset: u64,
    pub lines: u64,
    /// The run's final event is among the lines acknowledged.
    pub finished: bool,
    /// The process that wrote it: a background drain leaves alone a file that another
    /// process forwarded a moment ago (`super::forward`).
    pub pid: u32,
}

impl Sidecar {
    pub fn new(pipeline: &str, cp: &Checkpoint) -> Sidecar {
        Sidecar {
            pipeline: pipeline.to_string(),
            dev: cp.dev,
            ino: cp.ino,
            offset: cp.offset,
            lines: cp.lines,
            finished: cp.finished,
            pid: std::process::id(),
        }
    }

    /// The checkpoint recorded, for `run_id`'s file.
    pub fn checkpoint(&self, run_id: &RunId) -> Checkpoint {
        Checkpoint {
            run_id: run_id.clone(),
            dev: self.dev,
            ino: self.ino,
            offset: self.offset,
            lines: self.lines,
            finished: self.finished,
        }
    }
}

/// The sidecar at `path`: `Ok(None)` when there is none. One that cannot be parsed is an
/// error naming the file (the caller treats the run as never forwarded).
pub fn read(path: &Path) -> io::Result<Option<Sidecar>> {
    let bytes = match crate::fsx::read(path, MAX_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a forwarding record: {e}", path.display()),
        )
    })
}

/// Replaces the sidecar at `path` (creating its folder if needed).
pub fn write(path: &Path, sidecar: &Sidecar) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let bytes = serde_json::to_vec(sidecar).map_err(io::Error::other)?;
    crate::fsx::replace(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sidecar_round_trips_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let id = RunId::parse("20261203T101500Z-3f9a").unwrap();
        let at = path(&super::dir(dir.path()), &id);
        assert_eq!(read(&at).unwrap(), None);
        let cp = Checkpoint {
            run_id: id.clone(),
            dev: 1,
            ino: 2,
            offset: 300,
            lines: 4,
            finished: true,
        };
        let s = Sidecar::new("sales.daily", &cp);
        write(&at, &s).unwrap();
        let back = read(&at).unwrap().unwrap();
        assert_eq!(back, s);
        assert_eq!(back.checkpoint(&id), cp);
        std::fs::write(&at, b"{not json").unwrap();
        let err = read(&at).unwrap_err().to_string();
        assert!(err.contains(&at.display().to_string()), "{err}");
    }
}
