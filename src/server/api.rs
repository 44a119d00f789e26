//! The HTTP API of contract §4 (but the scheduler endpoints): health, runs, a run, its events,
//! manual runs, cancel, the scheduled-run notification, metrics.
//!
//! Every error is an [`ApiError`]: a status and `{"error": "..."}`. Every run id that comes in
//! (path or body) goes through [`RunId::parse`] first, so none can name a path outside
//! `events_dir`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, Stats};
use crate::config::Overlap;
use crate::event::{Published, RunId, now_timestamp};
use crate::index::RUN_STATUSES;
use crate::liveness::{self, Liveness, PipelineLock};
use crate::tail::{Replay, TailError};

/// An API error: a status and a message, sent as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<crate::index::IndexError> for ApiError {
    fn from(e: crate::index::IndexError) -> ApiError {
        ApiError::unavailable(format!("the run index is unavailable: {e}"))
    }
}

/// Validates a run id from a path or body.
pub fn run_id(raw: &str) -> Result<RunId, ApiError> {
    RunId::parse(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

pub async fn health(State(state): State<Arc<AppState>>) -> Json<Value> {
    let t = state.tail_stats.snapshot();
    let index_error = state
        .index_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let tailer_running = state
        .tailer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_some_and(|t| !t.is_finished());
    let folder_error = state.tail_stats.folder_error();
    let ingest_error = state
        .ingest_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let index_error = index_error.or(ingest_error);
    let ok = index_error.is_none() && tailer_running && folder_error.is_none();
    Json(json!({
        "status": if ok { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "pipeline": state.config.pipeline.name,
        "uptime_s": state.started.elapsed().as_secs(),
        "events_dir": state.config.server.events_dir,
        "tailer": {
            "running": tailer_running,
            "watching": t.watching,
            "files_watched": t.files_watched,
            "scans": t.scans,
            "watcher_errors": t.watcher_errors,
            "error": folder_error,
        },
        "files_watched": t.files_watched,
        "events_ingested": Stats::get(&state.stats.events_published),
        "malformed_lines": t.malformed_lines,
        "bus_subscribers": state.bus.subscribers(),
        "websocket_clients": Stats::get(&state.stats.ws_clients),
        "index": { "ok": index_error.is_none(), "error": index_error },
    }))
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
    before: Option<String>,
    status: Option<String>,
}

fn parse_u64(name: &str, raw: Option<&str>) -> Result<Option<u64>, ApiError> {
    raw.map(|v| {
        v.parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("{name} must be a whole number, not {v:?}")))
    })
    .transpose()
}

pub async fn list_runs(
    State(state): State<Arc<AppState>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = parse_u64("limit", q.limit.as_deref())?
        .unwrap_or(50)
        .clamp(1, 1000) as usize;
    let before = q.before.as_deref().map(run_id).transpose()?;
    let status = match q.status.as_deref() {
        Some(s) if !RUN_STATUSES.contains(&s) => {
            return Err(ApiError::bad_request(format!(
                "unknown status {s:?}; one of {}",
                RUN_STATUSES.join(", ")
            )));
        }
        other => other.map(str::to_string),
    };
    let runs = state
        .with_index(move |idx| idx.list_runs(limit, before.as_ref(), status.as_deref()))
        .await?;
    Ok(Json(serde_json::to_value(runs).unwrap_or_default()))
}

pub async fn get_run(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = run_id(&raw)?;
    let lookup = id.clone();
    match state.with_index(move |idx| idx.get_run(&lookup)).await? {
        Some(run) => Ok(Json(serde_json::to_value(run).unwrap_or_default())),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, format!("no run {id}"))),
    }
}

#[derive(Deserialize)]
pub struct EventsQuery {
    since: Option<String>,
    limit: Option<String>,
    tail: Option<String>,
}

