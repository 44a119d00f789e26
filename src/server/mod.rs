//! `pipewatch serve`: the dashboard backend.
//!
//! ```text
//!  events_dir ──► Tailer (own thread) ──bounded──► ingest task ──► Index (SQLite)
//!                                                       │  (checkpoint + summaries, one commit)
//!                                                       └──► Bus (ring + broadcast) ──► WS / SSE
//! ```
//!
//! Each batch the tailer reads is committed to the index together with its checkpoint, then
//! published on the bus. So after a restart — even `kill -9` — the tailer resumes after the
//! last committed line: an event is never published twice; events written while the
//! dashboard was down are published when it comes back.
//!
//! [`serve`] takes an already-bound listener and a shutdown future; [`router`] is the pure
//! HTTP surface over [`AppState`], testable without a socket.

mod api;
mod auth;
mod ingest;
pub mod timer;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::bus::{self, Bus};
use crate::config::{Backend, Config};
use crate::index::{self, Index, Opened};
use crate::tail::{self, TailConfig, TailStats, Tailer};

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A client that has not sent its request headers within this long is disconnected.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The dashboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to bind {0} without a token: set [server] token or PIPEWATCH_TOKEN, or bind to 127.0.0.1"
    )]
    Unprotected(SocketAddr),
    #[error(transparent)]
    Index(#[from] index::IndexError),
    #[error("cannot start the tailer: {0}")]
    Tailer(std::io::Error),
    #[error("cannot accept connections: {0}")]
    Accept(std::io::Error),
}

impl ServeError {
    /// Binding wider without a token is refused as a usage error; the rest is the
    /// environment's (a port in use, an unreadable index).
    pub fn exit_code(&self) -> u8 {
        match self {
            ServeError::Unprotected(_) => crate::exit::USAGE,
            _ => crate::exit::ENVIRONMENT,
        }
    }
}

/// Refuses to listen beyond loopback without a token.
pub fn check_bind(addr: SocketAddr, token: &str) -> Result<(), ServeError> {
    if !addr.ip().is_loopback() && token.is_empty() {
        return Err(ServeError::Unprotected(addr));
    }
    Ok(())
}

/// Counters shown in health and metrics.
#[derive(Default)]
pub struct Stats {
    pub events_published: AtomicU64,
    pub batches: AtomicU64,
    pub index_errors: AtomicU64,
    pub ws_clients: AtomicU64,
    pub ws_lagged: AtomicU64,
    pub sse_clients: AtomicU64,
    pub runs_started: AtomicU64,
    pub abandoned: AtomicU64,
}

impl Stats {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Everything the handlers share.
pub struct AppState {
    pub config: Config,
    pub bus: Bus,
    /// The one SQLite connection; only ever locked inside `spawn_blocking`.
    pub index: Mutex<Index>,
    /// The last index error, shown in health until an operation succeeds again.
    pub index_error: Mutex<Option<String>>,
    /// Why the index is behind what was published (a failed commit), until it has caught up.
    pub ingest_error: Mutex<Option<String>>,
    pub tail_stats: Arc<TailStats>,
    pub stats: Stats,
    /// Set once the tailer runs; used to read an announced run's file at once.
    pub tailer: Mutex<Option<Tailer>>,
    /// The program started for "Run now".
    pub exe: PathBuf,
    pub started: Instant,
    /// Flips to true on shutdown; long-lived streams watch it to close cleanly.
    pub closing: watch::Receiver<bool>,
    /// Wakes the built-in scheduler when its state changed (enabled or disabled).
    pub timer_wake: tokio::sync::Notify,
    /// For a detached state (no accept loop owns the close signal): keeps the signal's sender
    /// alive, so streams do not see "closing" at once.
    _keep_open: Option<watch::Sender<bool>>,
}

impl AppState {
    /// Runs `f` on the index off the async workers, recording the outcome for health.
    pub async fn with_index<T, F>(self: &Arc<Self>, f: F) -> Result<T, index::IndexError>
    where
        F: FnOnce(&mut Index) -> Result<T, index::IndexError> + Send + 'static,
        T: Send + 'static,
    {
        let state = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut idx = state.index.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut idx)
        })
        .await
        .unwrap_or_else(|e| Err(index::IndexError::TaskFailed(e.to_string())));
        self.note_index(&result);
        result
    }

    fn note_index<T>(&self, result: &Result<T, index::IndexError>) {
        let mut slot = self.index_error.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(_) => *slot = None,
            Err(e) => {
                Stats::add(&self.stats.index_errors, 1);
                *slot = Some(e.to_string());
            }
        }
    }

    /// The path of a run's file (the id is already validated).
    pub fn run_file(&self, id: &crate::event::RunId) -> PathBuf {
        self.config.server.events_dir.join(id.file_name())
    }
}

