//! `GET /api/runs/{run_id}/log`: a run's output as plain text, for download — one line per
//! event ([`Event::write_log_line`](crate::event::Event::write_log_line): `time stage stream text`), read from its file.
//!
//! The body is streamed a batch of the file at a time (the file reader's bounded batches, on
//! the blocking pool): the next batch is read only when the client has taken the last, and
//! each batch's text is held in the server's [`budget`](crate::server::budget) until then.
//! A run of millions of lines downloads in the memory of one batch. A run still going gives
//! what its file holds when the download reaches its end.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::event::{Published, RunId};
use crate::server::budget::Reserved;
use crate::server::error::{ApiError, ErrorBody, run_id};
use crate::server::extract::Path;
use crate::server::state::AppState;
use crate::tail::Replay;

use super::events::{ReadFailed, next_batch};

/// How long a batch waits for room in the server's budget before the download ends.
const RESERVE_WITHIN: Duration = Duration::from_secs(10);

/// A run's output as plain text: one line per event, `time stage stream text`.
///
/// `stream` is `stdout` or `stderr` for a line a stage printed, and the event's name for
/// every other event (`start`, `retry`, `success`, `failure`, …). Streamed from the run file.
#[utoipa::path(
    get,
    path = "/api/runs/{run_id}/log",
    operation_id = "getRunLog",
    tag = "runs",
    params(("run_id" = RunId, Path, description = "The run.")),
    responses(
        (status = 200, description = "The run's events as text, one line each: the time (as \
            written), the stage, `stdout`/`stderr` or the event's name, and the text.",
            content_type = "text/plain", body = String, headers(
            ("Content-Disposition" = String, description = "`attachment; \
                filename=\"<run_id>.log\"`"),
        )),
        (status = 400, description = "Not a run id.", body = ErrorBody),
        (status = 404, description = "The run has no file.", body = ErrorBody),
        (status = 503, description = "The run file cannot be read.", body = ErrorBody),
    ),
)]
pub async fn run_log(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = run_id(&raw)?;
    let mut replay = Replay::new(state.run_file(&id), id.clone(), None);
    // The first batch is read before answering, so a run with no file is a 404, not an
    // empty 200.
    let first = next_batch(&mut replay).await.map_err(|e| e.answer(&id))?;
    let download = Download {
        state,
        id: id.clone(),
        replay,
        first,
        held: None,
    };
    let body = Body::from_stream(futures_util::stream::unfold(download, Download::next));
    let mut res = ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{id}.log\"")) {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

/// Where a download is: the file's reader, a batch read ahead, the budget of the last chunk.
struct Download {
    state: Arc<AppState>,
    id: RunId,
    replay: Replay,
    first: Option<Vec<Arc<Published>>>,
    held: Option<Reserved>,
}

impl Download {
    /// The next chunk of text, once the client has taken the last; `None` at the file's end
    /// (or when it cannot be read any more: the download ends short, and the log says why).
    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Download)> {
        // The client took the last chunk: its bytes leave the budget.
        self.held = None;
        let batch = match self.first.take() {
            Some(b) => b,
            None => match next_batch(&mut self.replay).await {
                Ok(Some(b)) => b,
                Ok(None) => return None,
                Err(e) => {
                    let why = match e {
                        ReadFailed::File(e) => e.to_string(),
                        ReadFailed::Task(e) => format!("the read task failed: {e}"),
                    };
                    tracing::warn!("log download of {} ended early: {why}", self.id);
                    return None;
                }
            },
        };
        let mut text = String::with_capacity(batch.iter().map(|p| p.json.len()).sum());
        for p in &batch {
            p.event.write_log_line(&mut text);
        }
        drop(batch);
        let reserved =
            tokio::time::timeout(RESERVE_WITHIN, self.state.budget.reserve(text.len())).await;
        let Ok(reserved) = reserved else {
            tracing::warn!(
                "log download of {} ended early: no room in the server's budget",
                self.id
            );
            return None;
        };
        self.held = Some(reserved);
        Some((Ok(Bytes::from(text)), self))
    }
}

#[cfg(test)]
mod tests {
    use crate::event::Event;

    #[test]
    fn an_event_is_one_line_of_time_stage_stream_and_text() {
        let e: Event = serde_json::from_str(
            r#"{"run_id":"r1","stage":"load","event":"log","timestamp":"2026-12-02T10:00:00.000Z",
                "msg":"bad row\r\nsecond part","data":{"stream":"stderr"}}"#,
        )
        .unwrap();
        let mut out = String::new();
        e.write_log_line(&mut out);
        assert_eq!(
            out,
            "2026-12-02T10:00:00.000Z load stderr bad row second part\n"
        );
        let e: Event = serde_json::from_str(
            r#"{"run_id":"r1","stage":"load","event":"failure","timestamp":"t","msg":"failed"}"#,
        )
        .unwrap();
        out.clear();
        e.write_log_line(&mut out);
        assert_eq!(out, "t load failure failed\n");
    }
}
