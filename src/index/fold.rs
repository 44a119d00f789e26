//! The event → summary fold: how a run's events make its `runs` row (status, start, end,
//! duration, reason, failed stages, first error) and its `stages` rows (status, attempts,
//! duration, exit code, why it ended). Pure: no SQL here.
//! The write path (`write.rs`) loads a run's rows, folds a batch's events into them with
//! [`RunFold::apply`], and writes back the rows that changed.
//!
//! # Invariants
//!
//! - Events are folded in `seq` order. One at or below the run's last folded `seq` was folded
//!   already and changes nothing, so applying a batch twice is harmless; one with `seq` 0 on a
//!   run that has events means its file is read again from its start: the summary starts
//!   afresh (its checkpoint, which belongs to the file, is kept) and the stored stages are
//!   dropped ([`RunFold::restarted`]).
//! - A final run event sets the status; a `start` never undoes one (nor `abandoned`, which
//!   only a final event replaces). Log lines only bump counters.
//! - A run's host is the top-level `host` of its events (what `[cluster]` forwarding sets on
//!   each), else the `data.host` of its run-level `start` (where `pipewatch run` names its
//!   machine), else none: a top-level one replaces one taken from `data.host`, never the
//!   reverse, whatever the order, so folding a file in any batches gives the same.
//! - A run starts at its first event; a run whose only event is `missed` starts at its
//!   `scheduled_for`. `sort_key` is that start normalized to UTC ([`sort_key`]).
//! - A stage's duration runs from its first attempt's `start` to its final event, retries
//!   and their delays included: what its bar on the page spans and what `pipewatch run`
//!   prints. Only a stage with no `start` takes its final event's `data.duration_ms`.

use std::collections::HashMap;

use super::{ABANDONED, NO_RUN_FILE, RUNNING, to_i64};
use crate::event::{
    Event, PIPELINE_STAGE, Published, RunId, format_timestamp, kind, parse_timestamp,
};
use crate::tail::Checkpoint;

/// A run's `runs` row: its summary and its file's checkpoint. Loaded, changed in memory by a
/// batch, then written back once (`write.rs`).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RunRow {
    pub(super) run_id: RunId,
    pub(super) pipeline: Option<String>,
    pub(super) status: Option<String>,
    pub(super) source: Option<String>,
    pub(super) started_at: Option<String>,
    pub(super) finished_at: Option<String>,
    pub(super) duration_ms: Option<i64>,
    pub(super) scheduled_for: Option<String>,
    pub(super) reason: Option<String>,
    /// `data.failed_stages` of the run's final event, as a JSON array.
    pub(super) failed_stages: Option<String>,
    /// The `seq` of the run's first event at level `error`.
    pub(super) first_error_seq: Option<i64>,
    /// `data.retry_of` of the run's start: the run it retries.
    pub(super) retry_of: Option<String>,
    /// The host the run ran on (see the module doc).
    pub(super) host: Option<String>,
    pub(super) events: i64,
    pub(super) last_seq: Option<i64>,
    pub(super) sort_key: String,
    pub(super) dev: i64,
    pub(super) ino: i64,
    pub(super) offset: i64,
    pub(super) lines: i64,
    pub(super) finished: bool,
}

impl RunRow {
    /// A run with no event yet.
    pub(super) fn new(run_id: RunId) -> RunRow {
        RunRow {
            run_id,
            pipeline: None,
            status: None,
            source: None,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            scheduled_for: None,
            reason: None,
            failed_stages: None,
            first_error_seq: None,
            retry_of: None,
            host: None,
            events: 0,
            last_seq: None,
            sort_key: String::new(),
            dev: 0,
            ino: 0,
            offset: 0,
            lines: 0,
            finished: false,
        }
    }
}

/// A stage's row, with whether this batch changed it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StageRow {
    pub(super) name: String,
    pub(super) position: i64,
    pub(super) status: String,
    pub(super) started_at: Option<String>,
    pub(super) finished_at: Option<String>,
    pub(super) duration_ms: Option<i64>,
    pub(super) attempts: i64,
    pub(super) exit_code: Option<i64>,
    /// `data.reason` of the stage's final event (`exit`, `timeout`, `needs_failed`, …).
    pub(super) reason: Option<String>,
    /// `data.signal` of the final event: the signal that ended its last attempt.
    pub(super) signal: Option<i64>,
    /// `data.needs` of a `skipped` stage: the needed stage that did not succeed.
    pub(super) needs: Option<String>,
    pub(super) dirty: bool,
}

