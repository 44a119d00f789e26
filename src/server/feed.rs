//! The all-runs stream's cursors on the server's side: given at ingest ([`Feeder`]), read
//! back for a stream that resumes or falls behind ([`SegmentReader`]). The table that keeps
//! them is `index::feed`.

use std::path::Path;
use std::sync::Arc;

use crate::bus::Fed;
use crate::index::Segment;
use crate::tail::{Batch, Checkpoint, Replay, TailError};

/// Gives each ingested event the next cursor (or the one its batch carries, [`Batch::cursor`]),
/// and keeps the segments that say where they went.
///
/// Consecutive batches of one file extend one segment: the batch must start where the last one
/// ended (its `from` is the last checkpoint) and no other run's events came in between. A
/// segment is written on every commit while it grows (replacing itself); the segments not yet
/// committed are kept until a commit succeeds.
pub struct Feeder {
    next: u64,
    /// The segment being extended, and the checkpoint its last batch ended at.
    open: Option<(Segment, Checkpoint)>,
    /// Segments closed since the last successful commit.
    closed: Vec<Segment>,
}

/// At most this many uncommitted segments are kept while the index cannot be written; the
/// oldest are forgotten beyond (a stream resuming before them then skips their events).
const MAX_PENDING: usize = 100_000;

impl Feeder {
    /// A feeder whose first cursor is `next`.
    pub fn new(next: u64) -> Feeder {
        Feeder {
            next,
            open: None,
            closed: Vec::new(),
        }
    }

    /// The batch's events with their cursors.
    pub fn feed(&mut self, batch: &Batch) -> Vec<Arc<Fed>> {
        let continues = self
            .open
            .as_ref()
            .is_some_and(|(_, end)| *end == batch.from);
        let (Some(first), Some(last)) = (batch.events.first(), batch.events.last()) else {
            // Lines that are not events move the file's checkpoint, not the feed.
            if continues && let Some((_, end)) = &mut self.open {
                *end = batch.checkpoint.clone();
            }
            return Vec::new();
        };
        // A batch whose source fixes the cursors (`[cluster]`: stream sequences, which only
        // grow but may skip) keeps them; the feeder goes on past them.
        let cursor = batch.cursor.unwrap_or(self.next);
        let mut fed: Vec<Arc<Fed>> = Vec::with_capacity(batch.events.len());
        for (i, e) in batch.events.iter().enumerate() {
            let next = Fed::new(cursor + i as u64, e, fed.last().map(Arc::as_ref));
            fed.push(Arc::new(next));
        }
        let last_cursor = cursor + fed.len() as u64 - 1;
        self.next = self.next.max(last_cursor + 1);
        match &mut self.open {
            Some((seg, end)) if continues && seg.last + 1 == cursor => {
                seg.last = last_cursor;
                seg.seq_last = last.seq;
                *end = batch.checkpoint.clone();
            }
            _ => {
                let segment = Segment {
                    first: cursor,
                    last: last_cursor,
                    seq_first: first.seq,
                    seq_last: last.seq,
                    from: batch.from.clone(),
                };
                if let Some((done, _)) = self.open.replace((segment, batch.checkpoint.clone())) {
                    self.closed.push(done);
                    if self.closed.len() > MAX_PENDING {
                        self.closed.drain(..self.closed.len() - MAX_PENDING);
                    }
                }
            }
        }
        fed
    }

    /// The segments a commit must write: those closed since the last one, and the open one.
    pub fn to_write(&self) -> Vec<Segment> {
        let mut out = self.closed.clone();
        out.extend(self.open.as_ref().map(|(s, _)| s.clone()));
        out
    }

    /// A commit with [`Feeder::to_write`] succeeded.
    pub fn committed(&mut self) {
        self.closed.clear();
    }
}

/// Reads the events of a segment again from its run file, a bounded read at a time: the
/// events after cursor `after`, with their cursors.
pub struct SegmentReader {
    seg: Segment,
    replay: Replay,
    /// The cursor of the next event of the segment in the file.
    cursor: u64,
    after: u64,
}

impl SegmentReader {
    pub fn new(events_dir: &Path, seg: Segment, after: u64) -> SegmentReader {
        let id = seg.from.run_id.clone();
        let replay = Replay::at(events_dir.join(id.file_name()), id, seg.from.clone());
        SegmentReader {
            cursor: seg.first,
            seg,
            replay,
            after,
        }
    }

