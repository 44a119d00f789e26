//! The `summary` alert: one alert that stands for every alert a destination was due while
//! `serve` caught up on runs that ended while it was down (`docs/alerts.md`, "After an
//! outage"). Pure: the index gathers the alerts held and the pipelines' newest runs
//! (`index::catchup`), this builds the object and its text.
//!
//! Its id is derived from the destination and the ids of the alerts it stands for, so folding
//! the same held alerts again (a crash before the fold was committed) makes the same summary.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::{AlertObject, Markup};
use crate::event::parse_timestamp;

/// The kind of a summary alert. Not a value of `on`: a destination gets the summary of
/// whichever kinds it asked for.
pub const SUMMARY: &str = "summary";

/// What a summary stands for (`AlertObject::summary`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Summary {
    /// How many alerts it stands for (they stay in the history as `summarized`).
    pub alerts: u64,
    /// When the first run it covers ended (UTC, milliseconds).
    pub first_at: Option<String>,
    /// When the last run it covers ended.
    pub last_at: Option<String>,
    /// One entry per pipeline, by name.
    pub pipelines: Vec<PipelineSummary>,
}

/// One pipeline's part of a summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PipelineSummary {
    pub pipeline: String,
    /// The alerts it stands for, by kind (`failure`, `recovery`, `missed`, `abandoned`, ...).
    pub alerts: BTreeMap<String, u64>,
    /// How many runs failed: those the failure alerts reported, and those `repeat_every` held
    /// back since.
    pub failed_runs: u64,
    /// The pipeline's newest run that has ended.
    pub newest_run: Option<NewestRun>,
}

/// A pipeline's newest ended run, as a summary names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewestRun {
    pub run_id: String,
    pub status: String,
    pub finished_at: Option<String>,
    /// The run's page on the dashboard.
    pub url: String,
    pub failed_stages: Vec<String>,
}

/// The id of the summary of the alerts `ids` for `destination`: 16 hex digits of FNV-1a, as
/// [`super::alert_id`].
pub fn summary_id(destination: &str, ids: &[String]) -> String {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    for part in [destination, SUMMARY]
        .into_iter()
        .chain(ids.iter().map(String::as_str))
    {
        h.write(part.as_bytes());
        h.write_u8(0);
    }
    format!("{:016x}", h.finish())
}

/// What the index gathered for one destination's summary.
#[derive(Debug, Clone, Default)]
pub struct Held {
    /// The held alerts, oldest first: their ids and bodies.
    pub alerts: Vec<(String, AlertObject)>,
    /// Per pipeline, the failures `repeat_every` held back after its last failure alert.
    pub held_back: BTreeMap<String, u64>,
    /// Per pipeline of the held alerts, its newest ended run.
    pub newest: BTreeMap<String, NewestRun>,
}

/// The summary alert standing for `held`, made at `now`. `url` is where it links to (the
/// dashboard's alerts view). The newest run of all is its `run_id`, and the one pipeline its
/// `pipeline` when it is about one only.
pub fn summarize(destination: &str, held: &Held, url: &str, now: DateTime<Utc>) -> AlertObject {
    let ids: Vec<String> = held.alerts.iter().map(|(id, _)| id.clone()).collect();
    let mut pipelines: BTreeMap<&str, PipelineSummary> = BTreeMap::new();
    let mut times: Vec<DateTime<Utc>> = Vec::new();
    for (_, body) in &held.alerts {
        let p = pipelines
            .entry(body.pipeline.as_str())
            .or_insert_with(|| PipelineSummary {
                pipeline: body.pipeline.clone(),
                alerts: BTreeMap::new(),
                failed_runs: 0,
                newest_run: None,
            });
        *p.alerts.entry(body.kind.clone()).or_default() += 1;
        if body.kind == "failure" {
            p.failed_runs += body.failed_runs;
        }
        times.extend(
            body.finished_at
                .as_deref()
                .or(Some(body.at.as_str()))
                .and_then(parse_timestamp),
        );
    }
    for (name, p) in &mut pipelines {
        p.failed_runs += held.held_back.get(*name).copied().unwrap_or(0);
        p.newest_run = held.newest.get(*name).cloned();
        times.extend(
            p.newest_run
                .as_ref()
                .and_then(|r| r.finished_at.as_deref())
                .and_then(parse_timestamp),
        );
    }
    let newest = pipelines
        .values()
        .filter_map(|p| p.newest_run.as_ref())
        .max_by_key(|r| r.finished_at.as_deref().and_then(parse_timestamp))
        .map(|r| r.run_id.clone());
    let stamp = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    let pipeline = match pipelines.keys().collect::<Vec<_>>().as_slice() {
        [one] => one.to_string(),
        _ => String::new(),
    };
    let pipelines: Vec<PipelineSummary> = pipelines.into_values().collect();
    AlertObject {
        id: summary_id(destination, &ids),
        kind: SUMMARY.to_string(),
        pipeline,
        run_id: newest.unwrap_or_default(),
        url: url.to_string(),
        at: stamp(&now),
        failed_runs: pipelines.iter().map(|p| p.failed_runs).sum(),
        summary: Some(Summary {
            alerts: ids.len() as u64,
            first_at: times.iter().min().map(stamp),
            last_at: times.iter().max().map(stamp),
            pipelines,
        }),
        ..AlertObject::default()
    }
}

