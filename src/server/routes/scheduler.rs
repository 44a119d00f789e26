//! The scheduler: `GET /api/scheduler/status` and `POST /api/scheduler/enable|disable`, for
//! whichever backend is configured (`server::schedule` does the work).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::server::error::ApiError;
use crate::server::schedule;
use crate::server::state::AppState;

/// `GET /api/scheduler/status`.
pub async fn scheduler_status(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let s = schedule::status(&state).await?;
    Ok(Json(s).into_response())
}

/// `POST /api/scheduler/enable`.
pub async fn scheduler_enable(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let s = schedule::set_enabled(&state, true).await?;
    Ok(Json(s).into_response())
}

/// `POST /api/scheduler/disable`.
pub async fn scheduler_disable(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let s = schedule::set_enabled(&state, false).await?;
    Ok(Json(s).into_response())
}
