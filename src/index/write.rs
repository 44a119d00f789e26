//! The write path of the index: a tailer's batches applied ([`Index::apply`],
//! [`Index::apply_all`]), and the few changes the dashboard makes itself (an announced run,
//! an abandoned run, runs removed by retention).
//!
//! Applying goes in three steps: load the run's rows, fold the events into them
//! ([`super::fold`], pure), write back what changed. A batch's rows and its checkpoint are
//! written in one transaction, so the index never holds events past its checkpoint nor a
//! checkpoint past its events.

use std::path::Path;
use std::sync::Arc;

use rusqlite::{OptionalExtension, Transaction, params};

use super::fold::{RunFold, RunRow, StageRow, Stages, elapsed_ms, sort_key};
use super::outbox::{AlertContext, Ended};
use super::{ABANDONED, Index, IndexError, RUNNING, Segment, db};
use crate::event::{Published, RunId};
use crate::tail::{Batch, Checkpoint};

impl Index {
    /// Applies one batch of the tailer (its events in `seq` order, as read from one file): the
    /// run's summary and stages, then its checkpoint, in one transaction.
    pub fn apply(&mut self, batch: &Batch) -> Result<(), IndexError> {
        let path = &self.path;
        let tx = self
            .conn
            .transaction()
            .map_err(db(path, "begin a transaction"))?;
        ingest(
            &tx,
            path,
            batch.events.iter().map(|p| &**p),
            Some(&batch.checkpoint),
        )?;
        tx.commit().map_err(db(path, "commit a batch"))
    }

    /// Applies several batches (in order) in one transaction: under a high write rate the
    /// commit, not the batch, is what costs.
    pub fn apply_all(&mut self, batches: &[Arc<Batch>]) -> Result<(), IndexError> {
        self.apply_fed(batches, &[])
    }

    /// [`Index::apply_all`], with the feed's segments for the events (`feed.rs`) in the same
    /// transaction.
    pub fn apply_fed(
        &mut self,
        batches: &[Arc<Batch>],
        segments: &[Segment],
    ) -> Result<(), IndexError> {
        self.apply_alerting(batches, segments, None).map(|_| ())
    }

    /// [`Index::apply_fed`], and when `alerting` is given, the alerts the runs that ended
    /// make, recorded in the outbox in the same transaction (`outbox.rs`): the live path of
    /// `serve`. Returns how many alerts were recorded.
    pub fn apply_alerting(
        &mut self,
        batches: &[Arc<Batch>],
        segments: &[Segment],
        alerting: Option<&AlertContext>,
    ) -> Result<usize, IndexError> {
        let path = &self.path;
        let tx = self
            .conn
            .transaction()
            .map_err(db(path, "begin a transaction"))?;
        super::feed::write_segments(&tx, path, segments)?;
        let mut ended = Vec::new();
        for batch in batches {
            ended.extend(ingest(
                &tx,
                path,
                batch.events.iter().map(|p| &**p),
                Some(&batch.checkpoint),
            )?);
        }
        let recorded = match alerting {
            Some(ctx) => super::outbox::record(&tx, path, &ended, ctx)?,
            None => 0,
        };
        tx.commit().map_err(db(path, "commit batches"))?;
        Ok(recorded)
    }