/// The Slack text of a summary: how many alerts over which time, then a line per pipeline
/// with its counts and its newest run.
pub(super) fn text(alert: &AlertObject, markup: Markup) -> String {
    let Some(s) = &alert.summary else {
        return format!("pipewatch: a summary of alerts {}", markup.link(&alert.url));
    };
    let span = match (&s.first_at, &s.last_at) {
        (Some(a), Some(b)) if a != b => format!(" from {a} to {b}"),
        (Some(a), _) => format!(" at {a}"),
        _ => String::new(),
    };
    let mut text = format!(
        "pipewatch: {} alerts while the dashboard was away{span}, summarized",
        s.alerts
    );
    for p in &s.pipelines {
        let counts: Vec<String> = p.alerts.iter().map(|(k, n)| format!("{n} {k}")).collect();
        text.push_str(&format!("\n• {}: {}", p.pipeline, counts.join(", ")));
        if p.failed_runs > 0 {
            text.push_str(&format!("; {} failed runs", p.failed_runs));
        }
        if let Some(r) = &p.newest_run {
            text.push_str(&format!("; newest run {} {}", r.run_id, r.status));
            if !r.failed_stages.is_empty() {
                text.push_str(&format!(" (failed stages: {})", r.failed_stages.join(", ")));
            }
            text.push_str(&format!(" {}", markup.link(&r.url)));
        }
    }
    text.push_str(&format!("\n{}", markup.link(&alert.url)));
    text
}

/// A summary's one line (an e-mail's subject): how many alerts it stands for.
pub(super) fn headline(alert: &AlertObject) -> String {
    match &alert.summary {
        Some(s) => format!(
            "pipewatch: {} alerts while the dashboard was away, summarized",
            s.alerts
        ),
        None => "pipewatch: a summary of alerts".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(pipeline: &str, kind: &str, run: &str, failed_runs: u64, minute: u32) -> AlertObject {
        AlertObject {
            id: format!("{pipeline}-{kind}-{run}"),
            kind: kind.into(),
            pipeline: pipeline.into(),
            run_id: run.into(),
            status: kind.into(),
            started_at: None,
            finished_at: Some(format!("2026-12-03T02:{minute:02}:00.000Z")),
            duration_ms: None,
            failed_stages: vec!["a".into()],
            stderr_tail: String::new(),
            url: format!("http://h/#/runs/{run}"),
            at: "2026-12-03T09:00:00.000Z".into(),
            failed_runs,
            scheduled_at: None,
            threshold_ms: None,
            median_ms: None,
            summary: None,
        }
    }

    fn newest(run: &str, minute: u32) -> NewestRun {
        NewestRun {
            run_id: run.into(),
            status: "failure".into(),
            finished_at: Some(format!("2026-12-03T02:{minute:02}:00.000Z")),
            url: format!("http://h/#/runs/{run}"),
            failed_stages: vec!["a".into()],
        }
    }

    #[test]
    fn a_summary_counts_per_pipeline_and_kind_and_names_the_newest_runs() {
        let mut held = Held::default();
        for (p, k, r, n, m) in [
            ("etl", "failure", "e1", 1, 1),
            ("report", "failure", "r1", 1, 2),
            ("report", "recovery", "r2", 0, 3),
            ("etl", "abandoned", "e9", 0, 40),
        ] {
            let b = body(p, k, r, n, m);
            held.alerts.push((b.id.clone(), b));
        }
        held.held_back.insert("etl".into(), 29);
        held.newest.insert("etl".into(), newest("e30", 45));
        held.newest.insert("report".into(), newest("r2", 3));
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let s = summarize("ops", &held, "http://h/#/alerts", now);
        assert_eq!(s.kind, SUMMARY);
        assert_eq!(s.pipeline, "", "two pipelines");
        assert_eq!(s.run_id, "e30", "the newest run of all");
        assert_eq!(s.failed_runs, 31);
        let sum = s.summary.as_ref().unwrap();
        assert_eq!(sum.alerts, 4);
        assert_eq!(sum.first_at.as_deref(), Some("2026-12-03T02:01:00.000Z"));
        assert_eq!(sum.last_at.as_deref(), Some("2026-12-03T02:45:00.000Z"));
        let etl = &sum.pipelines[0];
        assert_eq!(etl.pipeline, "etl");
        assert_eq!(etl.failed_runs, 30);
        assert_eq!(etl.alerts["failure"], 1);
        assert_eq!(etl.alerts["abandoned"], 1);
        assert_eq!(etl.newest_run.as_ref().unwrap().run_id, "e30");
        assert_eq!(sum.pipelines[1].alerts["recovery"], 1);

        // The same held alerts make the same id; others another.
        assert_eq!(summarize("ops", &held, "u", now).id, s.id);
        assert_ne!(summarize("dev", &held, "u", now).id, s.id);
        held.alerts.pop();
        assert_ne!(summarize("ops", &held, "u", now).id, s.id);

        let text = s.slack_text();
        for part in [
            "4 alerts",
            "etl: 1 abandoned, 1 failure; 30 failed runs",
            "newest run e30 failure (failed stages: a) <http://h/#/runs/e30>",
            "report: 1 failure, 1 recovery",
            "<http://h/#/alerts>",
        ] {
            assert!(text.contains(part), "{part:?} in {text}");
        }
        // JSON receivers get the summary; other alerts carry no such field.
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["summary"]["pipelines"][0]["failed_runs"], 30);
        let plain = serde_json::to_value(body("etl", "failure", "e1", 1, 1)).unwrap();
        assert!(plain.get("summary").is_none());
    }
}
