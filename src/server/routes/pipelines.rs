//! The pipelines of the workspace: `GET /api/pipelines` (each with its schedule, its switch,
//! its last run, what is running and the last day's figures), `GET /api/pipelines/{name}`,
//! `POST /api/pipelines/{name}/run` and `.../scheduler/enable|disable|status`.
//!
//! Also [`Which`]: how the one-pipeline routes of a single-pipeline setup (`/api/pipeline/run`,
//! `/api/scheduler/...`) learn which pipeline they are about in a workspace of several —
//! `?pipeline=NAME` or a body `{"pipeline": NAME}`; without either they answer 400 listing the
//! names (`AppState::pipeline`).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::config::{Backend, Config, Overlap};
use crate::event::{RunId, format_timestamp};
use crate::index::{PipelineRuns, RecentRun, WindowStats};
use crate::scheduler;
use crate::server::error::{ApiError, ErrorBody};
use crate::server::extract::{Path, optional_body};
use crate::server::routes::pipeline::{RunBody, start};
use crate::server::schedule::{self, StatusWithCadence};
use crate::server::state::AppState;

/// `?pipeline=NAME`: the pipeline a one-pipeline route is about, in a workspace of several.
#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct Which {
    /// The pipeline (needed when the dashboard serves several).
    #[param(max_length = 64)]
    pipeline: Option<String>,
}

/// The optional body of the one-pipeline POST routes.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PipelineBody {
    /// The pipeline (needed when the dashboard serves several; `?pipeline=` does as well).
    #[schema(max_length = 64)]
    pipeline: Option<String>,
}

impl Which {
    /// The pipeline named by the query or, for a POST, by its JSON body (`body` may be
    /// empty); both naming different pipelines is a 400.
    pub fn name(self, body: Option<&Bytes>) -> Result<Option<String>, ApiError> {
        let from_body = match body {
            Some(b) => optional_body::<PipelineBody>(b)?.pipeline,
            None => None,
        };
        self.or_body(from_body)
    }

    /// The pipeline named by the query or by a body's `pipeline` (read by the caller); both
    /// naming different pipelines is a 400.
    pub fn or_body(self, from_body: Option<String>) -> Result<Option<String>, ApiError> {
        match (self.pipeline, from_body) {
            (Some(q), Some(b)) if q != b => Err(ApiError::bad_request(format!(
                "?pipeline={q} and the body's \"pipeline\": {b:?} name different pipelines"
            ))),
            (q, b) => Ok(q.or(b)),
        }
    }
}

/// The last run of a pipeline, in short.
#[derive(Debug, Serialize, ToSchema)]
pub struct LastRun {
    pub run_id: RunId,
    #[schema(value_type = crate::index::RunStatus)]
    pub status: String,
    #[schema(required = true)]
    pub started_at: Option<String>,
    #[schema(required = true)]
    pub duration_ms: Option<u64>,
}

/// One pipeline of `GET /api/pipelines`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineSummary {
    pub name: String,
    /// The cron expression; `null` for a pipeline no longer in the configuration.
    #[schema(required = true)]
    pub schedule: Option<String>,
    /// `skip`, `queue`, `parallel` or `replace`; `null` for a removed pipeline.
    #[schema(required = true, value_type = Option<String>)]
    pub overlap: Option<Overlap>,
    /// The scheduler backend that starts it; `null` for a removed pipeline.
    #[schema(required = true)]
    pub backend: Option<Backend>,
    /// Whether its schedule is on (false for a removed pipeline, and when the backend
    /// cannot say).
    pub enabled: bool,
    /// RFC 3339: its next scheduled run, while the schedule is on.
    #[schema(required = true)]
    pub next_run: Option<String>,
    /// Its newest run (recorded misses left out); `null` before its first.
    #[schema(required = true)]
    pub last_run: Option<LastRun>,
    /// Its last 20 runs (recorded misses included), oldest first: the page's status strip.
    pub recent: Vec<RecentRun>,
    /// The run ids of its runs going now, newest first.
    pub running: Vec<RunId>,
    /// Its runs of the last 24 hours.
    pub stats_24h: WindowStats,
    /// It is no longer in the configuration: only its history is left.
    pub removed: bool,
    /// Its parameters (`[pipeline.params]`, by name): what a run may be given. Empty for a
    /// removed pipeline.
    pub params: Vec<crate::config::params::Param>,
    /// Its stages in file order, each with the stages it needs: the dependency graph. Empty
    /// for a removed pipeline.
    pub stages: Vec<StageNeeds>,
    /// The backend's error, when it could not tell whether the schedule is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler_error: Option<String>,
}

