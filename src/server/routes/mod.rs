//! The HTTP surface: [`router`] over an [`AppState`], pure (no socket, no background task),
//! so tests and the fuzzer drive it with `oneshot`. One module per group of routes:
//!
//! | module | routes |
//! |---|---|
//! | [`alerts`] | `/api/alerts`, `/api/alerts/destinations`, `/api/alerts/{name}/test` |
//! | [`fallback`] | the 404 for every path no route serves, the 405 for a method a route does not answer |
//! | [`health`] | `/api/health` (public), `/metrics` |
//! | [`openapi`] | `/api/openapi.json` (public): the API's description, `server::openapi` |
//! | [`runs`] | `/api/runs`, `/api/runs/{run_id}`, its `/cancel` |
//! | [`retry`] | `/api/runs/{run_id}/retry`: the run again from its failed stages |
//! | [`events`] | `/api/runs/{run_id}/events`, in pages |
//! | [`log`] | `/api/runs/{run_id}/log`: the run's output as plain text, streamed |
//! | [`pipeline`] | `/api/pipeline/run`, `/api/pipeline/notify-scheduled-run` |
//! | [`pipelines`] | `/api/pipelines`, `/api/pipelines/{name}`, its `/run` and `/scheduler/...` |
//! | [`reload`] | `/api/reload`: the configuration read again |
//! | [`scheduler`] | `/api/scheduler/status`, `/enable`, `/disable` |
//! | [`streams`] | `/ws/events`, `/ws/events/{run_id}`, `/api/runs/{run_id}/events/stream` (SSE) |
//!
//! The page's files come from `server::assets`. Around them all, from the outside in: the
//! body limit for extractors; the Host, Origin, body size and content-type guards on every
//! request (`auth::guard_requests`: a request whose `Host` does not name this server reaches
//! nothing, not even the page or `/api/health`); the token on everything but the page,
//! `/api/health` and `/api/openapi.json` (`auth::require_token`, on [`Api::protected`]).
//!
//! Every API route is registered once, in [`api`], with its OpenAPI description (the
//! `#[utoipa::path]` on its handler); `server::openapi` makes the document from the same
//! registration, so a route cannot be served undescribed.

pub mod alerts;
pub mod fallback;
pub mod events;
pub mod health;
pub mod log;
pub mod openapi;
pub mod pipeline;
pub mod pipelines;
pub mod reload;
pub mod retry;
pub mod runs;
pub mod scheduler;
pub mod streams;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth;
use super::state::AppState;
use crate::event::RunId;

/// Request bodies larger than this are refused with 413, on every route.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Every route of [`router`] but the page ([`ASSETS`](super::assets::ASSETS), public) and the
/// fallback, as (method, path with `{run_id}` or `{name}`): the security tests walk this list, and the
/// OpenAPI tests check it against the document and the router both ways.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/health"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/runs"),
    ("GET", "/api/runs/{run_id}"),
    ("GET", "/api/runs/{run_id}/events"),
    ("GET", "/api/runs/{run_id}/events/stream"),
    ("GET", "/api/runs/{run_id}/log"),
    ("POST", "/api/runs/{run_id}/cancel"),
    ("POST", "/api/runs/{run_id}/retry"),
    ("POST", "/api/pipeline/run"),
    ("POST", "/api/pipeline/notify-scheduled-run"),
    ("GET", "/api/scheduler/status"),
    ("POST", "/api/scheduler/enable"),
    ("POST", "/api/scheduler/disable"),
    ("GET", "/api/pipelines"),
    ("GET", "/api/pipelines/{name}"),
    ("POST", "/api/pipelines/{name}/run"),
    ("GET", "/api/pipelines/{name}/scheduler/status"),
    ("POST", "/api/pipelines/{name}/scheduler/enable"),
    ("POST", "/api/pipelines/{name}/scheduler/disable"),
    ("POST", "/api/reload"),
    ("GET", "/api/alerts"),
    ("GET", "/api/alerts/destinations"),
    ("POST", "/api/alerts/{name}/test"),
    ("GET", "/api/events/stream"),
    ("GET", "/ws/events"),
    ("GET", "/ws/events/{run_id}"),
    ("GET", "/metrics"),
];

