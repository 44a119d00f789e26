//! `POST /api/reload`: read the configuration file again (`server::reload`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::server::error::{ApiError, ErrorBody};
use crate::server::reload::{self, Reloaded};
use crate::server::state::AppState;

/// Read the configuration again.
///
/// The pipelines, `[retention]` and `[scheduler]` apply at once; open streams go on.
/// `[server]` applies at the next start (`restart_needed` names what differs). A file that
/// does not load changes nothing.
#[utoipa::path(
    post,
    path = "/api/reload",
    operation_id = "reloadConfiguration",
    tag = "dashboard",
    responses(
        (status = 200, description = "The configuration was read again; what changed.",
            body = Reloaded),
        (status = 422, description = "The configuration does not load (the message names \
            the file, line and key); the one in use is unchanged.", body = ErrorBody),
    ),
)]
pub async fn reload_configuration(
    State(state): State<Arc<AppState>>,
) -> Result<Response, ApiError> {
    match reload::reload(&state).await {
        Ok(r) => Ok(Json(r).into_response()),
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the configuration in use is unchanged: {e}"),
        )),
    }
}
