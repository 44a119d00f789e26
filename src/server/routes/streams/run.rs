//! One run's stream: `/ws/events/{run_id}` and its Server-Sent Events twin
//! `/api/runs/{run_id}/events/stream` replay the run from its file, then follow it live.
//!
//! No gap, no duplicate: the follower subscribes to the run's log on the bus *before* reading
//! the file, then passes over every event of the log whose `seq` it has already sent.
//! Whatever the file had is sent from the file; whatever comes later arrives on the bus (the
//! tailer publishes every line). If the follower falls behind the log (a slow client, a long
//! replay), it does not lose anything: it reads the part that fell out of the log from the
//! file again, which is the source of truth, and goes on from the log.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{
    Ending, Follow, Frame, Item, Out, Place, follow, handshake, read_blocking, resume_after,
    serve_socket, sse_body,
};
use crate::bus::{Fed, RunLog, Taken};
use crate::event::{Json, Published, RunId};
use crate::server::error::{ApiError, ErrorBody, parse_u64, run_id};
use crate::server::extract::{Path, Query};
use crate::server::state::AppState;
use crate::tail::Replay;

/// The query of the per-run streams, as sent (checked by the handler).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SinceQuery {
    /// Start after this `seq` (to resume after a reconnect).
    #[param(value_type = Option<u64>)]
    since: Option<String>,
}

/// A run's follower: where it got to in the run, its file, and the run's log on the bus.
struct RunFollower {
    /// The `seq` of the last event sent.
    last: Option<u64>,
    replay: Replay,
    log: Arc<RunLog>,
    /// The run's final event is sent (or was, before `since`): nothing more will come.
    done: bool,
}

impl Follow for RunFollower {
    fn key(&self, e: &Fed) -> u64 {
        e.seq
    }

    fn place(&self, e: &Fed) -> Place {
        let seq = e.seq;
        match self.last {
            Some(l) if seq <= l => Place::Sent,
            Some(l) if seq == l + 1 => Place::Next,
            None if seq == 0 => Place::Next,
            // Lines not seen: skipped bad lines, or a file read less far than the bus.
            _ => Place::After,
        }
    }

    fn advance(&mut self, e: &Fed) -> Option<Frame> {
        self.last = Some(e.seq);
        self.done |= e.terminal;
        Some(frame(e.seq, &e.json))
    }

    fn take(&self, max: usize) -> Taken {
        self.log.after(self.last, max)
    }

    fn finished(&self) -> bool {
        self.done
    }

    /// Sends what the file has after `last`: a batch at a time until one reaches `seq`
    /// `until` if given (the run's log holds the rest), else to its end.
    async fn catch_up(&mut self, out: &Out, until: Option<u64>) -> bool {
        if let Some(until) = until
            && let Some(sent) = self.catch_up_by_spans(out, until).await
        {
            return sent;
        }
        self.replay.resume(self.last);
        loop {
            // A copy goes to the blocking pool: if the read task fails, the replay stays.
            let Some((replay, batch)) =
                read_blocking(self.replay.clone(), Replay::next_batch).await
            else {
                return true;
            };
            self.replay = replay;
            match batch {
                Ok(Some(events)) => {
                    // The whole batch is sent, also past `until`: the replay goes on after it.
                    let reached = until.is_some_and(|u| events.last().is_some_and(|e| e.seq >= u));
                    let frames = self.read_again(&events);
                    if !out.send(frames).await {
                        return false;
                    }
                    if reached {
                        return true;
                    }
                }
                Ok(None) => {
                    // Read to the end: a file whose final event is in it is complete.
                    self.done |= self.replay.finished();
                    return true;
                }
                Err(e) => {
                    // Not there yet (announced, not written) or unreadable for now: live
                    // events and later re-reads fill in.
                    tracing::debug!("replay: {e}");
                    return true;
                }
            }
        }
    }
}

impl RunFollower {
    /// Takes the events read again from the file after `last` as sent: their frames.
    fn read_again(&mut self, events: &[Arc<Published>]) -> Vec<Frame> {
        let last = self.last;
        let frames: Vec<Frame> = events
            .iter()
            .filter(|e| last.is_none_or(|l| e.seq > l))
            .inspect(|e| self.done |= e.event.is_run_terminal())
            .map(|e| frame(e.seq, &e.json))
            .collect();
        if let Some(f) = frames.last() {
            self.last = Some(f.id);
        }
        frames
    }