/// The paths of [`ROUTES`] that need no token (the page's files need none either).
pub const PUBLIC: &[&str] = &["/api/health", "/api/openapi.json"];

/// The API's routes, each registered with its description (`#[utoipa::path]` on the handler:
/// one attribute gives the router its path and method and the document its operation, so the
/// two cannot differ). In two groups, because the token is a layer: [`router`] puts
/// `auth::require_token` on `protected`, and `server::openapi` marks the same group's
/// operations as needing it.
pub struct Api {
    /// Anyone whose `Host` names this server.
    pub public: OpenApiRouter<Arc<AppState>>,
    /// Behind the token, when one is configured.
    pub protected: OpenApiRouter<Arc<AppState>>,
}

/// The API, without state or layers (the document is made from it without a server).
pub fn api() -> Api {
    let public = OpenApiRouter::new()
        .routes(routes!(health::health))
        .routes(routes!(openapi::openapi_json));
    let protected = OpenApiRouter::new()
        .routes(routes!(runs::list_runs))
        .routes(routes!(runs::get_run))
        .routes(routes!(events::run_events))
        .routes(routes!(log::run_log))
        .routes(routes!(streams::run_sse))
        .routes(routes!(streams::all_sse))
        .routes(routes!(runs::cancel_run))
        .routes(routes!(retry::retry_run))
        .routes(routes!(pipeline::start_run))
        .routes(routes!(pipeline::notify_scheduled_run))
        .routes(routes!(scheduler::scheduler_status))
        .routes(routes!(scheduler::scheduler_enable))
        .routes(routes!(scheduler::scheduler_disable))
        .routes(routes!(pipelines::list_pipelines))
        .routes(routes!(pipelines::get_pipeline))
        .routes(routes!(pipelines::run_pipeline))
        .routes(routes!(pipelines::pipeline_scheduler_status))
        .routes(routes!(pipelines::pipeline_scheduler_enable))
        .routes(routes!(pipelines::pipeline_scheduler_disable))
        .routes(routes!(reload::reload_configuration))
        .routes(routes!(alerts::list_alerts))
        .routes(routes!(alerts::list_destinations))
        .routes(routes!(alerts::test_alert))
        .routes(routes!(streams::all_events))
        .routes(routes!(streams::run_events))
        .routes(routes!(health::metrics));
    Api { public, protected }
}

/// One bounded read of a file `reader` (a batch of a run file, of the all-runs stream) on
/// the blocking pool, handing the reader back with what it read: every route that reads run
/// files reads them through this, never on the async workers.
async fn read_off_the_workers<R, T>(
    mut reader: R,
    read: fn(&mut R) -> T,
) -> Result<(R, T), tokio::task::JoinError>
where
    R: Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let batch = read(&mut reader);
        (reader, batch)
    })
    .await
}

/// The HTTP surface.
pub fn router(state: Arc<AppState>) -> Router {
    let Api { public, protected } = api();
    let protected = protected.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::require_token,
    ));
    let (api, _) = public.merge(protected).split_for_parts();
    Router::new()
        .merge(super::assets::routes())
        .merge(api)
        .method_not_allowed_fallback(fallback::method_not_allowed)
        .fallback(fallback::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard_requests,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The answer of the routes that start or stop a run: `202 {"run_id": ..., "status": ...}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunAccepted {
    pub run_id: RunId,
    pub status: AcceptedStatus,
    /// For a retry: the run it retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<RunId>,
}

/// What happens to the run now: it is `running` (started or announced), or `cancelling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AcceptedStatus {
    Running,
    Cancelling,
}
