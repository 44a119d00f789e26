//! The scheduler: `GET /api/scheduler/status` and `POST /api/scheduler/enable|disable`, for
//! whichever backend is configured (`server::schedule` does the work). In a workspace of
//! several pipelines they name theirs (`?pipeline=`, or the body); `/api/pipelines/{name}/
//! scheduler/...` is the same per pipeline.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::pipelines::{PipelineBody, Which};
use crate::server::error::{ApiError, ErrorBody};
use crate::server::extract::Query;
use crate::server::schedule::{self, StatusWithCadence};
use crate::server::state::AppState;

/// The schedule: its task, and the cadence of the last day.
#[utoipa::path(
    get,
    path = "/api/scheduler/status",
    operation_id = "schedulerStatus",
    tag = "scheduler",
    params(Which),
    responses(
        (status = 400, description = "Several pipelines and none named (or a body that is \
            not this object).", body = ErrorBody),
        (status = 404, description = "No such pipeline.", body = ErrorBody),
        (status = 200, description = "The task: installed, enabled, state, next and last run, and the cadence of the last day.", body = StatusWithCadence),
        (status = 503, description = "The scheduler tool is missing or failed (its stderr is \
            in the message).", body = ErrorBody),
    ),
)]
pub async fn scheduler_status(
    State(state): State<Arc<AppState>>,
    Query(which): Query<Which>,
) -> Result<Response, ApiError> {
    let config = state.pipeline(which.name(None)?.as_deref())?;
    let s = schedule::status(&state, &config).await?;
    Ok(Json(s).into_response())
}

/// Turn the schedule on.
#[utoipa::path(
    post,
    path = "/api/scheduler/enable",
    operation_id = "schedulerEnable",
    tag = "scheduler",
    params(Which),
    request_body(content = Option<PipelineBody>, description = "In a workspace of several \
        pipelines, which one (or `?pipeline=`)."),
    responses(
        (status = 400, description = "Several pipelines and none named (or a body that is \
            not this object).", body = ErrorBody),
        (status = 404, description = "No such pipeline.", body = ErrorBody),
        (status = 200, description = "The schedule is on; its status.", body = StatusWithCadence),
        (status = 409, description = "The task is not installed, or the backend refuses the \
            schedule.", body = ErrorBody),
        (status = 503, description = "The scheduler tool is missing or failed (its stderr is \
            in the message).", body = ErrorBody),
    ),
)]
pub async fn scheduler_enable(
    State(state): State<Arc<AppState>>,
    Query(which): Query<Which>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let config = state.pipeline(which.name(Some(&body))?.as_deref())?;
    let s = schedule::set_enabled(&state, &config, true).await?;
    Ok(Json(s).into_response())
}

/// Turn the schedule off.
#[utoipa::path(
    post,
    path = "/api/scheduler/disable",
    operation_id = "schedulerDisable",
    tag = "scheduler",
    params(Which),
    request_body(content = Option<PipelineBody>, description = "In a workspace of several \
        pipelines, which one (or `?pipeline=`)."),
    responses(
        (status = 400, description = "Several pipelines and none named (or a body that is \
            not this object).", body = ErrorBody),
        (status = 404, description = "No such pipeline.", body = ErrorBody),
        (status = 200, description = "The schedule is off (a run going on is left to finish); its status.", body = StatusWithCadence),
        (status = 409, description = "The task is not installed, or the backend refuses the \
            schedule.", body = ErrorBody),
        (status = 503, description = "The scheduler tool is missing or failed (its stderr is \
            in the message).", body = ErrorBody),
    ),
)]
pub async fn scheduler_disable(
    State(state): State<Arc<AppState>>,
    Query(which): Query<Which>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let config = state.pipeline(which.name(Some(&body))?.as_deref())?;
    let s = schedule::set_enabled(&state, &config, false).await?;
    Ok(Json(s).into_response())
}
