//! The alerts held while `serve` caught up on runs that ended while it was down, folded into
//! one summary per destination ([`Index::fold_held`], called by `server::catchup` once the
//! catch-up is over).
//!
//! # Invariants
//!
//! - A destination's held rows are folded in one transaction: the summary row is inserted
//!   (`retrying`, so the delivery task sends it) and the rows it stands for become
//!   `summarized`, together. A crash before the commit leaves them `held`, and the next start
//!   folds them again into the same summary: its id comes from the destination and the ids it
//!   stands for ([`crate::alerts::summary_id`]). Once committed, nothing is `held` any more.
//! - A lone held row, with no failure held back by `repeat_every` on its pipeline, is simply
//!   made `retrying`: it is sent as itself.
//! - Failures held back by `repeat_every` on the summarized pipelines are counted in the
//!   summary's `failed_runs` and forgotten (the summary told them), so the next failure alert
//!   does not count them again.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Transaction, params};

use super::outbox::{
    FAILED, HELD, RETRYING, SUMMARIZED, load_memory, load_run, save_memory, stamp,
};
use super::{Index, IndexError, db};
use crate::alerts::AlertObject;
use crate::alerts::summary::{self, Held, NewestRun};

/// What folding did for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folded {
    pub destination: String,
    /// How many held alerts it had.
    pub alerts: usize,
    /// The id of the alert now to be sent: the summary, or the lone alert itself.
    pub id: String,
    /// Whether that is a summary.
    pub summary: bool,
}

