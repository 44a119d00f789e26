//! The page (`/`) and the answer for every path no route serves.

use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};

use crate::server::error::ApiError;

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

pub async fn index_page() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Html(include_str!("../../../web/index.html")),
    )
}
