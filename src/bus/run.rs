//! The log of one followed run, and what its followers that fell behind it share: the marks
//! in its file and the spans read again between them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OnceCell, watch};

use super::log::{Fed, Log, Taken};
use crate::event::Published;
use crate::sync::MutexExt;
use crate::tail::Checkpoint;

/// The recent events of one run, for the followers of that run.
pub struct RunLog {
    log: Mutex<Log>,
    pub(super) tx: watch::Sender<()>,
    reread: Mutex<Reread>,
}

/// A tailer read's start is kept as a mark when it is this many lines past the last mark.
const MARK_EVERY: u64 = 256;

/// The most marks a run keeps (the oldest go first): with one per [`MARK_EVERY`] lines, the
/// last four million lines.
const MAX_MARKS: usize = 16_384;

/// The most file bytes of spans read again that a run keeps for its other followers.
const MAX_SPAN_BYTES: u64 = 4 << 20;

/// What the followers of a run that fell behind its log share: the places in its file where
/// the tailer's reads began (*marks*), and the spans between two marks read again lately. A
/// follower behind reads again from mark to mark, and each span is read once: the other
/// followers behind take the same events instead of parsing the file again.
#[derive(Default)]
struct Reread {
    marks: VecDeque<Checkpoint>,
    spans: VecDeque<Span>,
    span_bytes: u64,
}

/// The lines of a run's file between two marks.
#[derive(Clone)]
pub struct Span {
    pub from: Checkpoint,
    pub to: Checkpoint,
    /// Its events, read once by the first follower that needs them, while the others that
    /// need them too wait for that read.
    pub events: Arc<OnceCell<Arc<Vec<Arc<Published>>>>>,
}

impl RunLog {
    pub(super) fn new() -> RunLog {
        RunLog {
            log: Mutex::new(Log::default()),
            tx: watch::Sender::new(()),
            reread: Mutex::new(Reread::default()),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock_anyway()
    }

    /// Up to `max` of the run's events after `seq` `after` (after nothing: all it holds).
    pub fn after(&self, after: Option<u64>, max: usize) -> Taken {
        self.lock().after(Fed::seq, after, max)
    }

    /// The span between two marks that holds the line `line`, shared with the run's other
    /// followers (a run keeps spans up to 4 MiB of its file); `None` if no two marks enclose
    /// it.
    pub fn span(&self, line: u64) -> Option<Span> {
        let mut r = self.reread.lock_anyway();
        if let Some(s) = r
            .spans
            .iter()
            .find(|s| s.from.lines <= line && line < s.to.lines)
        {
            return Some(s.clone());
        }
        let next = r.marks.partition_point(|m| m.lines <= line);
        let (from, to) = (r.marks.get(next.checked_sub(1)?)?, r.marks.get(next)?);
        let span = Span {
            from: from.clone(),
            to: to.clone(),
            events: Arc::default(),
        };
        r.span_bytes += span.to.offset.saturating_sub(span.from.offset);
        r.spans.push_back(span.clone());
        while r.span_bytes > MAX_SPAN_BYTES
            && r.spans.len() > 1
            && let Some(old) = r.spans.pop_front()
        {
            r.span_bytes -= old.to.offset.saturating_sub(old.from.offset);
        }
        Some(span)
    }

    /// Keeps `at`, where a read of the run's file began, as a mark if it is far enough past
    /// the last one.
    pub(super) fn mark(&self, at: &Checkpoint) {
        let mut r = self.reread.lock_anyway();
        if let Some(m) = r.marks.back() {
            if (at.dev, at.ino) != (m.dev, m.ino) || at.lines < m.lines {
                // Another file under the same name: the marks of the old one do not hold.
                *r = Reread::default();
            } else if at.lines < m.lines + MARK_EVERY {
                return;
            }
        }
        r.marks.push_back(at.clone());
        if r.marks.len() > MAX_MARKS {
            r.marks.pop_front();
        }
    }
}

/// A follower's subscription to one run: the run's log, and the channel that says it grew.
pub struct RunSubscription {
    pub log: Arc<RunLog>,
    pub changed: watch::Receiver<()>,
}
