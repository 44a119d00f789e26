//! What the dashboard says about itself: `GET /api/health` (public: is the tailer running,
//! is the index usable) and `GET /metrics` (Prometheus text format).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::index::PipelineFigures;
use crate::server::auth;
use crate::server::state::{AppState, Stats};
use crate::sync::MutexExt;
use crate::tail::TailStatsSnapshot;

/// What public health says instead of an error's text, which names files.
const ASK_WITH_THE_TOKEN: &str = "details are shown with the token";

/// The answer of `GET /api/health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: HealthStatus,
    /// pipewatch's version.
    pub version: &'static str,
    /// The pipeline's name (in a workspace, the first pipeline's: see `pipelines`).
    pub pipeline: String,
    /// Every pipeline the dashboard serves, in file order.
    pub pipelines: Vec<String>,
    /// Seconds since the dashboard started.
    pub uptime_s: u64,
    /// The folder of run files it tails: only to a request with the token, when one is
    /// configured.
    #[schema(value_type = Option<String>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_dir: Option<PathBuf>,
    /// The identity of the events folder it tails (16 hex digits, opaque): a runner, `tail`
    /// and `doctor` compare it with their configuration's to know this dashboard is theirs.
    pub events_id: String,
    pub tailer: TailerHealth,
    /// Run files known to the tailer.
    pub files_watched: u64,
    /// Events read from run files and published since the start.
    pub events_ingested: u64,
    /// Lines skipped as malformed or too long since the start.
    pub malformed_lines: u64,
    /// Current subscribers of the event bus.
    pub bus_subscribers: u64,
    /// Open WebSocket connections.
    pub websocket_clients: u64,
    /// Open Server-Sent Events streams.
    pub sse_clients: u64,
    pub index: IndexHealth,
}

/// `ok`, or `degraded` when the index, the tailer or the events folder has a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Degraded,
}

/// The tailer's part of the health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct TailerHealth {
    /// Whether its thread is running.
    pub running: bool,
    /// Whether file-system notifications arrive (else it only scans).
    pub watching: bool,
    pub files_watched: u64,
    /// Full scans of the events folder.
    pub scans: u64,
    pub watcher_errors: u64,
    /// Why the events folder cannot be read, if it cannot (with the token, when one is
    /// configured; without it, only that there is a problem).
    #[schema(required = true)]
    pub error: Option<String>,
}

/// The index's part of the health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct IndexHealth {
    pub ok: bool,
    /// The last problem of the index or of ingesting into it (its text with the token, when
    /// one is configured).
    #[schema(required = true)]
    pub error: Option<String>,
}

/// The dashboard's health: is the tailer running, is the index usable; and its figures.
///
/// Public (no token), so a monitor can ask. When a token is configured, a request without it
/// is not told where things are: no `events_dir`, and no error text (errors name files); the
/// status and the figures stay. (A review found the absolute events path on public health.)
#[utoipa::path(
    get,
    path = "/api/health",
    operation_id = "health",
    tag = "dashboard",
    responses(
        (status = 200, description = "The dashboard's state and figures. `status` is `degraded` \
            (still 200) when the index, the tailer or the events folder has a problem.", body = Health),
    ),
)]
pub async fn health(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
) -> Json<Health> {
    let full = auth::authorized(&state, &headers, uri.query());
    let workspace = state.workspace();
    let shown = |e: Option<String>| {
        if full {
            e
        } else {
            e.map(|_| ASK_WITH_THE_TOKEN.to_string())
        }
    };
    let t = state.tail_stats.snapshot();
    let tailer_running = state
        .tailer
        .lock_anyway()
        .as_ref()
        .is_some_and(|t| !t.is_finished())
        || state.consuming.load(std::sync::atomic::Ordering::Relaxed);
    let folder_error = state.tail_stats.folder_error();
    let index_error = state.index_problem();
    let ok = index_error.is_none() && tailer_running && folder_error.is_none();
    Json(Health {
        status: if ok {
            HealthStatus::Ok
        } else {
            HealthStatus::Degraded
        },
        version: env!("CARGO_PKG_VERSION"),
        pipeline: workspace.shared().pipeline.name.clone(),
        pipelines: workspace.names().into_iter().map(str::to_string).collect(),
        uptime_s: state.started.elapsed().as_secs(),
        events_dir: full.then(|| state.config.server.events_dir.clone()),
        events_id: state.config.server.events_id(),
        tailer: TailerHealth {
            running: tailer_running,
            watching: t.watching,
            files_watched: t.files_watched,
            scans: t.scans,
            watcher_errors: t.watcher_errors,
            error: shown(folder_error),
        },
        files_watched: t.files_watched,
        events_ingested: Stats::get(&state.stats.events_published),
        malformed_lines: t.malformed_lines,
        bus_subscribers: state.bus.subscribers() as u64,
        websocket_clients: Stats::get(&state.stats.ws_clients),
        sse_clients: Stats::get(&state.stats.sse_clients),
        index: IndexHealth {
            ok: index_error.is_none(),
            error: shown(index_error),
        },
    })
}

