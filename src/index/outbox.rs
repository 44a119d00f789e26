//! The alerts' outbox and memory, in the index database.
//!
//! [`record`] runs inside the transaction that commits a batch of the live path (or marks a
//! run abandoned): for every run that ended, every destination watching its pipeline
//! decides ([`crate::alerts::rules`]) with what it remembers of the pipeline
//! (`alert_memory`), and each alert made is one `alerts` row per destination, status
//! `retrying` with no attempt yet. The row's id is the alert's stable id, inserted only once,
//! so reading a run again never makes a second row. Delivery (`server::alerting`) takes the
//! due rows and marks each `sent`, or tries again later, or gives up (`failed`).
//!
//! While `serve` catches up on runs that ended while it was down ([`AlertContext::catching_up`])
//! the rows are recorded `held` instead: never sent as such, they are folded into one
//! `summary` per destination once the catch-up is over (`catchup.rs`).
//!
//! A row is recorded with an empty `stderr_tail`: reading a long run file here would hold the
//! index (and with it ingest) for as long as the read takes. The delivery task reads it
//! ([`alert_stderr_tail`], through the one reader of run files) outside the index before the
//! first attempt and stores it in the row ([`Index::fill_alert_tail`]).

use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{OptionalExtension, Transaction, params};

use super::history::stderr_tails;
use super::{Index, IndexError, db};
use crate::alerts::rules::{self, Ending, Memory};
use crate::alerts::{self, AlertObject};
use crate::config::Alert;
use crate::event::{RunId, parse_timestamp};

/// A run that reached a final status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub run_id: RunId,
    pub status: String,
}

/// What recording alerts needs besides the runs: the destinations, the dashboard's address
/// for the run's link, the events folder, the time, and whether `serve` is catching up.
#[derive(Debug, Clone)]
pub struct AlertContext {
    pub alerts: Vec<Alert>,
    /// `http://<bind>`: the run's page is `<base_url>/#/runs/<run_id>`.
    pub base_url: String,
    pub events_dir: PathBuf,
    pub now: DateTime<Utc>,
    /// `serve` has not caught up yet on the runs that ended while it was down: the alerts are
    /// recorded [`HELD`], to be folded into one summary per destination.
    pub catching_up: bool,
}

/// The statuses of an outbox row (`docs/alerts.md`).
pub const RETRYING: &str = "retrying";
pub const SENT: &str = "sent";
pub const FAILED: &str = "failed";
/// Recorded while catching up: waits to be folded into a summary, never sent as such.
pub const HELD: &str = "held";
/// Folded into a summary (the summary is sent instead): kept as history, never sent.
pub const SUMMARIZED: &str = "summarized";

/// An alert waiting to be sent to one destination.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: String,
    pub body: AlertObject,
    pub attempts: u64,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

/// One row of the alerts' history (`GET /api/alerts`, `pipewatch alerts`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AlertRecord {
    pub id: String,
    pub kind: String,
    pub pipeline: String,
    pub run_id: String,
    /// The `[[alerts]]` name.
    pub destination: String,
    /// `sent`, `retrying` (not delivered yet), `failed` (given up after `retry_for`),
    /// `held` (recorded while catching up, to be summarized) or `summarized` (stood for by a
    /// `summary` alert, never sent itself).
    pub status: String,
    pub attempts: u64,
    pub last_error: Option<String>,
    /// When the alert was recorded.
    pub at: String,
}

