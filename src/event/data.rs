//! An event's `data` object as read: kept as the text of the line, and parsed only when a
//! field of it is asked for.
//!
//! Most events are `log` lines whose `data` nobody reads on the dashboard's path (the index
//! folds only a run's and its stages' start and end events). Parsing every `data` into a
//! `serde_json` map cost a third of reading a line, and re-encoding it most of the rest.

use std::fmt;
use std::sync::OnceLock;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A JSON object: its text, and its fields once one has been asked for.
#[derive(Clone)]
pub struct EventData {
    raw: Box<RawValue>,
    fields: OnceLock<Map<String, Value>>,
}

impl EventData {
    /// The object of `fields`.
    pub fn from_map(fields: Map<String, Value>) -> EventData {
        // A map of strings to values always encodes.
        let raw = serde_json::value::to_raw_value(&fields).unwrap_or_default();
        EventData {
            raw,
            fields: OnceLock::from(fields),
        }
    }

    /// Its fields (parsed on first use; the text was checked to be an object when read).
    pub fn fields(&self) -> &Map<String, Value> {
        self.fields
            .get_or_init(|| serde_json::from_str(self.raw.get()).unwrap_or_default())
    }

    /// A field, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields().get(key)
    }

    /// Sets a field.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) {
        let mut fields = self.fields().clone();
        fields.insert(key.into(), value);
        *self = EventData::from_map(fields);
    }

    /// Its JSON text, as the line had it.
    pub fn as_json(&self) -> &str {
        self.raw.get()
    }
}

impl Default for EventData {
    /// `{}`.
    fn default() -> EventData {
        EventData::from_map(Map::new())
    }
}

impl PartialEq for EventData {
    /// The same fields, however they were written.
    fn eq(&self, other: &EventData) -> bool {
        self.raw.get() == other.raw.get() || self.fields() == other.fields()
    }
}

impl fmt::Debug for EventData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.raw.get())
    }
}

impl Serialize for EventData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for EventData {
    /// Any JSON object; anything else is refused as `data`'s type.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EventData, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        if !raw.get().starts_with('{') {
            return Err(D::Error::custom(format_args!(
                "invalid type for data: {}, expected an object",
                raw.get()
            )));
        }
        Ok(EventData {
            raw,
            fields: OnceLock::new(),
        })
    }
}

impl From<Map<String, Value>> for EventData {
    fn from(fields: Map<String, Value>) -> EventData {
        EventData::from_map(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kept_as_written_and_read_on_demand() {
        let d: EventData = serde_json::from_str(r#"{"stream": "stdout","n":1}"#).unwrap();
        assert_eq!(d.as_json(), r#"{"stream": "stdout","n":1}"#);
        assert_eq!(d.get("stream"), Some(&json!("stdout")));
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"stream": "stdout","n":1}"#
        );
        let same: EventData = serde_json::from_str(r#"{"n":1,"stream":"stdout"}"#).unwrap();
        assert_eq!(d, same);
    }

    #[test]
    fn only_an_object() {
        for bad in ["5", r#""x""#, "[1]", "true"] {
            let e = serde_json::from_str::<EventData>(bad).unwrap_err();
            assert!(e.to_string().contains("expected an object"), "{bad}: {e}");
        }
    }

    #[test]
    fn insert_re_encodes() {
        let mut d = EventData::default();
        d.insert("host", json!("box"));
        assert_eq!(d.as_json(), r#"{"host":"box"}"#);
        assert_eq!(d.get("host"), Some(&json!("box")));
    }
}
