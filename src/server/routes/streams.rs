//! Streams (`docs/api.md`, WebSocket): `/ws/events/{run_id}` and its Server-Sent Events twin replay a run
//! from its file and then follow it live; `/ws/events` sends the bus's ring buffer, then every
//! new event.
//!
//! No gap, no duplicate: a per-run follower subscribes to the bus *before* reading the file,
//! then drops every live event whose `seq` it has already sent. Whatever the file had is sent
//! from the file; whatever comes later arrives on the bus (the tailer publishes every line).
//! If the follower falls behind the bus (a slow client, a long replay), it does not lose
//! anything: it reads the missing part from the file again, which is the source of truth.
//!
//! `/ws/events` has no file to fall back on: a client that falls too far behind is closed with
//! code 4000 (`lagged`) and reconnects, reading what it needs from the API.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use utoipa::IntoParams;

use crate::event::{Published, RunId};
use crate::server::budget::{self, Reserved};
use crate::server::error::{ApiError, ErrorBody, parse_u64, run_id};
use crate::server::extract::{Path, Query};
use crate::server::state::{AppState, Stats, closed};
use crate::tail::Replay;

/// Close code for a client that fell too far behind.
pub const CLOSE_LAGGED: u16 = 4000;

/// A client whose socket does not take a message for this long is considered stuck.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Batches a follower may hand its client before it waits (and, if the bus moves on
/// meanwhile, re-reads from the file). Their bytes are bounded by the client's
/// [`budget`](crate::server::budget) first.
const FOLLOW_BUFFER: usize = 1024;

/// The most a socket buffers for a client before sends fail.
const MAX_WRITE_BUFFER: usize = 8 * 1024 * 1024;

/// The largest message (and frame) a client may send; a larger one closes its socket.
pub const MAX_CLIENT_MESSAGE: usize = 4 * 1024;

/// The query of the per-run streams, as sent (checked by the handler).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SinceQuery {
    /// Start after this `seq` (to resume after a reconnect).
    #[param(value_type = Option<u64>)]
    since: Option<String>,
}

/// What a follower hands its client.
enum Item {
    /// Events, with the bytes reserved for them until they are written.
    Events(Vec<Arc<Published>>, Reserved),
    /// The follower cannot go on (the server is closing).
    End,
}

