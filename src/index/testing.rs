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
        from: Checkpoint {
            run_id: id(run),
            dev: 1,
            ino: 2,
            offset: first_seq * 100,
            lines: first_seq,
            finished: false,
        },
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
        cursor: None,
        followed: false,
    }
}

pub(super) fn stage<'a>(d: &'a RunDetail, name: &str) -> &'a StageSummary {
    d.stages.iter().find(|s| s.name == name).unwrap()
}

/// A pipewatch run of two stages, `extract` (failing once, then retried) and `load`; one
/// event a line, kept unformatted so it reads as the file would.
#[rustfmt::skip]
pub(super) fn runner_run() -> Vec<Event> {
    let e = |stage: &str, event: &str, s: u32, data: serde_json::Value| {
        ev(stage, event, &format!("2026-11-29T08:15:{s:02}.000Z"), data)
    };
    vec![
        e("pipeline", "start", 0, json!({"stages": ["extract", "load"]})),
        e("extract", "start", 1, json!({"attempt": 1})),
        e("extract", "log", 2, json!({"stream": "stdout"})),
        e("extract", "retry", 3, json!({"attempt": 2, "exit_code": 1, "reason": "exit"})),
        e("extract", "start", 13, json!({"attempt": 2})),
        e("extract", "log", 14, json!({"stream": "stderr"})),
        e("extract", "success", 15, json!({"attempt": 2, "exit_code": 0, "duration_ms": 2000})),
        e("load", "start", 16, json!({"attempt": 1})),
        e("load", "log", 17, json!({"stream": "stdout"})),
        e("load", "success", 19, json!({"attempt": 1, "exit_code": 0, "duration_ms": 3000})),
        e("pipeline", "success", 20, json!({"duration_ms": 20000})),
    ]
}
