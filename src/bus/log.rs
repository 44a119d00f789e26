//! What the bus holds: each event encoded once ([`Fed`]), and the byte-bounded logs of them
//! that followers read at their own pace.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::event::{Json, Published, RunId};

/// An event as published: its cursor and its encodings, built once for every subscriber, and
/// the little else the streams look at. The parsed event is not kept: its strings cost as much
/// memory again as its JSON, and the ring and the run logs hold tens of thousands of events.
#[derive(Debug)]
pub struct Fed {
    /// Its place in the all-runs stream (`index::feed`); 0 for one built for its run's
    /// followers only ([`Fed::for_run`]), whose log keys it by `seq`.
    pub cursor: u64,
    /// The `/ws/events` frame: the event's JSON with `"cursor"` added (the JSON as it is for
    /// one built for its run's followers only).
    pub frame: Json,
    /// The event's JSON: a run's frame (`/ws/events/{run_id}`).
    pub json: Json,
    pub run_id: RunId,
    pub seq: u64,
    pub pipeline: Option<Arc<str>>,
    /// It is its run's final event.
    pub terminal: bool,
}

/// What goes between an event's JSON and its cursor in a `/ws/events` frame.
const CURSOR_KEY: &str = ",\"cursor\":";

impl Fed {
    /// `event` with cursor `cursor`. `prev`, the event fed just before it, lends its pipeline's
    /// name when it is the same (it is for every event of a batch but the first), so that it
    /// is held once per run and not once per event (a [`RunId`] is shared already).
    pub fn new(cursor: u64, event: &Published, prev: Option<&Fed>) -> Fed {
        let json: &str = &event.json;
        // The event's JSON is an object with `seq` (never `{}`): the cursor goes last.
        let frame = match json.strip_suffix('}') {
            Some(head) => {
                // Pushed in pieces, not with `write!`: in a burst's profile its formatting
                // machinery cost more than the rest of building the frame.
                let mut digits = itoa::Buffer::new();
                let digits = digits.format(cursor);
                let mut f = String::with_capacity(head.len() + CURSOR_KEY.len() + digits.len() + 1);
                f.push_str(head);
                f.push_str(CURSOR_KEY);
                f.push_str(digits);
                f.push('}');
                Json::from(f)
            }
            None => event.json.clone(),
        };
        Fed::with_frame(cursor, frame, event, prev)
    }

    /// `event` for its run's followers only (`/ws/events/{run_id}` sends the event's JSON and
    /// knows it by `seq`): it has no all-runs cursor yet, so no frame of its own either. The
    /// tail thread hands such events to a run's followers as it reads them
    /// ([`super::Bus::publish_read`]).
    pub fn for_run(event: &Published, prev: Option<&Fed>) -> Fed {
        Fed::with_frame(0, event.json.clone(), event, prev)
    }

    fn with_frame(cursor: u64, frame: Json, event: &Published, prev: Option<&Fed>) -> Fed {
        let pipeline = event.event.pipeline.as_deref().map(|name| match prev {
            Some(Fed {
                pipeline: Some(p), ..
            }) if **p == *name => p.clone(),
            _ => Arc::from(name),
        });
        Fed {
            cursor,
            frame,
            json: event.json.clone(),
            run_id: event.run_id.clone(),
            seq: event.seq,
            pipeline,
            terminal: event.event.is_run_terminal(),
        }
    }

    /// What holding it costs, roughly, in bytes: both encodings (one, when the frame is the
    /// JSON itself), and the rest with the allocator's share.
    pub fn cost(&self) -> usize {
        let frame = if self.frame.as_ptr() == self.json.as_ptr() {
            0
        } else {
            self.frame.len()
        };
        frame + self.json.len() + 192
    }

    /// Its key in the all-runs ring.
    pub(super) fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Its key in its run's log.
    pub(super) fn seq(&self) -> u64 {
        self.seq
    }
}

/// What a follower finds in a log after the last event it took.
#[derive(Debug)]
pub enum Taken {
    /// The next events (none: nothing published since).
    Events(Vec<Arc<Fed>>),
    /// The log no longer holds all that follows: the events up to (not including) key `until`
    /// (the log's first; `None` when it is empty) must be read again from the run files.
    Behind { until: Option<u64> },
}

/// Recent events in publication order, their keys growing, bounded in bytes.
#[derive(Default)]
pub(super) struct Log {
    pub(super) events: VecDeque<Arc<Fed>>,
    pub(super) bytes: usize,
    /// The key of the last event dropped (or the key before the first ever published): a
    /// follower before it has missed something.
    pub(super) dropped: Option<u64>,
}

impl Log {
    pub(super) fn push(&mut self, e: &Arc<Fed>) {
        self.bytes += e.cost();
        self.events.push_back(e.clone());
    }

    /// Drops the oldest event; false if there is none.
    pub(super) fn drop_oldest(&mut self, key: fn(&Fed) -> u64) -> bool {
        let Some(old) = self.events.pop_front() else {
            return false;
        };
        self.bytes -= old.cost();
        self.dropped = Some(key(&old));
        true
    }

    pub(super) fn trim(&mut self, max_bytes: usize, key: fn(&Fed) -> u64) {
        while self.bytes > max_bytes && self.drop_oldest(key) {}
    }

    /// Up to `max` events after key `after` (after nothing: from the start).
    pub(super) fn after(&self, key: fn(&Fed) -> u64, after: Option<u64>, max: usize) -> Taken {
        if let Some(dropped) = self.dropped
            && after.is_none_or(|a| a < dropped)
        {
            return Taken::Behind {
                until: self.events.front().map(|e| key(e)),
            };
        }
        let skip = match after {
            Some(a) => self.events.partition_point(|e| key(e) <= a),
            None => 0,
        };
        Taken::Events(self.events.iter().skip(skip).take(max).cloned().collect())
    }
}