/// A run's stages, in the order they were first seen.
#[derive(Debug, Default)]
pub(super) struct Stages {
    pub(super) rows: Vec<StageRow>,
    pub(super) by_name: HashMap<String, usize>,
}

/// One run while a batch is folded into it.
#[derive(Debug)]
pub(super) struct RunFold {
    pub(super) row: RunRow,
    /// The run's stages; `None` until needed (see [`RunFold::needs_stages`]), so a batch of
    /// run-level events alone does not read them.
    pub(super) stages: Option<Stages>,
    /// The run was summarized afresh from `seq` 0: its stored stages are to be replaced by
    /// [`RunFold::stages`].
    pub(super) restarted: bool,
}

impl RunFold {
    /// A run as stored; its stages are read when [`RunFold::needs_stages`] says so.
    pub(super) fn stored(row: RunRow) -> RunFold {
        RunFold {
            row,
            stages: None,
            restarted: false,
        }
    }

    /// A run the index does not have yet: no stages either.
    pub(super) fn new(run_id: RunId) -> RunFold {
        RunFold {
            row: RunRow::new(run_id),
            stages: Some(Stages::default()),
            restarted: false,
        }
    }

    /// Whether folding `p` needs the run's stored stages, not yet loaded.
    pub(super) fn needs_stages(&self, p: &Published) -> bool {
        self.stages.is_none() && p.event.stage != PIPELINE_STAGE && !self.restarts(p)
    }

    /// Whether `p` starts the run's file again from its first line.
    fn restarts(&self, p: &Published) -> bool {
        p.seq == 0 && self.row.events > 0
    }

    /// Folds one event (events come in `seq` order). A stage event needs the stored stages
    /// loaded first ([`RunFold::needs_stages`]).
    pub(super) fn apply(&mut self, p: &Published) {
        let seq = to_i64(p.seq);
        if self.restarts(p) {
            // The file is being read again from its start: summarize it afresh.
            let id = self.row.run_id.clone();
            let row = std::mem::replace(&mut self.row, RunRow::new(id));
            // The checkpoint belongs to the file, not to the summary.
            (self.row.dev, self.row.ino, self.row.offset, self.row.lines) =
                (row.dev, row.ino, row.offset, row.lines);
            self.stages = Some(Stages::default());
            self.restarted = true;
        } else if self.row.last_seq.is_some_and(|last| seq <= last) {
            // Already applied.
            return;
        }
        let e = &p.event;
        let row = &mut self.row;
        row.events += 1;
        row.last_seq = Some(seq);
        if row.started_at.is_none() {
            row.sort_key = sort_key(&e.timestamp);
            row.started_at = Some(e.timestamp.clone());
        }
        if row.status.is_none() {
            row.status = Some(RUNNING.to_string());
        }
        if row.pipeline.is_none() {
            row.pipeline.clone_from(&e.pipeline);
        }
        if row.source.is_none() {
            row.source.clone_from(&e.source);
        }
        if let Some(host) = e.host.as_deref().filter(|h| !h.is_empty())
            && row.host.as_deref() != Some(host)
        {
            row.host = Some(host.to_string());
        }
        // An error: level `error`, or a `failure` of a writer that gives no level (as the
        // page's log marks it).
        let error = e
            .level
            .as_deref()
            .map_or(e.event == kind::FAILURE, |l| l == "error");
        if row.first_error_seq.is_none() && error {
            row.first_error_seq = Some(seq);
        }
        if e.stage == PIPELINE_STAGE {
            row.apply_run_event(e);
            return;
        }
        debug_assert!(
            self.stages.is_some(),
            "stages are loaded before a stage event"
        );
        self.stages.get_or_insert_with(Stages::default).apply(e);
    }

    /// Records where the tailer got to in the run's file.
    pub(super) fn set_checkpoint(&mut self, cp: &Checkpoint) {
        let row = &mut self.row;
        // Stored as the same 64 bits: identities may use the top bit.
        row.dev = cp.dev as i64;
        row.ino = cp.ino as i64;
        row.offset = to_i64(cp.offset);
        row.lines = to_i64(cp.lines);
        row.finished = cp.finished;
    }
}