/// Options of [`serve`] beyond the configuration.
pub struct ServeOptions {
    /// The `pipewatch` executable started for manual runs.
    pub exe: PathBuf,
    pub ring: usize,
}

/// Every route of [`router`] but `/` and the fallback, as (method, path with `{run_id}`):
/// the security tests walk this list, and a route missing from it fails them.
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

/// A state for driving [`router`] without a socket or a tailer: an in-memory index, nothing
/// running in the background (tests and fuzzing).
pub fn detached_state(config: Config, exe: PathBuf) -> Result<Arc<AppState>, ServeError> {
    let (keep_open, closing) = watch::channel(false);
    Ok(Arc::new(AppState {
        bus: Bus::new(bus::DEFAULT_RING, bus::DEFAULT_LAG),
        index: Mutex::new(Index::open_in_memory()?),
        index_error: Mutex::new(None),
        ingest_error: Mutex::new(None),
        tail_stats: Arc::new(TailStats::default()),
        stats: Stats::default(),
        tailer: Mutex::new(None),
        exe,
        started: Instant::now(),
        closing,
        timer_wake: tokio::sync::Notify::new(),
        _keep_open: Some(keep_open),
        config,
    }))
}

/// The HTTP surface.
pub fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/api/runs", get(api::list_runs))
        .route("/api/runs/{run_id}", get(api::get_run))
        .route("/api/runs/{run_id}/events", get(api::run_events))
        .route("/api/runs/{run_id}/events/stream", get(ws::run_sse))
        .route("/api/runs/{run_id}/cancel", post(api::cancel_run))
        .route("/api/pipeline/run", post(api::start_run))
        .route(
            "/api/pipeline/notify-scheduled-run",
            post(api::notify_scheduled_run),
        )
        .route("/ws/events", get(ws::all_events))
        .route("/ws/events/{run_id}", get(ws::run_events))
        .route("/metrics", get(api::metrics))
        .route("/api/scheduler/status", get(api::scheduler_status))
        .route("/api/scheduler/enable", post(api::scheduler_enable))
        .route("/api/scheduler/disable", post(api::scheduler_disable))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/", get(api::index_page))
        .route("/api/health", get(api::health))
        .merge(protected)
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn(auth::guard_requests))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Runs the dashboard on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let state_dir = config.server.state_dir.clone();
    let events_dir = config.server.events_dir.clone();
    let db_path = index::path(&state_dir);
    // The folder runs will write to; creating it now lets the watch start at once. A failure
    // is not fatal: the tailer polls for the folder until it appears.
    if let Err(e) = std::fs::create_dir_all(&events_dir) {
        tracing::warn!(events_dir = %events_dir.display(), "cannot create the events folder: {e}");
    }

    let (idx, _opened) = tokio::task::spawn_blocking({
        let db_path = db_path.clone();
        let events_dir = events_dir.clone();
        move || -> Result<(Index, Opened), index::IndexError> {
            let (mut idx, opened) = Index::open_or_reset(&db_path)?;
            match &opened {
                Opened::Existing => {}
                Opened::Created | Opened::Reset { .. } => {
                    if let Opened::Reset { why } = &opened {
                        tracing::warn!(path = %db_path.display(), %why, "run index reset; rebuilding it from the run files");
                    }
                    let stats = match index::rebuild(&mut idx, &events_dir) {
                        Ok(s) => s,
                        Err(index::IndexError::ReadDir { .. }) => index::RebuildStats::default(),
                        Err(e) => return Err(e),
                    };
                    tracing::info!(
                        files = stats.files,
                        events = stats.events,
                        malformed = stats.malformed,
                        "run index rebuilt from {}",
                        events_dir.display()
                    );
                }
            }
            Ok((idx, opened))
        }
    })
    .await
    .map_err(|e| {
        ServeError::Tailer(std::io::Error::other(format!("index task failed: {e}")))
    })??;
    let checkpoints = idx.checkpoints()?;
    let index_handle = Mutex::new(idx);

    let (close_tx, close_rx) = watch::channel(false);
    let state = Arc::new(AppState {
        bus: Bus::new(opts.ring, bus::DEFAULT_LAG),
        index: index_handle,
        index_error: Mutex::new(None),
        ingest_error: Mutex::new(None),
        tail_stats: Arc::new(TailStats::default()),
        stats: Stats::default(),
        tailer: Mutex::new(None),
        exe: opts.exe,
        started: Instant::now(),
        closing: close_rx,
        timer_wake: tokio::sync::Notify::new(),
        _keep_open: None,
        config,
    });

    let (batch_tx, batch_rx) = tokio::sync::mpsc::channel(256);
    let tailer = Tailer::start(
        TailConfig {
            events_dir: events_dir.clone(),
            poll_interval: state.config.server.poll_interval,
            max_line_bytes: tail::DEFAULT_MAX_LINE_BYTES,
        },
        checkpoints,
        batch_tx,
        state.tail_stats.clone(),
    )
    .map_err(ServeError::Tailer)?;
    *state.tailer.lock().unwrap_or_else(|p| p.into_inner()) = Some(tailer);
    tracing::info!(
        events_dir = %events_dir.display(),
        "JSONL Event Replay Monitor started"
    );

    let ingest = tokio::spawn(ingest::run(state.clone(), batch_rx));
    let watchdog = tokio::spawn(ingest::watch_liveness(state.clone()));
    let builtin = (state.config.scheduler.backend == Backend::Builtin)
        .then(|| tokio::spawn(timer::run_builtin(state.clone())));
    let auditor = tokio::spawn(timer::audit(state.clone(), state.config.scheduler.grace));
    let pruner = tokio::spawn(prune_hourly(state.clone()));

    let addr = listener.local_addr().map_err(ServeError::Accept)?;
    tracing::info!("dashboard listening on http://{addr}");
    let app = router(state.clone());
    accept_loop(listener, app, shutdown, close_tx).await;

    // Stop the tailer first so nothing new arrives, then let the ingest task drain what was
    // read: every batch it commits is one that will not be read again.
    let tailer = state
        .tailer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(t) = tailer {
        let _ = tokio::task::spawn_blocking(move || t.stop()).await;
    }
    watchdog.abort();
    auditor.abort();
    pruner.abort();
    if let Some(b) = builtin {
        b.abort();
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, ingest).await;
    tracing::info!("dashboard stopped");
    Ok(())
}