pub async fn run_events(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let id = run_id(&raw)?;
    let since = parse_u64("since", q.since.as_deref())?;
    let limit = parse_u64("limit", q.limit.as_deref())?;
    let tail_n = parse_u64("tail", q.tail.as_deref())?;
    let path = state.run_file(&id);
    let events = tokio::task::spawn_blocking(move || -> Result<Vec<Arc<Published>>, TailError> {
        let mut replay = Replay::new(path, id, since);
        let mut out: VecDeque<Arc<Published>> = VecDeque::new();
        while let Some(batch) = replay.next_batch()? {
            for e in batch {
                out.push_back(e);
                if let Some(t) = tail_n
                    && out.len() as u64 > t
                {
                    out.pop_front();
                }
                if tail_n.is_none() && limit.is_some_and(|l| out.len() as u64 >= l) {
                    return Ok(out.into());
                }
            }
        }
        Ok(out.into())
    })
    .await
    .map_err(|e| ApiError::unavailable(format!("reading the run file failed: {e}")))?;
    let events = match events {
        Ok(e) => e,
        Err(TailError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no events for run {raw}"),
            ));
        }
        Err(e) => return Err(ApiError::unavailable(e.to_string())),
    };
    let events: Vec<Arc<Published>> = match (tail_n, limit) {
        (Some(_), Some(l)) => events.into_iter().take(l as usize).collect(),
        _ => events,
    };
    // The stored JSON of each event, joined: no re-serializing.
    let mut body =
        String::with_capacity(events.iter().map(|e| e.json.len() + 1).sum::<usize>() + 2);
    body.push('[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&e.json);
    }
    body.push(']');
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `POST /api/pipeline/run`: starts `pipewatch run --source manual` as a child process, so
/// that a run that crashes can never take the dashboard down.
pub async fn start_run(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let config = &state.config;
    let state_dir = &config.server.state_dir;
    if config.pipeline.overlap == Overlap::Skip {
        match PipelineLock::try_acquire(state_dir) {
            Ok(Some(lock)) => drop(lock),
            Ok(None) => {
                let running: Vec<String> = liveness::alive_runs(state_dir)
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
    let (id, _exited) = launch(&state, "manual").await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "run_id": id, "status": "running" })),
    )
        .into_response())
}

/// Starts `pipewatch run --source SOURCE` as a child process (in its own process group, so a
/// Ctrl-C meant for the dashboard does not stop it) and shows it as `running` at once.
/// Returns its run id and a handle that resolves when the process has exited.
pub async fn launch(
    state: &Arc<AppState>,
    source: &str,
) -> Result<(RunId, tokio::task::JoinHandle<()>), ApiError> {
    let config = &state.config;
    let id = RunId::generate(chrono::Utc::now());
    let mut cmd = tokio::process::Command::new(&state.exe);
    cmd.arg("run")
        .arg("--config")
        .arg(&config.path)
        .args([
            "--source",
            source,
            "--quiet",
            "--no-notify",
            "--run-id",
            id.as_str(),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| ApiError::unavailable(format!("cannot start {}: {e}", state.exe.display())))?;
    Stats::add(&state.stats.runs_started, 1);
    let announced = id.clone();
    let source = source.to_string();
    let _ = state
        .with_index(move |idx| idx.note_announced(&announced, &source, &now_timestamp()))
        .await;
    let logged = id.clone();
    let state = state.clone();
    let exited = tokio::spawn(async move {
        if let Some(err) = child.stderr.take() {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::warn!(run_id = %logged, "run: {line}");
            }
        }
        match child.wait().await {
            Ok(st) => tracing::info!(run_id = %logged, "run exited: {st}"),
            Err(e) => tracing::warn!(run_id = %logged, "run: {e}"),
        }
        // A runner that exited before writing anything (a broken configuration, say) left
        // no file and no lock to tell: it is gone, so the run it was announced as is too.
        if !state.run_file(&logged).exists() {
            let at = now_timestamp();
            let _ = state
                .with_index(move |idx| idx.mark_abandoned(&logged, &at))
                .await;
        }
    });
    Ok((id, exited))
}