/// A time as stored: UTC with milliseconds, which sorts as text.
pub fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Records the alerts the `ended` runs make (see the module documentation); returns how
/// many rows were added.
pub(super) fn record(
    tx: &Transaction,
    path: &Path,
    ended: &[Ended],
    ctx: &AlertContext,
) -> Result<usize, IndexError> {
    if ctx.alerts.is_empty() {
        return Ok(0);
    }
    let mut added = 0;
    for e in ended {
        let Some(ending) = Ending::of_status(&e.status) else {
            continue;
        };
        let Some(run) = load_run(tx, path, &e.run_id)? else {
            continue;
        };
        for dest in ctx.alerts.iter().filter(|a| a.watches(&run.pipeline)) {
            let mut memory = load_memory(tx, path, &dest.name, &run.pipeline)?;
            let decision = rules::decide(&mut memory, ending, &dest.on, dest.repeat_every, ctx.now);
            save_memory(tx, path, &dest.name, &run.pipeline, &memory)?;
            let Some(d) = decision else {
                continue;
            };
            let object = AlertObject {
                id: alerts::alert_id(&dest.name, d.kind, e.run_id.as_str()),
                kind: d.kind.as_str().to_string(),
                pipeline: run.pipeline.clone(),
                run_id: e.run_id.as_str().to_string(),
                status: e.status.clone(),
                started_at: run.started_at.clone(),
                finished_at: run.finished_at.clone(),
                duration_ms: run.duration_ms,
                failed_stages: run.failed_stages.clone(),
                // Read by the delivery task, outside the index (see the module doc).
                stderr_tail: String::new(),
                url: format!("{}/#/runs/{}", ctx.base_url, e.run_id.as_str()),
                at: stamp(ctx.now),
                failed_runs: d.failed_runs,
                ..AlertObject::default()
            };
            let status = if ctx.catching_up { HELD } else { RETRYING };
            added += insert(tx, path, &dest.name, &object, status, ctx.now)?;
        }
    }
    Ok(added)
}

/// Records `object` for `destination` with `status`, due at once; an alert already recorded
/// (the same stable id) is left as it is. Returns how many rows were added (0 or 1).
pub(super) fn insert(
    tx: &Transaction,
    path: &Path,
    destination: &str,
    object: &AlertObject,
    status: &str,
    now: DateTime<Utc>,
) -> Result<usize, IndexError> {
    let body = serde_json::to_string(object).unwrap_or_default();
    tx.prepare_cached(
        "INSERT INTO alerts (id, destination, kind, pipeline, run_id, body, status, attempts,
                             at, next_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?8)
         ON CONFLICT (id) DO NOTHING",
    )
    .and_then(|mut s| {
        s.execute(params![
            object.id,
            destination,
            object.kind,
            object.pipeline,
            object.run_id,
            body,
            status,
            stamp(now)
        ])
    })
    .map_err(db(path, "record an alert"))
}

/// What an alert says about a run, as the index has it.
pub(super) struct RunFacts {
    pub(super) pipeline: String,
    started_at: Option<String>,
    pub(super) finished_at: Option<String>,
    duration_ms: Option<i64>,
    pub(super) failed_stages: Vec<String>,
}

pub(super) fn load_run(
    tx: &Transaction,
    path: &Path,
    id: &RunId,
) -> Result<Option<RunFacts>, IndexError> {
    let what = "read a run for its alert";
    let row = tx
        .prepare_cached(
            "SELECT pipeline, started_at, finished_at, duration_ms, failed_stages
             FROM runs WHERE run_id = ?",
        )
        .and_then(|mut s| {
            s.query_row([id.as_str()], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })
            .optional()
        })
        .map_err(db(path, what))?;
    // A run with no pipeline name (a file of another tool without one) is no pipeline's.
    let Some((Some(pipeline), started_at, finished_at, duration_ms, failed)) = row else {
        return Ok(None);
    };
    let mut failed_stages: Vec<String> = failed
        .as_deref()
        .and_then(|f| serde_json::from_str(f).ok())
        .unwrap_or_default();
    if failed_stages.is_empty() {
        // An abandoned run has no final event to list them: its stages that ended badly.
        failed_stages = tx
            .prepare_cached(
                "SELECT name FROM stages WHERE run_id = ? AND status IN ('failure', 'abandoned')
                 ORDER BY position",
            )
            .and_then(|mut s| {
                s.query_map([id.as_str()], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()
            })
            .map_err(db(path, what))?;
    }
    Ok(Some(RunFacts {
        pipeline,
        started_at,
        finished_at,
        duration_ms,
        failed_stages,
    }))
}

/// The end of the failed stages' stderr, each line prefixed with its stage; empty when the
/// file cannot be read (the alert is still worth sending). Reads the run file: called outside
/// the index's lock, by the delivery task.
pub fn alert_stderr_tail(events_dir: &Path, id: &RunId, stages: &[String]) -> String {
    if stages.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = stages.iter().map(String::as_str).collect();
    let tails = match stderr_tails(events_dir, id, &names, alerts::STDERR_LINES) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(run_id = %id, "cannot read the stderr tail for an alert: {e}");
            return String::new();
        }
    };
    let mut text = String::new();
    for name in &names {
        for line in tails.get(*name).map(|t| t.lines.as_slice()).unwrap_or(&[]) {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&format!("[{name}] {line}"));
        }
    }
    alerts::bounded_tail(&text)
}

