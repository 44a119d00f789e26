//! The all-runs stream: `/ws/events` and its Server-Sent Events twin `/api/events/stream`.
//!
//! Every frame carries the event's cursor (`index::feed`); a client resumes after the last one
//! it has (`?since=CURSOR`, `Last-Event-ID`) and gets everything published since, once, in
//! order: from the bus's ring while it still holds them, else read again from the run files
//! through the feed. A client without a cursor gets the ring, then live events.
//!
//! A follower that falls behind the bus (its client reads slowly; a burst) catches up the same
//! way and goes on live, so a client that keeps reading is never cut off.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::mpsc;
use utoipa::IntoParams;

use super::{
    Follow, Frame, Item, Out, Place, follow, handshake, read_blocking, resume_after, serve_socket,
    sse_body,
};
use crate::bus::{Fed, Taken};
use crate::server::error::{ApiError, ErrorBody, parse_u64, pipeline_filter};
use crate::server::extract::Query;
use crate::server::feed::SegmentReader;
use crate::server::state::AppState;

/// Segments of the feed asked for at a time while catching up.
const SEGMENTS_PER_QUERY: usize = 64;

/// The query of the all-runs streams, as sent (checked by the handler).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CursorQuery {
    /// Resume after this `cursor` (the last one received): every event published since, with
    /// no gap and no duplicate.
    #[param(value_type = Option<u64>)]
    since: Option<String>,
    /// Only the events of this pipeline (the cursors stay those of the whole stream).
    #[param(max_length = 256)]
    pipeline: Option<String>,
}

/// The all-runs follower: the cursor of the last event taken, and the pipeline it keeps.
struct AllFollower {
    state: Arc<AppState>,
    last: u64,
    pipeline: Option<Arc<str>>,
}

/// Whether `e` is one of `pipeline`'s events (every event is, without a filter).
fn kept(pipeline: Option<&str>, e: &Fed) -> bool {
    pipeline.is_none_or(|p| e.pipeline.as_deref() == Some(p))
}

/// An all-runs frame: the cursor and the event's JSON with it.
fn frame(e: &Fed) -> Frame {
    Frame {
        id: e.cursor,
        text: e.frame.clone(),
    }
}

impl Follow for AllFollower {
    fn key(&self, e: &Fed) -> u64 {
        e.cursor
    }

    fn place(&self, e: &Fed) -> Place {
        match e.cursor {
            c if c <= self.last => Place::Sent,
            c if c == self.last + 1 => Place::Next,
            _ => Place::After,
        }
    }

    fn advance(&mut self, e: &Fed) -> Option<Frame> {
        self.last = e.cursor;
        kept(self.pipeline.as_deref(), e).then(|| frame(e))
    }

    fn take(&self, max: usize) -> Taken {
        self.state.bus.after(self.last, max)
    }

    /// Sends what was published after `last` and the ring no longer holds, segment by
    /// segment from the run files, until the ring takes over.
    async fn catch_up(&mut self, out: &Out, _until: Option<u64>) -> bool {
        while let Taken::Behind { .. } = self.state.bus.after(self.last, 0) {
            let after = self.last;
            let segments = self
                .state
                .with_index(move |idx| idx.feed_after(after, SEGMENTS_PER_QUERY))
                .await;
            let segments = match segments {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot read the all-runs stream's cursors: {e}");
                    return true;
                }
            };
            if segments.is_empty() {
                // Nothing more to read again (the index could not record it): the stream
                // goes on with what the ring holds.
                self.last = self.last.max(self.state.bus.ring_start());
                return true;
            }
            for seg in segments {
                let end = seg.last;
                let reader = SegmentReader::new(&self.state.events_dir, seg, self.last);
                if !self.send_segment(reader, out).await {
                    return false;
                }
                // Whatever the file no longer holds is skipped.
                self.last = self.last.max(end);
            }
        }
        true
    }
}

impl AllFollower {
    /// Reads one segment again, a bounded batch at a time on the blocking pool, and sends it.
    async fn send_segment(&mut self, mut reader: SegmentReader, out: &Out) -> bool {
        loop {
            let Some((r, batch)) = read_blocking(reader, SegmentReader::next_batch).await else {
                return true;
            };
            reader = r;
            match batch {
                Ok(Some(events)) => {
                    let last = self.last;
                    let frames = events
                        .iter()
                        .filter(|e| e.cursor > last)
                        .filter_map(|e| self.advance(e))
                        .collect();
                    if !out.send(frames).await {
                        return false;
                    }
                }
                Ok(None) => return true,
                Err(e) => {
                    // Removed by retention, or unreadable: its events cannot be sent again.
                    tracing::debug!("catching up: {e}");
                    return true;
                }
            }
        }
    }
}