/// Follows one run: the file from `after`, then live events, re-reading the file whenever the
/// bus got ahead of us. Ends when the client goes away or the server closes.
async fn follow_run(state: Arc<AppState>, id: RunId, after: Option<u64>, out: mpsc::Sender<Item>) {
    let budget = state.budget.client();
    let mut live = state.bus.subscribe_live();
    let mut closing = state.closing.clone();
    let mut last = after;
    let mut replay = Replay::new(state.run_file(&id), id.clone(), after);
    // Catch up from the file (a missing file is fine: the run may not have written yet).
    if !catch_up(&mut replay, &mut last, &budget, &out).await {
        return;
    }
    loop {
        let next = tokio::select! {
            r = live.recv() => r,
            _ = closed(&mut closing) => {
                let _ = out.send(Item::End).await;
                return;
            }
            _ = out.closed() => return,
        };
        match next {
            Ok(e) => {
                if e.run_id != id || last.is_some_and(|l| e.seq <= l) {
                    continue;
                }
                if last.is_none_or(|l| e.seq == l + 1) || e.seq == 0 {
                    last = Some(e.seq);
                    if !send(&budget, &out, vec![e]).await {
                        return;
                    }
                } else {
                    // A gap: lines we have not seen (skipped bad lines, or a replayed file we
                    // read less of). The file says which.
                    replay.resume(last);
                    if !catch_up(&mut replay, &mut last, &budget, &out).await {
                        return;
                    }
                    if last.is_none_or(|l| e.seq > l) {
                        last = Some(e.seq);
                        if !send(&budget, &out, vec![e]).await {
                            return;
                        }
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                replay.resume(last);
                if !catch_up(&mut replay, &mut last, &budget, &out).await {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Reserves the bytes of `events` in the client's budget (waiting while its earlier ones are
/// still unwritten), then queues them. Returns false if the client is gone.
async fn send<T: Followed>(
    budget: &budget::Client,
    out: &mpsc::Sender<T>,
    events: Vec<Arc<Published>>,
) -> bool {
    let bytes = events.iter().map(|e| e.json.len()).sum();
    let reserved = tokio::select! {
        r = budget.reserve(bytes) => r,
        _ = out.closed() => return false,
    };
    out.send(T::from_item(Item::Events(events, reserved)))
        .await
        .is_ok()
}

/// Sends everything the file has after `last`. Returns false if the client is gone.
async fn catch_up(
    replay: &mut Replay,
    last: &mut Option<u64>,
    budget: &budget::Client,
    out: &mpsc::Sender<Item>,
) -> bool {
    loop {
        // A blocking read, but a bounded one (one batch), on the blocking pool.
        let mut r = replay.clone();
        let read = tokio::task::spawn_blocking(move || {
            let batch = r.next_batch();
            (r, batch)
        })
        .await;
        let batch = match read {
            Ok((r, batch)) => {
                *replay = r;
                batch
            }
            Err(e) => {
                tracing::warn!("replay task failed: {e}");
                return true;
            }
        };
        match batch {
            Ok(Some(events)) => {
                let events: Vec<Arc<Published>> = events
                    .into_iter()
                    .filter(|e| last.is_none_or(|l| e.seq > l))
                    .collect();
                if let Some(e) = events.last() {
                    *last = Some(e.seq);
                }
                if !events.is_empty() && !send(budget, out, events).await {
                    return false;
                }
            }
            Ok(None) => return true,
            Err(e) => {
                // Not there yet (announced, not written) or unreadable for now: live events
                // and later re-reads fill in.
                tracing::debug!("replay: {e}");
                return true;
            }
        }
    }
}

/// Upgrades with a bounded write buffer: a client that stops reading cannot make the server
/// buffer without limit. And with bounded messages: clients send nothing the server uses, so
/// one that sends more than [`MAX_CLIENT_MESSAGE`] is closed instead of buffered (the default
/// limit, 64 MiB, let any client make the server hold that much).
fn upgrade(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    // Clients send next to nothing: a small read buffer (the default, 128 KiB, made each
    // connection cost ~160 KiB, measured with 1,000 clients).
    ws.max_write_buffer_size(MAX_WRITE_BUFFER)
        .write_buffer_size(16 * 1024)
        .read_buffer_size(4 * 1024)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
}

/// The upgrade, or why there is none as an API error (`{"error": ...}`, with axum's status:
/// 400 for a request that is not a WebSocket handshake, 426 when the connection cannot be
/// upgraded), like every other error.
fn handshake(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, ApiError> {
    ws.map(upgrade)
        .map_err(|e| ApiError::new(e.status(), e.body_text()))
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
        id with no file yet is accepted and waits for it. Closed with 1001 on shutdown. A \
        browser's `Origin` must be this server (403 otherwise).",
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
        let (tx, rx) = mpsc::channel(FOLLOW_BUFFER);
        let follower = tokio::spawn(follow_run(state.clone(), id, after, tx));
        serve_socket(state, socket, rx).await;
        follower.abort();
    }))
}

/// Every run's events, live, over WebSocket.
#[utoipa::path(
    get,
    path = "/ws/events",
    operation_id = "allEventsSocket",
    tag = "streams",
    description = "A WebSocket (a `GET` with `Upgrade: websocket`): every run's events from now \
        on, preceded by the recent events still in the bus's ring buffer; one text frame per \
        event (the `Event` object). A client too slow to keep up \
        is closed with code 4000 (`lagged`) and reads what it missed from the API. Closed with \
        1001 on shutdown. A browser's `Origin` must be this server (403 otherwise).",
    responses(
        (status = 101, description = "Switching to the WebSocket protocol: the events follow as \
            text frames."),
        (status = 400, description = "Not a WebSocket handshake.", body = ErrorBody),
        (status = 403, description = "Cross-origin: the browser's `Origin` is not this server.", body = ErrorBody),
        (status = 426, description = "The connection cannot be upgraded.", body = ErrorBody),
    ),
)]
pub async fn all_events(
    State(state): State<Arc<AppState>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    Ok(handshake(ws)?.on_upgrade(move |socket| async move {
        let (tx, rx) = mpsc::channel(FOLLOW_BUFFER);
        let follower = tokio::spawn(follow_all(state.clone(), tx));
        serve_socket(state, socket, rx).await;
        follower.abort();
    }))
}

/// Close reason handed from a follower to the socket.
const LAGGED: &str = "lagged";

async fn follow_all(state: Arc<AppState>, out: mpsc::Sender<Result<Item, &'static str>>) {
    let budget = state.budget.client();
    let sub = state.bus.subscribe();
    let mut live = sub.live;
    let mut closing = state.closing.clone();
    if !sub.backlog.is_empty() && !send(&budget, &out, sub.backlog).await {
        return;
    }
    loop {
        let next = tokio::select! {
            r = live.recv() => r,
            _ = closed(&mut closing) => {
                let _ = out.send(Ok(Item::End)).await;
                return;
            }
            _ = out.closed() => return,
        };
        match next {
            Ok(e) => {
                // Everything already waiting goes out as one item: one flush per burst.
                let mut batch = vec![e];
                while batch.len() < FOLLOW_BUFFER {
                    match live.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(broadcast::error::TryRecvError::Lagged(_)) => {
                            let _ = out.send(Err(LAGGED)).await;
                            return;
                        }
                        Err(_) => break,
                    }
                }
                // Waits while the client catches up. A client so slow that the bus moves on
                // by its whole capacity meanwhile gets `Lagged` on the next receive and is
                // closed with 4000; a merely busy one loses nothing.
                if !send(&budget, &out, batch).await {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let _ = out.send(Err(LAGGED)).await;
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Anything a follower can send: per-run followers never lag, `/ws/events` ones may.
trait Followed: Send {
    fn from_item(item: Item) -> Self;
    fn into_item(self) -> Result<Item, &'static str>;
}
impl Followed for Item {
    fn from_item(item: Item) -> Self {
        item
    }
    fn into_item(self) -> Result<Item, &'static str> {
        Ok(self)
    }
}
impl Followed for Result<Item, &'static str> {
    fn from_item(item: Item) -> Self {
        Ok(item)
    }
    fn into_item(self) -> Result<Item, &'static str> {
        self
    }
}

/// Writes what the follower hands over to the socket, batching frames and flushing once per
/// batch; answers pings and notices the client leaving.
async fn serve_socket<T: Followed>(
    state: Arc<AppState>,
    socket: WebSocket,
    mut rx: mpsc::Receiver<T>,
) {
    Stats::add(&state.stats.ws_clients, 1);
    let (mut sink, mut stream) = socket.split();
    // The client's side is read on its own task: polling the socket for input on every
    // event sent would cost a read attempt per event. Text from the client is ignored; pings
    // are answered by the protocol layer with the next write.
    let (gone_tx, mut gone) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
        let _ = gone_tx.send(());
    });
    let outcome: Result<(), (u16, &'static str)> = loop {
        tokio::select! {
            item = rx.recv() => {
                let Some(item) = item else { break Ok(()) };
                match item.into_item() {
                    Ok(Item::Events(events, reserved)) => {
                        let send = async {
                            for e in &events {
                                sink.feed(Message::Text(e.json.to_string().into())).await?;
                            }
                            sink.flush().await
                        };
                        let sent = tokio::time::timeout(SEND_TIMEOUT, send).await;
                        // Written (or given up on): the bytes leave the client's budget.
                        drop((events, reserved));
                        match sent {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => break Ok(()),
                            Err(_) => break Err((CLOSE_LAGGED, LAGGED)),
                        }
                    }
                    Ok(Item::End) => break Err((1001, "server shutting down")),
                    Err(reason) => break Err((CLOSE_LAGGED, reason)),
                }
            }
            _ = &mut gone => break Ok(()),
        }
    };
    reader.abort();
    // What was queued for the client is given back to the budget before the close frame
    // goes out.
    drop(rx);
    if let Err((code, reason)) = outcome {
        if code == CLOSE_LAGGED {
            Stats::add(&state.stats.ws_lagged, 1);
        }
        // A client that stopped reading takes the close frame only once it reads again:
        // it gets as long as a send to do so.
        let _ = tokio::time::timeout(
            SEND_TIMEOUT,
            sink.send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            }))),
        )
        .await;
    }
    state
        .stats
        .ws_clients
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

