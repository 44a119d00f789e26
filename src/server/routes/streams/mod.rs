//! Streams (`docs/api.md`, WebSocket and Server-Sent Events).
//!
//! | file | stream |
//! |---|---|
//! | `run.rs` | `/ws/events/{run_id}` and `/api/runs/{run_id}/events/stream`: a run from its file, then live |
//! | `all.rs` | `/ws/events` and `/api/events/stream`: every run's events, resumable by cursor |
//! | here | what both share: the socket writer, the budget, the SSE body |
//!
//! Each stream is a *follower* task that finds the events (the bus, the ring, the files) and
//! hands them, as frames, to the task writing the client's socket through a bounded
//! channel. Neither stream ever leaves a gap for a client that keeps reading: a follower that
//! falls behind the bus reads what it missed again — a run's from its file, the all-runs one
//! from the ring or through the feed (`index::feed`) — and goes on live. Only a client that
//! stops reading is let go: its socket takes no frame for 10 s and is closed with
//! code 4000, and it resumes with its `since`.
//!
//! Each event is encoded once, on the bus (`bus::Fed`); a frame is a reference to that
//! encoding. What a follower has queued for its client is reserved in the client's byte
//! budget (`server::budget`) until it is written.

mod all;
mod run;

pub use all::{__path_all_events, __path_all_sse, CursorQuery, all_events, all_sse};
pub use run::{__path_run_events, __path_run_sse, SinceQuery, run_events, run_sse};

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};

use crate::bus::{Fed, Taken};
use crate::event::Json;
use crate::server::budget::{self, Reserved};
use crate::server::error::{ApiError, parse_u64};
use crate::server::state::{AppState, Stats, closed};

/// Close code for a client that stopped reading.
pub const CLOSE_LAGGED: u16 = 4000;

/// Close reason sent with [`CLOSE_LAGGED`].
const LAGGED: &str = "lagged";

/// A client whose socket does not take a message for this long is considered stuck.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Batches a follower may hand its client before it waits (and, if the bus moves on
/// meanwhile, catches up). Their bytes are bounded by the client's
/// [`budget`](crate::server::budget) first; this is also the most frames in one batch.
const FOLLOW_BUFFER: usize = 1024;

/// At a high event rate, a follower hands its client a batch, and a socket is written, at
/// most once per this: what arrives meanwhile goes with it. A stream quieter than this is
/// not held back at all (the first event after a pause goes at once); a busy one costs a
/// wake-up and a write per this per client instead of per event, which is what lets one
/// server feed hundreds of clients of a fast run.
const COALESCE: Duration = Duration::from_millis(2);

/// Waits until [`COALESCE`] has passed since `last` (not at all if it has, or if there was
/// none).
async fn coalesce(last: Option<tokio::time::Instant>) {
    if let Some(last) = last
        && last + COALESCE > tokio::time::Instant::now()
    {
        tokio::time::sleep_until(last + COALESCE).await;
    }
}

/// The most a socket buffers for a client before sends fail.
const MAX_WRITE_BUFFER: usize = 8 * 1024 * 1024;

/// The bytes of frames a socket gathers before it writes them out (or the flush that ends a
/// batch does). With 16 KiB, a client behind by a batch cost a `send` per 60 frames, and 200
/// clients of a fast run cost the server 10-20 % more CPU per delivery. The buffer grows only
/// as far as a client's batches do: an idle client keeps none of it.
const WRITE_BUFFER: usize = 64 * 1024;

/// The largest message (and frame) a client may send; a larger one closes its socket.
pub const MAX_CLIENT_MESSAGE: usize = 4 * 1024;

/// One message for a client: its id (SSE `id:`; a `seq` or a cursor) and its text, a
/// reference to the event's one encoding.
struct Frame {
    id: u64,
    text: Json,
}

/// What a follower hands its client.
enum Item {
    /// Frames, their bytes, and those bytes reserved until the frames are written.
    Frames(Vec<Frame>, usize, Reserved),
    /// The stream ends.
    End(Ending),
}

/// Why a stream ends (besides its client leaving).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The server is closing: WebSocket close code 1001.
    Shutdown,
    /// A run's stream sent the run's final event: close code 1000, or the SSE `end` event.
    Finished,
}

/// The close reason of a run's stream after its final event.
const FINISHED: &str = "run finished";

/// The follower's side of a client: its byte budget and the channel to its socket (or SSE
/// body).
struct Out {
    budget: budget::Client,
    tx: mpsc::Sender<Item>,
    /// Told once the first catch-up is queued (dropped instead when the stream ends there).
    ready: Option<oneshot::Sender<()>>,
}

impl Out {
    fn new(state: &AppState) -> (Out, mpsc::Receiver<Item>) {
        let (tx, rx) = mpsc::channel(FOLLOW_BUFFER);
        let out = Out {
            budget: state.budget.client(),
            tx,
            ready: None,
        };
        (out, rx)
    }

    /// The same, with a signal that the first catch-up is queued.
    fn with_ready(state: &AppState) -> (Out, mpsc::Receiver<Item>, oneshot::Receiver<()>) {
        let (mut out, rx) = Out::new(state);
        let (ready, caught_up) = oneshot::channel();
        out.ready = Some(ready);
        (out, rx, caught_up)
    }

