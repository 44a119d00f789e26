//! The event: one JSON object per line of a run's journal (`docs/events.md`).
//!
//! Two shapes of the same thing: [`Record`] borrows everything and is what the runner
//! serializes on its hot path (a million log lines must not mean a million allocations of the
//! run id); [`Event`] owns its fields and is what readers parse, accepting the original format
//! (only `run_id`, `stage`, `event`, `timestamp`, `msg`) and ignoring keys they do not know.
//!
//! Run ids are validated here ([`RunId`]) so that nothing else has to: a run id never becomes a
//! path outside `events_dir`.

use std::fmt;
use std::hash::{BuildHasher, Hasher};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

mod data;
mod parse;

pub use data::EventData;
pub use parse::Parsed;

/// Run-level events use this as their `stage`.
/// The reserved stage name used by run-level events (no stage may be called so).
pub const PIPELINE_STAGE: &str = "pipeline";

/// Event kinds written by pipewatch.
pub mod kind {
    pub const START: &str = "start";
    pub const SUCCESS: &str = "success";
    pub const FAILURE: &str = "failure";
    pub const CANCELLED: &str = "cancelled";
    pub const SKIPPED: &str = "skipped";
    pub const MISSED: &str = "missed";
    pub const LOG: &str = "log";
    pub const RETRY: &str = "retry";

    /// The run-level events that end a run: its status becomes the event's name.
    pub const RUN_FINAL: [&str; 5] = [SUCCESS, FAILURE, CANCELLED, SKIPPED, MISSED];
    /// The events that end a stage: its status becomes the event's name.
    pub const STAGE_FINAL: [&str; 4] = [SUCCESS, FAILURE, SKIPPED, CANCELLED];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// Which output stream a `log` line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// The `data` object pipewatch writes. Every field is optional and omitted when absent, so a
/// `log` line carries only `stream`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Data<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<Stream>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages: Option<&'a [&'a str]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_stages: Option<&'a [&'a str]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs: Option<&'a str>,
    /// A stage a retry reused: the run it succeeded in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_run: Option<&'a str>,
    /// On a retry's `start`: the run it retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<&'a str>,
    /// On a run's `start`: the value of each parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<&'a std::collections::BTreeMap<String, String>>,
    /// The run's dependency graph, on its `start`: each stage's `needs`, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage_needs: Option<&'a std::collections::BTreeMap<&'a str, Vec<&'a str>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<&'a str>,
}

/// One event as written by pipewatch, borrowing its fields. Field order is the order on disk.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    pub seq: u64,
    pub run_id: &'a str,
    pub pipeline: &'a str,
    pub stage: &'a str,
    pub event: &'a str,
    pub level: Level,
    pub timestamp: &'a str,
    pub source: &'a str,
    pub msg: &'a str,
    pub data: &'a Data<'a>,
}

/// One event as read back: the five original keys are required, the rest optional.
///
/// As the API and the streams send it, an event always has `seq` (the dashboard fills it in),
/// and only these keys: unknown keys of a line are not kept. Read as a [`Parsed`], which also
/// says whether a line held exactly the event.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Event {
    /// The line's index in its run file, from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = true, value_type = u64)]
    pub seq: Option<u64>,
    /// The run (its file's name says it, whatever the line said).
    #[schema(value_type = RunId)]
    pub run_id: String,
    /// The pipeline's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// The stage's name, or `pipeline` for the run's own events.
    pub stage: String,
    /// `start`, `success`, `failure`, `log`, `retry`, … (`docs/events.md`).
    pub event: String,
    /// `info`, `warn` or `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// RFC 3339 (pipewatch writes UTC with milliseconds); other writers' naive times as
    /// written.
    pub timestamp: String,
    /// Who started the run: `scheduler`, `manual`, `cli`, ….
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// For a person: a `log` event's line of output, or what happened.
    pub msg: String,
    /// `exit_code`, `duration_ms`, `attempt`, `stream`, `reason`, … (`docs/events.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<EventData>,
    /// The host the run ran on: set on every event forwarded through `[cluster]`
    /// (`docs/scale-out.md`); absent on a single machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl Event {
    /// Appends the event as one line of a run's plain-text log (`GET /api/runs/{run_id}/log`,
    /// `pipewatch runs show --log`): `time stage stream text`, where `stream` is `stdout` or
    /// `stderr` for a line a stage printed and the event's name otherwise. Line breaks inside
    /// the text (other writers' messages) become spaces: one event, one line.
    pub fn write_log_line(&self, out: &mut String) {
        use std::fmt::Write;
        let stream = match self.data_str("stream") {
            Some(s) if self.event == kind::LOG => s,
            _ => self.event.as_str(),
        };
        let _ = write!(out, "{} {} {stream} ", self.timestamp, self.stage);
        let mut rest = self.msg.as_str();
        while let Some(i) = rest.find(['\r', '\n']) {
            out.push_str(&rest[..i]);
            out.push(' ');
            rest = &rest[i..];
            rest = rest.strip_prefix("\r\n").unwrap_or(&rest[1..]);
        }
        out.push_str(rest);
        out.push('\n');
    }

    /// A `data` field as a string, if present.
    pub fn data_str(&self, key: &str) -> Option<&str> {
        self.data.as_ref()?.get(key)?.as_str()
    }

    /// A `data` field as an integer, if present.
    pub fn data_i64(&self, key: &str) -> Option<i64> {
        self.data.as_ref()?.get(key)?.as_i64()
    }

    /// Whether this is a run's final event.
    pub fn is_run_terminal(&self) -> bool {
        self.stage == PIPELINE_STAGE && kind::RUN_FINAL.contains(&self.event.as_str())
    }
}