impl RunRow {
    /// A run-level (`stage: "pipeline"`) event.
    fn apply_run_event(&mut self, e: &Event) {
        match e.event.as_str() {
            // A start never undoes a final status (nor `abandoned`, which only a final event
            // replaces), but for a run abandoned because its file never appeared: it just
            // did. As the file's first line it is the run's real start time, replacing the
            // time a notification announced the run.
            kind::START if e.seq == Some(0) => {
                if self.status.as_deref() == Some(ABANDONED)
                    && self.reason.as_deref() == Some(NO_RUN_FILE)
                {
                    self.status = Some(RUNNING.to_string());
                    (self.finished_at, self.duration_ms, self.reason) = (None, None, None);
                    self.failed_stages = None;
                }
                self.sort_key = sort_key(&e.timestamp);
                self.started_at = Some(e.timestamp.clone());
                self.retry_of = e.data_str("retry_of").map(str::to_string);
                // The runner's own word, for a file not forwarded: a forwarded event's
                // top-level host (already folded) wins.
                if e.host.is_none() && self.host.is_none() {
                    self.host = e
                        .data_str("host")
                        .filter(|h| !h.is_empty())
                        .map(str::to_string);
                }
            }
            kind::SUCCESS | kind::FAILURE | kind::CANCELLED | kind::SKIPPED => {
                self.status = Some(e.event.clone());
                self.finished_at = Some(e.timestamp.clone());
                self.reason = e.data_str("reason").map(str::to_string);
                self.duration_ms = e.data_i64("duration_ms").or_else(|| {
                    self.started_at
                        .as_deref()
                        .and_then(|s| elapsed_ms(s, &e.timestamp))
                });
                self.failed_stages = failed_stages(e);
            }
            kind::MISSED => {
                self.status = Some(kind::MISSED.to_string());
                self.finished_at = Some(e.timestamp.clone());
                self.reason = e.data_str("reason").map(str::to_string);
                self.duration_ms = e.data_i64("duration_ms");
                self.scheduled_for = e.data_str("scheduled_for").map(str::to_string);
                if self.events == 1
                    && let Some(due) = &self.scheduled_for
                {
                    // Nothing else happened in this run: it belongs where it was due.
                    self.sort_key = sort_key(due);
                    self.started_at = Some(due.clone());
                }
            }
            _ => {}
        }
    }
}

impl Stages {
    /// The stages as stored, in order.
    pub(super) fn from_rows(rows: Vec<StageRow>) -> Stages {
        let by_name = rows
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        Stages { rows, by_name }
    }

    /// A stage's event.
    fn apply(&mut self, e: &Event) {
        let i = match self.by_name.get(e.stage.as_str()) {
            Some(&i) => i,
            None => {
                let i = self.rows.len();
                self.rows.push(StageRow {
                    name: e.stage.clone(),
                    position: to_i64(i as u64),
                    status: RUNNING.to_string(),
                    started_at: None,
                    finished_at: None,
                    duration_ms: None,
                    attempts: 0,
                    exit_code: None,
                    reason: None,
                    signal: None,
                    needs: None,
                    dirty: true,
                });
                self.by_name.insert(e.stage.clone(), i);
                i
            }
        };
        let s = &mut self.rows[i];
        match e.event.as_str() {
            kind::START => {
                s.status = RUNNING.to_string();
                s.attempts = s
                    .attempts
                    .max(e.data_i64("attempt").unwrap_or(s.attempts + 1));
                if s.started_at.is_none() {
                    s.started_at = Some(e.timestamp.clone());
                }
                s.finished_at = None;
                s.duration_ms = None;
                (s.exit_code, s.reason, s.signal, s.needs) = (None, None, None, None);
                s.dirty = true;
            }
            kind::SUCCESS | kind::FAILURE | kind::SKIPPED | kind::CANCELLED => {
                s.status = e.event.clone();
                s.finished_at = Some(e.timestamp.clone());
                s.duration_ms = s
                    .started_at
                    .as_deref()
                    .and_then(|st| elapsed_ms(st, &e.timestamp))
                    .or_else(|| e.data_i64("duration_ms"));
                s.exit_code = e.data_i64("exit_code");
                s.reason = e.data_str("reason").map(str::to_string);
                s.signal = e.data_i64("signal");
                s.needs = e.data_str("needs").map(str::to_string);
                if let Some(a) = e.data_i64("attempt") {
                    s.attempts = s.attempts.max(a);
                }
                s.dirty = true;
            }
            // `log`, `retry` and names other tools use: the stage goes on as it was.
            _ => {}
        }
    }
}

/// `data.failed_stages` of a run's final event, kept as a JSON array of its names (only the
/// strings of it; none when it is absent or empty).
fn failed_stages(e: &Event) -> Option<String> {
    let names: Vec<&str> = e
        .data
        .as_ref()?
        .get("failed_stages")?
        .as_array()?
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    (!names.is_empty()).then(|| serde_json::to_string(&names).unwrap_or_default())
}

