//! The index's view of pipelines: which pipelines have runs (a pipeline removed from the
//! configuration keeps its history), and for one pipeline its last run, its last few runs
//! (the dashboard's status strip), its runs going now and its figures over a window
//! (`/api/pipelines`, `pipewatch pipelines`).
//!
//! Every query here is a range scan of `runs_by_pipeline (pipeline, sort_key, run_id)`, so
//! its cost grows with the pipeline's runs in the window, not with the history.

use rusqlite::params;
use serde::Serialize;
use utoipa::ToSchema;

use super::fold::sort_key;
use super::{Index, IndexError, RunFilter, RunSummary, db, parse_id, to_i64, to_u64};
use crate::event::RunId;

/// A pipeline's runs over a window (the last 24 hours for the API).
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct WindowStats {
    /// Runs that started in the window (recorded misses are not runs).
    pub runs: u64,
    pub success: u64,
    pub failure: u64,
    /// Occurrences of the schedule that produced no run.
    pub missed: u64,
    /// The median duration of the runs that ended `success` or `failure`; `null` with none.
    #[schema(required = true)]
    pub median_duration_ms: Option<u64>,
}

/// One run of a pipeline's status strip.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RecentRun {
    pub run_id: RunId,
    #[schema(value_type = crate::index::RunStatus)]
    pub status: String,
}

/// What the index says of one pipeline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineRuns {
    /// Its newest run, recorded misses left out.
    pub last_run: Option<RunSummary>,
    /// Its last runs (20, `RECENT`), recorded misses included, oldest first.
    pub recent: Vec<RecentRun>,
    /// Its runs whose status is `running`, newest first.
    pub running: Vec<RunSummary>,
    pub stats: WindowStats,
}

/// How many runs a pipeline can have `running` in the answer (a pipeline with
/// `overlap = "parallel"` has a few at most in practice).
const MAX_RUNNING: usize = 100;
/// How many runs back the newest one that is not a recorded miss is looked for.
const LAST_LOOKBACK: usize = 20;
/// How many runs the status strip shows.
pub const RECENT: usize = 20;

