//! The scheduler: `GET /api/scheduler/status` and `POST /api/scheduler/enable|disable`, for
//! whichever backend is configured (`server::schedule` does the work).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::server::error::{ApiError, ErrorBody};
use crate::server::schedule::{self, StatusWithCadence};
use crate::server::state::AppState;

/// The schedule: its task, and the cadence of the last day.
#[utoipa::path(
    get,
    path = "/api/scheduler/status",
    operation_id = "schedulerStatus",
    tag = "scheduler",
    responses(
        (status = 200, description = "The task: installed, enabled, state, next and last run, and the cadence of the last day.", body = StatusWithCadence),
        (status = 503, description = "The scheduler tool is missing or failed (its stderr is \
            in the message).", body = ErrorBody),
    ),
)]
pub async fn scheduler_status(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let s = schedule::status(&state).await?;
    Ok(Json(s).into_response())
}

/// Turn the schedule on.
#[utoipa::path(
    post,
    path = "/api/scheduler/enable",
    operation_id = "schedulerEnable",
    tag = "scheduler",
    responses(
        (status = 200, description = "The schedule is on; its status.", body = StatusWithCadence),
        (status = 409, description = "The task is not installed, or the backend refuses the \
            schedule.", body = ErrorBody),
        (status = 503, description = "The scheduler tool is missing or failed (its stderr is \
            in the message).", body = ErrorBody),
    ),
)]
pub async fn scheduler_enable(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let s = schedule::set_enabled(&state, true).await?;
    Ok(Json(s).into_response())
}

/// Turn the schedule off.
#[utoipa::path(
    post,
    path = "/api/scheduler/disable",
    operation_id = "schedulerDisable",
    tag = "scheduler",
    responses(
        (status = 200, description = "The schedule is off (a run going on is left to finish); its status.", body = StatusWithCadence),
        (status = 409, description = "The task is not installed, or the backend refuses the \
            schedule.", body = ErrorBody),
        (status = 503, description = "The scheduler tool is missing or failed (its stderr is \
            in the message).", body = ErrorBody),
    ),
)]
pub async fn scheduler_disable(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let s = schedule::set_enabled(&state, false).await?;
    Ok(Json(s).into_response())
}