/// Applies `[retention]` every hour, the first time an hour after start (so a dashboard
/// started to look at old runs does not remove them at once). A failed delete is logged and
/// tried again next time (`crate::retention`); nothing here stops the dashboard.
async fn prune_hourly(state: Arc<AppState>) {
    const EVERY: Duration = Duration::from_secs(3600);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + EVERY, EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let config = state.config.clone();
        let pruned = state
            .with_index(move |idx| {
                crate::retention::prune_index(&config, idx, false, chrono::Utc::now())
            })
            .await;
        match pruned {
            Ok(report) => report.log(),
            Err(e) => tracing::error!("retention: {e}; trying again in an hour"),
        }
    }
}

/// Accepts connections until `shutdown`, serving each with HTTP/1.1 (with upgrades for
/// WebSocket) and a header read timeout, then drains them gracefully.
async fn accept_loop(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send,
    close: watch::Sender<bool>,
) {
    use hyper::server::conn::http1;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while conns.try_join_next().is_some() {}
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: log, breathe, keep serving.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut closing = close.subscribe();
        conns.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("connection ended: {e}");
                    }
                }
                _ = ws::closed(&mut closing) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    tracing::info!("shutting down");
    // Tell connections, WebSocket and SSE streams to close, then wait for them to finish.
    let _ = close.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
        conns.abort_all();
    }
}