    /// Records a run announced by its runner before its file has been read, so that it shows
    /// as `running` at once. Does nothing if the run is already known; the run's first event
    /// later sets its real start time.
    pub fn note_announced(
        &mut self,
        id: &RunId,
        source: &str,
        at: &str,
    ) -> Result<bool, IndexError> {
        let p = self.path.as_path();
        let n = self
            .conn
            .prepare_cached(
                "INSERT INTO runs (run_id, status, source, started_at, sort_key)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (run_id) DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![id.as_str(), RUNNING, source, at, sort_key(at)]))
            .map_err(db(p, "record an announced run"))?;
        Ok(n > 0)
    }

    /// Marks a run whose runner died without a final event as `abandoned` at `at`, with its
    /// running stages, and `reason` if given. Only a run still `running` is changed; returns
    /// whether it was. A final event read later (the runner was alive after all) replaces
    /// `abandoned`.
    pub fn mark_abandoned(
        &mut self,
        id: &RunId,
        at: &str,
        reason: Option<&str>,
    ) -> Result<bool, IndexError> {
        let p = self.path.as_path();
        let what = "mark a run abandoned";
        let tx = self.conn.transaction().map_err(db(p, what))?;
        let started: Option<Option<String>> = tx
            .prepare_cached("SELECT started_at FROM runs WHERE run_id = ? AND status = ?")
            .and_then(|mut s| s.query_row([id.as_str(), RUNNING], |r| r.get(0)).optional())
            .map_err(db(p, what))?;
        let Some(started) = started else {
            return Ok(false);
        };
        let duration = started.as_deref().and_then(|s| elapsed_ms(s, at));
        tx.prepare_cached(
            "UPDATE runs SET status = ?4, finished_at = ?2, duration_ms = ?3,
                             reason = COALESCE(?5, reason) WHERE run_id = ?1",
        )
        .and_then(|mut s| s.execute(params![id.as_str(), at, duration, ABANDONED, reason]))
        .map_err(db(p, what))?;
        tx.prepare_cached(
            "UPDATE stages SET status = ?3, finished_at = ?2 WHERE run_id = ?1 AND status = ?4",
        )
        .and_then(|mut s| s.execute(params![id.as_str(), at, ABANDONED, RUNNING]))
        .map_err(db(p, what))?;
        tx.commit().map_err(db(p, what))?;
        Ok(true)
    }

    /// Forgets runs (their summaries, stages, checkpoints and delivered or given-up alerts,
    /// and the `late` alerts older than the runs left), for retention.
    pub fn remove_runs(&mut self, ids: &[RunId]) -> Result<(), IndexError> {
        let p = self.path.as_path();
        let what = "remove runs";
        let tx = self.conn.transaction().map_err(db(p, what))?;
        {
            let mut runs = tx
                .prepare_cached("DELETE FROM runs WHERE run_id = ?")
                .map_err(db(p, what))?;
            let mut stages = tx
                .prepare_cached("DELETE FROM stages WHERE run_id = ?")
                .map_err(db(p, what))?;
            let mut feed = tx
                .prepare_cached("DELETE FROM feed WHERE run_id = ?")
                .map_err(db(p, what))?;
            // The alerts about the run go with it, but for one still to be delivered (or
            // summarized).
            let mut alerts = tx
                .prepare_cached(
                    "DELETE FROM alerts WHERE run_id = ? AND status NOT IN ('retrying', 'held')",
                )
                .map_err(db(p, what))?;
            for id in ids {
                runs.execute([id.as_str()]).map_err(db(p, what))?;
                stages.execute([id.as_str()]).map_err(db(p, what))?;
                feed.execute([id.as_str()]).map_err(db(p, what))?;
                alerts.execute([id.as_str()]).map_err(db(p, what))?;
            }
        }
        super::overdue::forget_late(&tx, p)?;
        tx.commit().map_err(db(p, what))
    }
}

/// Applies events (in `seq` order per run) and a checkpoint inside an open transaction: loads
/// each run's rows, folds the events into them, writes them back. Returns the runs that
/// reached a final status with these events (for the alerts).
pub(super) fn ingest<'a>(
    tx: &Transaction,
    path: &Path,
    events: impl Iterator<Item = &'a Published>,
    checkpoint: Option<&Checkpoint>,
) -> Result<Vec<Ended>, IndexError> {
    // A batch is one file, so this holds one run; more are handled all the same.
    let mut runs: Vec<RunFold> = Vec::with_capacity(1);
    // Each run's status as stored before the batch, by position in `runs`.
    let mut before: Vec<Option<String>> = Vec::with_capacity(1);
    let mut current = 0;
    for p in events {
        if runs.get(current).is_none_or(|r| r.row.run_id != p.run_id) {
            current = fold_of(tx, path, &mut runs, &p.run_id)?;
            if before.len() < runs.len() {
                before.push(runs[current].row.status.clone());
            }
        }
        let run = &mut runs[current];
        if run.needs_stages(p) {
            run.stages = Some(load_stages(tx, path, &run.row.run_id)?);
        }
        run.apply(p);
    }
    if let Some(cp) = checkpoint {
        let i = fold_of(tx, path, &mut runs, &cp.run_id)?;
        runs[i].set_checkpoint(cp);
    }
    for run in &runs {
        write_run(tx, path, run)?;
    }
    Ok(runs
        .iter()
        .zip(before)
        .filter_map(|(run, was)| {
            let now = run.row.status.as_deref()?;
            ended(was.as_deref(), now).then(|| Ended {
                run_id: run.row.run_id.clone(),
                status: now.to_string(),
            })
        })
        .collect())
}

