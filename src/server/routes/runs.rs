//! The runs: `GET /api/runs` (newest first, paged with `before`, filtered by `status`),
//! `GET /api/runs/{run_id}` (with its stages), `GET /api/runs/{run_id}/events` (from the run
//! file: the source of truth), and `POST /api/runs/{run_id}/cancel`.
//!
//! Every run id that comes in goes through [`run_id`] first, so none can name a path outside
//! `events_dir`.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::event::Published;
use crate::fsx;
use crate::index::RUN_STATUSES;
use crate::runner::liveness::{self, Liveness};
use crate::server::error::{ApiError, parse_u64, run_id};
use crate::server::state::AppState;
use crate::tail::{Replay, TailError};

/// The query parameters of the run routes, as sent: each handler checks the ones it takes
/// (`limit`, `before`, `status` for the list; `since`, `limit`, `tail` for the events), so a
/// bad value is a 400 naming it rather than axum's generic rejection.
#[derive(Deserialize)]
pub struct RunsQuery {
    limit: Option<String>,
    before: Option<String>,
    status: Option<String>,
    since: Option<String>,
    tail: Option<String>,
}

pub async fn list_runs(
    State(state): State<Arc<AppState>>,
    Query(q): Query<RunsQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = parse_u64("limit", q.limit.as_deref())?
        .unwrap_or(50)
        .clamp(1, 1000) as usize;
    let before = q.before.as_deref().map(run_id).transpose()?;
    let status = match q.status.as_deref() {
        Some(s) if !RUN_STATUSES.contains(&s) => {
            return Err(ApiError::bad_request(format!(
                "unknown status {s:?}; one of {}",
                RUN_STATUSES.join(", ")
            )));
        }
        other => other.map(str::to_string),
    };
    let runs = state
        .with_index(move |idx| idx.list_runs(limit, before.as_ref(), status.as_deref()))
        .await?;
    Ok(Json(serde_json::to_value(runs).unwrap_or_default()))
}

pub async fn get_run(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = run_id(&raw)?;
    let lookup = id.clone();
    match state.with_index(move |idx| idx.get_run(&lookup)).await? {
        Some(run) => Ok(Json(serde_json::to_value(run).unwrap_or_default())),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, format!("no run {id}"))),
    }
}

pub async fn run_events(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    Query(q): Query<RunsQuery>,
) -> Result<Response, ApiError> {
    let id = run_id(&raw)?;
    let since = parse_u64("since", q.since.as_deref())?;
    let limit = parse_u64("limit", q.limit.as_deref())?;
    let tail_n = parse_u64("tail", q.tail.as_deref())?;
    let path = state.run_file(&id);
    let events = tokio::task::spawn_blocking(move || -> Result<Vec<Arc<Published>>, TailError> {
        let mut replay = Replay::new(path, id, since);
        let mut out: VecDeque<Arc<Published>> = VecDeque::new();
        while let Some(batch) = replay.next_batch()? {
            for e in batch {
                out.push_back(e);
                if let Some(t) = tail_n
                    && out.len() as u64 > t
                {
                    out.pop_front();
                }
                if tail_n.is_none() && limit.is_some_and(|l| out.len() as u64 >= l) {
                    return Ok(out.into());
                }
            }
        }
        Ok(out.into())
    })
    .await
    .map_err(|e| ApiError::unavailable(format!("reading the run file failed: {e}")))?;
    let events = match events {
        Ok(e) => e,
        Err(TailError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no events for run {raw}"),
            ));
        }
        // A FIFO or a link planted under the run file's name: no run file, never read.
        Err(TailError::Read { ref source, .. }) if let Some(n) = fsx::not_regular(source) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no events for run {raw}: its run file is {}, not a regular file",
                    n.what
                ),
            ));
        }
        Err(e) => return Err(ApiError::unavailable(e.to_string())),
    };
    let events: Vec<Arc<Published>> = match (tail_n, limit) {
        (Some(_), Some(l)) => events.into_iter().take(l as usize).collect(),
        _ => events,
    };
    // The stored JSON of each event, joined: no re-serializing.
    let mut body =
        String::with_capacity(events.iter().map(|e| e.json.len() + 1).sum::<usize>() + 2);
    body.push('[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&e.json);
    }
    body.push(']');
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `POST /api/runs/{id}/cancel`: asks the run's runner to stop; its stages end `cancelled`.
pub async fn cancel_run(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = run_id(&raw)?;
    let state_dir = &state.config.server.state_dir;
    if liveness::liveness(state_dir, &id) != Liveness::Alive {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("run {id} is not running"),
        ));
    }
    liveness::request_cancel(state_dir, &id, "cancelled by user")
        .map_err(|e| ApiError::unavailable(format!("cannot write the cancel request: {e}")))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "run_id": id, "status": "cancelling" })),
    )
        .into_response())
}
