//! The runs: `GET /api/runs` (newest first, paged with `before`, filtered by `status`,
//! `pipeline` and `host`),
//! `GET /api/runs/{run_id}` (with its stages), and `POST /api/runs/{run_id}/cancel`. A run's
//! events are [`events`](super::events).
//!
//! Every run id that comes in goes through [`run_id`] first, so none can name a path outside
//! `events_dir`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;

use super::{AcceptedStatus, RunAccepted};
use crate::event::RunId;
use crate::index::{RUN_STATUSES, RunDetail, RunFilter, RunStatus, RunSummary};
use crate::runner::liveness::{self, Liveness};
use crate::server::error::{ApiError, ErrorBody, parse_u64, pipeline_filter, run_id};
use crate::server::extract::{Path, Query};
use crate::server::state::AppState;

/// The query of `GET /api/runs`, as sent: the handler checks each value, so a bad one is a
/// 400 naming it rather than axum's generic rejection.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// How many runs: 1 to 1000 (a number outside is taken as the nearest of those).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 1000, default = 50)]
    limit: Option<String>,
    /// Runs older than this one: the last `run_id` of the page before.
    #[param(value_type = Option<RunId>)]
    before: Option<String>,
    /// Only runs with this status.
    #[param(value_type = Option<RunStatus>)]
    status: Option<String>,
    /// Only runs of this pipeline (its `pipeline`, as the run's events name it; a pipeline
    /// no longer configured keeps its history).
    #[param(max_length = 256)]
    pipeline: Option<String>,
    /// Only runs that ran on this host (a run's `host`).
    #[param(max_length = 256)]
    host: Option<String>,
}

/// The longest `host` filter taken: a host name is at most 253 bytes.
const MAX_HOST: usize = 256;

/// Runs, newest first.
///
/// Paged back with `before` (the last `run_id` of the page before), filtered by `status`,
/// `pipeline` and `host`.
#[utoipa::path(
    get,
    path = "/api/runs",
    operation_id = "listRuns",
    tag = "runs",
    params(ListQuery),
    responses(
        (status = 200, description = "Runs, newest first.", body = Vec<RunSummary>),
        (status = 400, description = "A `limit` that is not a whole number, a `before` that is \
            not a run id, an unknown `status`, or a `pipeline` or `host` too long to be a name.",
            body = ErrorBody),
        (status = 503, description = "The run index is unavailable.", body = ErrorBody),
    ),
)]
pub async fn list_runs(
    State(state): State<Arc<AppState>>,
    Query(q): Query<ListQuery>,
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
    let host = match q.host {
        Some(h) if h.len() > MAX_HOST => {
            return Err(ApiError::bad_request(format!(
                "host must be a name of at most {MAX_HOST} bytes"
            )));
        }
        other => other,
    };
    let filter = RunFilter {
        status,
        pipeline: pipeline_filter(q.pipeline)?,
        host,
    };
    let runs = state
        .with_index(move |idx| idx.list_runs(limit, before.as_ref(), &filter))
        .await?;
    Ok(Json(serde_json::to_value(runs).unwrap_or_default()))
}

/// One run, with its stages.
///
/// The stages come in the order they were first seen.
#[utoipa::path(
    get,
    path = "/api/runs/{run_id}",
    operation_id = "getRun",
    tag = "runs",
    params(("run_id" = RunId, Path, description = "The run.")),
    responses(
        (status = 200, description = "The run with its stages.", body = RunDetail),
        (status = 400, description = "Not a run id.", body = ErrorBody),
        (status = 404, description = "No such run in the index.", body = ErrorBody),
        (status = 503, description = "The run index is unavailable.", body = ErrorBody),
    ),
)]
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

/// Stop a running run.
///
/// Its runner is asked to stop; its stages end `cancelled`.
#[utoipa::path(
    post,
    path = "/api/runs/{run_id}/cancel",
    operation_id = "cancelRun",
    tag = "runs",
    params(("run_id" = RunId, Path, description = "The run.")),
    responses(
        (status = 202, description = "Its runner was asked to stop; its stages end \
            `cancelled`.", body = RunAccepted),
        (status = 400, description = "Not a run id.", body = ErrorBody),
        (status = 409, description = "The run is not running.", body = ErrorBody),
        (status = 503, description = "The cancel request cannot be written.", body = ErrorBody),
    ),
)]
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
    liveness::request_cancel(state_dir, &id, "user")
        .map_err(|e| ApiError::unavailable(format!("cannot write the cancel request: {e}")))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RunAccepted {
            run_id: id,
            status: AcceptedStatus::Cancelling,
            retry_of: None,
        }),
    )
        .into_response())
}
