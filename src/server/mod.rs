//! `pipewatch serve`: the dashboard backend.
//!
//! ```text
//!  events_dir ──► Tailer (own thread) ──bounded──► ingest task ──► Index (SQLite)
//!                                                       │  (checkpoint + summaries + alerts' outbox, one commit)
//!                                                       ├──► Bus (ring + run logs) ───► WS / SSE
//!                                                       └──► wakes alert delivery (a task per destination)
//! ```
//!
//! With `[cluster]`, the tailer's place is taken by the consumer of the engine's stream
//! (`cluster`), which writes every host's events to a mirror folder under `state_dir` and
//! hands on what it appended there, as the tailer would have read it; the mirror is the
//! folder the rest of `serve` reads run files from.
//!
//! Each batch the tailer reads is committed to the index together with its checkpoint, then
//! published on the bus. So after a restart — even `kill -9` — the tailer resumes after the
//! last committed line: an event is never published twice; events written while the
//! dashboard was down are published when it comes back.
//!
//! [`serve`] takes an already-bound listener and a shutdown future; [`router`] is the pure
//! HTTP surface over [`AppState`], testable without a socket.
//!
//! | module | owns |
//! |---|---|
//! | [`state`] | [`AppState`]: what handlers and tasks share, built in one place |
//! | [`error`] | [`ApiError`]: a status and `{"error": ...}` |
//! | [`extract`] | the path and query extractors, whose rejections are `ApiError`s |
//! | `ingest` | tailer batches → index → bus; the liveness watchdog (`abandoned`) |
//! | `cluster` | with `[cluster]`, the tailer's stand-in: every host's events from JetStream, through a mirror of their run files |
//! | [`alerting`] | delivering the alerts of the outbox: one task per destination, with back-off |
//! | [`catchup`] | catching up after an outage: alerts held, then one summary per destination |
//! | `overdue` | the `late` and `long` alerts: asking their rules every few seconds |
//! | [`launch`] | starting `pipewatch run` ("Run now", the built-in scheduler) |
//! | [`schedule`] | the built-in timer and the auditor on the wall clock; the status |
//! | [`assets`] | the page: every file of `web/`, from one table |
//! | [`auth`] | the Host, token, Origin, body size and content-type guards |
//! | [`budget`] | the bytes clients may have queued, each and all together |
//! | [`openapi`] | the API's OpenAPI 3.1 description, made from the routes |
//! | [`reload`] | reading the configuration again (`POST /api/reload`, SIGHUP) |
//! | [`routes`] | the router, one module per group of routes |

pub mod alerting;
pub mod assets;
pub mod auth;
pub mod budget;
pub mod catchup;
mod cluster;
pub use cluster::mirror_dir;
pub mod error;
pub mod extract;
mod feed;
mod forward;
mod ingest;
pub mod launch;
mod overdue;
pub mod openapi;
pub mod reload;
pub mod routes;
pub mod schedule;
pub mod state;
mod wal;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use error::ApiError;
pub use routes::{MAX_BODY_BYTES, ROUTES, router};
pub use state::{AppState, Stats};

use crate::bus::{self, Bus};
use crate::config::Workspace;
use crate::index::{self, Index, Opened};
use crate::sync::MutexExt;
use crate::tail::{self, TailConfig, Tailer};

/// A client that has not sent its request headers within this long is disconnected.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection whose socket takes no byte for this long is closed: a client that stops
/// reading (an event stream, a large answer) holds its share of memory and its connection no
/// longer than this. Longer than a WebSocket's own send timeout (10 s), which closes a stuck
/// WebSocket client first, with code 4000.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(20);

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
    #[error("{0}")]
    Startup(String),
}