/// A run's events, live, as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/api/runs/{run_id}/events/stream",
    operation_id = "streamRunEvents",
    tag = "streams",
    description = "The per-run stream of the WebSocket route, as Server-Sent Events, for \
        proxies that block WebSocket: every event of the run so far in `seq` order, then each \
        new one as it is written. The stream does not end while the server runs.",
    params(
        ("run_id" = RunId, Path, description = "The run."),
        SinceQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this `seq` (an \
            `EventSource` sends it on reconnecting); wins over `since`."),
    ),
    responses(
        (status = 200, description = "An endless `text/event-stream`: one message per event, \
            `id:` its `seq` and `data:` the `Event` object as JSON; \
            a comment line now and then keeps the connection alive.",
            content_type = "text/event-stream", body = String),
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
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("Last-Event-ID must be a seq number, not {v:?}"))
            })
        })
        .transpose()?;
    let after = last_event_id.or(parse_u64("since", q.since.as_deref())?);
    let (tx, rx) = mpsc::channel(FOLLOW_BUFFER);
    tokio::spawn(follow_run(state.clone(), id, after, tx));
    Stats::add(&state.stats.sse_clients, 1);
    let guard = SseGuard(state.clone());
    // Each batch's reservation is kept until the next batch is asked for: hyper asks once it
    // has taken the previous one for the socket.
    let stream = futures_util::stream::unfold(
        (rx, guard, None::<Reserved>),
        |(mut rx, guard, previous)| async move {
            drop(previous);
            match rx.recv().await {
                Some(Item::Events(events, reserved)) => Some((events, (rx, guard, Some(reserved)))),
                Some(Item::End) | None => None,
            }
        },
    )
    .flat_map(|events| {
        futures_util::stream::iter(
            events.into_iter().map(|e| {
                Ok::<_, Infallible>(SseEvent::default().id(e.seq.to_string()).data(&*e.json))
            }),
        )
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Counts an open SSE stream for as long as it lives.
struct SseGuard(Arc<AppState>);

impl Drop for SseGuard {
    fn drop(&mut self) {
        self.0
            .stats
            .sse_clients
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
