//! `GET /api/runs/{run_id}/events`: a page of a run's events, read from its file (the source
//! of truth), in `seq` order.
//!
//! A page is bounded three ways, so no request makes the server hold a whole run: at most
//! `limit` events ([`DEFAULT_LIMIT`] unless asked, never more than [`MAX_LIMIT`]), at most
//! [`MAX_PAGE_BYTES`] of them (and at least one), and its bytes reserved in the server's
//! [`budget`](crate::server::budget) while it is built and sent. When the run may have more
//! after the page, the answer carries `Link: <...?since=SEQ&limit=N>; rel="next"` (RFC 8288):
//! the cursor is the `seq` of the page's last event. `?tail=N` is the last `N` events (within
//! the same bounds); its page has no next.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::event::{Event, Published, RunId};
use crate::fsx;
use crate::server::budget::Reserved;
use crate::server::error::{ApiError, ErrorBody, parse_u64, run_id};
use crate::server::extract::{Path, Query};
use crate::server::state::AppState;
use crate::tail::{Replay, TailError};

/// Events in a page when the request does not say.
pub const DEFAULT_LIMIT: u64 = 1000;

/// The most events a page holds, whatever the request says.
pub const MAX_LIMIT: u64 = 10_000;

/// The most bytes of events a page holds (a page has at least one event, however long).
pub const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// How long a page waits for room in the server's budget before answering 503.
const RESERVE_WITHIN: Duration = Duration::from_secs(10);

/// The query of `GET /api/runs/{run_id}/events`, as sent (checked by the handler, like
/// [`ListQuery`](super::runs::ListQuery)).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events after this `seq` (the cursor of the next page).
    #[param(value_type = Option<u64>)]
    since: Option<String>,
    /// At most this many events: a page holds at most 10,000 (and a bounded number of bytes);
    /// the `Link` header says where the next page starts.
    #[param(value_type = Option<u64>, minimum = 1, maximum = 10000, default = 1000)]
    limit: Option<String>,
    /// Only the last N events (at most 10,000, and a bounded number of bytes).
    #[param(value_type = Option<u64>, maximum = 10000)]
    tail: Option<String>,
}

/// What a page is asked for.
#[derive(Clone, Copy)]
struct Ask {
    since: Option<u64>,
    limit: u64,
    tail: Option<u64>,
}

/// A page: the JSON array of its events (their stored JSON joined, no re-serializing), and
/// the budget held for it.
struct Page {
    body: String,
    /// The `seq` of its last event.
    last: Option<u64>,
    held: Vec<Reserved>,
    /// Whether the run may have events after the page.
    more: bool,
}

/// The events of a page as it is read: a `tail` keeps the last ones (and drops older ones),
/// a forward page appends each to the body at once.
struct Reading {
    page: Page,
    tail: VecDeque<Arc<Published>>,
    count: u64,
    bytes: usize,
    reserved: usize,
}

impl Reading {
    fn push(&mut self, e: Arc<Published>, tail: Option<u64>) {
        self.count += 1;
        self.bytes += e.json.len();
        let Some(n) = tail else {
            self.page.body.push(if self.count == 1 { '[' } else { ',' });
            self.page.body.push_str(&e.json);
            self.page.last = Some(e.seq);
            return;
        };
        self.tail.push_back(e);
        while self.tail.len() > 1 && (self.tail.len() as u64 > n || self.bytes > MAX_PAGE_BYTES) {
            if let Some(old) = self.tail.pop_front() {
                self.bytes -= old.json.len();
            }
        }
    }

    /// The finished page; of a `tail`, the first `limit`.
    fn finish(mut self, limit: Option<u64>) -> Page {
        let keep = limit.map_or(usize::MAX, |l| l as usize);
        let mut n = 0;
        while let Some(e) = self.tail.pop_front() {
            if n == keep {
                break;
            }
            self.page.body.push(if n == 0 { '[' } else { ',' });
            self.page.body.push_str(&e.json);
            self.page.last = Some(e.seq);
            n += 1;
        }
        if self.page.body.is_empty() {
            self.page.body.push('[');
        }
        self.page.body.push(']');
        self.page
    }
}

