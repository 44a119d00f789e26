//! The all-runs stream's cursor (`/ws/events?since=CURSOR`, `docs/api.md`): every event the
//! dashboard publishes gets the next number of one sequence, its *cursor*, and the `feed`
//! table remembers which events of which file each stretch of cursors went to.
//!
//! A [`Segment`] is a stretch of consecutive cursors given to consecutive events of one run
//! file: cursors `first..=last` are the events with `seq` in `seq_first..=seq_last`, in order,
//! and reading the file from the checkpoint `from` finds them (the same reader gives the same
//! events). So a stream resumes after any cursor by reading only the files it missed, from
//! where its events begin, with no gap and no duplicate — one row per stretch, not per event:
//! a run written alone is one row however long it is.
//!
//! # Invariants
//!
//! - Segments are committed in the transaction that applies their batches, before their
//!   events are published: a cursor a client has seen is in the table (unless the index
//!   failed meanwhile: then they are written when it works again, `server::ingest`).
//! - Cursors only grow, across restarts: the next one is past the table's last; an empty table
//!   (a new or rebuilt index) starts at [`epoch_start`], past any cursor an earlier index gave.
//! - Runs removed by retention take their segments with them: their events cannot be read
//!   again, and a resume skips them.

use rusqlite::{Transaction, params};

use super::{Index, IndexError, db, parse_id};
use crate::tail::Checkpoint;

/// A stretch of cursors given to consecutive events of one run file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The cursors of its first and last events.
    pub first: u64,
    pub last: u64,
    /// The `seq` of its first and last events (lines in between that are not events have
    /// no cursor).
    pub seq_first: u64,
    pub seq_last: u64,
    /// Where reading the run's file finds its first event (its run id is the file's).
    pub from: Checkpoint,
}

/// The first cursor of a feed that has none yet: microseconds since 1970 (about 1.8e15 in
/// 2026, within the 2^53 a JavaScript number holds exactly). Unless more than a million events
/// a second were published on average, every cursor an earlier index of this folder gave is
/// below it, so a client resuming with one gets everything since instead of a silent gap.
pub fn epoch_start() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    now.max(1)
}

impl Index {
    /// The cursor to give next: past the last recorded, or [`epoch_start`] for an empty feed.
    pub fn next_cursor(&self) -> Result<u64, IndexError> {
        let p = self.path.as_path();
        let last: Option<i64> = self
            .conn
            .query_row("SELECT MAX(last) FROM feed", [], |r| r.get(0))
            .map_err(db(p, "read the feed's last cursor"))?;
        Ok(match last {
            Some(l) => (l as u64).saturating_add(1),
            None => epoch_start(),
        })
    }

    /// The last cursor recorded, `None` for an empty feed. With `[cluster]` cursors are
    /// JetStream stream sequences, so this is where the dashboard resumes reading the stream.
    pub fn last_cursor(&self) -> Result<Option<u64>, IndexError> {
        let p = self.path.as_path();
        let last: Option<i64> = self
            .conn
            .query_row("SELECT MAX(last) FROM feed", [], |r| r.get(0))
            .map_err(db(p, "read the feed's last cursor"))?;
        Ok(last.map(|l| l as u64))
    }

    /// Records segments (a segment already recorded with the same `first` is replaced: it
    /// grew).
    pub fn record_feed(&mut self, segments: &[Segment]) -> Result<(), IndexError> {
        let p = self.path.as_path();
        let tx = self
            .conn
            .transaction()
            .map_err(db(p, "begin a transaction"))?;
        write_segments(&tx, p, segments)?;
        tx.commit().map_err(db(p, "record the feed"))
    }

    /// The segments holding cursors after `after`, in cursor order, at most `limit`.
    pub fn feed_after(&self, after: u64, limit: usize) -> Result<Vec<Segment>, IndexError> {
        let p = self.path.as_path();
        let what = "read the feed";
        // The segment holding `after + 1` starts at or before it; the rest start after it.
        // Both are ranges of the primary key.
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT first, last, run_id, seq_first, seq_last, dev, ino, offset, lines
                 FROM feed
                 WHERE first >= COALESCE((SELECT MAX(first) FROM feed WHERE first <= ?1), 0)
                   AND last > ?1
                 ORDER BY first LIMIT ?2",
            )
            .map_err(db(p, what))?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![after, limit as i64], |r| {
                Ok((
                    [r.get::<_, i64>(0)?, r.get::<_, i64>(1)?],
                    r.get::<_, String>(2)?,
                    [
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, i64>(7)?,
                        r.get::<_, i64>(8)?,
                    ],
                ))
            })
            .map_err(db(p, what))?;
        let mut out = Vec::new();
        for row in rows {
            let ([first, last], id, [seq_first, seq_last, dev, ino, offset, lines]) =
                row.map_err(db(p, what))?;
            out.push(Segment {
                first: first as u64,
                last: last as u64,
                seq_first: seq_first as u64,
                seq_last: seq_last as u64,
                from: Checkpoint {
                    run_id: parse_id(p, &id)?,
                    // Stored as the same 64 bits, like the runs' checkpoints.
                    dev: dev as u64,
                    ino: ino as u64,
                    offset: offset as u64,
                    lines: lines as u64,
                    finished: false,
                },
            });
        }
        Ok(out)
    }
}

