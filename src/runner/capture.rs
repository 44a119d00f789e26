//! Capturing a stage's stdout and stderr into the journal, line by line, as they are printed.
//!
//! Each stream gets its own [`pump`]: a reader task drains the pipe into a queue bounded by
//! bytes, and a writer on the blocking pool splits the chunks into lines ([`LineSplitter`])
//! and journals all the lines of a chunk in one write. Each stream on its own task means
//! neither pipe can fill up and block the stage; the bound means a stage that outruns the
//! journal by more than [`READ_AHEAD_BYTES`] waits on its pipe instead of growing memory.
//!
//! Reading can be stopped ([`StopReading`]: a pipe still held open after the stage has ended);
//! what was read by then is journaled all the same, so everything journaled for an attempt is
//! in the journal before the caller writes the attempt's end.
//!
//! Invariants: lines of one stream are journaled in the order printed; a line is at most
//! [`MAX_LINE_BYTES`] (cut on a UTF-8 boundary and marked truncated); an unterminated last
//! line is still a line. Called by [`super::attempt`] for every attempt it starts. This is
//! the runner's hot path (see `docs/benchmarks.md`): keep allocations per chunk, not per line.

use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::sync::OwnedSemaphorePermit;

use super::{Ctx, MAX_LINE_BYTES};
use crate::event::Stream;
use crate::journal::OutputLine;

/// Output read but not yet journaled, per stream, in bytes. Reading runs ahead of journaling
/// by up to this much, so a stage that prints in bursts is not held back by the journal;
/// beyond it, the stage waits on its pipe.
const READ_AHEAD_BYTES: usize = 16 * 1024 * 1024;
/// Size of each read from a pipe.
const CHUNK: usize = 64 * 1024;

/// Tells the [`pump`]s of an attempt to stop reading their pipes (and so end once what they
/// read is journaled).
pub(super) struct StopReading(tokio::sync::watch::Sender<bool>);

impl StopReading {
    pub(super) fn new() -> StopReading {
        StopReading(tokio::sync::watch::channel(false).0)
    }

    pub(super) fn stop(&self) {
        self.0.send_replace(true);
    }

    /// What a [`pump`] watches.
    pub(super) fn subscribe(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.subscribe()
    }
}

/// Reads one output stream to its end, or until told to stop reading, and journals each line
/// as soon as it is complete; returns once every line read is journaled.
///
/// Two tasks: a reader that drains the pipe into a queue bounded by bytes, and a writer that
/// splits the chunks into lines and journals everything of a chunk in one write. Each line is
/// journaled as soon as the writer reaches it; the queue only absorbs bursts.
pub(super) async fn pump<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    mut reader: R,
    ctx: Arc<Ctx>,
    stage: String,
    stream: Stream,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let budget = Arc::new(tokio::sync::Semaphore::new(READ_AHEAD_BYTES));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Vec<u8>, OwnedSemaphorePermit)>();
    let read_budget = budget.clone();
    let read = tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        let read_all = async move {
            loop {
                let n = match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                // n <= CHUNK < READ_AHEAD_BYTES, so the permits always exist; the semaphore is
                // never closed, so acquiring only fails if the run is being torn down.
                let Ok(permit) = read_budget.clone().acquire_many_owned(n as u32).await else {
                    return;
                };
                if tx.send((buf[..n].to_vec(), permit)).is_err() {
                    return;
                }
            }
        };
        // Stopping (or the attempt's end, which drops the sender) drops the pipe and the
        // queue's sender: the writer ends with what was read.
        tokio::select! {
            () = read_all => {}
            _ = stopped.wait_for(|stop| *stop) => {}
        }
    });
    // The writer is CPU work (splitting, JSON) plus blocking file writes: it runs on the
    // blocking pool so that it can never starve the reader, or the stage's exit, of a worker.
    let write = tokio::task::spawn_blocking(move || {
        let mut lines = LineSplitter::new(MAX_LINE_BYTES);
        loop {
            let chunk = rx.blocking_recv();
            match &chunk {
                Some((c, _)) => lines.feed(c),
                None => lines.finish(),
            }
            // A failed write is recorded in the journal and stops the run; keep draining so
            // the stage is never blocked on a full pipe meanwhile.
            let _ = ctx.journal.emit_output(&stage, stream, &lines.lines());
            lines.clear();
            // Dropping the chunk returns its bytes to the reader's budget.
            if chunk.is_none() {
                break;
            }
        }
    });
    let _ = write.await;
    let _ = read.await;
}

