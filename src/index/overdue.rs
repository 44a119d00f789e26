//! What the `late` and `long` rules read from the index, and their alerts recorded in the
//! outbox (`server::overdue` asks every few seconds; the rules are `alerts::overdue`).
//!
//! Each question is one range scan of an index from its newest end, stopped after a row or a
//! few: the newest start of a pipeline's runs, its first run, its last [`HISTORY`] successful
//! durations, and the runs `running` (through `runs_by_status`). Nothing here grows with the
//! history. The alerts are inserted like [`super::outbox`]'s: status `retrying`, keyed by
//! their stable id and inserted only once, all of a round in one transaction.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Transaction, params};

use super::outbox::RETRYING;
use super::{Index, IndexError, RUNNING, db, to_i64, to_u64};
use crate::alerts::AlertObject;
use crate::alerts::overdue::{HISTORY, Running};
use crate::event::parse_timestamp;

impl Index {
    /// When the newest run of `pipeline` started, recorded misses left out; with no
    /// pipeline, of any run (a file of one pipeline counts every run, as the scheduler's
    /// status does). `None` without one, or when its start cannot be read.
    pub fn newest_start(
        &self,
        pipeline: Option<&str>,
    ) -> Result<Option<DateTime<Utc>>, IndexError> {
        let p = self.path.as_path();
        let newest = |sql: &str, args: &[&dyn rusqlite::ToSql]| {
            self.conn
                .prepare_cached(sql)
                .and_then(|mut s| s.query_row(args, |r| r.get::<_, String>(0)).optional())
                .map_err(db(p, "find a pipeline's newest run"))
        };
        let key = match pipeline {
            Some(name) => newest(
                "SELECT sort_key FROM runs WHERE pipeline = ?1 AND status != 'missed'
                 ORDER BY sort_key DESC LIMIT 1",
                &[&name],
            )?,
            None => newest(
                "SELECT sort_key FROM runs WHERE status != 'missed'
                 ORDER BY sort_key DESC LIMIT 1",
                &[],
            )?,
        };
        Ok(key.as_deref().and_then(parse_timestamp))
    }

