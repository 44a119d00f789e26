//! The extractors the handlers use for the path, the query and an optional JSON body: axum's, with their rejections
//! turned into [`ApiError`]s, so that a request axum cannot take apart is answered like every
//! other error, `{"error": "..."}` as JSON, not axum's plain text. (The schema fuzzer found
//! `?status=a&status=b` answered with a `text/plain` 400.)

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The optional JSON body of a POST route: its default when empty, a 400 naming what is
/// wrong when it is not that object.
pub fn optional_body<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

/// `axum::extract::Query`, rejected with an [`ApiError`] (400).
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::new(e.status(), e.body_text()))
    }
}

/// `axum::extract::Path`, rejected with an [`ApiError`] (400, such as for a segment that is
/// not UTF-8 once percent-decoded).
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| ApiError::new(e.status(), e.body_text()))
    }
}
