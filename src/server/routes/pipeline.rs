//! Starting runs: `POST /api/pipeline/run` ("Run now", through [`launch`]) and
//! `POST /api/pipeline/notify-scheduled-run` (a run an OS scheduler started tells the
//! dashboard, so it shows at once).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{AcceptedStatus, RunAccepted};
use axum::body::Bytes;

use super::pipelines::Which;
use crate::config::{Config, Overlap};
use crate::event::{RunId, now_timestamp};
use crate::runner::liveness::{self, PipelineLock};
use crate::server::error::{ApiError, ErrorBody, run_id};
use crate::server::extract::{Query, optional_body};
use crate::server::launch::{Asked, launch};
use crate::server::state::AppState;
use crate::sync::MutexExt;

/// Start a run now ("Run now").
///
/// Runs `pipewatch run --source manual` as a child process, so that a run that crashes can
/// never take the dashboard down.
#[utoipa::path(
    post,
    path = "/api/pipeline/run",
    operation_id = "startRun",
    tag = "pipeline",
    params(Which),
    request_body(content = Option<RunBody>, description = "Its parameters, only some \
        stages, and in a workspace of several pipelines which one (or `?pipeline=`)."),
    responses(
        (status = 202, description = "A run was started (`source: manual`).", body = RunAccepted),
        (status = 400, description = "Several pipelines and none named, a body that is not \
            this object, the query and the body naming different pipelines, a parameter the \
            pipeline does not declare or a value outside its choices, or a stage it does not \
            have.", body = ErrorBody),
        (status = 404, description = "No such pipeline.", body = ErrorBody),
        (status = 409, description = "A run is going and `overlap = \"skip\"`.", body = ErrorBody),
        (status = 503, description = "Whether a run is going cannot be checked, or the run \
            cannot be started.", body = ErrorBody),
    ),
)]
pub async fn start_run(
    State(state): State<Arc<AppState>>,
    Query(which): Query<Which>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = RunBody::parse(&body)?;
    let name = which.or_body(body.pipeline.clone())?;
    let config = state.pipeline(name.as_deref())?;
    let asked = body.asked(&config)?;
    start(&state, &config, asked).await
}

/// The optional body of the routes that start a run.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    /// The pipeline (needed when the dashboard serves several; `?pipeline=` does as well).
    #[schema(max_length = 64)]
    pub pipeline: Option<String>,
    /// A value for some of the pipeline's parameters (`[pipeline.params]`); the others take
    /// their defaults.
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
    /// Run only these stages (the others are recorded `skipped`, `not_selected`).
    #[serde(default)]
    pub stages: Vec<String>,
}

impl RunBody {
    /// The body, or the default one for an empty body.
    pub fn parse(body: &Bytes) -> Result<RunBody, ApiError> {
        optional_body(body)
    }

    /// What the run is asked to do, checked against `config`'s pipeline.
    pub fn asked(self, config: &Config) -> Result<Asked, ApiError> {
        let params: Vec<(String, String)> = self.params.into_iter().collect();
        crate::config::params::resolve(&config.pipeline.params, &params)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if !self.stages.is_empty() {
            crate::runner::plan::only(config, &self.stages)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
        Ok(Asked {
            params,
            stages: self.stages,
            retry: None,
            occurrence: None,
        })
    }
}

/// Starts a run of `config`'s pipeline as `asked`, unless its overlap policy is `skip` and
/// one is going.
pub async fn start(
    state: &Arc<AppState>,
    config: &Config,
    asked: Asked,
) -> Result<Response, ApiError> {
    let state_dir = &config.pipeline_state_dir;
    if config.pipeline.overlap == Overlap::Skip {
        match PipelineLock::try_acquire(state_dir) {
            Ok(Some(lock)) => drop(lock),
            Ok(None) => {
                let running: Vec<String> =
                    liveness::alive_runs_of(&config.server.state_dir, &config.pipeline.name)
                        .iter()
                        .map(|r| r.to_string())
                        .collect();
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "run {} is still running and overlap = \"skip\"",
                        running.join(", ")
                    ),
                ));
            }
            Err(e) => {
                return Err(ApiError::unavailable(format!(
                    "cannot check for a running run in {}: {e}",
                    state_dir.display()
                )));
            }
        }
    }
    let retry_of = asked.retry.as_ref().map(|(id, _)| id.clone());
    let (id, _exited) = launch(state, config, "manual", asked).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RunAccepted {
            run_id: id,
            status: AcceptedStatus::Running,
            retry_of,
        }),
    )
        .into_response())
}