    /// Behind the run's log: reads again from mark to mark ([`RunLog::span`]) up to `seq`
    /// `until`, each span read once for all the run's followers. `None` where no two marks
    /// enclose where it is (it reads its own way then); else whether the client is still
    /// there.
    async fn catch_up_by_spans(&mut self, out: &Out, until: u64) -> Option<bool> {
        loop {
            let line = self.last.map_or(0, |l| l + 1);
            if line >= until {
                return Some(true);
            }
            let span = self.log.span(line)?;
            let events = span
                .events
                .get_or_try_init(|| async {
                    let reader = (self.replay.clone(), span.from.clone(), span.to.clone());
                    let (_, read) = read_blocking(reader, |(r, from, to)| r.span(from, to))
                        .await
                        .ok_or(())?;
                    read.map(Arc::new)
                        .map_err(|e| tracing::debug!("reading a span again: {e}"))
                })
                .await
                .ok()?
                .clone();
            let frames = self.read_again(&events);
            // Every line before the span's end is handled: the next is the one there.
            self.last = Some(self.last.unwrap_or(0).max(span.to.lines - 1));
            self.replay.skip_to(span.to, self.last);
            if !out.send(frames).await {
                return Some(false);
            }
        }
    }
}

/// A run's frame: an event's `seq` and its JSON, live or read again from the file.
fn frame(seq: u64, json: &Json) -> Frame {
    Frame {
        id: seq,
        text: json.clone(),
    }
}

/// Follows one run from after `after`: its file, then live events. The run's
/// log is subscribed to before the file is read, so nothing falls between the two.
fn start(state: &Arc<AppState>, id: RunId, after: Option<u64>, out: Out) {
    let sub = state.bus.subscribe_run(&id);
    let follower = RunFollower {
        last: after,
        replay: Replay::new(state.run_file(&id), id, after),
        log: sub.log,
        done: false,
    };
    tokio::spawn(follow(state.clone(), follower, sub.changed, out));
}

/// A run's events, live, over WebSocket.
#[utoipa::path(
    get,
    path = "/ws/events/{run_id}",
    operation_id = "runEventsSocket",
    tag = "streams",
    description = "A WebSocket (a `GET` with `Upgrade: websocket`): every event of the run so \
        far in `seq` order, then each new one as it is written, with no gap and no duplicate; \
        one text frame per event (the `Event` object). A valid run \
        id with no file yet is accepted and waits for it. After the run's final event the \
        socket is closed with code 1000 (`run finished`). A client that stops reading is \
        closed with code 4000 (`lagged`) and resumes with `since`. Closed with 1001 on \
        shutdown. A browser's `Origin` must be this server (403 otherwise).",
    params(("run_id" = RunId, Path, description = "The run."), SinceQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol: the events follow as \
            text frames."),
        (status = 400, description = "Not a run id, a `since` that is not a whole number, or \
            not a WebSocket handshake.", body = ErrorBody),
        (status = 403, description = "Cross-origin: the browser's `Origin` is not this server.", body = ErrorBody),
        (status = 426, description = "The connection cannot be upgraded.", body = ErrorBody),
    ),
)]
pub async fn run_events(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    Query(q): Query<SinceQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let id = run_id(&raw)?;
    let after = parse_u64("since", q.since.as_deref())?;
    Ok(handshake(ws)?.on_upgrade(move |socket| async move {
        let (out, rx) = Out::new(&state);
        start(&state, id, after, out);
        // The follower ends when it finds the socket's side of the channel gone.
        serve_socket(state, socket, rx).await;
    }))
}

/// A run's events, live, as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/api/runs/{run_id}/events/stream",
    operation_id = "streamRunEvents",
    tag = "streams",
    description = "The per-run stream of the WebSocket route, as Server-Sent Events, for \
        proxies that block WebSocket: every event of the run so far in `seq` order, then each \
        new one as it is written. After the run's final event, an `end` event, and the \
        stream ends.",
    params(
        ("run_id" = RunId, Path, description = "The run."),
        SinceQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this `seq` (an \
            `EventSource` sends it on reconnecting); wins over `since`."),
    ),
    responses(
        (status = 200, description = "A `text/event-stream`: one message per event, \
            `id:` its `seq` and `data:` the `Event` object as JSON; a comment line now and then \
            keeps the connection alive; after the run's final event, a message `event: end`, \
            and the stream ends.",
            content_type = "text/event-stream", body = String),
        (status = 204, description = "The run is finished and has nothing after `since` / \
            `Last-Event-ID` (an `EventSource` stops reconnecting)."),
        (status = 400, description = "Not a run id, or a `since` or `Last-Event-ID` that is not \
            a whole number.", body = ErrorBody),
    ),
)]
pub async fn run_sse(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    Query(q): Query<SinceQuery>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let id = run_id(&raw)?;
    let after = resume_after(&headers, q.since.as_deref())?;
    let (out, mut rx, caught_up) = Out::with_ready(&state);
    start(&state, id, after, out);
    // A finished run with nothing after `since` (an `EventSource` reconnecting after the
    // `end` event): 204 tells it to stop. Known once the file is read: the end, or the first
    // events, come before the follower says it caught up.
    let first = tokio::select! {
        biased;
        first = rx.recv() => first,
        _ = caught_up => None,
    };
    if matches!(first, Some(Item::End(Ending::Finished))) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(sse_body(state, rx, first))
}
