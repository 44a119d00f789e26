//! The read side of the index: runs listed and looked up for the API and `pipewatch runs`,
//! counts for metrics and the scheduler's audit, and the tailer's checkpoints.
//!
//! Runs are listed newest first by `sort_key` (the start normalized to UTC), ties broken by run
//! id; a page is a range scan of the `(sort_key, run_id)` index. A run with no event yet (only
//! a checkpoint) is not listed.

use std::path::Path;

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use super::fold::sort_key;
use super::{Index, IndexError, RUN_STATUSES, RUNNING, STAGE_STATUSES, db, parse_id, to_u64};
use crate::event::RunId;
use crate::tail::Checkpoint;

/// Which runs a list keeps: all by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only runs with this status.
    pub status: Option<String>,
    /// Only runs of this pipeline.
    pub pipeline: Option<String>,
    /// Only runs that ran on this host.
    pub host: Option<String>,
}

impl RunFilter {
    pub fn status(status: Option<&str>) -> RunFilter {
        RunFilter {
            status: status.map(str::to_string),
            ..RunFilter::default()
        }
    }
}

/// What `/metrics` says of each pipeline on each host ([`Index::pipeline_figures`]); `""`
/// stands for a run that names no pipeline, or no host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineFigures {
    /// `(pipeline, host, status, runs)`.
    pub counts: Vec<(String, String, String, u64)>,
    /// `(pipeline, host, finished_at)` of its newest successful run on that host.
    pub last_success: Vec<(String, String, String)>,
}

/// One run as `/api/runs` lists it (`docs/api.md`).
///
/// Keys whose value is unknown are `null`, not left out (but `reason` and `scheduled_for`,
/// which only some runs have).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RunSummary {
    pub run_id: RunId,
    /// The pipeline's name, from the run's events.
    #[schema(required = true)]
    pub pipeline: Option<String>,
    /// `running`, `success`, `failure`, `cancelled`, `skipped`, `missed` or `abandoned`.
    #[schema(value_type = RunStatus)]
    pub status: String,
    /// Who started it: `scheduler`, `manual`, `cli`, ….
    #[schema(required = true)]
    pub source: Option<String>,
    /// The host it ran on: its events' `host` (set by `[cluster]` forwarding), else the
    /// `data.host` of its `start` (the machine's name, as `pipewatch run` writes it).
    #[schema(required = true)]
    pub host: Option<String>,
    /// The time of its first event, as written.
    #[schema(required = true)]
    pub started_at: Option<String>,
    /// The time of its final event, as written.
    #[schema(required = true)]
    pub finished_at: Option<String>,
    #[schema(required = true)]
    pub duration_ms: Option<u64>,
    /// `data.reason` of the run's final event (`overlap`, `timeout`, `stage_failed`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a `missed` run: the occurrence that produced no run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<String>,
    /// `data.failed_stages` of the run's final event: the stages that failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_stages: Vec<String>,
    /// How many events the run's file holds so far.
    pub events: u64,
    /// The `seq` of its first event at level `error`, once it has one: where its log opens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error_seq: Option<u64>,
}

/// One stage of a run (`docs/api.md`).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StageSummary {
    pub name: String,
    /// `running`, `success`, `failure`, `skipped`, `cancelled` or `abandoned`.
    #[schema(value_type = StageStatus)]
    pub status: String,
    #[schema(required = true)]
    pub started_at: Option<String>,
    #[schema(required = true)]
    pub finished_at: Option<String>,
    #[schema(required = true)]
    pub duration_ms: Option<u64>,
    /// How many times it was started (retries included).
    pub attempts: u32,
    /// The exit code of its last attempt, once it has one.
    #[schema(required = true)]
    pub exit_code: Option<i32>,
    /// Why it ended as it did: `data.reason` of its final event (`exit`, `timeout`,
    /// `signal`, `spawn`, `needs_failed`, `run_stopped`, `user`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The signal that ended its last attempt (`reason: signal`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// For `reason: needs_failed`: the needed stage that did not succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs: Option<String>,
}

/// A run's status in the API's description: one of [`RUN_STATUSES`].
pub struct RunStatus;