/// `POST /api/runs/{id}/cancel`: asks the run's runner to stop; its stages end `cancelled`.
pub async fn cancel_run(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = run_id(&raw)?;
    let state_dir = &state.config.server.state_dir;
    if liveness::liveness(state_dir, &id) != Liveness::Alive {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("run {id} is not running"),
        ));
    }
    liveness::request_cancel(state_dir, &id, "cancelled by user")
        .map_err(|e| ApiError::unavailable(format!("cannot write the cancel request: {e}")))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "run_id": id, "status": "cancelling" })),
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct Notify {
    run_id: String,
    #[serde(default)]
    source: Option<String>,
}

/// `POST /api/pipeline/notify-scheduled-run`: a run has started; show it at once and read its
/// file now rather than at the next notification or scan.
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
    let source = match n.source.as_deref().map(str::trim) {
        None | Some("") => "scheduler".to_string(),
        // The original design's name for the scheduler.
        Some("windows_scheduler") => "scheduler".to_string(),
        Some(s) if s.len() <= 64 && !s.chars().any(char::is_control) => s.to_string(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "source must be at most 64 characters without control characters",
            ));
        }
    };
    let announced = id.clone();
    state
        .with_index(move |idx| idx.note_announced(&announced, &source, &now_timestamp()))
        .await?;
    if let Some(t) = state
        .tailer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
    {
        t.poke(state.run_file(&id));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "run_id": id, "status": "running" })),
    )
        .into_response())
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let t = state.tail_stats.snapshot();
    let s = &state.stats;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP pipewatch_{name} {help}");
        let _ = writeln!(out, "# TYPE pipewatch_{name} {kind}");
        let _ = writeln!(out, "pipewatch_{name} {value}");
    };
    metric(
        "events_ingested_total",
        "counter",
        "Events read from run files and published.",
        Stats::get(&s.events_published),
    );
    metric(
        "batches_total",
        "counter",
        "Batches committed to the index and published.",
        Stats::get(&s.batches),
    );
    metric(
        "malformed_lines_total",
        "counter",
        "Lines skipped as malformed or too long.",
        t.malformed_lines,
    );
    metric(
        "files_watched",
        "gauge",
        "Run files known to the tailer.",
        t.files_watched,
    );
    metric(
        "tail_scans_total",
        "counter",
        "Full scans of the events folder.",
        t.scans,
    );
    metric(
        "tail_watcher_errors_total",
        "counter",
        "File-system watcher errors.",
        t.watcher_errors,
    );
    metric(
        "bus_subscribers",
        "gauge",
        "Current subscribers of the event bus.",
        state.bus.subscribers() as u64,
    );
    metric(
        "websocket_clients",
        "gauge",
        "Open WebSocket connections.",
        Stats::get(&s.ws_clients),
    );
    metric(
        "sse_clients",
        "gauge",
        "Open Server-Sent Events streams.",
        Stats::get(&s.sse_clients),
    );
    metric(
        "websocket_lagged_total",
        "counter",
        "WebSocket clients closed for falling behind.",
        Stats::get(&s.ws_lagged),
    );
    metric(
        "index_errors_total",
        "counter",
        "Failed operations on the run index.",
        Stats::get(&s.index_errors),
    );
    metric(
        "manual_runs_total",
        "counter",
        "Runs started from the API.",
        Stats::get(&s.runs_started),
    );
    metric(
        "abandoned_runs_total",
        "counter",
        "Runs marked abandoned by this process.",
        Stats::get(&s.abandoned),
    );
    if let Ok(counts) = state.with_index(|idx| idx.status_counts()).await {
        let _ = writeln!(out, "# HELP pipewatch_runs Runs in the index by status.");
        let _ = writeln!(out, "# TYPE pipewatch_runs gauge");
        for (status, n) in counts {
            let _ = writeln!(out, "pipewatch_runs{{status=\"{status}\"}} {n}");
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// `GET /api/scheduler/status`.
pub async fn scheduler_status(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let s = super::timer::status(&state).await?;
    Ok(Json(s).into_response())
}

/// `POST /api/scheduler/enable`.
pub async fn scheduler_enable(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let s = super::timer::set_enabled(&state, true).await?;
    Ok(Json(s).into_response())
}

/// `POST /api/scheduler/disable`.
pub async fn scheduler_disable(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let s = super::timer::set_enabled(&state, false).await?;
    Ok(Json(s).into_response())
}