/// The body of `POST /api/pipeline/notify-scheduled-run`.
#[derive(Deserialize, ToSchema)]
pub struct Notify {
    /// The run that started.
    #[schema(value_type = RunId)]
    run_id: String,
    /// Who started it, free text (at most 64 characters, none of them control or invisible
    /// formatting characters); `scheduler` when absent or empty. `windows_scheduler`, the
    /// original design's name, is recorded as `scheduler`.
    #[serde(default)]
    #[schema(max_length = 64)]
    source: Option<String>,
    /// The events folder the run writes to, as `pipewatch run` names it (`events_id` in
    /// `/api/health`). When given, it must be this dashboard's: a run of another project,
    /// notifying the dashboard at the address its configuration names, is refused (`409`).
    #[serde(default)]
    events_id: Option<String>,
}

/// Announce a run that a scheduler started.
///
/// The run shows as `running` at once, and its file is read now rather than at the next
/// notification or scan. `pipewatch run` sends it when the dashboard is up.
#[utoipa::path(
    post,
    path = "/api/pipeline/notify-scheduled-run",
    operation_id = "notifyScheduledRun",
    tag = "pipeline",
    request_body = Notify,
    responses(
        (status = 202, description = "The run shows as `running` at once; its file is read \
            now.", body = RunAccepted),
        (status = 400, description = "A body that is not this object, a `run_id` that is not a \
            run id, or a `source` refused.", body = ErrorBody),
        (status = 409, description = "The run writes to another events folder than the one \
            this dashboard tails (`events_id`): it would never be seen here.", body = ErrorBody),
        (status = 503, description = "The run index is unavailable.", body = ErrorBody),
    ),
)]
pub async fn notify_scheduled_run(
    State(state): State<Arc<AppState>>,
    body: Result<Json<Notify>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(n) = body.map_err(|e| {
        // A body that is not the expected JSON is a bad request (axum says 422).
        let status = match e.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            s => s,
        };
        ApiError::new(status, e.body_text())
    })?;
    let id = run_id(&n.run_id)?;
    if let Some(theirs) = n.events_id.as_deref() {
        let ours = state.config.server.events_id();
        if theirs != ours {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "run {id} writes to another events folder (events_id {:?}) than this \
                     dashboard tails ({ours}): it is another configuration's run; give each \
                     configuration its own [server] bind",
                    theirs.chars().take(64).collect::<String>()
                ),
            ));
        }
    }
    let source = match n.source.as_deref().map(str::trim) {
        None | Some("") => "scheduler".to_string(),
        // The original design's name for the scheduler.
        Some("windows_scheduler") => "scheduler".to_string(),
        Some(s) if s.chars().count() <= 64 && !s.chars().any(hidden) => s.to_string(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "source must be at most 64 characters without control, bidirectional or invisible formatting characters",
            ));
        }
    };
    let announced = id.clone();
    state
        .with_index(move |idx| idx.note_announced(&announced, &source, &now_timestamp()))
        .await?;
    if let Some(t) = state.tailer.lock_anyway().as_ref() {
        t.poke(state.run_file(&id));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(RunAccepted {
            run_id: id,
            status: AcceptedStatus::Running,
            retry_of: None,
        }),
    )
        .into_response())
}

/// Characters that are not shown as themselves: control characters, bidirectional controls
/// (U+202E makes text read backwards, so `source` could pose as something else in the page
/// and the terminal), and invisible formatting (zero-width spaces and joiners, the BOM, the
/// soft hyphen).
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00ad}'
                | '\u{061c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
        )
}

#[cfg(test)]
mod tests {
    use super::hidden;

    #[test]
    fn hidden_characters() {
        for c in [
            '\n', '\u{7f}', '\u{202e}', '\u{2067}', '\u{200b}', '\u{feff}', '\u{061c}',
        ] {
            assert!(hidden(c), "U+{:04X}", c as u32);
        }
        for c in ['a', 'é', '日', ' ', '-', '\u{2010}'] {
            assert!(!hidden(c), "U+{:04X}", c as u32);
        }
    }
}
