//! The run journal: the events folder and the run files in it,
//! `<events_dir>/pipeline_<run_id>.jsonl`.
//!
//! Two parts:
//! - [`Journal`] (this file) appends events to a new run file. Run files are written by two
//!   callers only: `pipewatch run` (the runner: every event of a run it executes) and the
//!   dashboard's scheduler ([`missed`]: the one-event file recording a `missed` occurrence).
//!   Nothing else writes to the folder; retention (`crate::retention`) only removes whole
//!   files.
//! - [`files`] owns the folder's names and its listing: which file is which run, and a file's
//!   identity. Every reader of the folder (the tailer, the index rebuild, the terminal
//!   commands, retention) lists it through there.
//!
//! Invariants, which the tailer relies on:
//! - the file is created new (never reused) and only ever appended to;
//! - every event is one complete line, handed to the OS in a single `write` with its `\n`
//!   (lines that arrive together — a burst of output read in one chunk — go in the same
//!   write, still whole), so a reader never sees half an event followed by another;
//! - `seq` is the line's index in the file, from 0, assigned under the same lock as the write,
//!   so file order and `seq` order agree even with many stages writing at once;
//! - if a write fails (a full disk), the file is cut back to its last complete line, so it
//!   stays parseable, and every later write reports the first error.

pub mod files;
pub mod missed;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::event::{Data, Level, Record, RunId, Stream, kind, now_timestamp};
use crate::sync::MutexExt;

/// The most bytes of output (`log` events) one run's journal takes. A stage that prints more
/// keeps running, its pipes drained, but its further lines are not journaled: one `log`
/// event (`level: warn`, `data.reason: "output_limit"`) says so where the limit was reached.
/// (A review turned 2 MB of empty lines into a 415 MB run file: each line is an event of
/// ~200 bytes.)
pub const MAX_OUTPUT_BYTES: u64 = 256 * 1024 * 1024;

/// Told of every append this process makes to a run file, with the file's path, right after
/// the write: the `[cluster]` forwarder wakes on it (`cluster::forward`), so events reach the
/// engine within milliseconds. It is called under the journal's lock and must be quick.
type AppendHook = Box<dyn Fn(&Path) + Send + Sync>;

static ON_APPEND: OnceLock<AppendHook> = OnceLock::new();

/// Sets the process's append hook; `false` if one is set already (there is one per process).
pub fn on_append(hook: AppendHook) -> bool {
    ON_APPEND.set(hook).is_ok()
}

/// A journal that could not be created or written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    #[error("cannot create the events folder or run file {path}: {message}")]
    Create { path: PathBuf, message: String },
    #[error("cannot write run file {path}: {message}")]
    Write { path: PathBuf, message: String },
}

/// One line of a stage's output, ready to be journaled.
#[derive(Debug)]
pub struct OutputLine<'a> {
    pub text: &'a [u8],
    /// The line was longer than the cap and was cut.
    pub truncated: bool,
}

/// An open run journal, shared by every stage of the run.
pub struct Journal {
    path: PathBuf,
    run_id: RunId,
    pipeline: String,
    source: String,
    /// Serializes appends so that `seq` order is file order.
    inner: Mutex<Inner>,
}

struct Inner {
    file: File,
    next_seq: u64,
    /// Bytes known to end with a complete line; where a failed write is cut back to.
    len: u64,
    buf: Vec<u8>,
    failed: Option<JournalError>,
    /// Bytes of output events written, against `output_cap`.
    output_bytes: u64,
    output_cap: u64,
    /// Output lines not journaled since the cap was reached.
    output_dropped: u64,
}