    /// The runs `running` now whose pipeline and start are known (a run announced by the
    /// dashboard has neither until its file is read).
    pub fn running_with_start(&self) -> Result<Vec<Running>, IndexError> {
        let p = self.path.as_path();
        let rows: Vec<(String, String, String)> = self
            .conn
            .prepare_cached(
                "SELECT run_id, pipeline, started_at FROM runs
                 WHERE status = ?1 AND pipeline IS NOT NULL AND started_at IS NOT NULL",
            )
            .and_then(|mut s| {
                s.query_map([RUNNING], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(db(p, "list the running runs"))?;
        Ok(rows
            .into_iter()
            .filter_map(|(run_id, pipeline, started_at)| {
                let started = parse_timestamp(&started_at)?;
                Some(Running {
                    run_id,
                    pipeline,
                    started_at,
                    started,
                })
            })
            .collect())
    }

    /// The durations of `pipeline`'s last [`HISTORY`] runs that ended `success`, newest first.
    pub fn success_durations(&self, pipeline: &str) -> Result<Vec<u64>, IndexError> {
        let p = self.path.as_path();
        self.conn
            .prepare_cached(
                "SELECT duration_ms FROM runs
                 WHERE pipeline = ?1 AND status = 'success' AND duration_ms IS NOT NULL
                 ORDER BY sort_key DESC LIMIT ?2",
            )
            .and_then(|mut s| {
                s.query_map(params![pipeline, to_i64(HISTORY as u64)], |r| {
                    r.get::<_, i64>(0).map(to_u64)
                })?
                .collect()
            })
            .map_err(db(p, "read a pipeline's durations"))
    }

    /// Records `alerts` (each with its destination's name) in the outbox, each once, in one
    /// transaction; returns how many rows were added.
    pub fn record_overdue(
        &mut self,
        alerts: &[(String, AlertObject)],
        now: DateTime<Utc>,
    ) -> Result<usize, IndexError> {
        let p = self.path.as_path();
        let what = "record late and long alerts";
        let tx = self.conn.transaction().map_err(db(p, what))?;
        let mut added = 0;
        for (destination, a) in alerts {
            added += super::outbox::insert(&tx, p, destination, a, RETRYING, now)?;
        }
        tx.commit().map_err(db(p, what))?;
        Ok(added)
    }
}

/// Forgets the delivered (or given-up) `late` alerts older than their pipeline's oldest run
/// left: they are about no run, so retention cannot remove them with one; this way the alert
/// history reaches as far back as the run history. A pipeline with no run left keeps its own.
/// Called by `remove_runs`, in its transaction.
pub(super) fn forget_late(tx: &Transaction, path: &std::path::Path) -> Result<(), IndexError> {
    tx.prepare_cached(
        "DELETE FROM alerts WHERE kind = 'late' AND status != ?1
         AND at < (SELECT MIN(sort_key) FROM runs
                   WHERE runs.pipeline = alerts.pipeline AND sort_key > '')",
    )
    .and_then(|mut s| s.execute([RETRYING]))
    .map_err(db(path, "forget old late alerts"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::alerts::overdue::late_alert;
    use crate::index::testing::{batch, ev};

    fn t(s: &str) -> DateTime<Utc> {
        parse_timestamp(s).unwrap()
    }

    /// A run of `pipeline` started at `start`, ended `end` after `secs` (or still running).
    fn run(ix: &mut Index, id: &str, pipeline: &str, start: &str, end: Option<(&str, i64)>) {
        let mut events = vec![ev("pipeline", "start", start, json!({"stages": ["a"]}))];
        if let Some((status, secs)) = end {
            let at = t(start) + chrono::Duration::seconds(secs);
            events.push(ev(
                "pipeline",
                status,
                &crate::index::outbox::stamp(at),
                json!({"duration_ms": secs * 1000}),
            ));
        }
        for e in &mut events {
            e.pipeline = Some(pipeline.to_string());
        }
        ix.apply(&batch(id, 0, events)).unwrap();
    }

    #[test]
    fn newest_starts_running_runs_and_durations() {
        let mut ix = Index::open_in_memory().unwrap();
        assert_eq!(ix.newest_start(Some("etl")).unwrap(), None);
        run(
            &mut ix,
            "r1",
            "etl",
            "2026-12-03T09:00:00.000Z",
            Some(("success", 60)),
        );
        run(
            &mut ix,
            "r2",
            "etl",
            "2026-12-03T09:15:00.000Z",
            Some(("failure", 5)),
        );
        run(
            &mut ix,
            "r3",
            "etl",
            "2026-12-03T09:30:00.000Z",
            Some(("success", 90)),
        );
        run(&mut ix, "r4", "etl", "2026-12-03T09:45:00.000Z", None);
        run(&mut ix, "w1", "web", "2026-12-03T10:00:00.000Z", None);
        let missed = batch(
            "m1",
            0,
            vec![ev(
                "pipeline",
                "missed",
                "2026-12-03T11:00:00.000Z",
                json!({"scheduled_for": "2026-12-03T11:00:00Z"}),
            )],
        );
        ix.apply(&missed).unwrap();

        // Recorded misses are no start.
        assert_eq!(
            ix.newest_start(Some("etl")).unwrap(),
            Some(t("2026-12-03T09:45:00Z"))
        );
        assert_eq!(
            ix.newest_start(None).unwrap(),
            Some(t("2026-12-03T10:00:00Z"))
        );
        assert_eq!(ix.newest_start(Some("none")).unwrap(), None);

        let mut running = ix.running_with_start().unwrap();
        running.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        let ids: Vec<(&str, &str)> = running
            .iter()
            .map(|r| (r.run_id.as_str(), r.pipeline.as_str()))
            .collect();
        assert_eq!(ids, [("r4", "etl"), ("w1", "web")]);
        assert_eq!(running[0].started, t("2026-12-03T09:45:00Z"));

        assert_eq!(ix.success_durations("etl").unwrap(), [90_000, 60_000]);
        assert!(ix.success_durations("web").unwrap().is_empty());
    }

    #[test]
    fn durations_are_the_last_twenty_successes() {
        let mut ix = Index::open_in_memory().unwrap();
        for i in 0..30 {
            let start = format!("2026-12-03T09:{i:02}:00.000Z");
            run(
                &mut ix,
                &format!("r{i}"),
                "etl",
                &start,
                Some(("success", i + 1)),
            );
        }
        let d = ix.success_durations("etl").unwrap();
        assert_eq!(d.len(), HISTORY);
        assert_eq!((d[0], d[HISTORY - 1]), (30_000, 11_000));
    }

    #[test]
    fn overdue_alerts_are_recorded_once() {
        let mut ix = Index::open_in_memory().unwrap();
        let now = t("2026-12-03T09:27:00Z");
        let a = late_alert("ops", "etl", t("2026-12-03T09:15:00Z"), "http://h", now);
        let alerts = vec![("ops".to_string(), a.clone())];
        assert_eq!(ix.record_overdue(&alerts, now).unwrap(), 1);
        assert_eq!(ix.record_overdue(&alerts, now).unwrap(), 0);
        let rows = ix.list_alerts(10).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].kind.as_str(), rows[0].run_id.as_str()),
            ("late", "")
        );
        let due = ix.due_alerts("ops", now, 10).unwrap();
        assert_eq!(due[0].body, a);
    }

    #[test]
    fn retention_forgets_late_alerts_older_than_the_runs_it_keeps() {
        let mut ix = Index::open_in_memory().unwrap();
        run(
            &mut ix,
            "r1",
            "etl",
            "2026-12-03T09:00:00.000Z",
            Some(("success", 1)),
        );
        run(
            &mut ix,
            "r2",
            "etl",
            "2026-12-03T11:00:00.000Z",
            Some(("success", 1)),
        );
        let late = |occurrence: &str, made: &str| {
            let a = late_alert("ops", "etl", t(occurrence), "http://h", t(made));
            ("ops".to_string(), a)
        };
        let old = late("2026-12-03T09:15:00Z", "2026-12-03T09:30:00Z");
        let newer = late("2026-12-03T11:15:00Z", "2026-12-03T11:30:00Z");
        let pending = late("2026-12-03T09:45:00Z", "2026-12-03T10:00:00Z");
        ix.record_overdue(std::slice::from_ref(&old), t("2026-12-03T09:30:00Z"))
            .unwrap();
        ix.record_overdue(std::slice::from_ref(&pending), t("2026-12-03T10:00:00Z"))
            .unwrap();
        ix.record_overdue(std::slice::from_ref(&newer), t("2026-12-03T11:30:00Z"))
            .unwrap();
        for (_, a) in [&old, &newer] {
            ix.alert_attempted(&a.id, Ok(()), None).unwrap();
        }
        let ids = |ix: &Index| -> Vec<String> {
            let mut v: Vec<String> = ix
                .list_alerts(10)
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect();
            v.sort();
            v
        };
        // r1 goes: the delivered alert from before r2 goes with it; the one still to be sent
        // and the one after r2 stay.
        ix.remove_runs(&[crate::index::testing::id("r1")]).unwrap();
        let mut want = vec![pending.1.id.clone(), newer.1.id.clone()];
        want.sort();
        assert_eq!(ids(&ix), want);
        // With no run left, a pipeline keeps its late alerts.
        ix.remove_runs(&[crate::index::testing::id("r2")]).unwrap();
        assert_eq!(ids(&ix), want);
    }
}