/// A stage and the stages it needs.
#[derive(Debug, Serialize, ToSchema)]
pub struct StageNeeds {
    pub name: String,
    pub needs: Vec<String>,
}

/// The pipelines, in file order, then those with history no longer configured.
#[utoipa::path(
    get,
    path = "/api/pipelines",
    operation_id = "listPipelines",
    tag = "pipelines",
    responses(
        (status = 200, description = "Every pipeline of the configuration, in file order, \
            then those that have runs but are no longer configured (`removed`).",
            body = Vec<PipelineSummary>),
        (status = 503, description = "The run index is unavailable.", body = ErrorBody),
    ),
)]
pub async fn list_pipelines(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let known = state.with_index(|idx| idx.pipeline_names()).await?;
    let workspace = state.workspace();
    // Together: with an OS scheduler each pipeline's switch is a question to its tool.
    let mut out = futures_util::future::try_join_all(
        workspace
            .pipelines
            .iter()
            .map(|config| summary(&state, Some(config), &config.pipeline.name)),
    )
    .await?;
    // Outside a workspace, runs of other tools may name any pipeline: they are the one
    // pipeline's history, not removed pipelines.
    if workspace.is_workspace {
        for name in known {
            if workspace.get(&name).is_none() {
                out.push(summary(&state, None, &name).await?);
            }
        }
    }
    Ok(Json(out).into_response())
}

/// One pipeline.
#[utoipa::path(
    get,
    path = "/api/pipelines/{name}",
    operation_id = "getPipeline",
    tag = "pipelines",
    params(("name" = String, Path, description = "The pipeline.")),
    responses(
        (status = 200, description = "The pipeline.", body = PipelineSummary),
        (status = 404, description = "No such pipeline, configured or in the history.",
            body = ErrorBody),
        (status = 503, description = "The run index is unavailable.", body = ErrorBody),
    ),
)]
pub async fn get_pipeline(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let workspace = state.workspace();
    let config = workspace.get(&name);
    if config.is_none() {
        let known = state.with_index(|idx| idx.pipeline_names()).await?;
        if !workspace.is_workspace || !known.contains(&name) {
            return Err(ApiError::not_found(format!(
                "no pipeline {name:?}; the pipelines are: {}",
                workspace.names().join(", ")
            )));
        }
    }
    Ok(Json(summary(&state, config, &name).await?).into_response())
}

/// Start a run of the pipeline now.
#[utoipa::path(
    post,
    path = "/api/pipelines/{name}/run",
    operation_id = "startPipelineRun",
    tag = "pipelines",
    params(("name" = String, Path, description = "The pipeline.")),
    request_body(content = Option<RunBody>, description = "Its parameters and only some \
        stages (a `pipeline`, if given, must be this one)."),
    responses(
        (status = 202, description = "A run was started (`source: manual`).",
            body = crate::server::routes::RunAccepted),
        (status = 400, description = "A body that is not this object, another pipeline named \
            in it, a parameter the pipeline does not declare or a value outside its choices, \
            or a stage it does not have.", body = ErrorBody),
        (status = 404, description = "No such pipeline in the configuration.", body = ErrorBody),
        (status = 409, description = "A run is going and `overlap = \"skip\"`.", body = ErrorBody),
        (status = 503, description = "Whether a run is going cannot be checked, or the run \
            cannot be started.", body = ErrorBody),
    ),
)]
pub async fn run_pipeline(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = RunBody::parse(&body)?;
    if let Some(other) = body.pipeline.as_ref().filter(|o| **o != name) {
        return Err(ApiError::bad_request(format!(
            "the body names pipeline {other:?}, the path {name:?}"
        )));
    }
    let config = state.pipeline(Some(&name))?;
    let asked = body.asked(&config)?;
    start(&state, &config, asked).await
}

/// The pipeline's schedule: its task, and the cadence of the last day.
#[utoipa::path(
    get,
    path = "/api/pipelines/{name}/scheduler/status",
    operation_id = "pipelineSchedulerStatus",
    tag = "pipelines",
    params(("name" = String, Path, description = "The pipeline.")),
    responses(
        (status = 200, description = "As `GET /api/scheduler/status`, for this pipeline.",
            body = StatusWithCadence),
        (status = 404, description = "No such pipeline in the configuration.", body = ErrorBody),
        (status = 503, description = "The scheduler tool is missing or failed (its stderr is \
            in the message).", body = ErrorBody),
    ),
)]
pub async fn pipeline_scheduler_status(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let config = state.pipeline(Some(&name))?;
    Ok(Json(schedule::status(&state, &config).await?).into_response())
}