/// Writes segments inside an open transaction.
pub(super) fn write_segments(
    tx: &Transaction,
    path: &std::path::Path,
    segments: &[Segment],
) -> Result<(), IndexError> {
    let what = "record the feed";
    let mut stmt = tx
        .prepare_cached(
            "INSERT OR REPLACE INTO feed
             (first, last, run_id, seq_first, seq_last, dev, ino, offset, lines)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .map_err(db(path, what))?;
    for s in segments {
        stmt.execute(params![
            s.first as i64,
            s.last as i64,
            s.from.run_id.as_str(),
            s.seq_first as i64,
            s.seq_last as i64,
            s.from.dev as i64,
            s.from.ino as i64,
            s.from.offset as i64,
            s.from.lines as i64,
        ])
        .map_err(db(path, what))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::testing::{batch, id, runner_run};

    /// The cursor of the oldest event the feed can still give.
    fn feed_start(ix: &Index) -> Option<u64> {
        ix.feed_after(0, 1).unwrap().first().map(|s| s.first)
    }

    fn seg(first: u64, last: u64, run: &str, seq_first: u64) -> Segment {
        Segment {
            first,
            last,
            seq_first,
            seq_last: seq_first + (last - first),
            from: Checkpoint {
                run_id: id(run),
                dev: u64::MAX,
                ino: 1 << 63,
                offset: seq_first * 100,
                lines: seq_first,
                finished: false,
            },
        }
    }

    #[test]
    fn an_empty_feed_starts_past_any_earlier_cursor() {
        let ix = Index::open_in_memory().unwrap();
        let start = ix.next_cursor().unwrap();
        assert!(start > 1_700_000_000_000_000, "{start}");
        assert!(start < 1 << 53, "{start}");
        assert_eq!(feed_start(&ix), None);
    }

    #[test]
    fn segments_are_found_from_any_cursor_in_or_between_them() {
        let mut ix = Index::open_in_memory().unwrap();
        let (a, b, c) = (
            seg(10, 19, "a", 0),
            seg(20, 24, "b", 3),
            seg(25, 40, "a", 10),
        );
        ix.record_feed(&[a.clone(), b.clone(), c.clone()]).unwrap();
        assert_eq!(ix.next_cursor().unwrap(), 41);
        assert_eq!(feed_start(&ix), Some(10));
        assert_eq!(
            ix.feed_after(0, 10).unwrap(),
            vec![a.clone(), b.clone(), c.clone()]
        );
        assert_eq!(
            ix.feed_after(9, 10).unwrap(),
            vec![a.clone(), b.clone(), c.clone()]
        );
        assert_eq!(ix.feed_after(15, 2).unwrap(), vec![a.clone(), b.clone()]);
        assert_eq!(ix.feed_after(19, 10).unwrap(), vec![b, c.clone()]);
        assert_eq!(ix.feed_after(39, 10).unwrap(), vec![c]);
        assert!(ix.feed_after(40, 10).unwrap().is_empty());
        assert!(ix.feed_after(u64::MAX, 10).unwrap().is_empty());
    }

    #[test]
    fn a_grown_segment_replaces_itself_and_retention_removes_a_runs_segments() {
        let mut ix = Index::open_in_memory().unwrap();
        ix.apply(&batch("a", 0, runner_run())).unwrap();
        ix.record_feed(&[seg(1, 3, "a", 0), seg(6, 6, "b", 0)])
            .unwrap();
        ix.record_feed(&[seg(1, 5, "a", 0)]).unwrap();
        assert_eq!(ix.feed_after(0, 10).unwrap()[0].last, 5);
        ix.remove_runs(&[id("a")]).unwrap();
        let left = ix.feed_after(0, 10).unwrap();
        assert_eq!(left, vec![seg(6, 6, "b", 0)]);
    }
}