/// Prometheus's text format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The figures one `/metrics` answer is made of, read once.
struct Figures<'a> {
    tail: TailStatsSnapshot,
    stats: &'a Stats,
    bus_subscribers: u64,
    client_queued_bytes: u64,
    ring: (usize, usize),
    run_logs: (usize, usize),
    cursor: u64,
}

impl Figures<'_> {
    fn counter(&self, c: fn(&Stats) -> &AtomicU64) -> u64 {
        Stats::get(c(self.stats))
    }
}

/// A metric: name (after `pipewatch_`), type, help, value.
type Metric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Figures) -> u64,
);

/// Every metric but the per-status run counts, one line each (kept unformatted, so the table
/// reads as a table).
#[rustfmt::skip]
const METRICS: &[Metric] = &[
    ("events_ingested_total", "counter", "Events read from run files and published.", |f| f.counter(|s| &s.events_published)),
    ("batches_total", "counter", "Batches committed to the index and published.", |f| f.counter(|s| &s.batches)),
    ("malformed_lines_total", "counter", "Lines skipped as malformed or too long.", |f| f.tail.malformed_lines),
    ("files_watched", "gauge", "Run files known to the tailer.", |f| f.tail.files_watched),
    ("tail_scans_total", "counter", "Full scans of the events folder.", |f| f.tail.scans),
    ("tail_watcher_errors_total", "counter", "File-system watcher errors.", |f| f.tail.watcher_errors),
    ("bus_subscribers", "gauge", "Current subscribers of the event bus.", |f| f.bus_subscribers),
    ("websocket_clients", "gauge", "Open WebSocket connections.", |f| f.counter(|s| &s.ws_clients)),
    ("sse_clients", "gauge", "Open Server-Sent Events streams.", |f| f.counter(|s| &s.sse_clients)),
    ("client_queued_bytes", "gauge", "Bytes waiting for clients' sockets (bounded by the server's budget).", |f| f.client_queued_bytes),
    ("bus_ring_events", "gauge", "Recent events held for new /ws/events clients.", |f| f.ring.0 as u64),
    ("bus_ring_bytes", "gauge", "Bytes held by the bus's ring of recent events (bounded).", |f| f.ring.1 as u64),
    ("bus_run_logs", "gauge", "Runs followed on /ws/events/{id} or SSE, each with a log of its recent events.", |f| f.run_logs.0 as u64),
    ("bus_run_log_bytes", "gauge", "Bytes held by the followed runs' logs together (bounded).", |f| f.run_logs.1 as u64),
    ("bus_cursor", "gauge", "The cursor of the last event published on /ws/events.", |f| f.cursor),
    ("websocket_lagged_total", "counter", "WebSocket clients closed for not reading.", |f| f.counter(|s| &s.ws_lagged)),
    ("index_errors_total", "counter", "Failed operations on the run index.", |f| f.counter(|s| &s.index_errors)),
    ("manual_runs_total", "counter", "Runs started from the API.", |f| f.counter(|s| &s.runs_started)),
    ("abandoned_runs_total", "counter", "Runs marked abandoned by this process.", |f| f.counter(|s| &s.abandoned)),
];

/// The dashboard's figures, in Prometheus's text format.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "dashboard",
    responses(
        (status = 200, description = "The dashboard's figures in Prometheus's text format \
            (0.0.4): events ingested, malformed lines, files watched, subscribers, runs by \
            pipeline, host and status, …", body = String, content_type = METRICS_CONTENT_TYPE),
    ),
)]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let figures = Figures {
        tail: state.tail_stats.snapshot(),
        stats: &state.stats,
        bus_subscribers: state.bus.subscribers() as u64,
        client_queued_bytes: state.budget.in_use() as u64,
        ring: state.bus.ring_size(),
        run_logs: state.bus.run_logs_size(),
        cursor: state.bus.last_cursor(),
    };
    let mut out = String::new();
    for (name, kind, help, value) in METRICS {
        let _ = writeln!(out, "# HELP pipewatch_{name} {help}");
        let _ = writeln!(out, "# TYPE pipewatch_{name} {kind}");
        let _ = writeln!(out, "pipewatch_{name} {}", value(&figures));
    }
    write_alert_counts(&mut out, &state);
    if let Ok(figures) = state.with_index(|idx| idx.pipeline_figures()).await {
        write_pipeline_figures(&mut out, &figures);
    }
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], out).into_response()
}