impl crate::exit::Code for ServeError {
    /// Binding wider without a token is refused as a usage error; the rest is the
    /// environment's (a port in use, an unreadable index).
    fn exit_code(&self) -> u8 {
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

/// Options of [`serve`] beyond the configuration.
pub struct ServeOptions {
    /// The `pipewatch` executable started for manual runs.
    pub exe: PathBuf,
    /// The size of the bus's ring of recent events, in bytes.
    pub ring_bytes: usize,
    /// SIGHUP, which reads the configuration again (made before the server starts, so one
    /// sent during start-up waits for it); `None` leaves SIGHUP alone.
    pub hangups: Option<crate::runner::shutdown::Hangups>,
}

/// A state for driving [`router`] without a socket or a tailer: an in-memory index, nothing
/// running in the background (tests and fuzzing).
pub fn detached_state(
    config: impl Into<Workspace>,
    exe: PathBuf,
) -> Result<Arc<AppState>, ServeError> {
    let idx = Index::open_in_memory()?;
    let bus = Bus::new(bus::DEFAULT_RING_BYTES, idx.next_cursor()?);
    Ok(Arc::new(AppState::new(config.into(), idx, bus, exe, None)))
}

/// Runs the dashboard on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    mut workspace: Workspace,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let addr = listener.local_addr().map_err(ServeError::Accept)?;
    // The address bound (its real port, when asked for port 0) is the one requests must name.
    for c in &mut workspace.pipelines {
        c.server.bind = addr;
    }
    let state_dir = workspace.shared().server.state_dir.clone();
    let events_dir = workspace.shared().server.events_dir.clone();
    let cluster_config = workspace.shared().cluster.clone();
    // What the dashboard shows and reads run files from: the events folder, or with
    // `[cluster]` its own index and the mirror of every host's runs (this host's own runs
    // reach it through the engine, like the others').
    let (db_path, read_dir) = match &cluster_config {
        Some(_) => (
            index::path(&cluster::state_dir(&state_dir)),
            cluster::mirror_dir(&state_dir),
        ),
        None => (index::path(&state_dir), events_dir.clone()),
    };
    // The folder runs will write to; creating it now lets the watch start at once. A failure
    // is not fatal: the tailer polls for the folder until it appears.
    if let Err(e) = std::fs::create_dir_all(&events_dir) {
        tracing::warn!(events_dir = %events_dir.display(), "cannot create the events folder: {e}");
    }

    if cluster_config.is_some()
        && let Err(e) = std::fs::create_dir_all(&read_dir)
    {
        return Err(ServeError::Startup(format!(
            "cannot create the mirror folder {}: {e}",
            read_dir.display()
        )));
    }
    let mut idx = tokio::task::spawn_blocking({
        let read_dir = read_dir.clone();
        move || open_index(&db_path, &read_dir)
    })
    .await
    .map_err(|e| ServeError::Startup(format!("opening the run index failed: {e}")))??;
    // Ingest's commits leave checkpoints of the log to a task of their own (`wal`).
    let wal = idx.defer_checkpoints()?;
    let checkpoints = idx.checkpoints()?;

    let (close_tx, close_rx) = watch::channel(false);
    // The all-runs stream goes on from the index's last cursor. An index that cannot say
    // (damaged since it was checked: it is repaired at its next failing query) starts a new
    // epoch, past every cursor given before. With `[cluster]` cursors are the engine's stream sequences: the stream goes on after the
    // last one committed.
    let first = match &cluster_config {
        Some(_) => idx.last_cursor()?.map_or(1, |c| c + 1),
        None => idx.next_cursor().unwrap_or_else(|e| {
            tracing::warn!("cannot read the all-runs stream's last cursor: {e}");
            index::epoch_start()
        }),
    };
    let bus = Bus::new(opts.ring_bytes, first);
    let mut state = AppState::new(workspace, idx, bus, opts.exe, Some(close_rx));
    state.events_dir = read_dir.clone();
    let state = Arc::new(state);

    let (batch_tx, batch_rx) = tokio::sync::mpsc::channel(256);
    // The batches ingest is done with go back to the tailer that read them (`tail::Spent`).
    let (consumer, spent) = match cluster_config {
        Some(c) => {
            let runs = tokio::task::spawn_blocking({
                let dir = read_dir.clone();
                move || cluster::prepare_mirror(&dir, &checkpoints)
            })
            .await
            .map_err(|e| ServeError::Startup(format!("preparing the mirror failed: {e}")))?
            .map_err(|e| {
                ServeError::Startup(format!(
                    "cannot prepare the mirror folder {}: {e}",
                    read_dir.display()
                ))
            })?;
            tracing::info!(
                mirror = %read_dir.display(),
                from = first,
                "reading every host's events from NATS JetStream"
            );
            let start = cluster::Start { runs, next: first };
            let consumer = tokio::spawn(cluster::run(state.clone(), c, start, batch_tx));
            (Some(consumer), None)
        }
        None => {
            let spent = start_tailer(&state, &events_dir, checkpoints, batch_tx)?;
            (None, Some(spent))
        }
    };

    let ingest = tokio::spawn(ingest::run(state.clone(), batch_rx, spent));
    let watchdog = tokio::spawn(ingest::watch_liveness(state.clone()));
    schedule::apply(&state, &state.workspace());
    let reloader = opts
        .hangups
        .map(|h| tokio::spawn(reload::on_hangup(state.clone(), h)));
    let pruner = tokio::spawn(prune_hourly(state.clone()));
    let checkpointer = tokio::spawn(wal::run(state.clone(), wal));
    let alerter = tokio::spawn(alerting::run(state.clone()));
    let overdue = tokio::spawn(overdue::run(state.clone()));
    // With [cluster]: what this host's runs left unpublished goes to the engine.
    let forwarder = state
        .config
        .cluster
        .is_some()
        .then(|| tokio::spawn(forward::run(state.clone())));

    tracing::info!("dashboard listening on http://{addr}");
    let app = router(state.clone());
    accept_loop(listener, app, shutdown, close_tx).await;

    // Stop the tailer first so nothing new arrives, then let the ingest task drain what was
    // read: every batch it commits is one that will not be read again.
    let tailer = state.tailer.lock_anyway().take();
    if let Some(t) = tailer {
        let _ = tokio::task::spawn_blocking(move || t.stop()).await;
    }
    // The consumer stops at the shutdown signal; what it appended and did not hand on is cut
    // off the mirror at the next start.
    if let Some(c) = consumer {
        let abort = c.abort_handle();
        if tokio::time::timeout(Duration::from_secs(1), c)
            .await
            .is_err()
        {
            tracing::warn!("the stream's consumer did not stop in time");
            abort.abort();
        }
    }
    watchdog.abort();
    pruner.abort();
    if let Some(f) = forwarder {
        f.abort();
    }
    // The manager ends its destinations' tasks once it sees the shutdown.
    let _ = tokio::time::timeout(Duration::from_secs(1), alerter).await;
    // It ends once it sees the shutdown; recording is one short transaction.
    let _ = tokio::time::timeout(Duration::from_secs(1), overdue).await;
    if let Some(r) = reloader {
        r.abort();
    }
    state.schedules.stop();
    launch::withdraw_unwritten(&state).await;
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, ingest).await;
    // It ends once it sees the shutdown; the index checkpoints what is left as it closes.
    let _ = tokio::time::timeout(Duration::from_secs(1), checkpointer).await;
    tracing::info!("dashboard stopped");
    Ok(())
}