impl Index {
    /// The names of the pipelines that have at least one run, sorted: a loose index scan,
    /// one lookup per name, however many runs each has.
    pub fn pipeline_names(&self) -> Result<Vec<String>, IndexError> {
        let p = self.path.as_path();
        self.conn
            .prepare_cached(
                "WITH RECURSIVE names(name) AS (
                     SELECT MIN(pipeline) FROM runs WHERE pipeline IS NOT NULL
                     UNION ALL
                     SELECT (SELECT MIN(pipeline) FROM runs WHERE pipeline > names.name)
                     FROM names WHERE names.name IS NOT NULL
                 )
                 SELECT name FROM names WHERE name IS NOT NULL",
            )
            .and_then(|mut s| {
                s.query_map([], |r| r.get::<_, String>(0))
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            })
            .map_err(db(p, "list the pipelines with runs"))
    }

    /// `pipeline`'s last run, running runs and the figures of its runs since `since`
    /// (RFC 3339).
    pub fn pipeline_runs(&self, pipeline: &str, since: &str) -> Result<PipelineRuns, IndexError> {
        let of = |status: Option<&str>| RunFilter {
            status: status.map(str::to_string),
            pipeline: Some(pipeline.to_string()),
            host: None,
        };
        let last_run = self
            .list_runs(LAST_LOOKBACK, None, &of(None))?
            .into_iter()
            .find(|r| r.status != "missed");
        let running = self.list_runs(MAX_RUNNING, None, &of(Some("running")))?;
        Ok(PipelineRuns {
            last_run,
            recent: self.recent_runs(pipeline)?,
            running,
            stats: self.window_stats(pipeline, since)?,
        })
    }

    /// The pipeline's last [`RECENT`] runs, oldest first: one range scan from the newest end
    /// of `runs_by_pipeline`.
    fn recent_runs(&self, pipeline: &str) -> Result<Vec<RecentRun>, IndexError> {
        let p = self.path.as_path();
        let rows: Vec<(String, String)> = self
            .conn
            .prepare_cached(
                "SELECT run_id, status FROM runs
                 WHERE pipeline = ?1 AND status IS NOT NULL
                 ORDER BY sort_key DESC, run_id DESC LIMIT ?2",
            )
            .and_then(|mut s| {
                s.query_map(params![pipeline, to_i64(RECENT as u64)], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            })
            .map_err(db(p, "list a pipeline's recent runs"))?;
        rows.into_iter()
            .rev()
            .map(|(id, status)| {
                Ok(RecentRun {
                    run_id: parse_id(p, &id)?,
                    status,
                })
            })
            .collect()
    }

    fn window_stats(&self, pipeline: &str, since: &str) -> Result<WindowStats, IndexError> {
        let p = self.path.as_path();
        let rows: Vec<(String, Option<i64>)> = self
            .conn
            .prepare_cached(
                "SELECT status, duration_ms FROM runs
                 WHERE pipeline = ?1 AND sort_key >= ?2 AND status IS NOT NULL",
            )
            .and_then(|mut s| {
                s.query_map(params![pipeline, sort_key(since)], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            })
            .map_err(db(p, "count a pipeline's runs"))?;
        let mut stats = WindowStats::default();
        let mut durations = Vec::new();
        for (status, duration) in rows {
            match status.as_str() {
                "missed" => stats.missed += 1,
                "success" => stats.success += 1,
                "failure" => stats.failure += 1,
                _ => {}
            }
            if status != "missed" {
                stats.runs += 1;
            }
            if matches!(status.as_str(), "success" | "failure")
                && let Some(d) = duration
            {
                durations.push(to_u64(d));
            }
        }
        stats.median_duration_ms = median(&mut durations);
        Ok(stats)
    }
}

/// The middle value (the lower of the two middle ones for an even count).
fn median(values: &mut [u64]) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(values[(values.len() - 1) / 2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::testing::{batch, ev};

    /// Runs `events` of `pipeline` into the index as run `id`.
    fn apply(ix: &mut Index, id: &str, pipeline: &str, events: Vec<crate::event::Event>) {
        let events = events
            .into_iter()
            .map(|mut e| {
                e.pipeline = Some(pipeline.to_string());
                e
            })
            .collect();
        ix.apply(&batch(id, 0, events)).unwrap();
    }

    #[test]
    fn names_last_run_running_and_the_day_of_one_pipeline() {
        let mut ix = Index::open_in_memory().unwrap();
        let run = |ix: &mut Index, id: &str, pipeline: &str, minute: u32, end: Option<&str>| {
            let t = |s: u32| format!("2026-11-29T08:{minute:02}:{s:02}.000Z");
            let mut events = vec![ev("pipeline", "start", &t(0), serde_json::Value::Null)];
            if let Some(end) = end {
                events.push(ev("pipeline", end, &t(minute + 1), serde_json::Value::Null));
            }
            apply(ix, id, pipeline, events);
        };
        run(&mut ix, "a1", "sync", 1, Some("success"));
        run(&mut ix, "a2", "sync", 2, Some("failure"));
        run(&mut ix, "a3", "sync", 3, Some("success"));
        run(&mut ix, "a4", "sync", 4, None);
        run(&mut ix, "b1", "export", 5, Some("success"));
        run(&mut ix, "old", "sync", 0, Some("failure"));
        assert_eq!(ix.pipeline_names().unwrap(), ["export", "sync"]);

        let sync = ix.pipeline_runs("sync", "2026-11-29T08:01:00Z").unwrap();
        assert_eq!(sync.last_run.unwrap().run_id.as_str(), "a4");
        let strip: Vec<_> = sync
            .recent
            .iter()
            .map(|r| (r.run_id.as_str(), r.status.as_str()))
            .collect();
        assert_eq!(
            strip,
            [
                ("old", "failure"),
                ("a1", "success"),
                ("a2", "failure"),
                ("a3", "success"),
                ("a4", "running")
            ]
        );
        assert_eq!(sync.running.len(), 1);
        assert_eq!(
            sync.stats,
            WindowStats {
                runs: 4,
                success: 2,
                failure: 1,
                missed: 0,
                // 2 s, 3 s, 4 s
                median_duration_ms: Some(3000),
            }
        );
        let export = ix.pipeline_runs("export", "2026-11-29T00:00:00Z").unwrap();
        assert_eq!(export.stats.runs, 1);
        assert!(export.running.is_empty());
        let none = ix.pipeline_runs("gone", "2026-11-29T00:00:00Z").unwrap();
        assert_eq!(none, PipelineRuns::default());
    }

    #[test]
    fn the_strip_keeps_the_last_runs_oldest_first() {
        let mut ix = Index::open_in_memory().unwrap();
        for i in 0..RECENT + 5 {
            let t = format!("2026-11-29T09:{i:02}:00.000Z");
            let events = vec![
                ev("pipeline", "start", &t, serde_json::Value::Null),
                ev("pipeline", "success", &t, serde_json::Value::Null),
            ];
            apply(&mut ix, &format!("r{i:02}"), "sync", events);
        }
        let recent = ix
            .pipeline_runs("sync", "2026-11-29T00:00:00Z")
            .unwrap()
            .recent;
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0].run_id.as_str(), "r05");
        assert_eq!(
            recent[RECENT - 1].run_id.as_str(),
            format!("r{:02}", RECENT + 4)
        );
    }

    #[test]
    fn median_takes_the_lower_middle() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [5]), Some(5));
        assert_eq!(median(&mut [9, 1, 5]), Some(5));
        assert_eq!(median(&mut [4, 1, 3, 2]), Some(2));
    }
}
