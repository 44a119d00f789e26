//! The answers for requests no route takes: a path no route serves (404), and a method a
//! route does not answer (405, with axum's `Allow` header naming those it does). Both are
//! `{"error": ...}` like every other error.

use axum::http::StatusCode;

use crate::server::error::ApiError;

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this endpoint does not answer that method (the Allow header lists those it does)",
    )
}
