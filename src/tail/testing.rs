//! What the tail tests share: event lines, and files appended to, replaced and read.

use std::fs;
use std::io::Write;
use std::path::Path;

use super::{Checkpoint, ReadLimits, read_file};
use crate::event::RunId;

pub(super) fn rid(s: &str) -> RunId {
    RunId::parse(s).unwrap()
}

/// An event line in the original format: the five required keys, no `seq`.
pub(super) fn good(msg: &str) -> String {
    format!(
        r#"{{"run_id":"r","stage":"s","event":"log","timestamp":"2025-12-08T21:45:00","msg":"{msg}"}}"#
    ) + "\n"
}

pub(super) fn terminal() -> String {
    r#"{"run_id":"r","stage":"pipeline","event":"success","timestamp":"2025-12-08T21:45:00","msg":"done"}"#
        .to_string()
        + "\n"
}

pub(super) fn append(path: &Path, bytes: &[u8]) {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

/// Writes `bytes` as a new file (a new inode) in place of `path`.
pub(super) fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// Reads until the reader has nothing more, as the tailer does.
pub(super) fn read_all(
    path: &Path,
    cp: &mut Option<Checkpoint>,
    hint: &mut u64,
    limits: ReadLimits,
) -> (Vec<(u64, String)>, u64) {
    let mut events = Vec::new();
    let mut malformed = 0;
    loop {
        let r = read_file(path, &rid("r"), cp.as_ref(), *hint, limits).unwrap();
        *hint = r.partial;
        events.extend(r.batch.events.iter().map(|p| (p.seq, p.event.msg.clone())));
        malformed += r.batch.malformed;
        *cp = Some(r.batch.checkpoint);
        if !r.more {
            return (events, malformed);
        }
    }
}

pub(super) fn msgs(events: &[(u64, String)]) -> Vec<(u64, &str)> {
    events.iter().map(|(s, m)| (*s, m.as_str())).collect()
}
