//! The answer for every path no route serves.

use axum::http::StatusCode;

use crate::server::error::ApiError;

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}