impl Index {
    /// Folds every destination's held alerts into one summary each, made at `now`, linking to
    /// `<base_url>/#/alerts` (see the module doc). Returns what was done per destination, by
    /// name; nothing when nothing was held.
    pub fn fold_held(
        &mut self,
        base_url: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Folded>, IndexError> {
        let p = self.path.as_path();
        let what = "fold the held alerts";
        let tx = self.conn.transaction().map_err(db(p, what))?;
        let rows: Vec<(String, String, String)> = tx
            .prepare_cached(
                "SELECT id, destination, body FROM alerts WHERE status = ?1 ORDER BY seq",
            )
            .and_then(|mut s| {
                s.query_map([HELD], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(db(p, what))?;
        let mut by_destination: BTreeMap<String, Vec<(String, AlertObject)>> = BTreeMap::new();
        for (id, destination, body) in rows {
            match serde_json::from_str::<AlertObject>(&body) {
                Ok(body) => by_destination
                    .entry(destination)
                    .or_default()
                    .push((id, body)),
                Err(_) => {
                    // As the delivery task does with a body it cannot read: given up.
                    tracing::error!(%id, "a held alert's stored body cannot be read; giving it up");
                    set_status(&tx, p, &id, FAILED, None)?;
                }
            }
        }
        let mut done = Vec::new();
        for (destination, alerts) in by_destination {
            done.push(fold_one(&tx, p, &destination, alerts, base_url, now)?);
        }
        tx.commit().map_err(db(p, what))?;
        Ok(done)
    }
}

/// Folds one destination's held `alerts` (oldest first).
fn fold_one(
    tx: &Transaction,
    p: &Path,
    destination: &str,
    alerts: Vec<(String, AlertObject)>,
    base_url: &str,
    now: DateTime<Utc>,
) -> Result<Folded, IndexError> {
    let mut held = Held {
        alerts,
        ..Held::default()
    };
    let pipelines: Vec<String> = held
        .alerts
        .iter()
        .map(|(_, b)| b.pipeline.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for pipeline in &pipelines {
        let memory = load_memory(tx, p, destination, pipeline)?;
        if memory.held_back > 0 {
            held.held_back.insert(pipeline.clone(), memory.held_back);
        }
    }
    if let [(id, _)] = held.alerts.as_slice()
        && held.held_back.is_empty()
    {
        set_status(tx, p, id, RETRYING, Some(now))?;
        return Ok(Folded {
            destination: destination.to_string(),
            alerts: 1,
            id: id.clone(),
            summary: false,
        });
    }
    for pipeline in &pipelines {
        if let Some(run) = newest_run(tx, p, pipeline, base_url)? {
            held.newest.insert(pipeline.clone(), run);
        }
    }
    let object = summary::summarize(destination, &held, &format!("{base_url}/#/alerts"), now);
    super::outbox::insert(tx, p, destination, &object, RETRYING, now)?;
    for (id, _) in &held.alerts {
        set_status(tx, p, id, SUMMARIZED, None)?;
    }
    // The summary told the failures held back: the next failure alert counts from here.
    for pipeline in held.held_back.keys() {
        let mut memory = load_memory(tx, p, destination, pipeline)?;
        memory.held_back = 0;
        save_memory(tx, p, destination, pipeline, &memory)?;
    }
    Ok(Folded {
        destination: destination.to_string(),
        alerts: held.alerts.len(),
        id: object.id,
        summary: true,
    })
}

/// Sets a row's status; with `due`, also when it is next due.
fn set_status(
    tx: &Transaction,
    p: &Path,
    id: &str,
    status: &str,
    due: Option<DateTime<Utc>>,
) -> Result<(), IndexError> {
    tx.prepare_cached(
        "UPDATE alerts SET status = ?2, next_at = COALESCE(?3, next_at) WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![id, status, due.map(stamp)]))
    .map_err(db(p, "fold a held alert"))?;
    Ok(())
}

/// The newest run of `pipeline` that has ended, as a summary names it.
fn newest_run(
    tx: &Transaction,
    p: &Path,
    pipeline: &str,
    base_url: &str,
) -> Result<Option<NewestRun>, IndexError> {
    let row: Option<(String, String)> = tx
        .prepare_cached(
            "SELECT run_id, status FROM runs
             WHERE pipeline = ?1 AND status IS NOT NULL AND status != 'running'
             ORDER BY sort_key DESC, run_id DESC LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row([pipeline], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(db(p, "read a pipeline's newest run"))?;
    let Some((run_id, status)) = row else {
        return Ok(None);
    };
    let id = super::parse_id(p, &run_id)?;
    let facts = load_run(tx, p, &id)?;
    Ok(Some(NewestRun {
        url: format!("{base_url}/#/runs/{}", id.as_str()),
        run_id,
        status,
        finished_at: facts.as_ref().and_then(|f| f.finished_at.clone()),
        failed_stages: facts.map(|f| f.failed_stages).unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::config::alerts::DEFAULT_ON;
    use crate::config::{Alert, Destination, Format};
    use crate::index::AlertContext;
    use crate::index::testing::{batch, ev};

    fn ctx(catching_up: bool) -> AlertContext {
        let dest = |name: &str| Alert {
            name: name.into(),
            on: DEFAULT_ON.to_vec(),
            pipelines: vec!["*".into()],
            destination: Destination::Command(vec!["true".into()]),
            format: Format::Json,
            repeat_every: Duration::from_secs(3600),
            retry_for: Duration::from_secs(60),
            overdue: Default::default(),
        };
        AlertContext {
            alerts: vec![dest("ops"), dest("dev")],
            base_url: "http://127.0.0.1:8001".into(),
            events_dir: PathBuf::from("/nonexistent"),
            now: DateTime::<Utc>::UNIX_EPOCH,
            catching_up,
        }
    }

    /// A whole run of `pipeline` ending `status`, started at minute `m`.
    fn run(pipeline: &str, id: &str, status: &str, m: u32) -> Arc<crate::tail::Batch> {
        let t = |s: u32| format!("2026-11-29T08:{m:02}:{s:02}.000Z");
        let mut events = vec![
            ev("pipeline", "start", &t(0), json!({"stages": ["a"]})),
            ev("a", "start", &t(1), json!({"attempt": 1})),
            ev("a", status, &t(2), json!({"attempt": 1})),
            ev(
                "pipeline",
                status,
                &t(3),
                json!({"failed_stages": if status == "failure" { json!(["a"]) } else { json!([]) }}),
            ),
        ];
        for e in &mut events {
            e.pipeline = Some(pipeline.to_string());
        }
        Arc::new(batch(id, 0, events))
    }

    fn statuses(ix: &Index) -> Vec<(String, String, String)> {
        ix.list_alerts(100)
            .unwrap()
            .into_iter()
            .map(|r| (r.destination, r.kind, r.status))
            .collect()
    }

    #[test]
    fn held_alerts_fold_into_one_summary_per_destination_once() {
        let mut ix = Index::open_in_memory().unwrap();
        let mut batches = Vec::new();
        for i in 0..30 {
            batches.push(run("etl", &format!("e{i:02}"), "failure", i));
        }
        batches.push(run("report", "r1", "failure", 40));
        batches.push(run("report", "r2", "success", 41));
        // Recorded while catching up: held, nothing due.
        let n = ix.apply_alerting(&batches, &[], Some(&ctx(true))).unwrap();
        assert_eq!(
            n, 6,
            "etl's first failure, report's failure and recovery, per destination"
        );
        assert!(statuses(&ix).iter().all(|(_, _, s)| s == HELD));
        assert!(ix.due_alerts("ops", ctx(true).now, 10).unwrap().is_empty());

        let now = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::hours(1);
        let folded = ix.fold_held("http://127.0.0.1:8001", now).unwrap();
        assert_eq!(folded.len(), 2);
        assert!(
            folded.iter().all(|f| f.summary && f.alerts == 3),
            "{folded:?}"
        );
        let due = ix.due_alerts("ops", now, 10).unwrap();
        assert_eq!(due.len(), 1, "one summary, nothing else");
        let s = &due[0].body;
        assert_eq!(
            (s.kind.as_str(), s.id.as_str()),
            ("summary", folded[1].id.as_str())
        );
        let sum = s.summary.as_ref().unwrap();
        assert_eq!(sum.alerts, 3);
        let etl = &sum.pipelines[0];
        assert_eq!((etl.pipeline.as_str(), etl.failed_runs), ("etl", 30));
        assert_eq!(etl.alerts["failure"], 1);
        let newest = etl.newest_run.as_ref().unwrap();
        assert_eq!(newest.run_id, "e29");
        assert_eq!(newest.failed_stages, ["a"]);
        assert_eq!(newest.url, "http://127.0.0.1:8001/#/runs/e29");
        assert_eq!(sum.pipelines[1].alerts["recovery"], 1);
        assert_eq!(s.run_id, "r2");
        assert_eq!(s.url, "http://127.0.0.1:8001/#/alerts");
        let summarized = statuses(&ix)
            .iter()
            .filter(|(_, _, st)| st == SUMMARIZED)
            .count();
        assert_eq!(summarized, 6);

        // Folding again finds nothing held: no second summary.
        assert!(
            ix.fold_held("http://127.0.0.1:8001", now)
                .unwrap()
                .is_empty()
        );
        assert_eq!(ix.due_alerts("dev", now, 10).unwrap().len(), 1);

        // The held-back failures were told: a failure after the summary and repeat_every
        // counts from it.
        let mut live = ctx(false);
        live.now = now + chrono::Duration::hours(2);
        ix.apply_alerting(&[run("etl", "e99", "failure", 59)], &[], Some(&live))
            .unwrap();
        let due = ix.due_alerts("ops", live.now, 10).unwrap();
        let failure = due.iter().find(|d| d.body.run_id == "e99").unwrap();
        assert_eq!(failure.body.failed_runs, 1);
    }

    #[test]
    fn a_lone_held_alert_is_sent_as_itself() {
        let mut ix = Index::open_in_memory().unwrap();
        let mut one = ctx(true);
        one.alerts.truncate(1);
        ix.apply_alerting(&[run("etl", "e1", "failure", 1)], &[], Some(&one))
            .unwrap();
        let folded = ix.fold_held("http://h", one.now).unwrap();
        assert_eq!(folded.len(), 1);
        assert!(!folded[0].summary);
        let due = ix.due_alerts("ops", one.now, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].body.kind.as_str(), due[0].body.run_id.as_str()),
            ("failure", "e1")
        );
    }

    #[test]
    fn a_fold_rolled_back_folds_again_into_the_same_summary() {
        let mut ix = Index::open_in_memory().unwrap();
        let batches = [
            run("etl", "e1", "failure", 1),
            run("etl", "e2", "success", 2),
        ];
        ix.apply_alerting(&batches, &[], Some(&ctx(true))).unwrap();
        // A crash before the fold's commit is a transaction that never committed.
        let first = {
            let tx = ix.conn.transaction().unwrap();
            let rows: Vec<(String, AlertObject)> = ix_held(&tx, "ops");
            let f = fold_one(
                &tx,
                Path::new(":memory:"),
                "ops",
                rows,
                "http://h",
                ctx(true).now,
            )
            .unwrap();
            drop(tx);
            f
        };
        assert!(statuses(&ix).iter().all(|(_, _, s)| s == HELD));
        let folded = ix.fold_held("http://h", ctx(true).now).unwrap();
        let again = folded.iter().find(|f| f.destination == "ops").unwrap();
        assert_eq!(again.id, first.id);
        assert_eq!(ix.due_alerts("ops", ctx(true).now, 10).unwrap().len(), 1);
    }

    fn ix_held(tx: &Transaction, destination: &str) -> Vec<(String, AlertObject)> {
        tx.prepare(
            "SELECT id, body FROM alerts WHERE status = 'held' AND destination = ? ORDER BY seq",
        )
        .unwrap()
        .query_map([destination], |r| {
            let body: String = r.get(1)?;
            Ok((r.get(0)?, serde_json::from_str(&body).unwrap()))
        })
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap()
    }
}