    /// Reserves the bytes of `frames` in the client's budget (waiting while its earlier ones
    /// are still unwritten), then queues them. Returns false if the client is gone.
    async fn send(&self, frames: Vec<Frame>) -> bool {
        if frames.is_empty() {
            return true;
        }
        let bytes = frames.iter().map(|f| f.text.len()).sum();
        let reserved = tokio::select! {
            r = self.budget.reserve(bytes) => r,
            _ = self.tx.closed() => return false,
        };
        self.tx
            .send(Item::Frames(frames, bytes, reserved))
            .await
            .is_ok()
    }
}

/// One bounded read of a file `reader` (a batch), on the blocking pool, handing the reader
/// back with what it read. `None` if the read task failed (logged): the caller stops catching
/// up, and live events and later re-reads fill in.
async fn read_blocking<R, T>(reader: R, read: fn(&mut R) -> T) -> Option<(R, T)>
where
    R: Send + 'static,
    T: Send + 'static,
{
    super::read_off_the_workers(reader, read)
        .await
        .inspect_err(|e| tracing::warn!("reading a run file failed: {e}"))
        .ok()
}

/// Where a live event stands for a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Sent already (read again from the file, or the ring).
    Sent,
    /// The very next one.
    Next,
    /// Past a gap: what lies between must be read again first.
    After,
}

/// What a stream's follower knows: where it is, and how to read again what it missed.
trait Follow {
    /// The event's key in the log this stream follows.
    fn key(&self, e: &Fed) -> u64;
    fn place(&self, e: &Fed) -> Place;
    /// Takes `e` as sent: its frame, or `None` for an event this stream passes over (not
    /// of the pipeline it is filtered to).
    fn advance(&mut self, e: &Fed) -> Option<Frame>;
    /// Up to `max` events from the bus's log after the last one taken.
    fn take(&self, max: usize) -> Taken;
    /// Sends what it missed from the files: up to the log's key `until` if it says (the log
    /// holds the rest), else all there is. False if the client is gone.
    async fn catch_up(&mut self, out: &Out, until: Option<u64>) -> bool;
    /// Whether the stream has sent all there will be.
    fn finished(&self) -> bool {
        false
    }
}

/// Follows the bus after a first catch-up: takes each event once, in order, everything
/// already waiting in one batch, and catches up from the files whenever it finds a gap or
/// fell behind the log. Ends when the client goes away or the server closes.
async fn follow<F: Follow>(
    state: Arc<AppState>,
    mut f: F,
    mut changed: watch::Receiver<()>,
    mut out: Out,
) {
    if !f.catch_up(&out, None).await {
        return;
    }
    let mut closing = state.closing.clone();
    let mut last_sent = None;
    loop {
        if f.finished() {
            let _ = out.tx.send(Item::End(Ending::Finished)).await;
            return;
        }
        if let Some(ready) = out.ready.take() {
            let _ = ready.send(());
        }
        // Seen before taking: whatever is published after the take wakes the wait below.
        changed.mark_unchanged();
        let events = match f.take(FOLLOW_BUFFER) {
            Taken::Events(events) => events,
            Taken::Behind { until } => {
                if !f.catch_up(&out, until).await {
                    return;
                }
                continue;
            }
        };
        if events.is_empty() {
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                _ = closed(&mut closing) => {
                    let _ = out.tx.send(Item::End(Ending::Shutdown)).await;
                    return;
                }
                _ = out.tx.closed() => return,
            }
            // Right after a batch, what else arrives within the coalescing time goes with
            // the next one.
            coalesce(last_sent).await;
            continue;
        }
        let mut batch = Vec::with_capacity(events.len());
        for e in &events {
            // A gap: what lies between is read again first. What cannot be (a file removed
            // meanwhile) is gone.
            if f.place(e) == Place::After
                && (!out.send(std::mem::take(&mut batch)).await
                    || !f.catch_up(&out, Some(f.key(e))).await)
            {
                return;
            }
            if f.place(e) != Place::Sent
                && let Some(frame) = f.advance(e)
            {
                batch.push(frame);
            }
        }
        if !out.send(batch).await {
            return;
        }
        last_sent = Some(tokio::time::Instant::now());
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
        .write_buffer_size(WRITE_BUFFER)
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

/// Where a stream resumes: `Last-Event-ID` (an `EventSource` sends it on reconnecting) wins
/// over `since`.
fn resume_after(headers: &HeaderMap, since: Option<&str>) -> Result<Option<u64>, ApiError> {
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("Last-Event-ID must be a whole number, not {v:?}"))
            })
        })
        .transpose()?;
    Ok(last_event_id.or(parse_u64("since", since)?))
}

/// The most frames written to a socket between two flushes: what was waiting when the
/// writer woke goes out in one write.
const MAX_FRAMES_PER_FLUSH: usize = 4 * FOLLOW_BUFFER;

