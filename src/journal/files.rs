//! The events folder as a set of run files: the file name of a run
//! (`pipeline_<run_id>.jsonl`), the one listing of the folder, and a file's identity.
//!
//! Every reader of the folder goes through here — the tailer's full scans, the index rebuild,
//! `pipewatch runs`/`tail`/`doctor`, retention — so they agree on what a run file is: a name
//! `pipeline_<run_id>.jsonl` whose run id is valid ([`RunId::parse`]). Anything else in the
//! folder (notes, temporary files, `pipeline_../x.jsonl`) is not a run file and is skipped
//! without a word. An entry with a run file's name that is not a regular file — a FIFO, a
//! symbolic link, a folder — is skipped with a warning naming it ([`fsx::warn_ignored`]):
//! reading a FIFO would wait for ever, and a link could lead anywhere, so no reader is handed
//! one (and the reader refuses them too, [`fsx::open_read`], should an entry change after
//! the listing).
//!
//! # Invariants
//!
//! - A listing is sorted by run id, so callers see runs in the same order whatever the
//!   filesystem returns.
//! - [`list`] reads names and the file types the folder listing carries: it never `stat`s a
//!   file (where the file system does not give types, std `lstat`s), so listing thousands of
//!   finished runs stays cheap for the tailer. [`list_with_metadata`] `stat`s each run file;
//!   a file removed between the listing and its `stat` (retention) is left out.
//! - Both keep regular files only, and neither follows a link.
//! - A folder that cannot be read, or whose listing fails half-way, is an error, never a partial
//!   listing: a rebuild from a partial listing would drop runs from the index.
//! - A file's identity is (device, inode) on Unix; (0, 0) elsewhere, where std does not expose
//!   it on stable Rust. The tailer's checkpoints, the index and the folder watch all use
//!   [`file_identity`], so an identity stored by one is compared with one computed the same way.

use std::fs::{DirEntry, FileType, Metadata};
use std::io;
use std::path::{Path, PathBuf};

use crate::event::RunId;
use crate::fsx;

const PREFIX: &str = "pipeline_";
const SUFFIX: &str = ".jsonl";

/// The file name of a run's journal: `pipeline_<run_id>.jsonl`.
pub fn file_name(id: &RunId) -> String {
    format!("{PREFIX}{id}{SUFFIX}")
}

/// The run id of a file name, if it is a run file's name.
pub fn run_id_of(name: &str) -> Option<RunId> {
    let id = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    RunId::parse(id).ok()
}

/// The path of a run's file in `events_dir`.
pub fn path(events_dir: &Path, id: &RunId) -> PathBuf {
    events_dir.join(file_name(id))
}

/// One run file found in the events folder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RunFile {
    pub id: RunId,
    pub path: PathBuf,
}

