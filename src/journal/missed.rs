//! The record of a scheduled occurrence that got no run: a run file of its own whose only
//! event is `missed` (`data.scheduled_for`, `data.reason`), so history shows it like any run.
//! Written by the dashboard's scheduler (the built-in timer's catch-up and the occurrence
//! auditor). Its run id is derived from the occurrence, so it is written at most once,
//! whoever records it.

use std::path::Path;

use chrono::{DateTime, Utc};

use super::Journal;
use crate::event::{Data, Level, PIPELINE_STAGE, RunId, format_timestamp, kind};

/// The run id recorded for a missed occurrence.
pub fn missed_run_id(at: DateTime<Utc>) -> RunId {
    RunId::parse(&format!("{}-missed", at.format("%Y%m%dT%H%M%SZ")))
        .unwrap_or_else(|_| RunId::generate(at))
}

/// Writes the `missed` run for the occurrence `at` (once: an existing file means it was
/// recorded already).
pub fn record_missed(events_dir: &Path, pipeline: &str, at: DateTime<Utc>, why: &str) {
    let id = missed_run_id(at);
    match Journal::create(events_dir, &id, pipeline, "scheduler") {
        Ok(journal) => {
            let due = format_timestamp(at);
            let result = journal.emit(
                PIPELINE_STAGE,
                kind::MISSED,
                Level::Warn,
                &format!("the scheduled run for {due} did not happen ({why})"),
                &Data {
                    scheduled_for: Some(&due),
                    reason: Some(why),
                    ..Data::default()
                },
            );
            match result {
                Ok(()) => tracing::warn!(scheduled_for = %due, "occurrence missed: {why}"),
                Err(e) => tracing::error!("cannot record a missed occurrence: {e}"),
            }
        }
        Err(_) if events_dir.join(id.file_name()).exists() => {}
        Err(e) => tracing::error!("cannot record a missed occurrence: {e}"),
    }
}