impl utoipa::PartialSchema for RunStatus {
    fn schema() -> RefOr<Schema> {
        one_of(&RUN_STATUSES, "A run's status.")
    }
}

impl ToSchema for RunStatus {}

/// A stage's status in the API's description: one of [`STAGE_STATUSES`].
pub struct StageStatus;

impl utoipa::PartialSchema for StageStatus {
    fn schema() -> RefOr<Schema> {
        one_of(&STAGE_STATUSES, "A stage's status.")
    }
}

impl ToSchema for StageStatus {}

fn one_of(values: &[&str], description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .description(Some(description))
        .into()
}

/// One run with its stages, in the order they were first seen: `/api/runs/{run_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunSummary,
    pub stages: Vec<StageSummary>,
    /// The run this one retries (`data.retry_of` of its start), if it is a retry.
    #[schema(required = true, value_type = Option<RunId>)]
    pub retry_of: Option<String>,
    /// The retries of this run, newest first (at most 100).
    #[schema(value_type = Vec<RunId>)]
    pub retried_by: Vec<String>,
}

impl Index {
    /// Every file's checkpoint, for the tailer's start.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, IndexError> {
        let p = self.path.as_path();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT run_id, dev, ino, offset, lines, finished FROM runs")
            .map_err(db(p, "read checkpoints"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, bool>(5)?,
                ))
            })
            .map_err(db(p, "read checkpoints"))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, dev, ino, offset, lines, finished) = row.map_err(db(p, "read checkpoints"))?;
            out.push(Checkpoint {
                run_id: parse_id(p, &id)?,
                // Stored as the same 64 bits: identities may use the top bit.
                dev: dev as u64,
                ino: ino as u64,
                offset: to_u64(offset),
                lines: to_u64(lines),
                finished,
            });
        }
        Ok(out)
    }

    /// The runs of each pipeline on each host by status (`""` for runs that name no pipeline
    /// or no host), and when each pipeline's newest successful run on each host finished
    /// (RFC 3339, as written): `/metrics`. Only the pairs that have runs are listed.
    pub fn pipeline_figures(&self) -> Result<PipelineFigures, IndexError> {
        let p = self.path.as_path();
        let counts = self
            .conn
            .prepare_cached(
                "SELECT COALESCE(pipeline, ''), COALESCE(host, ''), status, COUNT(*) FROM runs \
                 WHERE status IS NOT NULL GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            )
            .and_then(|mut s| {
                s.query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, to_u64(r.get::<_, i64>(3)?)))
                })?
                .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db(p, "count runs by pipeline, host and status"))?;
        let last_success = self
            .conn
            .prepare_cached(
                "SELECT COALESCE(pipeline, ''), COALESCE(host, ''), MAX(finished_at) FROM runs \
                 WHERE status = 'success' AND finished_at IS NOT NULL \
                 GROUP BY 1, 2 ORDER BY 1, 2",
            )
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db(p, "find each pipeline's last success on each host"))?;
        Ok(PipelineFigures {
            counts,
            last_success,
        })
    }

    /// Runs started by a scheduler (`source` `scheduler` or `catchup`) whose start lies in
    /// `[from, to]` (RFC 3339); with `include_missed`, recorded `missed` ones count too (the
    /// occurrence auditor), without, only runs that really started (the cadence). With
    /// `pipeline`, only that pipeline's runs.
    pub fn scheduled_runs_between(
        &self,
        from: &str,
        to: &str,
        include_missed: bool,
        pipeline: Option<&str>,
    ) -> Result<u64, IndexError> {
        Ok(self.scheduled_span(from, to, include_missed, pipeline)?.0)
    }

    /// The runs started by a scheduler (`source` `scheduler` or `catchup`) whose start lies in
    /// `[from, to]` (RFC 3339): how many, and the first and last start (sort keys). With
    /// `include_missed`, recorded `missed` occurrences count too (their key is the occurrence
    /// itself). The scheduler status's cadence measures its window and intervals from them.
    /// With `pipeline`, only that pipeline's runs.
    pub fn scheduled_span(
        &self,
        from: &str,
        to: &str,
        include_missed: bool,
        pipeline: Option<&str>,
    ) -> Result<(u64, Option<String>, Option<String>), IndexError> {
        let p = self.path.as_path();
        self.conn
            .prepare_cached(
                "SELECT COUNT(*), MIN(sort_key), MAX(sort_key) FROM runs
                 WHERE sort_key >= ?1 AND sort_key <= ?2
                 AND source IN ('scheduler', 'catchup') AND (?3 OR status IS NOT 'missed')
                 AND (?4 IS NULL OR pipeline = ?4)",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![sort_key(from), sort_key(to), include_missed, pipeline],
                    |r| Ok((to_u64(r.get::<_, i64>(0)?), r.get(1)?, r.get(2)?)),
                )
            })
            .map_err(db(p, "measure scheduled runs"))
    }

    /// How far into a run's file the index has read (the checkpoint's byte offset).
    pub fn offset_of(&self, id: &RunId) -> Result<Option<u64>, IndexError> {
        let p = self.path.as_path();
        self.conn
            .prepare_cached("SELECT offset FROM runs WHERE run_id = ?")
            .and_then(|mut s| {
                s.query_row([id.as_str()], |r| r.get::<_, i64>(0))
                    .optional()
            })
            .map(|o| o.map(to_u64))
            .map_err(db(p, "read a run's offset"))
    }

    /// Runs newest first: by start time, then run id, both descending. `before` pages back:
    /// only runs strictly older than that run (none if it is not in the index); `filter`
    /// keeps only runs with its status, of its pipeline and on its host.
    pub fn list_runs(
        &self,
        limit: usize,
        before: Option<&RunId>,
        filter: &RunFilter,
    ) -> Result<Vec<RunSummary>, IndexError> {
        let p = self.path.as_path();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let cursor = match before {
            None => None,
            Some(id) => {
                let key: Option<String> = self
                    .conn
                    .prepare_cached("SELECT sort_key FROM runs WHERE run_id = ?")
                    .and_then(|mut s| s.query_row([id.as_str()], |r| r.get(0)).optional())
                    .map_err(db(p, "look up the page cursor"))?;
                match key {
                    Some(key) => Some((key, id.as_str())),
                    None => return Ok(Vec::new()),
                }
            }
        };
        // One statement per combination of conditions, each a range scan of an index that
        // ends in (sort_key, run_id): runs_by_start, runs_by_status, runs_by_pipeline or
        // runs_by_host.
        let mut sql = String::from(
            "SELECT run_id, pipeline, status, source, started_at, finished_at, duration_ms, \
             reason, scheduled_for, failed_stages, events, first_error_seq, host FROM runs \
             WHERE status IS NOT NULL",
        );
        let mut args: Vec<&dyn rusqlite::ToSql> = Vec::new();
        if let Some(s) = &filter.status {
            sql.push_str(" AND status = ?");
            args.push(s);
        }
        if let Some(name) = &filter.pipeline {
            sql.push_str(" AND pipeline = ?");
            args.push(name);
        }
        if let Some(host) = &filter.host {
            sql.push_str(" AND host = ?");
            args.push(host);
        }
        if let Some((key, id)) = &cursor {
            sql.push_str(" AND (sort_key, run_id) < (?, ?)");
            args.push(key);
            args.push(id);
        }
        sql.push_str(" ORDER BY sort_key DESC, run_id DESC LIMIT ?");
        args.push(&limit);
        let what = "list runs";
        let rows = self
            .conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_map(rusqlite::params_from_iter(args), summary_row)
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            })
            .map_err(db(p, what))?;
        rows.into_iter().map(|r| r.into_summary(p)).collect()
    }

    /// One run with its stages; `None` if the index has no event of it.
    pub fn get_run(&self, id: &RunId) -> Result<Option<RunDetail>, IndexError> {
        let p = self.path.as_path();
        let row = self
            .conn
            .prepare_cached(
                "SELECT run_id, pipeline, status, source, started_at, finished_at, duration_ms,
                        reason, scheduled_for, failed_stages, events, first_error_seq, host
                 FROM runs WHERE run_id = ? AND status IS NOT NULL",
            )
            .and_then(|mut s| s.query_row([id.as_str()], summary_row).optional())
            .map_err(db(p, "read a run"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let run = row.into_summary(p)?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT name, status, started_at, finished_at, duration_ms, attempts, exit_code,
                        reason, signal, needs
                 FROM stages WHERE run_id = ? ORDER BY position",
            )
            .map_err(db(p, "read a run's stages"))?;
        let stages = stmt
            .query_map([id.as_str()], |r| {
                Ok(StageSummary {
                    name: r.get(0)?,
                    status: r.get(1)?,
                    started_at: r.get(2)?,
                    finished_at: r.get(3)?,
                    duration_ms: r
                        .get::<_, Option<i64>>(4)?
                        .and_then(|d| u64::try_from(d).ok()),
                    attempts: u32::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
                    exit_code: r
                        .get::<_, Option<i64>>(6)?
                        .and_then(|c| i32::try_from(c).ok()),
                    reason: r.get(7)?,
                    signal: r
                        .get::<_, Option<i64>>(8)?
                        .and_then(|c| i32::try_from(c).ok()),
                    needs: r.get(9)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(db(p, "read a run's stages"))?;
        let retry_of: Option<String> = self
            .conn
            .prepare_cached("SELECT retry_of FROM runs WHERE run_id = ?")
            .and_then(|mut s| s.query_row([id.as_str()], |r| r.get(0)))
            .map_err(db(p, "read what a run retries"))?;
        let retried_by = self
            .conn
            .prepare_cached(
                "SELECT run_id FROM runs WHERE retry_of = ? AND status IS NOT NULL
                 ORDER BY sort_key DESC LIMIT 100",
            )
            .and_then(|mut s| {
                s.query_map([id.as_str()], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db(p, "read a run's retries"))?;
        Ok(Some(RunDetail {
            run,
            stages,
            retry_of,
            retried_by,
        }))
    }

    /// The runs whose status is `running`, for the liveness check.
    pub fn running_runs(&self) -> Result<Vec<RunId>, IndexError> {
        let p = self.path.as_path();
        let ids = self
            .conn
            .prepare_cached("SELECT run_id FROM runs WHERE status = ?")
            .and_then(|mut s| {
                s.query_map([RUNNING], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db(p, "list running runs"))?;
        ids.iter().map(|id| parse_id(p, id)).collect()
    }

    /// How many runs [`Index::list_runs`] can show (runs with at least one event).
    pub fn count_runs(&self) -> Result<u64, IndexError> {
        self.conn
            .prepare_cached("SELECT count(*) FROM runs WHERE status IS NOT NULL")
            .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
            .map(to_u64)
            .map_err(db(&self.path, "count runs"))
    }
}

/// A `runs` row as the queries read it, before its run id is checked.
struct SummaryRow {
    run_id: String,
    pipeline: Option<String>,
    status: String,
    source: Option<String>,
    started_at: Option<String>,
    finished_at: Option<String>,
    duration_ms: Option<i64>,
    reason: Option<String>,
    scheduled_for: Option<String>,
    failed_stages: Option<String>,
    events: i64,
    first_error_seq: Option<i64>,
    host: Option<String>,
}

fn summary_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SummaryRow> {
    Ok(SummaryRow {
        run_id: r.get(0)?,
        pipeline: r.get(1)?,
        status: r.get(2)?,
        source: r.get(3)?,
        started_at: r.get(4)?,
        finished_at: r.get(5)?,
        duration_ms: r.get(6)?,
        reason: r.get(7)?,
        scheduled_for: r.get(8)?,
        failed_stages: r.get(9)?,
        events: r.get(10)?,
        first_error_seq: r.get(11)?,
        host: r.get(12)?,
    })
}

impl SummaryRow {
    fn into_summary(self, path: &Path) -> Result<RunSummary, IndexError> {
        Ok(RunSummary {
            run_id: parse_id(path, &self.run_id)?,
            pipeline: self.pipeline,
            status: self.status,
            source: self.source,
            host: self.host,
            started_at: self.started_at,
            finished_at: self.finished_at,
            duration_ms: self.duration_ms.and_then(|d| u64::try_from(d).ok()),
            reason: self.reason,
            scheduled_for: self.scheduled_for,
            // Written by the fold as a JSON array of strings; anything else reads as none.
            failed_stages: self
                .failed_stages
                .and_then(|j| serde_json::from_str(&j).ok())
                .unwrap_or_default(),
            events: to_u64(self.events),
            first_error_seq: self.first_error_seq.and_then(|s| u64::try_from(s).ok()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::format_timestamp;
    use crate::index::testing::{batch, ev, id};
    use serde_json::json;

    /// Runs `r00000`… starting every 10 s, two per start time (ties broken by run id), every
    /// third one failed.
    fn many_runs(ix: &mut Index, n: usize) -> Vec<(String, String)> {
        let base = chrono::Utc::now() - chrono::Duration::days(30);
        let mut runs = Vec::new();
        for i in 0..n {
            let ts = format_timestamp(base + chrono::Duration::seconds(10 * (i / 2) as i64));
            let name = format!("r{:05}", (i * 7919) % n); // ids not in time order
            let status = if i % 3 == 0 { "failure" } else { "success" };
            ix.apply(&batch(
                &name,
                0,
                vec![
                    ev("pipeline", "start", &ts, json!(null)),
                    ev("pipeline", status, &ts, json!(null)),
                ],
            ))
            .unwrap();
            runs.push((ts, name));
        }
        runs
    }

    #[test]
    fn pages_newest_first_with_before_and_status() {
        let mut ix = Index::open_in_memory().unwrap();
        let n = 3000;
        let mut runs = many_runs(&mut ix, n);
        runs.sort();
        runs.reverse();
        let expected: Vec<_> = runs.iter().map(|(_, id)| id.clone()).collect();
        assert_eq!(ix.count_runs().unwrap(), n as u64);

        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = ix
                .list_runs(128, before.as_ref(), &crate::index::RunFilter::default())
                .unwrap();
            if page.is_empty() {
                break;
            }
            before = page.last().map(|r| r.run_id.clone());
            seen.extend(page.into_iter().map(|r| r.run_id.to_string()));
        }
        assert_eq!(seen, expected);

        let failed: Vec<_> = ix
            .list_runs(n, None, &crate::index::RunFilter::status(Some("failure")))
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(failed.len(), n / 3);
        let cursor = &failed[99];
        let page = ix
            .list_runs(
                50,
                Some(cursor),
                &crate::index::RunFilter::status(Some("failure")),
            )
            .unwrap();
        let ids: Vec<_> = page.iter().map(|r| r.run_id.clone()).collect();
        assert_eq!(ids, failed[100..150]);
        assert!(page.iter().all(|r| r.status == "failure"));
        assert!(
            ix.list_runs(10, None, &crate::index::RunFilter::status(Some("running")))
                .unwrap()
                .is_empty()
        );
        assert!(
            ix.list_runs(
                10,
                Some(&id("unknown")),
                &crate::index::RunFilter::default()
            )
            .unwrap()
            .is_empty()
        );
        assert!(
            ix.list_runs(0, None, &crate::index::RunFilter::default())
                .unwrap()
                .is_empty()
        );

        ix.remove_runs(&failed).unwrap();
        assert_eq!(ix.count_runs().unwrap(), (n - n / 3) as u64);
        assert!(ix.get_run(&failed[0]).unwrap().is_none());
    }

    #[test]
    fn pages_are_index_range_scans() {
        let ix = Index::open_in_memory().unwrap();
        let queries = [
            "SELECT run_id FROM runs WHERE status IS NOT NULL ORDER BY sort_key DESC, run_id DESC LIMIT 50",
            "SELECT run_id FROM runs WHERE status IS NOT NULL AND (sort_key, run_id) < ('k', 'r') ORDER BY sort_key DESC, run_id DESC LIMIT 50",
            "SELECT run_id FROM runs WHERE status = 'failure' AND (sort_key, run_id) < ('k', 'r') ORDER BY sort_key DESC, run_id DESC LIMIT 50",
            "SELECT run_id FROM runs WHERE status IS NOT NULL AND host = 'etl-01' AND (sort_key, run_id) < ('k', 'r') ORDER BY sort_key DESC, run_id DESC LIMIT 50",
        ];
        for q in queries {
            let plan: Vec<String> = ix
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {q}"))
                .unwrap()
                .query_map([], |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let plan = plan.join("; ");
            assert!(
                plan.contains("USING INDEX") || plan.contains("USING COVERING INDEX"),
                "{q}: {plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "{q}: {plan}");
        }
    }
}