/// The run files of `events_dir` that are regular files, by run id, from their names and
/// types (nothing is `stat`ed where the listing gives types). A missing folder is an error
/// (`NotFound`), which callers that accept it map to "no runs".
pub fn list(events_dir: &Path) -> io::Result<Vec<RunFile>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(events_dir)? {
        let entry = entry?;
        let Some(id) = entry.file_name().to_str().and_then(run_id_of) else {
            continue;
        };
        // The type the listing gives, never following a link; an entry gone since the listing
        // (retention) is left out.
        if let Ok(file_type) = entry.file_type()
            && regular(&entry, file_type)
        {
            let path = entry.path();
            out.push(RunFile { id, path });
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The run files of `events_dir` that are regular files, by run id, with their metadata (size,
/// modification time). An entry that vanished or cannot be `stat`ed is left out.
pub fn list_with_metadata(events_dir: &Path) -> io::Result<Vec<(RunFile, Metadata)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(events_dir)? {
        let entry = entry?;
        let Some(id) = entry.file_name().to_str().and_then(run_id_of) else {
            continue;
        };
        // `DirEntry::metadata` does not follow a symbolic link.
        if let Ok(meta) = entry.metadata()
            && regular(&entry, meta.file_type())
        {
            let path = entry.path();
            out.push((RunFile { id, path }, meta));
        }
    }
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Whether an entry with a run file's name is a regular file; if not, it is warned about.
fn regular(entry: &DirEntry, file_type: FileType) -> bool {
    if file_type.is_file() {
        return true;
    }
    let refused = fsx::NotRegular {
        path: entry.path(),
        what: fsx::describe(file_type),
    };
    fsx::warn_ignored(&refused, "run file");
    false
}

/// Whether [`file_identity`] tells files apart here, so that a file kept open can be checked
/// to be still the one at its path.
pub const IDENTITY_KNOWN: bool = cfg!(unix);

/// A file's identity: (device, inode). The only per-OS code about run files.
#[cfg(unix)]
pub fn file_identity(meta: &Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// A file's identity: unknown where std does not expose it on stable Rust.
#[cfg(not(unix))]
pub fn file_identity(_meta: &Metadata) -> (u64, u64) {
    (0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rid(s: &str) -> RunId {
        RunId::parse(s).unwrap()
    }

    #[test]
    fn names_round_trip_and_only_run_files_are_listed() {
        let id = rid("20261129T081500123Z-3f9a2c");
        assert_eq!(file_name(&id), "pipeline_20261129T081500123Z-3f9a2c.jsonl");
        assert_eq!(run_id_of(&file_name(&id)), Some(id));
        for bad in [
            "pipeline_../x.jsonl",
            "pipeline_.jsonl",
            "pipeline_a.json",
            "x_a.jsonl",
            "pipeline_a b.jsonl",
        ] {
            assert_eq!(run_id_of(bad), None, "{bad}");
        }

        let dir = tempfile::tempdir().unwrap();
        for name in [
            "pipeline_b.jsonl",
            "pipeline_a.jsonl",
            "notes.txt",
            "pipeline_c.tmp",
        ] {
            std::fs::write(dir.path().join(name), "x\n").unwrap();
        }
        // A folder with a run file's name is no run file.
        std::fs::create_dir(dir.path().join("pipeline_d.jsonl")).unwrap();

        let names: Vec<_> = list(dir.path())
            .unwrap()
            .into_iter()
            .map(|f| f.id.to_string())
            .collect();
        assert_eq!(names, ["a", "b"]);
        let files = list_with_metadata(dir.path()).unwrap();
        let names: Vec<_> = files.iter().map(|(f, _)| f.id.to_string()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(files[0].0.path, path(dir.path(), &rid("a")));
        assert_eq!(files[0].1.len(), 2);

        let missing = list(&dir.path().join("nope")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert!(list_with_metadata(&dir.path().join("nope")).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn fifos_and_links_named_like_run_files_are_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("secret.jsonl");
        std::fs::write(&target, "x\n").unwrap();
        std::fs::write(dir.path().join("pipeline_a.jsonl"), "x\n").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("pipeline_link.jsonl")).unwrap();
        let fifo = dir.path().join("pipeline_fifo.jsonl");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();

        let names: Vec<_> = list(dir.path())
            .unwrap()
            .into_iter()
            .map(|f| f.id.to_string())
            .collect();
        assert_eq!(names, ["a"]);
        let names: Vec<_> = list_with_metadata(dir.path())
            .unwrap()
            .into_iter()
            .map(|(f, _)| f.id.to_string())
            .collect();
        assert_eq!(names, ["a"]);
    }

    #[cfg(unix)]
    #[test]
    fn identity_tells_a_replaced_file_apart() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pipeline_a.jsonl");
        std::fs::write(&p, "1\n").unwrap();
        let first = file_identity(&std::fs::metadata(&p).unwrap());
        let tmp = dir.path().join("new");
        std::fs::write(&tmp, "1\n").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        assert_ne!(file_identity(&std::fs::metadata(&p).unwrap()), first);
    }
}