/// The text a run sorts by: its start normalized to UTC, or as written if it does not parse.
pub(super) fn sort_key(timestamp: &str) -> String {
    parse_timestamp(timestamp).map_or_else(|| timestamp.to_string(), format_timestamp)
}

/// Milliseconds from `start` to `end`, if both parse and `end` is not earlier.
pub(super) fn elapsed_ms(start: &str, end: &str) -> Option<i64> {
    let ms = (parse_timestamp(end)? - parse_timestamp(start)?).num_milliseconds();
    (ms >= 0).then_some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::testing::{batch, ev, id, runner_run};
    use serde_json::json;

    /// Folds `events` (numbered from `first_seq`) into `run`, as the write path does.
    fn fold(run: &mut RunFold, first_seq: u64, events: Vec<Event>) {
        for p in &batch(run.row.run_id.as_str(), first_seq, events).events {
            assert!(!run.needs_stages(p), "a new run has its stages");
            run.apply(p);
        }
    }

    fn stage<'a>(run: &'a RunFold, name: &str) -> &'a StageRow {
        let stages = run.stages.as_ref().unwrap();
        &stages.rows[stages.by_name[name]]
    }

    #[test]
    fn a_runner_run_folds_into_its_summary_and_stages() {
        let mut run = RunFold::new(id("r1"));
        fold(&mut run, 0, runner_run());
        let row = &run.row;
        assert_eq!(row.status.as_deref(), Some("success"));
        assert_eq!(row.started_at.as_deref(), Some("2026-11-29T08:15:00.000Z"));
        assert_eq!(row.finished_at.as_deref(), Some("2026-11-29T08:15:20.000Z"));
        assert_eq!(row.duration_ms, Some(20_000));
        assert_eq!((row.events, row.last_seq), (11, Some(10)));
        assert_eq!(row.pipeline.as_deref(), Some("translation"));
        let ex = stage(&run, "extract");
        assert_eq!(
            (ex.status.as_str(), ex.attempts, ex.exit_code, ex.position),
            ("success", 2, Some(0), 0)
        );
        assert_eq!(ex.started_at.as_deref(), Some("2026-11-29T08:15:01.000Z"));
        assert!(ex.dirty);
        assert_eq!(stage(&run, "load").position, 1);
        assert!(!run.restarted);
    }

    #[test]
    fn events_folded_already_change_nothing_and_seq_0_starts_afresh() {
        let mut run = RunFold::new(id("r1"));
        fold(&mut run, 0, runner_run());
        run.set_checkpoint(&batch("r1", 0, runner_run()).checkpoint);
        let once = run.row.clone();

        // An overlapping batch: the lines at or below the last seq are skipped.
        let mut again = runner_run();
        let tail = again.split_off(9);
        fold(&mut run, 9, tail);
        assert_eq!(run.row, once);

        // The file read again from its start, now with other content: a new summary, the
        // same checkpoint, and the stored stages to be replaced.
        fold(
            &mut run,
            0,
            vec![ev("pipeline", "start", "2026-11-30T00:00:00Z", json!(null))],
        );
        assert!(run.restarted);
        assert_eq!(run.row.status.as_deref(), Some("running"));
        assert_eq!(run.row.events, 1);
        assert_eq!(run.row.finished_at, None);
        assert_eq!(
            (run.row.offset, run.row.lines, run.row.dev),
            (once.offset, once.lines, once.dev)
        );
        assert!(run.stages.as_ref().unwrap().rows.is_empty());
    }

    #[test]
    fn a_stored_run_asks_for_its_stages_only_for_a_stage_event() {
        let mut stored = RunRow::new(id("r1"));
        stored.events = 1;
        stored.last_seq = Some(0);
        let run = RunFold::stored(stored);
        let b = batch(
            "r1",
            1,
            vec![
                ev("pipeline", "log", "2026-11-29T08:00:00Z", json!(null)),
                ev("a", "start", "2026-11-29T08:00:00Z", json!(null)),
            ],
        );
        assert!(!run.needs_stages(&b.events[0]));
        assert!(run.needs_stages(&b.events[1]));
        // A restart drops the stored stages: no need to read them.
        let restart = batch("r1", 0, vec![ev("a", "start", "t", json!(null))]);
        assert!(!run.needs_stages(&restart.events[0]));
    }

    #[test]
    fn a_missed_record_starts_at_its_scheduled_time() {
        let mut run = RunFold::new(id("m"));
        fold(
            &mut run,
            0,
            vec![ev(
                "pipeline",
                "missed",
                "2026-11-29T10:00:00.000Z",
                json!({"scheduled_for": "2026-11-29T08:30:00Z", "reason": "not_started"}),
            )],
        );
        let row = &run.row;
        assert_eq!(row.status.as_deref(), Some("missed"));
        assert_eq!(row.started_at.as_deref(), Some("2026-11-29T08:30:00Z"));
        assert_eq!(row.sort_key, "2026-11-29T08:30:00.000Z");
        assert_eq!(row.finished_at.as_deref(), Some("2026-11-29T10:00:00.000Z"));
        assert_eq!(row.reason.as_deref(), Some("not_started"));
    }

    /// `runner_run` with `data.host` on its start, and `host` at the top of every event from
    /// `forwarded_from` on (none for none).
    fn hosted_run(data_host: Option<&str>, top: Option<&str>, forwarded_from: usize) -> Vec<Event> {
        let mut events = runner_run();
        if let Some(h) = data_host {
            events[0]
                .data
                .get_or_insert_with(Default::default)
                .insert("host", json!(h));
        }
        for e in events.iter_mut().skip(forwarded_from) {
            e.host = top.map(str::to_string);
        }
        events
    }

    #[test]
    fn a_runs_host_is_its_events_host_else_its_starts_data_host() {
        let host_of = |events: Vec<Event>| {
            let mut run = RunFold::new(id("r1"));
            fold(&mut run, 0, events);
            run.row.host
        };
        // On a single machine: the runner's own word.
        assert_eq!(
            host_of(hosted_run(Some("box"), None, 0)).as_deref(),
            Some("box")
        );
        // Forwarded through [cluster]: the top-level host, over the runner's.
        assert_eq!(
            host_of(hosted_run(Some("box"), Some("etl-01"), 0)).as_deref(),
            Some("etl-01")
        );
        assert_eq!(
            host_of(hosted_run(None, Some("etl-02"), 0)).as_deref(),
            Some("etl-02")
        );
        // A top-level host appearing after the start still wins.
        assert_eq!(
            host_of(hosted_run(Some("box"), Some("etl-03"), 5)).as_deref(),
            Some("etl-03")
        );
        // Neither, or empty names: none.
        assert_eq!(host_of(hosted_run(None, None, 0)), None);
        assert_eq!(host_of(hosted_run(Some(""), Some(""), 0)), None);
        // A stage's data.host is not the run's.
        let mut events = runner_run();
        events[1].data = Some(
            json!({"host": "elsewhere"})
                .as_object()
                .unwrap()
                .clone()
                .into(),
        );
        assert_eq!(host_of(events), None);
    }

    #[test]
    fn a_runs_host_is_the_same_whatever_the_batches() {
        for (data_host, top, from) in [
            (Some("box"), None, 0),
            (Some("box"), Some("etl-01"), 0),
            (Some("box"), Some("etl-01"), 7),
            (None, Some("etl-02"), 3),
        ] {
            let events = hosted_run(data_host, top, from);
            let mut whole = RunFold::new(id("r1"));
            fold(&mut whole, 0, events.clone());
            for split in 1..events.len() {
                let mut run = RunFold::new(id("r1"));
                let mut head = events.clone();
                let tail = head.split_off(split);
                fold(&mut run, 0, head);
                // The write path stores the row and loads it again between batches.
                let mut run = RunFold::stored(run.row.clone());
                run.stages = Some(Stages::default());
                fold(&mut run, split as u64, tail);
                assert_eq!(
                    run.row.host, whole.row.host,
                    "{data_host:?} {top:?} {from} {split}"
                );
            }
        }
    }

    #[test]
    fn sort_keys_and_durations() {
        assert_eq!(
            sort_key("2025-12-08T22:44:00+01:00"),
            "2025-12-08T21:44:00.000Z"
        );
        assert_eq!(sort_key("2025-12-08 21:45:00"), "2025-12-08T21:45:00.000Z");
        assert_eq!(sort_key("whenever"), "whenever");
        assert_eq!(
            elapsed_ms("2025-12-08T21:45:00", "2025-12-08T21:45:02.250"),
            Some(2250)
        );
        assert_eq!(
            elapsed_ms("2025-12-08T21:45:02", "2025-12-08T21:45:00"),
            None
        );
        assert_eq!(elapsed_ms("x", "2025-12-08T21:45:00"), None);
    }
}
