//! Reading an event from its JSON object, and telling whether the line's text can be sent to
//! clients as it is.
//!
//! The derived reader would ignore unknown keys without saying so. This one says whether the
//! line held anything the event does not keep (an unknown key, or `null` for an optional
//! field): when it held nothing more, and its `seq` and `run_id` are the file's, the line *is*
//! the event's JSON, and the dashboard publishes its text instead of encoding the event again
//! ([`super::Published::from_line`]). Lines pipewatch writes always are.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::{Event, EventData};

/// An event read from a line, and whether the line said exactly that event.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub event: Event,
    /// The line had no key the event does not keep, and no `null` field.
    pub exact: bool,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    Seq,
    RunId,
    Pipeline,
    Stage,
    Event,
    Level,
    Timestamp,
    Source,
    Msg,
    Data,
    Host,
    #[serde(other)]
    Unknown,
}

/// The event's fields as they are met.
#[derive(Default)]
struct Fields {
    seq: Option<Option<u64>>,
    run_id: Option<String>,
    pipeline: Option<Option<String>>,
    stage: Option<String>,
    event: Option<String>,
    level: Option<Option<String>>,
    timestamp: Option<String>,
    source: Option<Option<String>>,
    msg: Option<String>,
    data: Option<Option<EventData>>,
    host: Option<Option<String>>,
    exact: bool,
}

/// Reads the value of a field into `slot`, refusing a second one as the derived reader does.
fn take<'de, A, T>(map: &mut A, slot: &mut Option<T>, name: &'static str) -> Result<(), A::Error>
where
    A: MapAccess<'de>,
    T: Deserialize<'de>,
{
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

fn required<T, E: de::Error>(v: Option<T>, name: &'static str) -> Result<T, E> {
    v.ok_or_else(|| E::missing_field(name))
}

/// An optional field: absent and `null` both mean none, but only absent is exact.
fn optional<T>(v: Option<Option<T>>, exact: &mut bool) -> Option<T> {
    if matches!(v, Some(None)) {
        *exact = false;
    }
    v.flatten()
}

impl Fields {
    fn finish<E: de::Error>(self) -> Result<Parsed, E> {
        let Fields {
            seq,
            run_id,
            pipeline,
            stage,
            event,
            level,
            timestamp,
            source,
            msg,
            data,
            host,
            mut exact,
        } = self;
        let event = Event {
            seq: optional(seq, &mut exact),
            run_id: required(run_id, "run_id")?,
            pipeline: optional(pipeline, &mut exact),
            stage: required(stage, "stage")?,
            event: required(event, "event")?,
            level: optional(level, &mut exact),
            timestamp: required(timestamp, "timestamp")?,
            source: optional(source, &mut exact),
            msg: required(msg, "msg")?,
            data: optional(data, &mut exact),
            host: optional(host, &mut exact),
        };
        Ok(Parsed { event, exact })
    }
}

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Parsed;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed, A::Error> {
        let mut f = Fields {
            exact: true,
            ..Fields::default()
        };
        while let Some(key) = map.next_key::<Field>()? {
            match key {
                Field::Seq => take(&mut map, &mut f.seq, "seq")?,
                Field::RunId => take(&mut map, &mut f.run_id, "run_id")?,
                Field::Pipeline => take(&mut map, &mut f.pipeline, "pipeline")?,
                Field::Stage => take(&mut map, &mut f.stage, "stage")?,
                Field::Event => take(&mut map, &mut f.event, "event")?,
                Field::Level => take(&mut map, &mut f.level, "level")?,
                Field::Timestamp => take(&mut map, &mut f.timestamp, "timestamp")?,
                Field::Source => take(&mut map, &mut f.source, "source")?,
                Field::Msg => take(&mut map, &mut f.msg, "msg")?,
                Field::Data => take(&mut map, &mut f.data, "data")?,
                Field::Host => take(&mut map, &mut f.host, "host")?,
                Field::Unknown => {
                    map.next_value::<de::IgnoredAny>()?;
                    f.exact = false;
                }
            }
        }
        f.finish()
    }
}

const FIELDS: &[&str] = &[
    "seq",
    "run_id",
    "pipeline",
    "stage",
    "event",
    "level",
    "timestamp",
    "source",
    "msg",
    "data",
    "host",
];

impl<'de> Deserialize<'de> for Parsed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Parsed, D::Error> {
        d.deserialize_struct("Event", FIELDS, EventVisitor)
    }
}

impl<'de> Deserialize<'de> for Event {
    /// The five original keys are required, the rest optional, unknown keys ignored.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Event, D::Error> {
        Parsed::deserialize(d).map(|p| p.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Parsed, String> {
        serde_json::from_str(s).map_err(|e| e.to_string())
    }

    const FULL: &str = r#"{"seq":0,"run_id":"r","pipeline":"p","stage":"a","event":"log","level":"info","timestamp":"2026-11-29T08:15:00.000Z","source":"cli","msg":"hi","data":{"stream":"stdout"}}"#;

    #[test]
    fn what_pipewatch_writes_is_exact() {
        let p = parse(FULL).unwrap();
        assert!(p.exact);
        assert_eq!(p.event.seq, Some(0));
        assert_eq!(p.event.data_str("stream"), Some("stdout"));
        // And encoding the event gives the same object back.
        let again: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&p.event).unwrap()).unwrap();
        assert_eq!(
            again,
            serde_json::from_str::<serde_json::Value>(FULL).unwrap()
        );
    }

    #[test]
    fn unknown_keys_and_nulls_are_not_exact() {
        let minimal = r#"{"run_id":"r","stage":"a","event":"start","timestamp":"t","msg":"m"}"#;
        assert!(parse(minimal).unwrap().exact);
        let extra =
            r#"{"run_id":"r","stage":"a","event":"start","timestamp":"t","msg":"m","x":{"y":[1]}}"#;
        let p = parse(extra).unwrap();
        assert!(!p.exact);
        assert_eq!(p.event.msg, "m");
        let null = r#"{"run_id":"r","stage":"a","event":"start","timestamp":"t","msg":"m","pipeline":null}"#;
        let p = parse(null).unwrap();
        assert!(!p.exact);
        assert_eq!(p.event.pipeline, None);
    }

    #[test]
    fn refused_as_the_derived_reader_would() {
        let missing = parse(r#"{"run_id":"r","stage":"a","event":"start","msg":"m"}"#);
        assert!(missing.unwrap_err().contains("missing field `timestamp`"));
        let twice = parse(
            r#"{"run_id":"r","run_id":"s","stage":"a","event":"e","timestamp":"t","msg":"m"}"#,
        );
        assert!(twice.unwrap_err().contains("duplicate field `run_id`"));
        let wrong = parse(r#"{"run_id":5,"stage":"a","event":"e","timestamp":"t","msg":"m"}"#);
        assert!(wrong.unwrap_err().contains("invalid type"));
        let data =
            parse(r#"{"run_id":"r","stage":"a","event":"e","timestamp":"t","msg":"m","data":[1]}"#);
        assert!(data.unwrap_err().contains("expected an object"));
        assert!(parse("[1,2]").is_err());
        assert!(parse(r#""text""#).is_err());
    }
}