/// Splits a byte stream into lines: `\n` ends a line (a trailing `\r` is dropped); a line
/// longer than the cap is cut at the cap (on a UTF-8 boundary) and the rest, up to its `\n`,
/// discarded; an unterminated last line is kept when the stream ends.
pub struct LineSplitter {
    cap: usize,
    /// Complete lines found since the last `clear`, back to back.
    bytes: Vec<u8>,
    /// (start, end, truncated) of each line in `bytes`.
    spans: Vec<(usize, usize, bool)>,
    /// The current, unterminated line.
    partial: Vec<u8>,
    /// The current line was already cut; skip to its end.
    discarding: bool,
}

impl LineSplitter {
    pub fn new(cap: usize) -> LineSplitter {
        LineSplitter {
            cap: cap.max(4),
            bytes: Vec::new(),
            spans: Vec::new(),
            partial: Vec::new(),
            discarding: false,
        }
    }

    pub fn feed(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            match memchr::memchr(b'\n', chunk) {
                Some(nl) => {
                    let (head, rest) = chunk.split_at(nl);
                    if self.discarding {
                        self.discarding = false;
                        self.partial.clear();
                    } else {
                        self.partial.extend_from_slice(head);
                        self.complete();
                    }
                    chunk = &rest[1..];
                }
                None => {
                    if !self.discarding {
                        self.partial.extend_from_slice(chunk);
                        if self.partial.len() > self.cap {
                            self.cut();
                        }
                    }
                    chunk = &[];
                }
            }
        }
    }

    /// The stream ended: an unterminated last line is still a line.
    pub fn finish(&mut self) {
        if !self.discarding && !self.partial.is_empty() {
            self.complete();
        }
        self.discarding = false;
        self.partial.clear();
    }

    fn complete(&mut self) {
        if self.partial.last() == Some(&b'\r') {
            self.partial.pop();
        }
        if self.partial.len() > self.cap {
            self.cut();
            self.discarding = false;
            return;
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&self.partial);
        self.spans.push((start, self.bytes.len(), false));
        self.partial.clear();
    }

    /// Emits the first `cap` bytes of the current line (backing off to a character boundary)
    /// as a truncated line and discards the rest of it.
    fn cut(&mut self) {
        let mut end = self.cap;
        while end > 0 && end < self.partial.len() && (self.partial[end] & 0xC0) == 0x80 {
            end -= 1;
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&self.partial[..end]);
        self.spans.push((start, self.bytes.len(), true));
        self.partial.clear();
        self.discarding = true;
    }

    /// The complete lines found so far.
    pub fn lines(&self) -> Vec<OutputLine<'_>> {
        self.spans
            .iter()
            .map(|&(s, e, truncated)| OutputLine {
                text: &self.bytes[s..e],
                truncated,
            })
            .collect()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], cap: usize) -> Vec<(String, bool)> {
        let mut s = LineSplitter::new(cap);
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c);
            out.extend(
                s.lines()
                    .iter()
                    .map(|l| (String::from_utf8_lossy(l.text).into_owned(), l.truncated)),
            );
            s.clear();
        }
        s.finish();
        out.extend(
            s.lines()
                .iter()
                .map(|l| (String::from_utf8_lossy(l.text).into_owned(), l.truncated)),
        );
        out
    }

    fn plain(v: &[&str]) -> Vec<(String, bool)> {
        v.iter().map(|s| (s.to_string(), false)).collect()
    }

    #[test]
    fn lines_across_chunks() {
        assert_eq!(
            split(&[b"a\nb", b"c\r\n", b"\n", b"tail"], 100),
            plain(&["a", "bc", "", "tail"])
        );
        assert_eq!(split(&[b"x\n"], 100), plain(&["x"]));
    }

    #[test]
    fn long_lines_are_cut_once() {
        let out = split(&[b"0123456789", b"abc\nok\n"], 8);
        assert_eq!(
            out,
            vec![("01234567".to_string(), true), ("ok".to_string(), false)]
        );
        let out = split(&[b"0123456789abc\n"], 8);
        assert_eq!(out, vec![("01234567".to_string(), true)]);
    }

    #[test]
    fn cut_respects_utf8() {
        let out = split(&["ééééé\n".as_bytes()], 5);
        assert_eq!(out, vec![("éé".to_string(), true)]);
    }

    proptest::proptest! {
        #[test]
        fn any_chunking_gives_the_same_lines(text in "[a-c\n]{0,200}", cuts in proptest::collection::vec(0usize..200, 0..10)) {
            let bytes = text.as_bytes();
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            points.sort();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points { chunks.push(&bytes[last..p]); last = p; }
            chunks.push(&bytes[last..]);
            let expected: Vec<&str> = {
                let mut v: Vec<&str> = text.split('\n').collect();
                if v.last() == Some(&"") { v.pop(); }
                v
            };
            proptest::prop_assert_eq!(split(&chunks, 1000), plain(&expected));
        }
    }
}