/// Follows every run from after cursor `since` (or from the ring without one). A cursor this
/// server never gave (from an index since deleted and rebuilt: cursors only grow otherwise) is
/// treated as none — except with `[cluster]`, where cursors are the engine's stream sequences,
/// the same on every dashboard: a cursor another dashboard gave that this one has not reached
/// yet waits for the events after it.
fn start(
    state: &Arc<AppState>,
    since: Option<u64>,
    pipeline: Option<String>,
) -> mpsc::Receiver<Item> {
    let (out, rx) = Out::new(state);
    let state = state.clone();
    let pipeline: Option<Arc<str>> = pipeline.map(Arc::from);
    let shared_cursors = state.config.cluster.is_some();
    // Without a cursor: the ring, then what follows.
    let last = since
        .filter(|&c| shared_cursors || c <= state.bus.last_cursor())
        .unwrap_or_else(|| state.bus.ring_start());
    let changed = state.bus.watch_all();
    let follower = AllFollower {
        state: state.clone(),
        last,
        pipeline,
    };
    tokio::spawn(follow(state, follower, changed, out));
    rx
}

/// Every run's events, live, over WebSocket.
#[utoipa::path(
    get,
    path = "/ws/events",
    operation_id = "allEventsSocket",
    tag = "streams",
    description = "A WebSocket (a `GET` with `Upgrade: websocket`): every run's events from now \
        on, preceded by the recent events still in the bus's ring buffer; one text frame per \
        event: the `Event` object with `cursor`, the event's place in this stream. With \
        `since`, every event after that cursor instead (read again from the run files where \
        needed), with no gap and no duplicate, across restarts of the server. A client that \
        falls behind is caught up, never cut off; one that stops reading is closed with code \
        4000 (`lagged`) and resumes with `since`. Closed with 1001 on shutdown. A browser's \
        `Origin` must be this server (403 otherwise). With `pipeline`, only that pipeline's \
        events (their cursors are still the whole stream's).",
    params(CursorQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol: the events follow as \
            text frames."),
        (status = 400, description = "A `since` that is not a whole number, a `pipeline` too \
            long to be a name, or not a WebSocket handshake.", body = ErrorBody),
        (status = 403, description = "Cross-origin: the browser's `Origin` is not this server.", body = ErrorBody),
        (status = 426, description = "The connection cannot be upgraded.", body = ErrorBody),
    ),
)]
pub async fn all_events(
    State(state): State<Arc<AppState>>,
    Query(q): Query<CursorQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let since = parse_u64("since", q.since.as_deref())?;
    let pipeline = pipeline_filter(q.pipeline)?;
    Ok(handshake(ws)?.on_upgrade(move |socket| async move {
        let rx = start(&state, since, pipeline);
        serve_socket(state, socket, rx).await;
    }))
}

/// Every run's events, live, as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/api/events/stream",
    operation_id = "streamAllEvents",
    tag = "streams",
    description = "The all-runs stream of `/ws/events`, as Server-Sent Events, for proxies that \
        block WebSocket: the recent events, then every new one; with `since` or \
        `Last-Event-ID`, every event after that cursor. The stream does not end while the \
        server runs.",
    params(
        CursorQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this cursor (an \
            `EventSource` sends it on reconnecting); wins over `since`."),
    ),
    responses(
        (status = 200, description = "An endless `text/event-stream`: one message per event, \
            `id:` its cursor and `data:` the `Event` object with `cursor`, as JSON; a comment \
            line now and then keeps the connection alive.",
            content_type = "text/event-stream", body = String),
        (status = 400, description = "A `since` or `Last-Event-ID` that is not a whole number, \
            or a `pipeline` too long to be a name.", body = ErrorBody),
    ),
)]
pub async fn all_sse(
    State(state): State<Arc<AppState>>,
    Query(q): Query<CursorQuery>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let since = resume_after(&headers, q.since.as_deref())?;
    let rx = start(&state, since, pipeline_filter(q.pipeline)?);
    Ok(sse_body(state, rx, None))
}