/// Whether a run that was `was` and now is `now` has just ended: it was running (or not
/// known) and now has a final status, or an `abandoned` run's late final event arrived.
fn ended(was: Option<&str>, now: &str) -> bool {
    now != RUNNING && was != Some(now) && matches!(was, None | Some(RUNNING) | Some(ABANDONED))
}

/// The position of run `id` in `runs`, loading it if it is not there.
fn fold_of(
    tx: &Transaction,
    path: &Path,
    runs: &mut Vec<RunFold>,
    id: &RunId,
) -> Result<usize, IndexError> {
    if let Some(i) = runs.iter().position(|r| &r.row.run_id == id) {
        return Ok(i);
    }
    runs.push(load_run(tx, path, id)?);
    Ok(runs.len() - 1)
}

/// A run as stored, or a new one.
fn load_run(tx: &Transaction, path: &Path, id: &RunId) -> Result<RunFold, IndexError> {
    let row = tx
        .prepare_cached(
            "SELECT pipeline, status, source, started_at, finished_at, duration_ms,
                    scheduled_for, reason, events, last_seq, sort_key,
                    dev, ino, offset, lines, finished, failed_stages, first_error_seq,
                    retry_of, host
             FROM runs WHERE run_id = ?",
        )
        .and_then(|mut s| {
            s.query_row([id.as_str()], |r| {
                Ok(RunRow {
                    run_id: id.clone(),
                    pipeline: r.get(0)?,
                    status: r.get(1)?,
                    source: r.get(2)?,
                    started_at: r.get(3)?,
                    finished_at: r.get(4)?,
                    duration_ms: r.get(5)?,
                    scheduled_for: r.get(6)?,
                    reason: r.get(7)?,
                    events: r.get(8)?,
                    last_seq: r.get(9)?,
                    sort_key: r.get(10)?,
                    dev: r.get(11)?,
                    ino: r.get(12)?,
                    offset: r.get(13)?,
                    lines: r.get(14)?,
                    finished: r.get(15)?,
                    failed_stages: r.get(16)?,
                    first_error_seq: r.get(17)?,
                    retry_of: r.get(18)?,
                    host: r.get(19)?,
                })
            })
            .optional()
        })
        .map_err(db(path, "read a run's summary"))?;
    Ok(match row {
        Some(row) => RunFold::stored(row),
        None => RunFold::new(id.clone()),
    })
}