/// A run's events, from its file (the source of truth).
///
/// In `seq` order, a page at a time: after `since`, at most `limit` (or the last `tail`).
#[utoipa::path(
    get,
    path = "/api/runs/{run_id}/events",
    operation_id = "getRunEvents",
    tag = "runs",
    params(("run_id" = RunId, Path, description = "The run."), EventsQuery),
    responses(
        (status = 200, description = "The run's events in `seq` order: after `since`, at most \
            `limit`, or the last `tail`.", body = Vec<Event>, headers(
            ("Link" = String, description = "`<URL>; rel=\"next\"`: the next page (its \
                `since` is the last `seq` of this one), when there may be more events."),
        )),
        (status = 400, description = "Not a run id, or a `since`, `limit` or `tail` that is not \
            a whole number.", body = ErrorBody),
        (status = 404, description = "The run has no file.", body = ErrorBody),
        (status = 503, description = "The run file cannot be read, or the server has no room \
            for the page within 10 s.", body = ErrorBody),
    ),
)]
pub async fn run_events(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let id = run_id(&raw)?;
    let ask = Ask {
        since: parse_u64("since", q.since.as_deref())?,
        limit: parse_u64("limit", q.limit.as_deref())?
            .unwrap_or(DEFAULT_LIMIT)
            .clamp(1, MAX_LIMIT),
        tail: parse_u64("tail", q.tail.as_deref())?.map(|t| t.min(MAX_LIMIT)),
    };
    let page = match read_page(&state, &id, ask, q.limit.is_some()).await {
        Ok(page) => page,
        Err(PageError::Read(e)) => return Err(e.answer(&id)),
        Err(PageError::Busy) => {
            return Err(ApiError::unavailable(
                "the server holds too much for other clients right now; try again",
            ));
        }
    };
    let mut res = ([(header::CONTENT_TYPE, "application/json")], page.body).into_response();
    if page.more
        && let Some(last) = page.last
        && let Ok(link) = HeaderValue::from_str(&format!(
            "</api/runs/{id}/events?since={last}&limit={}>; rel=\"next\"",
            ask.limit
        ))
    {
        res.headers_mut().insert(header::LINK, link);
    }
    // The page's budget is given back once the body is built and handed over.
    drop(page.held);
    Ok(res)
}

enum PageError {
    Read(ReadFailed),
    Busy,
}

/// Why a run file could not be read for an answer (this route's and the log download's).
pub(super) enum ReadFailed {
    File(TailError),
    /// The read task failed (it panicked or was cancelled).
    Task(String),
}

impl ReadFailed {
    /// The answer: 404 for a run with no file (or a FIFO or a link planted under its name,
    /// never read), 503 for a file that cannot be read.
    pub(super) fn answer(self, id: &RunId) -> ApiError {
        match self {
            ReadFailed::File(TailError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                ApiError::new(StatusCode::NOT_FOUND, format!("no events for run {id}"))
            }
            ReadFailed::File(TailError::Read { ref source, .. })
                if let Some(n) = fsx::not_regular(source) =>
            {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no events for run {id}: its run file is {}, not a regular file",
                        n.what
                    ),
                )
            }
            ReadFailed::File(e) => ApiError::unavailable(e.to_string()),
            ReadFailed::Task(e) => {
                ApiError::unavailable(format!("reading the run file failed: {e}"))
            }
        }
    }
}

/// Reads the page `ask` names, one bounded batch at a time on the blocking pool, reserving
/// its bytes in the server's budget as it grows.
async fn read_page(
    state: &AppState,
    id: &RunId,
    ask: Ask,
    limit_given: bool,
) -> Result<Page, PageError> {
    let mut replay = Replay::new(state.run_file(id), id.clone(), ask.since);
    let mut r = Reading {
        page: Page {
            body: String::new(),
            last: None,
            held: Vec::new(),
            more: false,
        },
        tail: VecDeque::new(),
        count: 0,
        bytes: 0,
        reserved: 0,
    };
    let mut full = false;
    while let Some(batch) = next_batch(&mut replay).await.map_err(PageError::Read)? {
        if full {
            // The page was full at the end of the last batch: is there anything after it?
            r.page.more = !batch.is_empty();
            break;
        }
        let mut batch = batch.into_iter();
        for e in batch.by_ref() {
            r.push(e, ask.tail);
            if ask.tail.is_none() && (r.count >= ask.limit || r.bytes >= MAX_PAGE_BYTES) {
                full = true;
                break;
            }
        }
        if r.bytes > r.reserved {
            let more = r.bytes - r.reserved;
            let reserved = tokio::time::timeout(RESERVE_WITHIN, state.budget.reserve(more))
                .await
                .map_err(|_| PageError::Busy)?;
            r.page.held.push(reserved);
            r.reserved = r.bytes;
        }
        if full && batch.next().is_some() {
            r.page.more = true;
            break;
        }
    }
    Ok(r.finish(limit_given.then_some(ask.limit)))
}

/// The next bounded batch of a run file, read on the blocking pool.
pub(super) async fn next_batch(
    replay: &mut Replay,
) -> Result<Option<Vec<Arc<Published>>>, ReadFailed> {
    let (r, batch) = super::read_off_the_workers(replay.clone(), Replay::next_batch)
        .await
        .map_err(|e| ReadFailed::Task(e.to_string()))?;
    *replay = r;
    batch.map_err(ReadFailed::File)
}
