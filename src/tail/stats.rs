//! [`TailStats`]: the tailer's counters, written by its thread and read by health and
//! metrics (`server`). Relaxed atomics: each counter is exact on its own; a snapshot is not a
//! consistent cut across them, and need not be.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::sync::MutexExt;

/// Counters for health and metrics, shared with the server.
#[derive(Debug, Default)]
pub struct TailStats {
    /// Run files in the events folder at the last full scan (plus new ones seen since).
    pub files_watched: AtomicU64,
    /// Events handed on.
    pub events_read: AtomicU64,
    /// Lines skipped as malformed or over the cap.
    pub malformed_lines: AtomicU64,
    /// Full scans of the folder.
    pub scans: AtomicU64,
    /// Times a file was opened and read (unchanged files are not).
    pub file_reads: AtomicU64,
    /// Watcher errors, and failures to start or re-create the watch.
    pub watcher_errors: AtomicU64,
    /// Rescans forced by the watcher (its queue overflowed).
    pub rescans: AtomicU64,
    /// Whether notifications are coming (else the tailer is polling only).
    pub watching: AtomicBool,
    /// The first full scan is done: every run file there at the start has been read to its
    /// end and handed on (`server::catchup` waits for it).
    pub first_scan_done: AtomicBool,
    /// Why the events folder cannot be read right now, if it cannot.
    pub folder_error: std::sync::Mutex<Option<String>>,
}

impl TailStats {
    /// Why the events folder cannot be read right now, if it cannot (for health).
    pub fn folder_error(&self) -> Option<String> {
        self.folder_error.lock_anyway().clone()
    }

    pub(super) fn set_folder_error(&self, e: Option<String>) {
        *self.folder_error.lock_anyway() = e;
    }
}

/// A plain copy of [`TailStats`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TailStatsSnapshot {
    pub files_watched: u64,
    pub events_read: u64,
    pub malformed_lines: u64,
    pub scans: u64,
    pub file_reads: u64,
    pub watcher_errors: u64,
    pub rescans: u64,
    pub watching: bool,
}

impl TailStats {
    pub fn snapshot(&self) -> TailStatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TailStatsSnapshot {
            files_watched: get(&self.files_watched),
            events_read: get(&self.events_read),
            malformed_lines: get(&self.malformed_lines),
            scans: get(&self.scans),
            file_reads: get(&self.file_reads),
            watcher_errors: get(&self.watcher_errors),
            rescans: get(&self.rescans),
            watching: self.watching.load(Ordering::Relaxed),
        }
    }

    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