/// Turn the pipeline's schedule on.
#[utoipa::path(
    post,
    path = "/api/pipelines/{name}/scheduler/enable",
    operation_id = "pipelineSchedulerEnable",
    tag = "pipelines",
    params(("name" = String, Path, description = "The pipeline.")),
    responses(
        (status = 200, description = "The schedule is on; its status.", body = StatusWithCadence),
        (status = 404, description = "No such pipeline in the configuration.", body = ErrorBody),
        (status = 409, description = "The task is not installed, or the backend refuses the \
            schedule.", body = ErrorBody),
        (status = 503, description = "The scheduler tool is missing or failed (its stderr is \
            in the message).", body = ErrorBody),
    ),
)]
pub async fn pipeline_scheduler_enable(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let config = state.pipeline(Some(&name))?;
    Ok(Json(schedule::set_enabled(&state, &config, true).await?).into_response())
}

/// Turn the pipeline's schedule off.
#[utoipa::path(
    post,
    path = "/api/pipelines/{name}/scheduler/disable",
    operation_id = "pipelineSchedulerDisable",
    tag = "pipelines",
    params(("name" = String, Path, description = "The pipeline.")),
    responses(
        (status = 200, description = "The schedule is off (a run going on is left to finish); \
            its status.", body = StatusWithCadence),
        (status = 404, description = "No such pipeline in the configuration.", body = ErrorBody),
        (status = 409, description = "The task is not installed, or the backend refuses the \
            schedule.", body = ErrorBody),
        (status = 503, description = "The scheduler tool is missing or failed (its stderr is \
            in the message).", body = ErrorBody),
    ),
)]
pub async fn pipeline_scheduler_disable(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let config = state.pipeline(Some(&name))?;
    Ok(Json(schedule::set_enabled(&state, &config, false).await?).into_response())
}

/// One pipeline's summary: `config` is `None` for a pipeline known only from its history.
async fn summary(
    state: &Arc<AppState>,
    config: Option<&Config>,
    name: &str,
) -> Result<PipelineSummary, ApiError> {
    let since = format_timestamp(Utc::now() - chrono::Duration::days(1));
    let of = name.to_string();
    let runs: PipelineRuns = state
        .with_index(move |idx| idx.pipeline_runs(&of, &since))
        .await?;
    let (enabled, next_run, scheduler_error) = match config {
        Some(c) => switch(state, c).await,
        None => (false, None, None),
    };
    Ok(PipelineSummary {
        name: name.to_string(),
        schedule: config.map(|c| c.pipeline.schedule.expression().to_string()),
        overlap: config.map(|c| c.pipeline.overlap),
        backend: config.map(|c| c.scheduler.backend),
        enabled,
        next_run,
        last_run: runs.last_run.map(|r| LastRun {
            run_id: r.run_id,
            status: r.status,
            started_at: r.started_at,
            duration_ms: r.duration_ms,
        }),
        recent: runs.recent,
        running: runs.running.into_iter().map(|r| r.run_id).collect(),
        stats_24h: runs.stats,
        removed: config.is_none(),
        params: config
            .map(|c| c.pipeline.params.clone())
            .unwrap_or_default(),
        stages: config
            .map(|c| {
                c.stages
                    .iter()
                    .map(|st| StageNeeds {
                        name: st.name.clone(),
                        needs: st
                            .needs
                            .iter()
                            .filter_map(|&i| c.stages.get(i).map(|n| n.name.clone()))
                            .collect(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        scheduler_error,
    })
}

/// Whether the pipeline's schedule is on and its next run: from the built-in scheduler's
/// state file directly (its full status also opens the run index for the last result, which
/// the list does not show), or from the OS backend's status.
async fn switch(state: &Arc<AppState>, config: &Config) -> (bool, Option<String>, Option<String>) {
    let next = |c: &Config| {
        c.pipeline
            .schedule
            .next_after(&Utc::now())
            .map(format_timestamp)
    };
    if config.scheduler.backend == Backend::Builtin {
        return match scheduler::builtin::State::load(&config.pipeline_state_dir) {
            Ok(s) => (s.enabled, s.enabled.then(|| next(config)).flatten(), None),
            Err(e) => (false, None, Some(e.to_string())),
        };
    }
    match schedule::recent_status(state, config).await {
        Ok(s) => (s.enabled, s.next_run, None),
        Err(e) => (false, None, Some(e.message)),
    }
}