/// A run's stages as stored.
fn load_stages(tx: &Transaction, path: &Path, id: &RunId) -> Result<Stages, IndexError> {
    let rows = tx
        .prepare_cached(
            "SELECT name, position, status, started_at, finished_at, duration_ms, attempts,
                    exit_code, reason, signal, needs
             FROM stages WHERE run_id = ? ORDER BY position",
        )
        .and_then(|mut s| {
            s.query_map([id.as_str()], |r| {
                Ok(StageRow {
                    name: r.get(0)?,
                    position: r.get(1)?,
                    status: r.get(2)?,
                    started_at: r.get(3)?,
                    finished_at: r.get(4)?,
                    duration_ms: r.get(5)?,
                    attempts: r.get(6)?,
                    exit_code: r.get(7)?,
                    reason: r.get(8)?,
                    signal: r.get(9)?,
                    needs: r.get(10)?,
                    dirty: false,
                })
            })?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(db(path, "read a run's stages"))?;
    Ok(Stages::from_rows(rows))
}

/// Writes a run's row and the stages the fold changed (all of them, over the stored ones, if it
/// started afresh).
fn write_run(tx: &Transaction, path: &Path, run: &RunFold) -> Result<(), IndexError> {
    if run.restarted {
        tx.prepare_cached("DELETE FROM stages WHERE run_id = ?")
            .and_then(|mut s| s.execute([run.row.run_id.as_str()]))
            .map_err(db(path, "reset a run's stages"))?;
    }
    let r = &run.row;
    tx.prepare_cached(
        "INSERT INTO runs (run_id, pipeline, status, source, started_at, finished_at,
             duration_ms, scheduled_for, reason, events, last_seq, sort_key,
             dev, ino, offset, lines, finished, failed_stages, first_error_seq, retry_of, host)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18, ?19, ?20, ?21)
         ON CONFLICT (run_id) DO UPDATE SET
             pipeline = excluded.pipeline, status = excluded.status,
             source = excluded.source, started_at = excluded.started_at,
             finished_at = excluded.finished_at, duration_ms = excluded.duration_ms,
             scheduled_for = excluded.scheduled_for, reason = excluded.reason,
             events = excluded.events, last_seq = excluded.last_seq,
             sort_key = excluded.sort_key, dev = excluded.dev, ino = excluded.ino,
             offset = excluded.offset, lines = excluded.lines, finished = excluded.finished,
             failed_stages = excluded.failed_stages,
             first_error_seq = excluded.first_error_seq, retry_of = excluded.retry_of,
             host = excluded.host",
    )
    .and_then(|mut s| {
        s.execute(params![
            r.run_id.as_str(),
            r.pipeline,
            r.status,
            r.source,
            r.started_at,
            r.finished_at,
            r.duration_ms,
            r.scheduled_for,
            r.reason,
            r.events,
            r.last_seq,
            r.sort_key,
            r.dev,
            r.ino,
            r.offset,
            r.lines,
            r.finished,
            r.failed_stages,
            r.first_error_seq,
            r.retry_of,
            r.host,
        ])
    })
    .map_err(db(path, "write a run's summary"))?;
    let Some(stages) = &run.stages else {
        return Ok(());
    };
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO stages (run_id, name, position, status, started_at, finished_at,
                 duration_ms, attempts, exit_code, reason, signal, needs)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (run_id, name) DO UPDATE SET
                 position = excluded.position, status = excluded.status,
                 started_at = excluded.started_at, finished_at = excluded.finished_at,
                 duration_ms = excluded.duration_ms, attempts = excluded.attempts,
                 exit_code = excluded.exit_code, reason = excluded.reason,
                 signal = excluded.signal, needs = excluded.needs",
        )
        .map_err(db(path, "write a stage"))?;
    for s in stages.rows.iter().filter(|s| s.dirty) {
        stmt.execute(params![
            r.run_id.as_str(),
            s.name,
            s.position,
            s.status,
            s.started_at,
            s.finished_at,
            s.duration_ms,
            s.attempts,
            s.exit_code,
            s.reason,
            s.signal,
            s.needs,
        ])
        .map_err(db(path, "write a stage"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::index::Opened;
    use crate::index::testing::{batch, ev, id, runner_run, stage};
    use serde_json::json;

    #[test]
    fn runner_style_run_goes_from_running_to_success() {
        let mut ix = Index::open_in_memory().unwrap();
        let mut events = runner_run();
        let rest = events.split_off(5);
        ix.apply(&batch("r1", 0, events)).unwrap();

        let d = ix.get_run(&id("r1")).unwrap().unwrap();
        assert_eq!(d.run.status, "running");
        assert_eq!(d.run.pipeline.as_deref(), Some("translation"));
        assert_eq!(d.run.source.as_deref(), Some("scheduler"));
        assert_eq!(
            d.run.started_at.as_deref(),
            Some("2026-11-29T08:15:00.000Z")
        );
        assert_eq!(d.run.finished_at, None);
        let ex = stage(&d, "extract");
        assert_eq!((ex.status.as_str(), ex.attempts), ("running", 2));
        assert_eq!(ix.running_runs().unwrap(), vec![id("r1")]);

        ix.apply(&batch("r1", 5, rest)).unwrap();
        let d = ix.get_run(&id("r1")).unwrap().unwrap();
        assert_eq!(d.run.status, "success");
        assert_eq!(
            d.run.finished_at.as_deref(),
            Some("2026-11-29T08:15:20.000Z")
        );
        assert_eq!(d.run.duration_ms, Some(20000));
        assert_eq!(d.run.reason, None);
        let names: Vec<_> = d.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["extract", "load"]);
        let ex = stage(&d, "extract");
        assert_eq!(ex.status, "success");
        assert_eq!(ex.attempts, 2);
        assert_eq!(ex.exit_code, Some(0));
        // From its first attempt's start to its end, retries included (the final event's
        // `duration_ms`, 2000, is the old per-attempt figure of another writer).
        assert_eq!(ex.duration_ms, Some(14000));
        assert_eq!(ex.started_at.as_deref(), Some("2026-11-29T08:15:01.000Z"));
        assert_eq!(ex.finished_at.as_deref(), Some("2026-11-29T08:15:15.000Z"));
        let load = stage(&d, "load");
        assert_eq!((load.status.as_str(), load.attempts), ("success", 1));
        assert!(ix.running_runs().unwrap().is_empty());
        assert_eq!(ix.count_runs().unwrap(), 1);

        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["run_id"], "r1");
        assert_eq!(json["stages"][0]["name"], "extract");
        assert!(json.get("scheduled_for").is_none());
    }

    #[test]
    fn applying_a_batch_again_changes_nothing() {
        let mut ix = Index::open_in_memory().unwrap();
        let b = batch("r1", 0, runner_run());
        ix.apply(&b).unwrap();
        let once = ix.get_run(&id("r1")).unwrap();
        // Same lines again (the file read again from its start), then a later batch overlapping.
        ix.apply(&b).unwrap();
        let mut tail = runner_run().split_off(8);
        tail.insert(
            0,
            ev("load", "log", "2026-11-29T08:15:17.000Z", json!(null)),
        );
        ix.apply(&batch("r1", 7, tail)).unwrap();
        assert_eq!(ix.get_run(&id("r1")).unwrap(), once);
        let events: i64 = ix
            .conn
            .query_row("SELECT events FROM runs WHERE run_id = 'r1'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(events, 11);
    }

    #[test]
    fn failure_skipped_and_cancelled_runs() {
        let mut ix = Index::open_in_memory().unwrap();
        let t0 = "2026-11-29T08:00:00.000Z";
        let t1 = "2026-11-29T08:00:05.500Z";
        ix.apply(&batch(
            "failed",
            0,
            vec![
                ev("pipeline", "start", t0, json!(null)),
                ev("a", "start", t0, json!({"attempt": 1})),
                ev(
                    "a",
                    "failure",
                    t1,
                    json!({"attempt": 1, "exit_code": 3, "reason": "exit"}),
                ),
                ev(
                    "b",
                    "skipped",
                    t1,
                    json!({"reason": "needs_failed", "needs": "a"}),
                ),
                ev("pipeline", "failure", t1, json!({"reason": "stage_failed"})),
            ],
        ))
        .unwrap();
        let d = ix.get_run(&id("failed")).unwrap().unwrap();
        assert_eq!(d.run.status, "failure");
        assert_eq!(d.run.reason.as_deref(), Some("stage_failed"));
        // No data.duration_ms: finished − started.
        assert_eq!(d.run.duration_ms, Some(5500));
        let a = stage(&d, "a");
        assert_eq!(
            (a.status.as_str(), a.exit_code, a.duration_ms),
            ("failure", Some(3), Some(5500))
        );
        let b = stage(&d, "b");
        assert_eq!(
            (b.status.as_str(), b.attempts, b.exit_code),
            ("skipped", 0, None)
        );

        ix.apply(&batch(
            "skipped",
            0,
            vec![
                ev("pipeline", "start", t0, json!(null)),
                ev("pipeline", "skipped", t0, json!({"reason": "overlap"})),
            ],
        ))
        .unwrap();
        let d = ix.get_run(&id("skipped")).unwrap().unwrap();
        assert_eq!(
            (d.run.status.as_str(), d.run.reason.as_deref()),
            ("skipped", Some("overlap"))
        );
        assert!(d.stages.is_empty());

        ix.apply(&batch(
            "cancelled",
            0,
            vec![
                ev("pipeline", "start", t0, json!(null)),
                ev("a", "start", t0, json!({"attempt": 1})),
                ev(
                    "a",
                    "cancelled",
                    t1,
                    json!({"reason": "user", "duration_ms": 5000}),
                ),
                ev("b", "cancelled", t1, json!({"reason": "user"})),
                ev(
                    "pipeline",
                    "cancelled",
                    t1,
                    json!({"reason": "user", "duration_ms": 5600}),
                ),
            ],
        ))
        .unwrap();
        let d = ix.get_run(&id("cancelled")).unwrap().unwrap();
        assert_eq!(
            (d.run.status.as_str(), d.run.duration_ms),
            ("cancelled", Some(5600))
        );
        assert!(d.stages.iter().all(|s| s.status == "cancelled"));
        assert_eq!(stage(&d, "b").started_at, None);
        assert!(ix.running_runs().unwrap().is_empty());
    }

    #[test]
    fn missed_run_sorts_at_its_scheduled_time() {
        let mut ix = Index::open_in_memory().unwrap();
        let ran = |ts: &str| vec![ev("pipeline", "start", ts, json!(null))];
        ix.apply(&batch("a", 0, ran("2026-11-29T08:00:00.000Z")))
            .unwrap();
        ix.apply(&batch("c", 0, ran("2026-11-29T09:00:00.000Z")))
            .unwrap();
        ix.apply(&batch(
            "b",
            0,
            vec![ev(
                "pipeline",
                "missed",
                "2026-11-29T10:00:00.000Z",
                json!({"scheduled_for": "2026-11-29T08:30:00Z"}),
            )],
        ))
        .unwrap();
        let runs = ix
            .list_runs(10, None, &crate::index::RunFilter::default())
            .unwrap();
        let ids: Vec<_> = runs.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["c", "b", "a"]);
        assert_eq!(runs[1].status, "missed");
        assert_eq!(
            runs[1].scheduled_for.as_deref(),
            Some("2026-11-29T08:30:00Z")
        );
        assert_eq!(
            runs[1].finished_at.as_deref(),
            Some("2026-11-29T10:00:00.000Z")
        );
    }

    #[test]
    fn other_tools_files_without_seq_or_run_start() {
        let mut ix = Index::open_in_memory().unwrap();
        let lines = [
            r#"{"run_id":"x","stage":"extract","event":"start","timestamp":"2025-12-08T21:45:00","msg":"go"}"#,
            r#"{"run_id":"x","stage":"extract","event":"progress","timestamp":"2025-12-08T21:45:01","msg":"50%"}"#,
            r#"{"run_id":"x","stage":"extract","event":"success","timestamp":"2025-12-08T21:45:02.250","msg":"ok"}"#,
            r#"{"run_id":"x","stage":"translate","event":"start","timestamp":"2025-12-08T21:45:03+01:00","msg":"go"}"#,
        ];
        let events = lines
            .iter()
            .map(|l| serde_json::from_str::<Event>(l).unwrap())
            .collect();
        ix.apply(&batch("legacy-1", 0, events)).unwrap();
        let d = ix.get_run(&id("legacy-1")).unwrap().unwrap();
        assert_eq!(d.run.run_id, id("legacy-1"));
        assert_eq!(d.run.status, "running");
        assert_eq!(d.run.started_at.as_deref(), Some("2025-12-08T21:45:00"));
        assert_eq!(
            (d.run.pipeline.as_deref(), d.run.source.as_deref()),
            (None, None)
        );
        let ex = stage(&d, "extract");
        assert_eq!((ex.status.as_str(), ex.attempts), ("success", 1));
        assert_eq!(ex.duration_ms, Some(2250));
        assert_eq!(stage(&d, "translate").status, "running");
        assert_eq!(ix.running_runs().unwrap(), vec![id("legacy-1")]);

        // The naive start sorts as UTC, among RFC 3339 ones with offsets.
        ix.apply(&batch(
            "later",
            0,
            vec![ev(
                "pipeline",
                "start",
                "2025-12-08T22:44:00+01:00",
                json!(null),
            )],
        ))
        .unwrap();
        let ids: Vec<_> = ix
            .list_runs(10, None, &crate::index::RunFilter::default())
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(ids, [id("legacy-1"), id("later")]);

        let end = r#"{"run_id":"x","stage":"pipeline","event":"failure","timestamp":"2025-12-08T21:46:00","msg":"bad"}"#;
        ix.apply(&batch(
            "legacy-1",
            4,
            vec![serde_json::from_str(end).unwrap()],
        ))
        .unwrap();
        let d = ix.get_run(&id("legacy-1")).unwrap().unwrap();
        assert_eq!(
            (d.run.status.as_str(), d.run.duration_ms),
            ("failure", Some(60_000))
        );
    }

    #[test]
    fn abandoned_run_is_overwritten_by_a_late_final_event() {
        let mut ix = Index::open_in_memory().unwrap();
        let mut events = runner_run();
        let rest = events.split_off(8);
        ix.apply(&batch("r1", 0, events)).unwrap();
        let at = "2026-11-29T08:16:00.000Z";
        assert!(ix.mark_abandoned(&id("r1"), at, None).unwrap());
        assert!(
            !ix.mark_abandoned(&id("r1"), at, None).unwrap(),
            "only a running run"
        );
        assert!(!ix.mark_abandoned(&id("nope"), at, None).unwrap());
        let d = ix.get_run(&id("r1")).unwrap().unwrap();
        assert_eq!(d.run.status, "abandoned");
        assert_eq!(d.run.finished_at.as_deref(), Some(at));
        assert_eq!(d.run.duration_ms, Some(60_000));
        assert_eq!(stage(&d, "extract").status, "success");
        assert_eq!(stage(&d, "load").status, "abandoned");
        assert_eq!(stage(&d, "load").finished_at.as_deref(), Some(at));
        assert!(ix.running_runs().unwrap().is_empty());
        assert_eq!(
            ix.list_runs(
                10,
                None,
                &crate::index::RunFilter::status(Some("abandoned"))
            )
            .unwrap()
            .len(),
            1
        );

        // The runner was alive after all.
        ix.apply(&batch("r1", 8, rest)).unwrap();
        let d = ix.get_run(&id("r1")).unwrap().unwrap();
        assert_eq!(d.run.status, "success");
        assert_eq!(
            d.run.finished_at.as_deref(),
            Some("2026-11-29T08:15:20.000Z")
        );
        assert_eq!(d.run.duration_ms, Some(20000));
        assert_eq!(stage(&d, "load").status, "success");
    }

    #[test]
    fn checkpoints_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/index.db");
        {
            let mut ix = Index::open(&path).unwrap();
            ix.apply(&batch("r1", 0, runner_run())).unwrap();
            // A file with no event yet (or only bad lines) still has a checkpoint.
            ix.apply(&Batch {
                from: Checkpoint::start(id("empty"), u64::MAX, 1 << 63),
                checkpoint: Checkpoint {
                    run_id: id("empty"),
                    dev: u64::MAX,
                    ino: 1 << 63,
                    offset: 17,
                    lines: 1,
                    finished: false,
                },
                events: Vec::new(),
                malformed: 1,
                cursor: None,
                followed: false,
            })
            .unwrap();
        }
        let (ix, opened) = Index::open_or_reset(&path).unwrap();
        assert_eq!(opened, Opened::Existing);
        let mut cps = ix.checkpoints().unwrap();
        cps.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        assert_eq!(
            cps,
            [
                Checkpoint {
                    run_id: id("empty"),
                    dev: u64::MAX,
                    ino: 1 << 63,
                    offset: 17,
                    lines: 1,
                    finished: false
                },
                Checkpoint {
                    run_id: id("r1"),
                    dev: 1,
                    ino: 2,
                    offset: 1100,
                    lines: 11,
                    finished: true
                },
            ]
        );
        // A run with no event is not a run yet.
        assert!(ix.get_run(&id("empty")).unwrap().is_none());
        assert_eq!(ix.count_runs().unwrap(), 1);
        assert_eq!(
            ix.list_runs(10, None, &crate::index::RunFilter::default())
                .unwrap()
                .len(),
            1
        );
        let mode: String = ix
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