/// Whether `item` alone fills the socket's write buffer: then the writer does not wait
/// [`COALESCE`] to gather more, since the frames would go out in writes of that size anyway.
/// A client behind the stream gets such batches back to back; a wait before each held a burst
/// to a batch per 2 ms (~300,000 events/s with one client, measured).
fn fills_a_write(item: &Item) -> bool {
    matches!(item, Item::Frames(_, bytes, _) if *bytes >= WRITE_BUFFER)
}

/// `fut`, given at most `limit`; the timer is set only if it does not finish at once. Most
/// writes do (the socket takes them); a timer set and cancelled for each was 3 % of the
/// server's samples in a profile of 200 clients of a fast run.
async fn within<F: std::future::Future>(
    limit: Duration,
    fut: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut fut = std::pin::pin!(fut);
    if let std::task::Poll::Ready(out) = futures_util::poll!(fut.as_mut()) {
        return Ok(out);
    }
    tokio::time::timeout(limit, fut).await
}

/// Writes what the follower hands over to the socket, everything already waiting in one
/// flush; notices the client leaving.
async fn serve_socket(state: Arc<AppState>, socket: WebSocket, mut rx: mpsc::Receiver<Item>) {
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
    let mut last_write = None;
    let outcome: Result<(), (u16, &'static str)> = loop {
        let item = tokio::select! {
            item = rx.recv() => item,
            _ = &mut gone => break Ok(()),
        };
        let Some(item) = item else { break Ok(()) };
        if !fills_a_write(&item) {
            coalesce(last_write).await;
        }
        let mut batches = Vec::new();
        let mut end = None;
        let mut frames = 0;
        let mut next = Some(item);
        while let Some(item) = next.take() {
            match item {
                Item::Frames(f, _, reserved) => {
                    frames += f.len();
                    batches.push((f, reserved));
                }
                Item::End(why) => {
                    end = Some(why);
                    break;
                }
            }
            if frames < MAX_FRAMES_PER_FLUSH {
                next = rx.try_recv().ok();
            }
        }
        let send = async {
            // The frames are moved to the socket, not cloned: a clone is one more count on
            // the event's shared encoding, which every client's writer touches. The
            // reservations stay until the write.
            for (f, _) in &mut batches {
                for frame in f.drain(..) {
                    sink.feed(Message::Text(frame.text)).await?;
                }
            }
            sink.flush().await
        };
        let sent = within(SEND_TIMEOUT, send).await;
        last_write = Some(tokio::time::Instant::now());
        // Written (or given up on): the bytes leave the client's budget.
        drop(batches);
        match sent {
            Ok(Ok(())) => match end {
                Some(Ending::Shutdown) => break Err((1001, "server shutting down")),
                Some(Ending::Finished) => break Err((1000, FINISHED)),
                None => {}
            },
            Ok(Err(_)) => break Ok(()),
            Err(_) => break Err((CLOSE_LAGGED, LAGGED)),
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

/// The body of a Server-Sent Events stream: what the follower hands over, one message per
/// frame (`id:` the frame's id, `data:` its text), with a comment now and then to keep the
/// connection alive; after a run's final event, an `end` event, and the body ends. Each
/// batch's reservation is kept until the next batch is asked for: hyper asks once it has taken
/// the previous one for the socket.
fn sse_body(state: Arc<AppState>, rx: mpsc::Receiver<Item>, first: Option<Item>) -> Response {
    Stats::add(&state.stats.sse_clients, 1);
    let guard = SseGuard(state);
    let stream = futures_util::stream::unfold(
        (rx, guard, first, None::<Reserved>),
        |(mut rx, guard, first, previous)| async move {
            drop(previous);
            let item = match first {
                Some(item) => Some(item),
                None => rx.recv().await,
            };
            let events: Vec<SseEvent> = match item? {
                Item::Frames(frames, _, reserved) => {
                    let events = frames
                        .into_iter()
                        .map(|f| SseEvent::default().id(f.id.to_string()).data(&*f.text))
                        .collect();
                    return Some((events, (rx, guard, None, Some(reserved))));
                }
                Item::End(Ending::Finished) => {
                    vec![SseEvent::default().event("end").data(FINISHED)]
                }
                Item::End(Ending::Shutdown) => return None,
            };
            // The last message: the channel is closed so the next poll ends the body.
            rx.close();
            Some((events, (rx, guard, None, None)))
        },
    )
    .flat_map(|events| futures_util::stream::iter(events.into_iter().map(Ok::<_, Infallible>)));
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_that_waits_is_given_up_on_past_its_limit_and_not_before() {
        // Done at once: its result, whatever the limit.
        assert_eq!(within(Duration::ZERO, async { 7 }).await, Ok(7));
        // Waiting: given up on once the limit has passed.
        let never = std::future::pending::<()>();
        let started = tokio::time::Instant::now();
        assert!(within(Duration::from_millis(50), never).await.is_err());
        assert!(started.elapsed() >= Duration::from_millis(50));
        // Waiting, then done within the limit.
        let soon = tokio::time::sleep(Duration::from_millis(10));
        assert_eq!(within(Duration::from_secs(10), soon).await, Ok(()));
    }
}