/// Formats a time the way pipewatch writes it: UTC, milliseconds, `Z`.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an event timestamp: RFC 3339, or naive (`T` or a space between date and time,
/// taken as UTC), as other tools write them. The one parser of timestamps: the index sorts by
/// it, the terminal shows it, retention ages runs by it.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
        .map(|t| t.and_utc())
}

/// Now, formatted by [`format_timestamp`].
pub fn now_timestamp() -> String {
    format_timestamp(Utc::now())
}

/// A run id: `[A-Za-z0-9_-]{1,64}`. Construct with [`RunId::parse`] or [`RunId::generate`].
///
/// Shared, not copied: every event read from a run's file carries its run id, and a clone is a
/// count, not an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(std::sync::Arc<str>);

impl Serialize for RunId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A run id in the API's description: a string of [`RunId::PATTERN`].
impl utoipa::PartialSchema for RunId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(RunId::PATTERN))
            .min_length(Some(1))
            .max_length(Some(64))
            .description(Some(
                "A run id: 1 to 64 letters, digits, `_` or `-`; pipewatch's own sort by time \
                 (`20261129T081500Z-3f9a`).",
            ))
            .examples(["20261129T081500Z-3f9a"])
            .into()
    }
}

impl utoipa::ToSchema for RunId {}

/// A run id that is not `[A-Za-z0-9_-]{1,64}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid run id {0:?}: a run id is 1 to 64 letters, digits, `_` or `-`")]
pub struct InvalidRunId(pub String);

impl RunId {
    /// What [`RunId::parse`] takes, as a regular expression (the API's description says it;
    /// a unit test checks that the two agree).
    pub const PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";

