//! The one error type of the HTTP surface: a status and `{"error": "..."}`. Each layer's
//! error says which status it is (`From` impls below), so a handler only uses `?`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::event::RunId;
use crate::index::IndexError;
use crate::scheduler::SchedulerError;

/// An API error: a status and a message, sent as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }
}

/// The body of every error answer: `{"error": "..."}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person to read.
    pub error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

impl From<IndexError> for ApiError {
    fn from(e: IndexError) -> ApiError {
        ApiError::unavailable(format!("the run index is unavailable: {e}"))
    }
}

/// A scheduler tool that is missing or failed is a 503 (with the tool's stderr in the
/// message); a schedule or value the backend refuses is a 409.
impl From<SchedulerError> for ApiError {
    fn from(e: SchedulerError) -> ApiError {
        if e.is_tool_error() {
            ApiError::unavailable(e.to_string())
        } else {
            ApiError::conflict(e.to_string())
        }
    }
}

/// Validates a run id from a path or body: none can name a path outside `events_dir`.
pub fn run_id(raw: &str) -> Result<RunId, ApiError> {
    RunId::parse(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// A whole-number query parameter, if given.
pub fn parse_u64(name: &str, raw: Option<&str>) -> Result<Option<u64>, ApiError> {
    raw.map(|v| {
        v.parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("{name} must be a whole number, not {v:?}")))
    })
    .transpose()
}

/// A `?pipeline=` filter (on runs and streams): any name, since a pipeline no longer
/// configured keeps its history, but bounded.
pub fn pipeline_filter(p: Option<String>) -> Result<Option<String>, ApiError> {
    match p {
        Some(p) if p.len() > 256 => Err(ApiError::bad_request(
            "pipeline must be a name of at most 256 bytes",
        )),
        other => Ok(other),
    }
}