    /// The next events, `Ok(None)` at the segment's end — also when the file holds fewer
    /// events than the segment (what is not there cannot be sent) — and an error when the
    /// file cannot be read (gone with retention).
    pub fn next_batch(&mut self) -> Result<Option<Vec<Arc<Fed>>>, TailError> {
        while self.cursor <= self.seg.last {
            let Some(batch) = self.replay.next_batch()? else {
                return Ok(None);
            };
            let mut out = Vec::new();
            for e in batch {
                if e.seq < self.seg.seq_first {
                    continue;
                }
                if e.seq > self.seg.seq_last || self.cursor > self.seg.last {
                    self.cursor = self.seg.last + 1;
                    break;
                }
                if self.cursor > self.after {
                    let next = Fed::new(self.cursor, &e, out.last().map(Arc::as_ref));
                    out.push(Arc::new(next));
                }
                self.cursor += 1;
            }
            if !out.is_empty() {
                return Ok(Some(out));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Published, RunId};
    use crate::tail::{ReadLimits, read_file};
    use std::io::Write;

    /// (cursor, seq) of each event.
    fn seqs(events: &[Arc<Fed>]) -> Vec<(u64, u64)> {
        events.iter().map(|e| (e.cursor, e.seq)).collect()
    }

    fn line(i: u64) -> String {
        format!(
            "{{\"run_id\":\"r\",\"stage\":\"s\",\"event\":\"log\",\"timestamp\":\"2026-11-29T08:15:00.000Z\",\"msg\":\"{i}\"}}\n"
        )
    }

    /// Appends lines, reads them as the tailer would, and feeds the batch.
    fn append_and_feed(
        dir: &Path,
        feeder: &mut Feeder,
        at: &mut Option<Checkpoint>,
        text: &str,
    ) -> Vec<Arc<Fed>> {
        let id = RunId::parse("r").unwrap();
        let path = dir.join(id.file_name());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
        let read = read_file(&path, &id, at.as_ref(), 0, ReadLimits::default()).unwrap();
        *at = Some(read.batch.checkpoint.clone());
        feeder.feed(&read.batch)
    }

    #[test]
    fn batches_of_one_file_grow_one_segment_that_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let mut feeder = Feeder::new(100);
        let mut at = None;
        let mut sent = Vec::new();
        sent.extend(append_and_feed(
            dir.path(),
            &mut feeder,
            &mut at,
            &(0..3).map(line).collect::<String>(),
        ));
        // A bad line in between: no cursor, and the segment goes on.
        sent.extend(append_and_feed(
            dir.path(),
            &mut feeder,
            &mut at,
            "not json\n",
        ));
        sent.extend(append_and_feed(
            dir.path(),
            &mut feeder,
            &mut at,
            &(4..6).map(line).collect::<String>(),
        ));
        let segs = feeder.to_write();
        assert_eq!(segs.len(), 1, "{segs:?}");
        assert_eq!(
            (
                segs[0].first,
                segs[0].last,
                segs[0].seq_first,
                segs[0].seq_last
            ),
            (100, 104, 0, 5)
        );
        assert_eq!(
            seqs(&sent),
            vec![(100, 0), (101, 1), (102, 2), (103, 4), (104, 5)]
        );
        for after in [0, 100, 102, 104] {
            let mut got = Vec::new();
            let mut reader = SegmentReader::new(dir.path(), segs[0].clone(), after);
            while let Some(b) = reader.next_batch().unwrap() {
                got.extend(b);
            }
            let want: Vec<_> = seqs(&sent)
                .into_iter()
                .filter(|(c, _)| *c > after)
                .collect();
            assert_eq!(seqs(&got), want, "after {after}");
            for (g, s) in got.iter().zip(sent.iter().filter(|e| e.cursor > after)) {
                assert_eq!(g.frame, s.frame);
            }
        }
        feeder.committed();
        assert_eq!(
            feeder.to_write().len(),
            1,
            "the open segment is written until it closes"
        );
    }

    #[test]
    fn another_runs_batch_closes_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut feeder = Feeder::new(1);
        let mut at = None;
        append_and_feed(dir.path(), &mut feeder, &mut at, &line(0));
        // A batch of another file in between.
        let other = Batch {
            from: Checkpoint::start(RunId::parse("o").unwrap(), 1, 1),
            checkpoint: Checkpoint::start(RunId::parse("o").unwrap(), 1, 1),
            events: vec![Arc::new(Published::new(
                RunId::parse("o").unwrap(),
                0,
                serde_json::from_str(line(0).trim()).unwrap(),
            ))],
            malformed: 0,
            cursor: None,
            followed: false,
        };
        assert_eq!(feeder.feed(&other)[0].cursor, 2);
        append_and_feed(dir.path(), &mut feeder, &mut at, &line(1));
        let segs = feeder.to_write();
        let spans: Vec<_> = segs
            .iter()
            .map(|s| (s.first, s.last, s.from.run_id.to_string()))
            .collect();
        assert_eq!(
            spans,
            vec![(1, 1, "r".into()), (2, 2, "o".into()), (3, 3, "r".into())]
        );
        feeder.committed();
        assert_eq!(feeder.to_write().len(), 1);
    }
}