    pub fn parse(s: &str) -> Result<RunId, InvalidRunId> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(RunId(s.into()))
        } else {
            Err(InvalidRunId(s.to_string()))
        }
    }

    /// A new, time-sortable id: `20261129T081500123Z-3f9a2c` (UTC start time to the
    /// millisecond, then 24 random bits so that runs started in the same millisecond stay
    /// distinct).
    pub fn generate(now: DateTime<Utc>) -> RunId {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_i64(now.timestamp_nanos_opt().unwrap_or_default());
        let r = h.finish() & 0xff_ffff;
        RunId(format!("{}-{r:06x}", now.format("%Y%m%dT%H%M%S%3fZ")).into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The journal file name for this run: `pipeline_<run_id>.jsonl` (the format is
    /// [`crate::journal::files`]'s).
    pub fn file_name(&self) -> String {
        crate::journal::files::file_name(self)
    }

    /// The run id of a journal file name, if it is one.
    pub fn from_file_name(name: &str) -> Option<RunId> {
        crate::journal::files::run_id_of(name)
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids() {
        for ok in ["a", "20261129T081500Z-3f9a", "A_b-9", &"x".repeat(64)] {
            assert!(RunId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "..", "a/b", "a%2Fb", "a b", "é", &"x".repeat(65), "a.b"] {
            assert!(RunId::parse(bad).is_err(), "{bad}");
        }
        let t = Utc::now();
        let a = RunId::generate(t);
        assert!(RunId::parse(a.as_str()).is_ok());
        assert_eq!(RunId::from_file_name(&a.file_name()), Some(a));
        assert_eq!(RunId::from_file_name("pipeline_../x.jsonl"), None);
    }

    proptest::proptest! {
        /// What the API's description says a run id is, [`RunId::PATTERN`], is what
        /// [`RunId::parse`] takes (the fuzzer generates ids from the pattern).
        #[test]
        fn the_pattern_generates_run_ids(
            id in proptest::string::string_regex(
                RunId::PATTERN.trim_start_matches('^').trim_end_matches('$'),
            ).unwrap(),
        ) {
            proptest::prop_assert!(RunId::parse(&id).is_ok(), "{:?}", id);
        }
    }

    #[test]
    fn generated_ids_sort_by_time() {
        let t1 = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let t2 = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 6).unwrap();
        assert!(RunId::generate(t1) < RunId::generate(t2));
        assert!(
            RunId::generate(t1)
                .as_str()
                .starts_with("20260102T030405000Z-")
        );
        let t3 = t1 + chrono::Duration::milliseconds(1);
        assert!(
            RunId::generate(t1) < RunId::generate(t3),
            "sortable within a second"
        );
    }

    #[test]
    fn original_format_parses() {
        let line = r#"{"run_id":"r1","stage":"extract","event":"start","timestamp":"2025-12-08T21:45:00","msg":"go","extra":1}"#;
        let e: Event = serde_json::from_str(line).unwrap();
        assert_eq!(e.seq, None);
        assert_eq!(e.stage, "extract");
        assert!(serde_json::from_str::<Event>(r#"{"run_id":"r1"}"#).is_err());
    }

    #[test]
    fn record_round_trips() {
        let data = Data {
            stream: Some(Stream::Stderr),
            ..Data::default()
        };
        let r = Record {
            seq: 3,
            run_id: "r",
            pipeline: "p",
            stage: "s",
            event: kind::LOG,
            level: Level::Warn,
            timestamp: "2026-11-29T08:15:00.123Z",
            source: "cli",
            msg: "hello",
            data: &data,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.starts_with(r#"{"seq":3,"run_id":"r""#), "{s}");
        let e: Event = serde_json::from_str(&s).unwrap();
        assert_eq!(e.seq, Some(3));
        assert_eq!(e.data_str("stream"), Some("stderr"));
    }

    use chrono::TimeZone;
}

/// JSON text shared by reference: cloning it hands out the same buffer, so one encoding of an
/// event goes to every socket as is (a WebSocket text frame takes it without a copy).
pub type Json = axum::extract::ws::Utf8Bytes;

/// An event as the dashboard publishes it: parsed, with its `seq` filled in, and its JSON text
/// (the line as it will be sent to clients, always with `seq`). Shared by the bus, the index
/// and every subscriber, so it is built once per line and handed around in an `Arc`.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub run_id: RunId,
    pub seq: u64,
    pub event: Event,
    pub json: Json,
}

impl Published {
    /// Builds the published form of `event`, read as line `seq` of `run_id`'s file: `seq` and
    /// `run_id` come from the file (its name and line index), whatever the line said.
    pub fn new(run_id: RunId, seq: u64, mut event: Event) -> Published {
        event.seq = Some(seq);
        event.run_id = run_id.to_string();
        let mut out = Vec::with_capacity(event.msg.len() + 256);
        // An `Event` of strings and a JSON object always encodes.
        let _ = serde_json::to_writer(&mut out, &event);
        let json = Json::try_from(out).unwrap_or_default();
        Published {
            run_id,
            seq,
            event,
            json,
        }
    }

    /// The same for an event read from `line` (its JSON text): when the line said exactly
    /// this event, with the file's `seq` and `run_id`, its text is the event's JSON and is
    /// published as it is, without encoding the event again.
    pub fn from_line(run_id: RunId, seq: u64, parsed: Parsed, line: &str) -> Published {
        let e = &parsed.event;
        if parsed.exact && e.seq == Some(seq) && e.run_id == run_id.as_str() {
            Published {
                json: Json::from(line.trim_ascii()),
                run_id,
                seq,
                event: parsed.event,
            }
        } else {
            Published::new(run_id, seq, parsed.event)
        }
    }
}
