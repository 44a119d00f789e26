//! What the index tests share: events as pipewatch writes them, and batches of them.

use std::sync::Arc;

use serde_json::json;

use super::{RunDetail, StageSummary};
use crate::event::{Event, Published, RunId};
use crate::tail::{Batch, Checkpoint};

pub(super) fn id(s: &str) -> RunId {
    RunId::parse(s).unwrap()
}

/// An event as pipewatch writes it.
pub(super) fn ev(stage: &str, event: &str, ts: &str, data: serde_json::Value) -> Event {
    let mut v = json!({
        "run_id": "ignored", "pipeline": "translation", "source": "scheduler",
        "stage": stage, "event": event, "timestamp": ts, "msg": "m",
    });
    if !data.is_null() {
        v["data"] = data;
    }
    serde_json::from_value(v).unwrap()
}

/// A batch of `events` for `run`, numbered from `first_seq`, with a matching checkpoint.
pub(super) fn batch(run: &str, first_seq: u64, events: Vec<Event>) -> Batch {
    let finished = events.iter().any(Event::is_run_terminal);
    let events: Vec<_> = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| Arc::new(Published::new(id(run), first_seq + i as u64, e)))
        .collect();
    let lines = first_seq + events.len() as u64;
    Batch {
        checkpoint: Checkpoint {
            run_id: id(run),
            dev: 1,
            ino: 2,
            offset: lines * 100,
            lines,
            finished,
        },
        events,
        malformed: 0,
    }
}

pub(super) fn stage<'a>(d: &'a RunDetail, name: &str) -> &'a StageSummary {
    d.stages.iter().find(|s| s.name == name).unwrap()
}

pub(super) fn runner_run() -> Vec<Event> {
    let t = |s: u32| format!("2026-11-29T08:15:{s:02}.000Z");
    vec![
        ev(
            "pipeline",
            "start",
            &t(0),
            json!({"stages": ["extract", "load"]}),
        ),
        ev("extract", "start", &t(1), json!({"attempt": 1})),
        ev("extract", "log", &t(2), json!({"stream": "stdout"})),
        ev(
            "extract",
            "retry",
            &t(3),
            json!({"attempt": 2, "exit_code": 1, "reason": "exit"}),
        ),
        ev("extract", "start", &t(13), json!({"attempt": 2})),
        ev("extract", "log", &t(14), json!({"stream": "stderr"})),
        ev(
            "extract",
            "success",
            &t(15),
            json!({"attempt": 2, "exit_code": 0, "duration_ms": 2000}),
        ),
        ev("load", "start", &t(16), json!({"attempt": 1})),
        ev("load", "log", &t(17), json!({"stream": "stdout"})),
        ev(
            "load",
            "success",
            &t(19),
            json!({"attempt": 1, "exit_code": 0, "duration_ms": 3000}),
        ),
        ev("pipeline", "success", &t(20), json!({"duration_ms": 20000})),
    ]
}