impl Journal {
    /// Creates the run's file (and `events_dir` if needed). Fails if the file already exists.
    pub fn create(
        events_dir: &Path,
        run_id: &RunId,
        pipeline: &str,
        source: &str,
    ) -> Result<Journal, JournalError> {
        let path = files::path(events_dir, run_id);
        let create_err = |e: io::Error| JournalError::Create {
            path: path.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(events_dir).map_err(create_err)?;
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(create_err)?;
        Ok(Journal {
            path: path.clone(),
            run_id: run_id.clone(),
            pipeline: pipeline.to_string(),
            source: source.to_string(),
            inner: Mutex::new(Inner {
                file,
                next_seq: 0,
                len: 0,
                buf: Vec::with_capacity(64 * 1024),
                failed: None,
                output_bytes: 0,
                output_cap: MAX_OUTPUT_BYTES,
                output_dropped: 0,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    /// The first write error, if any write has failed.
    pub fn failure(&self) -> Option<JournalError> {
        self.lock().failed.clone()
    }

    /// Appends one event.
    pub fn emit(
        &self,
        stage: &str,
        event: &str,
        level: Level,
        msg: &str,
        data: &Data,
    ) -> Result<(), JournalError> {
        let timestamp = now_timestamp();
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.buf.clear();
        let record = self.record(seq, stage, event, level, &timestamp, msg, data);
        write_line(&mut inner.buf, &record);
        inner.commit(1, &self.path)
    }

    /// Output lines not journaled because the run reached [`MAX_OUTPUT_BYTES`].
    pub fn output_dropped(&self) -> u64 {
        self.lock().output_dropped
    }

    /// Appends one `log` event per line, all in a single write; past [`MAX_OUTPUT_BYTES`] of
    /// output, a note instead, once, and nothing after it.
    pub fn emit_output(
        &self,
        stage: &str,
        stream: Stream,
        lines: &[OutputLine<'_>],
    ) -> Result<(), JournalError> {
        if lines.is_empty() {
            return Ok(());
        }
        let timestamp = now_timestamp();
        let level = match stream {
            Stream::Stdout => Level::Info,
            Stream::Stderr => Level::Warn,
        };
        let plain = Data {
            stream: Some(stream),
            ..Data::default()
        };
        let cut = Data {
            stream: Some(stream),
            truncated: Some(true),
            ..Data::default()
        };
        let mut inner = self.lock();
        if inner.output_bytes >= inner.output_cap {
            inner.output_dropped += lines.len() as u64;
            return Ok(());
        }
        inner.buf.clear();
        let first = inner.next_seq;
        let room = inner.output_cap - inner.output_bytes;
        let mut count = 0;
        for line in lines {
            let text = String::from_utf8_lossy(line.text);
            let data = if line.truncated { &cut } else { &plain };
            let record = self.record(
                first + count,
                stage,
                kind::LOG,
                level,
                &timestamp,
                &text,
                data,
            );
            let before = inner.buf.len();
            write_line(&mut inner.buf, &record);
            if inner.buf.len() as u64 > room {
                inner.buf.truncate(before);
                break;
            }
            count += 1;
        }
        let written = inner.buf.len() as u64;
        if count < lines.len() as u64 {
            // The limit is reached: the rest of this chunk and all later output are dropped,
            // and the journal says so, once.
            inner.output_dropped += lines.len() as u64 - count;
            let note = format!(
                "output limit reached: this run has journaled {} MiB of output; \
                 later lines of its stages are not kept",
                inner.output_cap >> 20
            );
            let data = Data {
                stream: Some(stream),
                reason: Some("output_limit"),
                ..Data::default()
            };
            let record = self.record(
                first + count,
                stage,
                kind::LOG,
                Level::Warn,
                &timestamp,
                &note,
                &data,
            );
            write_line(&mut inner.buf, &record);
            count += 1;
            inner.output_bytes = inner.output_cap;
        } else {
            inner.output_bytes += written;
        }
        inner.commit(count, &self.path)
    }

    /// An event of this run, as written: the run's own keys filled in.
    #[allow(clippy::too_many_arguments)]
    fn record<'a>(
        &'a self,
        seq: u64,
        stage: &'a str,
        event: &'a str,
        level: Level,
        timestamp: &'a str,
        msg: &'a str,
        data: &'a Data<'a>,
    ) -> Record<'a> {
        Record {
            seq,
            run_id: self.run_id.as_str(),
            pipeline: &self.pipeline,
            stage,
            event,
            level,
            timestamp,
            source: &self.source,
            msg,
            data,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves `Inner` consistent (seq and len only move
        // after a successful write), so a poisoned lock is still usable.
        self.inner.lock_anyway()
    }
}

fn write_line(buf: &mut Vec<u8>, record: &Record<'_>) {
    // Serializing these types cannot fail: every field is a string, number or flat struct.
    if serde_json::to_writer(&mut *buf, record).is_ok() {
        buf.push(b'\n');
    }
}

impl Inner {
    /// Writes `buf` (holding `count` complete lines) in one call.
    fn commit(&mut self, count: u64, path: &Path) -> Result<(), JournalError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.file.write_all(&self.buf) {
            Ok(()) => {
                self.next_seq += count;
                self.len += self.buf.len() as u64;
                if let Some(hook) = ON_APPEND.get() {
                    hook(path);
                }
                Ok(())
            }
            Err(e) => {
                // Cut any partial line back off, so the file ends on a complete line.
                let _ = self.file.set_len(self.len);
                let err = JournalError::Write {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                };
                self.failed = Some(err.clone());
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use std::sync::Arc;

    #[test]
    fn output_past_the_limit_is_dropped_with_one_note() {
        let dir = tempfile::tempdir().unwrap();
        let id = RunId::parse("r1").unwrap();
        let j = Journal::create(dir.path(), &id, "p", "cli").unwrap();
        j.lock().output_cap = 2000;
        let empty: Vec<OutputLine> = (0..10)
            .map(|_| OutputLine {
                text: b"",
                truncated: false,
            })
            .collect();
        for _ in 0..5 {
            j.emit_output("a", Stream::Stdout, &empty).unwrap();
        }
        j.emit("a", kind::SUCCESS, Level::Info, "done", &Data::default())
            .unwrap();
        let text = std::fs::read_to_string(j.path()).unwrap();
        let events: Vec<Event> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let notes: Vec<&Event> = events
            .iter()
            .filter(|e| e.data_str("reason") == Some("output_limit"))
            .collect();
        assert_eq!(notes.len(), 1, "{text}");
        let logs = events.iter().filter(|e| e.event == kind::LOG).count() as u64;
        assert!(logs > 1 && logs < 50, "{logs} log events");
        assert_eq!(j.output_dropped() + logs - 1, 50);
        // Every seq once, in file order, the final event after the note.
        let seqs: Vec<u64> = events.iter().filter_map(|e| e.seq).collect();
        assert_eq!(seqs, (0..events.len() as u64).collect::<Vec<_>>());
        assert_eq!(events.last().map(|e| e.event.as_str()), Some(kind::SUCCESS));
        let output: u64 = text
            .lines()
            .filter(|l| l.contains("\"log\""))
            .map(|l| l.len() as u64 + 1)
            .sum();
        assert!(output <= 2000 + 400, "{output} bytes of output");
    }

    #[test]
    fn seq_follows_file_order_across_threads() {
        let dir = tempfile::tempdir().unwrap();
        let id = RunId::parse("r1").unwrap();
        let j = Arc::new(Journal::create(dir.path(), &id, "p", "cli").unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let j = j.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        if i % 2 == 0 {
                            j.emit("s", kind::START, Level::Info, "x", &Data::default())
                                .unwrap();
                        } else {
                            let text = format!("t{t} line {i} \u{fffd}\"quoted\"");
                            let lines = [
                                OutputLine {
                                    text: text.as_bytes(),
                                    truncated: false,
                                },
                                OutputLine {
                                    text: b"\xff\xfe raw",
                                    truncated: true,
                                },
                            ];
                            j.emit_output("s", Stream::Stdout, &lines).unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = std::fs::read_to_string(j.path()).unwrap();
        let events: Vec<Event> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 4 * (250 + 500));
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.seq, Some(i as u64));
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn create_refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let id = RunId::parse("r1").unwrap();
        let _j = Journal::create(dir.path(), &id, "p", "cli").unwrap();
        assert!(Journal::create(dir.path(), &id, "p", "cli").is_err());
    }
}
