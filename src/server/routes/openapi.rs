//! `GET /api/openapi.json`: the API's description (`server::openapi`), public like
//! `/api/health`, so a client generator or a fuzzer can read it without the token.

use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::server::openapi;

/// This description of the API (OpenAPI 3.1).
///
/// Public, like `/api/health`, so a client generator or a fuzzer reads it without the token;
/// `pipewatch openapi` prints the same document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "openapi",
    tag = "dashboard",
    responses(
        (status = 200, description = "This document: the API in OpenAPI 3.1 (also printed by \
            `pipewatch openapi`).", body = Object),
    ),
)]
pub async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi::json(),
    )
        .into_response()
}
