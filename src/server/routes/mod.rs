//! The HTTP surface: [`router`] over an [`AppState`], pure (no socket, no background task),
//! so tests and the fuzzer drive it with `oneshot`. One module per group of routes:
//!
//! | module | routes |
//! |---|---|
//! | [`fallback`] | the 404 for every path no route serves |
//! | [`health`] | `/api/health` (public), `/metrics` |
//! | [`runs`] | `/api/runs`, `/api/runs/{run_id}`, its `/cancel` |
//! | [`events`] | `/api/runs/{run_id}/events`, in pages |
//! | [`pipeline`] | `/api/pipeline/run`, `/api/pipeline/notify-scheduled-run` |
//! | [`scheduler`] | `/api/scheduler/status`, `/enable`, `/disable` |
//! | [`streams`] | `/ws/events`, `/ws/events/{run_id}`, `/api/runs/{run_id}/events/stream` (SSE) |
//!
//! The page's files come from `server::assets`. Around them all, from the outside in: the
//! body limit for extractors; the Host, Origin, body size and content-type guards on every
//! request (`auth::guard_requests`: a request whose `Host` does not name this server reaches
//! nothing, not even the page or `/api/health`); the token on everything but the page and
//! `/api/health` (`auth::require_token`).

pub mod health;
pub mod fallback;
pub mod events;
pub mod pipeline;
pub mod runs;
pub mod scheduler;
pub mod streams;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use super::auth;
use super::state::AppState;

/// Request bodies larger than this are refused with 413, on every route.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Every route of [`router`] but the page ([`ASSETS`](super::assets::ASSETS), public) and the
/// fallback, as (method, path with `{run_id}`): the security tests walk this list, and a route
/// missing from it fails them.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/health"),
    ("GET", "/api/runs"),
    ("GET", "/api/runs/{run_id}"),
    ("GET", "/api/runs/{run_id}/events"),
    ("GET", "/api/runs/{run_id}/events/stream"),
    ("POST", "/api/runs/{run_id}/cancel"),
    ("POST", "/api/pipeline/run"),
    ("POST", "/api/pipeline/notify-scheduled-run"),
    ("GET", "/api/scheduler/status"),
    ("POST", "/api/scheduler/enable"),
    ("POST", "/api/scheduler/disable"),
    ("GET", "/ws/events"),
    ("GET", "/ws/events/{run_id}"),
    ("GET", "/metrics"),
];

/// The HTTP surface.
pub fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/api/runs", get(runs::list_runs))
        .route("/api/runs/{run_id}", get(runs::get_run))
        .route("/api/runs/{run_id}/events", get(events::run_events))
        .route("/api/runs/{run_id}/events/stream", get(streams::run_sse))
        .route("/api/runs/{run_id}/cancel", post(runs::cancel_run))
        .route("/api/pipeline/run", post(pipeline::start_run))
        .route(
            "/api/pipeline/notify-scheduled-run",
            post(pipeline::notify_scheduled_run),
        )
        .route("/ws/events", get(streams::all_events))
        .route("/ws/events/{run_id}", get(streams::run_events))
        .route("/metrics", get(health::metrics))
        .route("/api/scheduler/status", get(scheduler::scheduler_status))
        .route("/api/scheduler/enable", post(scheduler::scheduler_enable))
        .route("/api/scheduler/disable", post(scheduler::scheduler_disable))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .merge(super::assets::routes())
        .route("/api/health", get(health::health))
        .merge(protected)
        .fallback(fallback::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard_requests,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
