//! `POST /api/runs/{run_id}/retry`: the run again from where it failed — its stages that
//! succeeded reused, the rest run, with its parameters (`runner::plan::retry`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::runner::plan::{self, PlanError};
use crate::server::error::{ApiError, ErrorBody, run_id};
use crate::server::extract::{Path, optional_body};
use crate::server::launch::Asked;
use crate::server::routes::pipeline::start;
use crate::server::state::AppState;

/// The optional body of a retry.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    /// Retry even though the pipeline's stages or parameters changed since the run.
    #[serde(default)]
    pub force: bool,
}

/// Retry a run from its failed stages.
///
/// A new run of the same pipeline reuses the stages that succeeded (recorded `skipped`,
/// `reason: reused`, with `from_run`) and runs the others in dependency order, with the
/// parameters of the run it retries; its `start` event has `data.retry_of`.
#[utoipa::path(
    post,
    path = "/api/runs/{run_id}/retry",
    operation_id = "retryRun",
    tag = "runs",
    params(("run_id" = crate::event::RunId, Path, description = "The run to retry.")),
    request_body(content = Option<RetryBody>, description = "`{\"force\": true}` to retry a \
        run of a pipeline whose stages changed since."),
    responses(
        (status = 202, description = "The retry was started; `retry_of` names the run it \
            retries.", body = crate::server::routes::RunAccepted),
        (status = 400, description = "Not a run id, or a body that is not this object.",
            body = ErrorBody),
        (status = 404, description = "No such run.", body = ErrorBody),
        (status = 409, description = "The run succeeded or is still running, its pipeline is \
            no longer configured, its stages or parameters changed since (without `force`), \
            or a run is going and `overlap = \"skip\"`.", body = ErrorBody),
        (status = 503, description = "The run's file cannot be read, or the retry cannot be \
            started.", body = ErrorBody),
    ),
)]
pub async fn retry_run(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = run_id(&raw)?;
    let force = optional_body::<RetryBody>(&body)?.force;
    // The folder this dashboard shows runs from: with [cluster], its copy of every host's.
    let events_dir = state.events_dir.clone();
    let of = id.clone();
    let recorded = tokio::task::spawn_blocking(move || plan::Recorded::read(&events_dir, &of))
        .await
        .map_err(|e| ApiError::unavailable(format!("reading the run failed: {e}")))?
        .map_err(answer)?;
    let workspace = state.workspace();
    let config = match recorded.pipeline() {
        Some(name) if workspace.is_workspace => workspace.get(name).cloned().ok_or_else(|| {
            ApiError::conflict(format!(
                "run {id} is a run of pipeline {name}, which is no longer in the configuration"
            ))
        })?,
        _ => workspace.shared().clone(),
    };
    // Checked here, from what was read, so that a refusal is this request's answer; the
    // run started checks again from its file.
    plan::retry(&config, &id, &recorded, force).map_err(answer)?;
    let asked = Asked {
        retry: Some((id, force)),
        ..Asked::default()
    };
    start(&state, &config, asked).await
}

/// The answer for a retry that cannot be planned.
fn answer(e: PlanError) -> ApiError {
    match e {
        PlanError::NoRun(m) => ApiError::not_found(m),
        PlanError::Refused(m) | PlanError::UnknownStage(m) => ApiError::conflict(m),
        PlanError::Read(m) => ApiError::unavailable(m),
    }
}