pub(super) fn load_memory(
    tx: &Transaction,
    path: &Path,
    destination: &str,
    pipeline: &str,
) -> Result<Memory, IndexError> {
    let row = tx
        .prepare_cached(
            "SELECT failing, last_alert_at, held_back FROM alert_memory
             WHERE destination = ? AND pipeline = ?",
        )
        .and_then(|mut s| {
            s.query_row([destination, pipeline], |r| {
                Ok((
                    r.get::<_, bool>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .optional()
        })
        .map_err(db(path, "read an alert destination's memory"))?;
    Ok(match row {
        None => Memory::default(),
        Some((failing, last, held_back)) => Memory {
            failing,
            last_alert_at: last.as_deref().and_then(parse_timestamp),
            held_back: super::to_u64(held_back),
        },
    })
}

pub(super) fn save_memory(
    tx: &Transaction,
    path: &Path,
    destination: &str,
    pipeline: &str,
    m: &Memory,
) -> Result<(), IndexError> {
    tx.prepare_cached(
        "INSERT INTO alert_memory (destination, pipeline, failing, last_alert_at, held_back)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (destination, pipeline) DO UPDATE SET
             failing = ?3, last_alert_at = ?4, held_back = ?5",
    )
    .and_then(|mut s| {
        s.execute(params![
            destination,
            pipeline,
            m.failing,
            m.last_alert_at.map(stamp),
            super::to_i64(m.held_back)
        ])
    })
    .map_err(db(path, "remember an alert destination's state"))?;
    Ok(())
}

impl Index {
    /// Records the alerts of runs ended outside a batch (the watchdog's `abandoned`), in a
    /// transaction of their own; returns how many rows were added.
    pub fn record_alerts(
        &mut self,
        ended: &[Ended],
        ctx: &AlertContext,
    ) -> Result<usize, IndexError> {
        let p = self.path.as_path();
        let tx = self.conn.transaction().map_err(db(p, "record alerts"))?;
        let n = record(&tx, p, ended, ctx)?;
        tx.commit().map_err(db(p, "record alerts"))?;
        Ok(n)
    }

    /// Up to `limit` alerts for `destination` not sent yet whose next attempt is due at
    /// `now`, oldest first.
    pub fn due_alerts(
        &self,
        destination: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Pending>, IndexError> {
        let p = self.path.as_path();
        let what = "read the alerts to send";
        let rows = self
            .conn
            .prepare_cached(
                "SELECT id, body, attempts, at FROM alerts
                 WHERE destination = ?1 AND status = ?2 AND next_at <= ?3
                 ORDER BY seq LIMIT ?4",
            )
            .and_then(|mut s| {
                s.query_map(
                    params![
                        destination,
                        RETRYING,
                        stamp(now),
                        super::to_i64(limit as u64)
                    ],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, String>(3)?,
                        ))
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(db(p, what))?;
        let mut due = Vec::with_capacity(rows.len());
        for (id, body, attempts, at) in rows {
            // A body this version cannot read is dropped from the queue, not retried forever.
            let Ok(body) = serde_json::from_str::<AlertObject>(&body) else {
                tracing::error!(%id, "an alert's stored body cannot be read; giving it up");
                self.alert_attempted(&id, Err("its stored body cannot be read"), None)?;
                continue;
            };
            due.push(Pending {
                id,
                body,
                attempts: super::to_u64(attempts),
                at: parse_timestamp(&at).unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
            });
        }
        Ok(due)
    }

    /// Records an attempt at sending alert `id`: `sent` on success; on failure the error and
    /// either the next attempt's time (`retry_at`) or, without one, `failed`.
    pub fn alert_attempted(
        &self,
        id: &str,
        outcome: Result<(), &str>,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), IndexError> {
        let p = self.path.as_path();
        let (status, error) = match outcome {
            Ok(()) => (SENT, None),
            Err(e) if retry_at.is_some() => (RETRYING, Some(e)),
            Err(e) => (FAILED, Some(e)),
        };
        self.conn
            .prepare_cached(
                "UPDATE alerts SET status = ?2, attempts = attempts + 1,
                        last_error = COALESCE(?3, last_error),
                        next_at = COALESCE(?4, next_at)
                 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![id, status, error, retry_at.map(stamp)]))
            .map_err(db(p, "record an alert's delivery"))?;
        Ok(())
    }

    /// Stores the stderr tail the delivery task read for alert `id` into its body, before the
    /// row's first attempt (so the history and later attempts have it).
    pub fn fill_alert_tail(&self, id: &str, body: &AlertObject) -> Result<(), IndexError> {
        let body = serde_json::to_string(body).unwrap_or_default();
        self.conn
            .prepare_cached("UPDATE alerts SET body = ?2 WHERE id = ?1 AND attempts = 0")
            .and_then(|mut s| s.execute(params![id, body]))
            .map_err(db(&self.path, "store an alert's stderr tail"))?;
        Ok(())
    }

    /// How many alerts each destination has in each status, as (destination, status, count).
    pub fn count_alerts(&self) -> Result<Vec<(String, String, u64)>, IndexError> {
        self.conn
            .prepare_cached(
                "SELECT destination, status, count(*) FROM alerts GROUP BY destination, status",
            )
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, super::to_u64(r.get(2)?))))?
                    .collect()
            })
            .map_err(db(&self.path, "count the alerts"))
    }

    /// The newest `limit` alerts, newest first.
    pub fn list_alerts(&self, limit: usize) -> Result<Vec<AlertRecord>, IndexError> {
        let p = self.path.as_path();
        self.conn
            .prepare_cached(
                "SELECT id, kind, pipeline, run_id, destination, status, attempts, last_error, at
                 FROM alerts ORDER BY seq DESC LIMIT ?",
            )
            .and_then(|mut s| {
                s.query_map([super::to_i64(limit as u64)], |r| {
                    Ok(AlertRecord {
                        id: r.get(0)?,
                        kind: r.get(1)?,
                        pipeline: r.get(2)?,
                        run_id: r.get(3)?,
                        destination: r.get(4)?,
                        status: r.get(5)?,
                        attempts: super::to_u64(r.get(6)?),
                        last_error: r.get(7)?,
                        at: r.get(8)?,
                    })
                })?
                .collect()
            })
            .map_err(db(p, "list the alerts"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::config::alerts::DEFAULT_ON;
    use crate::config::{Destination, Format};
    use crate::index::testing::{batch, ev};

    fn ctx(minute: i64) -> AlertContext {
        AlertContext {
            alerts: vec![Alert {
                name: "ops".into(),
                on: DEFAULT_ON.to_vec(),
                pipelines: vec!["trans*".into()],
                destination: Destination::Command(vec!["true".into()]),
                format: Format::Json,
                repeat_every: Duration::from_secs(3600),
                retry_for: Duration::from_secs(60),
                overdue: Default::default(),
            }],
            base_url: "http://127.0.0.1:8001".into(),
            events_dir: PathBuf::from("/nonexistent"),
            now: DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::minutes(minute),
            catching_up: false,
        }
    }

    /// A whole run of `translation` ending `status`.
    fn run(id: &str, status: &str) -> Arc<crate::tail::Batch> {
        Arc::new(batch(
            id,
            0,
            vec![
                ev(
                    "pipeline",
                    "start",
                    "2026-11-29T08:15:00.000Z",
                    json!({"stages": ["a"]}),
                ),
                ev(
                    "a",
                    "start",
                    "2026-11-29T08:15:01.000Z",
                    json!({"attempt": 1}),
                ),
                ev(
                    "a",
                    status,
                    "2026-11-29T08:15:02.000Z",
                    json!({"attempt": 1}),
                ),
                ev(
                    "pipeline",
                    status,
                    "2026-11-29T08:15:03.000Z",
                    json!({"failed_stages": if status == "failure" { json!(["a"]) } else { json!([]) }}),
                ),
            ],
        ))
    }

    #[test]
    fn live_batches_record_each_alert_once_with_storm_suppression() {
        let mut ix = Index::open_in_memory().unwrap();
        assert_eq!(
            ix.apply_alerting(&[run("r1", "failure")], &[], Some(&ctx(0)))
                .unwrap(),
            1
        );
        // The same batch again (read again after a failed commit): no second row.
        assert_eq!(
            ix.apply_alerting(&[run("r1", "failure")], &[], Some(&ctx(1)))
                .unwrap(),
            0
        );
        // Failing again within the hour: held back; after it: one alert with the count.
        assert_eq!(
            ix.apply_alerting(&[run("r2", "failure")], &[], Some(&ctx(15)))
                .unwrap(),
            0
        );
        assert_eq!(
            ix.apply_alerting(&[run("r3", "failure")], &[], Some(&ctx(61)))
                .unwrap(),
            1
        );
        assert_eq!(
            ix.apply_alerting(&[run("r4", "success")], &[], Some(&ctx(62)))
                .unwrap(),
            1
        );
        // Without a context (history, a rebuild) nothing is recorded.
        assert_eq!(
            ix.apply_alerting(&[run("r5", "failure")], &[], None)
                .unwrap(),
            0
        );

        let rows = ix.list_alerts(10).unwrap();
        let kinds: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.kind.as_str(), r.run_id.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [("recovery", "r4"), ("failure", "r3"), ("failure", "r1")]
        );
        let due = ix.due_alerts("ops", ctx(62).now, 10).unwrap();
        assert_eq!(due.len(), 3);
        assert_eq!(due[1].body.failed_runs, 2, "r2 held back, reported with r3");
        assert_eq!(due[0].body.failed_stages, ["a"]);
        assert_eq!(due[0].body.url, "http://127.0.0.1:8001/#/runs/r1");
        assert!(ix.due_alerts("other", ctx(62).now, 10).unwrap().is_empty());
    }

    #[test]
    fn the_stderr_tail_is_left_to_delivery_and_kept_once_filled() {
        let mut ix = Index::open_in_memory().unwrap();
        ix.apply_alerting(&[run("r1", "failure")], &[], Some(&ctx(0)))
            .unwrap();
        let mut due = ix.due_alerts("ops", ctx(0).now, 10).unwrap();
        assert_eq!(
            due[0].body.stderr_tail, "",
            "not read inside the transaction"
        );
        due[0].body.stderr_tail = "[a] boom".into();
        ix.fill_alert_tail(&due[0].id, &due[0].body).unwrap();
        let again = ix.due_alerts("ops", ctx(0).now, 10).unwrap();
        assert_eq!(again[0].body.stderr_tail, "[a] boom");
        // Only before the first attempt: a later fill changes nothing.
        ix.alert_attempted(&again[0].id, Err("HTTP 500"), Some(ctx(0).now))
            .unwrap();
        let mut body = again[0].body.clone();
        body.stderr_tail = "other".into();
        ix.fill_alert_tail(&again[0].id, &body).unwrap();
        let kept = ix.due_alerts("ops", ctx(0).now, 10).unwrap();
        assert_eq!(kept[0].body.stderr_tail, "[a] boom");
    }

    #[test]
    fn attempts_mark_sent_retry_later_or_give_up() {
        let mut ix = Index::open_in_memory().unwrap();
        let missed = Arc::new(batch(
            "r2",
            0,
            vec![ev(
                "pipeline",
                "missed",
                "2026-11-29T08:30:00.000Z",
                json!({"scheduled_for": "2026-11-29T08:30:00Z"}),
            )],
        ));
        ix.apply_alerting(&[run("r1", "failure"), missed], &[], Some(&ctx(0)))
            .unwrap();
        let due = ix.due_alerts("ops", ctx(0).now, 10).unwrap();
        assert_eq!(due.len(), 2);
        ix.alert_attempted(&due[0].id, Ok(()), None).unwrap();
        ix.alert_attempted(&due[1].id, Err("HTTP 500"), Some(ctx(5).now))
            .unwrap();
        assert!(ix.due_alerts("ops", ctx(1).now, 10).unwrap().is_empty());
        let again = ix.due_alerts("ops", ctx(5).now, 10).unwrap();
        assert_eq!((again.len(), again[0].attempts), (1, 1));
        ix.alert_attempted(&again[0].id, Err("HTTP 502"), None)
            .unwrap();
        let rows = ix.list_alerts(10).unwrap();
        assert_eq!(rows[0].status, FAILED);
        assert_eq!(rows[0].attempts, 2);
        assert_eq!(rows[0].last_error.as_deref(), Some("HTTP 502"));
        assert_eq!(rows[1].status, SENT);
        assert!(ix.due_alerts("ops", ctx(100).now, 10).unwrap().is_empty());
        // Retention forgets the alerts of the runs it removes.
        ix.remove_runs(&[crate::index::testing::id("r1")]).unwrap();
        let left: Vec<String> = ix
            .list_alerts(10)
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(left, ["r2"]);
    }
}