/// Starts the tailer of `events_dir` from the index's checkpoints; ingest gives its batches
/// back through what it returns.
fn start_tailer(
    state: &Arc<AppState>,
    events_dir: &std::path::Path,
    checkpoints: Vec<tail::Checkpoint>,
    batch_tx: tokio::sync::mpsc::Sender<tail::Batch>,
) -> Result<tail::Spent, ServeError> {
    let tailer = Tailer::start(
        TailConfig {
            events_dir: events_dir.to_path_buf(),
            poll_interval: state.config.server.poll_interval,
            max_line_bytes: tail::DEFAULT_MAX_LINE_BYTES,
            // A run's followers get its new lines from the tail thread itself. Through a weak
            // reference: the state holds the tailer, which holds this.
            on_read: Some(tail::OnRead({
                let state = Arc::downgrade(state);
                Arc::new(move |read: &tail::Batch| {
                    if let Some(state) = state.upgrade() {
                        state.bus.publish_read(read);
                    }
                })
            })),
        },
        checkpoints,
        batch_tx,
        state.tail_stats.clone(),
    )
    .map_err(ServeError::Tailer)?;
    let spent = tailer.spent();
    *state.tailer.lock_anyway() = Some(tailer);
    tracing::info!(
        events_dir = %events_dir.display(),
        "JSONL Event Replay Monitor started"
    );
    Ok(spent)
}

/// Opens the run index, rebuilding it from the run files when it is new or was reset (not a
/// database, another schema version). A missing events folder is an empty history.
fn open_index(
    db_path: &std::path::Path,
    events_dir: &std::path::Path,
) -> Result<Index, index::IndexError> {
    let (mut idx, opened) = Index::open_or_reset(db_path)?;
    if let Opened::Reset { why } = &opened {
        tracing::warn!(path = %db_path.display(), %why, "run index reset; rebuilding it from the run files");
    }
    if opened == Opened::Existing {
        return Ok(idx);
    }
    let stats = match index::rebuild(&mut idx, events_dir) {
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
    Ok(idx)
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
        let mut workspace = state.workspace();
        // With `[cluster]` the runs shown are the mirror's: it is the folder pruned.
        if state.events_dir != state.config.server.events_dir {
            let mut ws = (*workspace).clone();
            for c in &mut ws.pipelines {
                c.server.events_dir = state.events_dir.clone();
            }
            workspace = Arc::new(ws);
        }
        let pruned = state
            .with_index(move |idx| {
                crate::retention::prune_index(&workspace, idx, false, chrono::Utc::now())
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
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let service = TowerToHyperService::new(app.clone());
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(Box::pin(stream)), service)
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
                _ = state::closed(&mut closing) => {
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