/// Delivery attempts by destination and outcome since the dashboard started.
fn write_alert_counts(out: &mut String, state: &AppState) {
    let _ = writeln!(
        out,
        "# HELP pipewatch_alerts_total Alert delivery attempts by destination and outcome \
         (sent, retrying: failed and tried again later, failed: given up)."
    );
    let _ = writeln!(out, "# TYPE pipewatch_alerts_total counter");
    let counts = state.alert_counts.lock_anyway().clone();
    for ((destination, status), n) in counts {
        let _ = writeln!(
            out,
            "pipewatch_alerts_total{{destination=\"{}\",status=\"{}\"}} {n}",
            label(&destination),
            label(&status)
        );
    }
}

/// The index's figures, one series per pipeline and host that have runs (`pipeline=""` for
/// runs that name none). A run's host is a `host` label; a run without one has none (the
/// same series to Prometheus as `host=""`), so a single machine whose runs name no host keeps
/// the series it always had. Only the pairs that have runs make series: ten hosts running
/// their own pipelines cost no more series than one host running them all.
fn write_pipeline_figures(out: &mut String, figures: &PipelineFigures) {
    let _ = writeln!(
        out,
        "# HELP pipewatch_runs Runs in the index by pipeline, host and status."
    );
    let _ = writeln!(out, "# TYPE pipewatch_runs gauge");
    for (pipeline, host, status, n) in &figures.counts {
        let _ = writeln!(
            out,
            "pipewatch_runs{{pipeline=\"{}\"{},status=\"{}\"}} {n}",
            label(pipeline),
            host_label(host),
            label(status)
        );
    }
    let _ = writeln!(
        out,
        "# HELP pipewatch_last_success_timestamp_seconds When the pipeline's newest successful \
         run on the host finished (Unix time)."
    );
    let _ = writeln!(out, "# TYPE pipewatch_last_success_timestamp_seconds gauge");
    for (pipeline, host, finished_at) in &figures.last_success {
        if let Some(t) = crate::event::parse_timestamp(finished_at) {
            let _ = writeln!(
                out,
                "pipewatch_last_success_timestamp_seconds{{pipeline=\"{}\"{}}} {:.3}",
                label(pipeline),
                host_label(host),
                t.timestamp_millis() as f64 / 1000.0
            );
        }
    }
}

/// `,host="…"` after the labels before it, or nothing for a run that names no host.
fn host_label(host: &str) -> String {
    if host.is_empty() {
        String::new()
    } else {
        format!(",host=\"{}\"", label(host))
    }
}

/// A label value as the Prometheus text format writes it: `\`, `"` and line feeds escaped
/// (run files of other tools may name any pipeline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_series_escape_what_a_label_cannot_hold() {
        let mut out = String::new();
        write_pipeline_figures(
            &mut out,
            &PipelineFigures {
                counts: vec![
                    ("nightly".into(), "".into(), "success".into(), 3),
                    ("nightly".into(), "etl-\"01\"".into(), "success".into(), 2),
                    ("a \"b\"\\\nc".into(), "".into(), "failure".into(), 1),
                ],
                last_success: vec![
                    (
                        "nightly".into(),
                        "".into(),
                        "2026-12-03T04:00:01.500Z".into(),
                    ),
                    (
                        "nightly".into(),
                        "etl-01".into(),
                        "2026-12-03T04:00:02Z".into(),
                    ),
                    ("garbled".into(), "".into(), "yesterday".into()),
                ],
            },
        );
        assert!(out.contains("pipewatch_runs{pipeline=\"nightly\",status=\"success\"} 3\n"));
        assert!(
            out.contains("pipewatch_runs{pipeline=\"a \\\"b\\\"\\\\\\nc\",status=\"failure\"} 1\n"),
            "{out}"
        );
        assert!(out.contains(
            "pipewatch_last_success_timestamp_seconds{pipeline=\"nightly\"} 1796270401.500\n"
        ));
        assert!(
            out.contains(
                "pipewatch_runs{pipeline=\"nightly\",host=\"etl-\\\"01\\\"\",status=\"success\"} 2\n"
            ),
            "{out}"
        );
        assert!(out.contains(
            "pipewatch_last_success_timestamp_seconds{pipeline=\"nightly\",host=\"etl-01\"} 1796270402.000\n"
        ));
        assert!(!out.contains("garbled"), "{out}");
    }
}
