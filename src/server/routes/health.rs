//! What the dashboard says about itself: `GET /api/health` (public: is the tailer running,
//! is the index usable) and `GET /metrics` (Prometheus text format).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::server::auth;
use crate::server::state::{AppState, Stats};
use crate::tail::TailStatsSnapshot;

/// What public health says instead of an error's text, which names files.
const ASK_WITH_THE_TOKEN: &str = "details are shown with the token";

/// `GET /api/health`. It is public, so, when a token is configured, a request without it is
/// not told where things are: no `events_dir`, and no error text (errors name files); the
/// status and the figures stay. (A review found the absolute events path on public health.)
pub async fn health(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
) -> Json<Value> {
    let full = auth::authorized(&state, &headers, uri.query());
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
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_some_and(|t| !t.is_finished());
    let folder_error = state.tail_stats.folder_error();
    let index_error = state.index_problem();
    let ok = index_error.is_none() && tailer_running && folder_error.is_none();
    let (folder_error, index_error) = (shown(folder_error), shown(index_error));
    let mut health = json!({
        "status": if ok { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "pipeline": state.config.pipeline.name,
        "uptime_s": state.started.elapsed().as_secs(),
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
        "sse_clients": Stats::get(&state.stats.sse_clients),
        "index": { "ok": index_error.is_none(), "error": index_error },
    });
    if full {
        health["events_dir"] = json!(state.config.server.events_dir);
    }
    Json(health)
}

/// The figures one `/metrics` answer is made of, read once.
struct Figures<'a> {
    tail: TailStatsSnapshot,
    stats: &'a Stats,
    bus_subscribers: u64,
    client_queued_bytes: u64,
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
    ("websocket_lagged_total", "counter", "WebSocket clients closed for falling behind.", |f| f.counter(|s| &s.ws_lagged)),
    ("index_errors_total", "counter", "Failed operations on the run index.", |f| f.counter(|s| &s.index_errors)),
    ("manual_runs_total", "counter", "Runs started from the API.", |f| f.counter(|s| &s.runs_started)),
    ("abandoned_runs_total", "counter", "Runs marked abandoned by this process.", |f| f.counter(|s| &s.abandoned)),
];

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let figures = Figures {
        tail: state.tail_stats.snapshot(),
        stats: &state.stats,
        bus_subscribers: state.bus.subscribers() as u64,
        client_queued_bytes: state.budget.in_use() as u64,
    };
    let mut out = String::new();
    for (name, kind, help, value) in METRICS {
        let _ = writeln!(out, "# HELP pipewatch_{name} {help}");
        let _ = writeln!(out, "# TYPE pipewatch_{name} {kind}");
        let _ = writeln!(out, "pipewatch_{name} {}", value(&figures));
    }
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
