//! The runs: `GET /api/runs` (newest first, paged with `before`, filtered by `status`),
//! `GET /api/runs/{run_id}` (with its stages), and `POST /api/runs/{run_id}/cancel`. A run's
//! events are [`events`](super::events).
//!
//! Every run id that comes in goes through [`run_id`] first, so none can name a path outside
//! `events_dir`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::index::RUN_STATUSES;
use crate::runner::liveness::{self, Liveness};
use crate::server::error::{ApiError, parse_u64, run_id};
use crate::server::state::AppState;

/// The query parameters of the run list, as sent: checked by the handler, so a bad value is
/// a 400 naming it rather than axum's generic rejection.
#[derive(Deserialize)]
pub struct RunsQuery {
    limit: Option<String>,
    before: Option<String>,
    status: Option<String>,
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
